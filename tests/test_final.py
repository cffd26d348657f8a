"""The final stage in the tiny pipeline with a real local Ray, Optuna, pyarrow and onnxruntime:
final.parquet against predictions.parquet and torchmetrics, pairing digests, the delivered model."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import scipy.stats
import torch
from torchmetrics.functional.classification import multiclass_f1_score, multiclass_precision, multiclass_recall

from netaug.data import load_data, make_batcher
from netaug.records import EPOCHS_SCHEMA, FINAL_SCHEMA
from netaug.stats import format_points
from netaug.train.export import load_exported
from netaug.train.quantize import initializer_bytes, onnx_logits

REQUIRED = ["arm", "mode", "seed", "r", "s", "aug_loss_weight", "lambda_kd", "largest", "base_macs", "aug_macs",
            "epochs", "train_top1", "val_top1", "test_top1"] + [
    f"test_{m}_at_{k}" for m in ("precision", "recall", "f1") for k in (1, 3, 5)] + ["wall_s", "step_s"]


@pytest.fixture(scope="module")
def final_run(pipeline_run):
    """The shared four-stage run (conftest.SHARED_RUN): every arm at seeds 0 and 1, int8 on."""
    return pipeline_run


def test_final_parquet_has_every_arm_and_seed_once_with_the_columns(final_run):
    cfg, run_dir, lines = final_run
    final = pd.read_parquet(run_dir / "final.parquet")
    assert list(final.columns) == FINAL_SCHEMA.names and list(final.columns[: len(REQUIRED)]) == REQUIRED
    assert sorted(zip(final["arm"], final["seed"])) == sorted(
        (a, s) for a in ("winner", "baseline", "netaug_fixed", "baseline_equal", "reparam") for s in (0, 1))
    assert (final["status"] == "TERMINATED").all() and (final[final.arm != "baseline_equal"]["epochs"] == 2).all()
    assert final[["train_top1", "val_top1", "test_top1", "base_macs", "wall_s", "step_s"]].notna().all().all()
    trials = pd.read_parquet(run_dir / "trials.parquet")
    # the winner: the best val top-1, a tie to the trial that started first (records.best_trial)
    best = trials.sort_values(["val_top1", "started_at", "trial_id"], ascending=[False, True, True]).iloc[0]
    winner = final[final.arm == "winner"].iloc[0]
    assert winner["mode"] == best["mode"] and winner["r"] == pytest.approx(best["r"])
    assert json.loads(winner["largest"]) == json.loads(best["arch"])  # the winner trains with its a*
    fixed = final[final.arm == "netaug_fixed"].iloc[0]
    assert fixed["mode"] == "netaug" and fixed["r"] == pytest.approx(best["r"]) and fixed["s"] == best["s"]
    assert fixed["aug_macs"] > winner["aug_macs"] > winner["base_macs"]  # every layer at r is wider than a*
    base = final[final.arm.isin(["baseline", "baseline_equal"])]
    assert base["largest"].isna().all() and base["r"].isna().all() and (base["mode"] == "baseline").all()
    rep = final[final.arm == "reparam"]  # branches while training, the base itself at export
    assert (rep["mode"] == "reparam").all() and rep["largest"].isna().all() and rep["aug_macs"].isna().all()
    for row in rep.itertuples():
        model, _ = load_exported(run_dir / row.model_file)
        assert type(model).__name__ == "MobileNetV2" and sum(p.numel() for p in model.parameters()) == sum(
            p.numel() for p in load_exported(run_dir / base.iloc[0]["model_file"])[0].parameters())
    assert (final["base_macs"] == final["base_macs"].iloc[0]).all()
    # the pairing, as the trials measured it: one batch sequence per seed across arms; the NetAug arms
    # start from one initial base (slices of the official uniform init), baseline and reparam (its own conv
    # and BN, before the branches) from the fan-out init; baseline_equal trains longer, so its batch sequence
    # is the others' and then more epochs
    for _seed, group in final.groupby("seed"):
        assert group[group.arm != "baseline_equal"]["batch_digest"].nunique() == 1
        netaug = group[~group.arm.isin(["baseline", "baseline_equal", "reparam"])]["init_digest"]
        plain = group[group.arm.isin(["baseline", "baseline_equal", "reparam"])]["init_digest"]
        assert netaug.nunique() == 1 and plain.nunique() == 1 and netaug.iloc[0] != plain.iloc[0]
    assert final.groupby("seed")["init_digest"].first().nunique() == 2
    # the summary answers with one line per arm against baseline, then the winner against baseline_equal
    text = "\n".join(lines)
    assert f"winner ({best['mode']}, a*) vs baseline: test top-1 " in text and "2 seeds" in text
    assert "netaug_fixed (netaug, every layer at r=" in text and "Answer:" in text
    assert "At equal epochs (2 each)" in text and "At equal compute (" in text
    assert f"winner ({best['mode']}, a*) vs baseline_equal: test top-1 " in text
    assert "reparam (reparam (k=1, 1x1, identity), folded at export) vs baseline: test top-1 " in text


def test_baseline_equal_gets_the_winners_calibrated_compute(final_run):
    cfg, run_dir, lines = final_run
    final = pd.read_parquet(run_dir / "final.parquet")
    calibration = json.loads((run_dir / "final" / "calibration.json").read_text())
    assert calibration["unit"] == "seconds"
    assert sorted(calibration["arms_measured"]) == ["netaug_fixed", "reparam", "winner"]
    by_arm = final.groupby("arm")
    winner = final[final.arm == "winner"].iloc[0]
    cost = calibration["costs"]["winner"]["cost"]
    assert (winner["cost_width"], winner["cost_min_w"]) == (cost["width"], cost["min_w"]) and cost["width"] > 1
    equal = final[final.arm == "baseline_equal"]
    assert (equal["epochs"] == max(1, round(winner["compute"]))).all() and (equal["epochs"] > 2).all()
    # its calibrated compute equals the winner's to within one plain epoch; both cost units are recorded
    assert abs(by_arm["compute"].median()["baseline_equal"] - by_arm["compute"].median()["winner"]) <= 1
    assert final[["train_s", "train_flops", "compute"]].gt(0).all().all()
    assert (final["unit"] == "seconds").all()
    plain = final[final.arm == "baseline"]["train_flops"].iloc[0]
    assert equal["train_flops"].iloc[0] == pytest.approx(plain * equal["epochs"].iloc[0] / 2, rel=1e-12)
    text = "\n".join(lines)
    assert f"1 winner epoch = {cost['width']:.2f} plain epochs here" in text
    assert f"baseline_equal trains {equal['epochs'].iloc[0]} epochs" in text


def test_final_metrics_equal_what_predictions_give_and_torchmetrics(final_run):
    _, run_dir, _ = final_run
    final = pd.read_parquet(run_dir / "final.parquet")
    preds = pd.read_parquet(run_dir / "predictions.parquet")
    assert preds["model"].str.startswith("aug:").any()  # the sweep's predictions are kept beside the final ones
    for row in final.itertuples():
        test = preds[(preds.model == f"final:{row.arm}:s{row.seed}") & (preds.split == "test")]
        test = test.sort_values("sample_index")
        assert len(test) and (test.trial_id == row.trial_id).all()
        topk, labels = np.stack(test["topk"].to_numpy()), test["label"].to_numpy()
        assert row.test_top1 == pytest.approx(float((topk[:, 0] == labels).mean()), abs=1e-12)
        probs = np.zeros((len(test), 10), dtype=np.float32)
        np.put_along_axis(probs, topk, np.stack(test["topk_prob"].to_numpy()), axis=1)
        p, t = torch.from_numpy(probs), torch.from_numpy(labels.copy())
        for k in (1, 3, 5):
            kw = {"num_classes": 10, "average": "macro", "top_k": k}
            assert getattr(row, f"test_precision_at_{k}") == pytest.approx(float(multiclass_precision(p, t, **kw)),
                                                                            abs=1e-6)
            assert getattr(row, f"test_recall_at_{k}") == pytest.approx(float(multiclass_recall(p, t, **kw)), abs=1e-6)
            assert getattr(row, f"test_f1_at_{k}") == pytest.approx(float(multiclass_f1_score(p, t, **kw)), abs=1e-6)


def test_epochs_parquet_has_both_stages_and_train_top1_every_final_epoch(final_run):
    _, run_dir, _ = final_run
    epochs = pd.read_parquet(run_dir / "epochs.parquet")
    assert list(epochs.columns) == EPOCHS_SCHEMA.names
    assert set(epochs["stage"]) == {"sweep", "final"}
    final = epochs[epochs.stage == "final"]
    equal = pd.read_parquet(run_dir / "final.parquet").query("arm == 'baseline_equal'")["epochs"].sum()
    assert len(final) == 8 * 2 + equal and not final.duplicated(["trial_id", "epoch"]).any()
    assert final[["train_top1", "val_top1", "val_loss", "train_loss"]].notna().all().all()
    assert final["train_top1"].between(0, 1).all()
    last = final.sort_values("epoch").groupby("trial_id")["train_top1"].last()
    rows = pd.read_parquet(run_dir / "final.parquet").set_index("trial_id")
    assert np.allclose(last.sort_index(), rows.loc[last.index, "train_top1"].sort_index())


def test_the_delivered_model_is_the_best_by_val_and_matches_onnx(final_run):
    cfg, run_dir, lines = final_run
    final = pd.read_parquet(run_dir / "final.parquet")
    info = json.loads((run_dir / "final" / "model.json").read_text())
    means = final.groupby("arm")["val_top1"].mean()
    assert means[info["arm"]] == means.max()
    mine = final[final.arm == info["arm"]]
    assert mine.set_index("seed").loc[info["seed"], "val_top1"] == mine["val_top1"].max()
    model, payload = load_exported(run_dir / "final" / "model.pt")
    data = load_data(cfg.data)
    batcher = make_batcher(data, cfg.data)
    x = torch.cat([b for b, _ in batcher.batches(data.test, 512)])
    with torch.no_grad():
        logits = model(x).numpy()
    row = mine.set_index("seed").loc[info["seed"]]
    assert float((logits.argmax(1) == data.test.labels.numpy()).mean()) == pytest.approx(row["test_top1"], abs=1e-12)
    session = ort.InferenceSession(str(run_dir / "final" / "model.onnx"), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"input": x.numpy()})[0]
    assert np.abs(theirs - logits).max() <= 1e-4 and (theirs.argmax(1) == logits.argmax(1)).all()
    assert info["onnx"]["passed"] and info["onnx"]["samples"] == len(data.test)
    assert info["input_shape"] == [1, 1, 8, 8] and info["classes"] == [str(i) for i in range(10)]
    assert info["normalisation"]["mean"] == pytest.approx(list(data.mean))
    assert info["macs"] == row["base_macs"] and info["test_top1_exported"] == pytest.approx(row["test_top1"])
    assert info["peak_activation_bytes_fp32"] == 4 * info["peak_activation_bytes_int8"] > 0
    assert any(line.startswith("delivered: ") for line in lines)


def test_every_final_model_has_a_scored_int8_twin_and_the_answer_at_int8(final_run):
    cfg, run_dir, lines = final_run
    final = pd.read_parquet(run_dir / "final.parquet")
    data = load_data(cfg.data)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in make_batcher(data, cfg.data).batches(data.test, 512)])
    labels = np.concatenate(ys)
    for row in final.itertuples():
        path = run_dir / row.int8_file
        assert initializer_bytes(path).get("INT8", 0) > 0  # an int8 graph, not a float one
        pred = onnx_logits(path, xs).argmax(1)
        model, _ = load_exported(run_dir / row.model_file)
        with torch.no_grad():
            fp32 = np.concatenate([model(torch.from_numpy(x)).numpy() for x in xs]).argmax(1)
        assert row.int8_test_top1 == pytest.approx(float((pred == labels).mean()), abs=1e-12)
        assert row.fp32_onnx_test_top1 == pytest.approx(row.test_top1, abs=1.5 / len(labels))  # ONNX is the model
        assert row.int8_test_agreement == pytest.approx(float((pred == fp32).mean()), abs=1.5 / len(labels))
        assert row.int8_test_delta == pytest.approx(row.int8_test_top1 - row.fp32_onnx_test_top1, abs=1e-12)
        assert row.int8_method == "ptq" and row.ptq_test_top1 == row.int8_test_top1 and np.isnan(row.qat_test_top1)
        assert row.calib_images == cfg.deploy.calib_images and row.int8_val_top1 > 0
    assert (final["int8_test_top1"] - final["fp32_onnx_test_top1"]).abs().max() <= 0.05
    # the paired answer at int8: the same pairs, scipy's paired t-test
    text = "\n".join(lines)
    assert "At equal epochs (2 each): did NetAug or reparam help at int8? (int8 models, paired by seed" in text
    assert "better than training plain for the same time at int8? (int8 models, paired by seed)" in text
    for reference, arms in (("baseline", ("winner", "netaug_fixed", "reparam")), ("baseline_equal", ("winner",))):
        base = final[final.arm == reference].set_index("seed")["int8_test_top1"]
        for arm in arms:
            mine = final[final.arm == arm].set_index("seed")["int8_test_top1"].loc[base.index]
            diff = (mine - base).to_numpy()
            line = next(x for x in lines if x.strip().startswith(f"{arm} (") and f"vs {reference}: int8 test" in x)
            assert f"int8 test top-1 {format_points(diff.mean())} pts" in line
            # whole test images gained or lost per seed: the same count on every seed is no test (float
            # rounding of the accuracies would hand scipy a spread that is not there)
            images = np.round(diff * len(labels))
            if np.ptp(images) > 0:
                assert f"p = {scipy.stats.ttest_rel(mine, base).pvalue:.3g}" in line
            else:
                assert line.endswith("identical differences on every seed: no test")


def test_the_delivered_int8_model_states_its_accuracy_and_true_memory(final_run):
    cfg, run_dir, lines = final_run
    info = json.loads((run_dir / "final" / "model.json").read_text())
    final = pd.read_parquet(run_dir / "final.parquet")
    row = final[(final.arm == info["arm"]) & (final.seed == info["seed"])].iloc[0]
    int8_path = run_dir / "final" / "model.int8.onnx"
    assert int8_path.read_bytes() == (run_dir / row["int8_file"]).read_bytes()
    assert info["int8"]["test_top1"] == row["int8_test_top1"] and info["int8"]["method"] == "ptq"
    assert info["files"]["int8"] == "final/model.int8.onnx"
    memory = info["memory"]
    # a residual block's shortcut is alive on top of some layer's input + output: never below the per-layer figure
    assert memory["true_peak_bytes_int8"] >= info["peak_activation_bytes_int8"]
    assert memory["true_peak_bytes_fp32"] == 4 * memory["true_peak_bytes_int8"]
    weights = info["params_bn_folded"]
    assert weights <= memory["flash_bytes_int8"] < info["weights_bytes_fp32"]  # one byte a weight, plus scales
    for budget in memory["budgets"]:
        assert budget["fits"] == (memory["true_peak_bytes_int8"] <= budget["sram_bytes"]
                                  and memory["flash_bytes_int8"] <= budget["flash_bytes"])
    assert {b["name"] for b in memory["budgets"]} >= {"320 KB SRAM / 1 MB flash", "256 KB SRAM / 1 MB flash"}
    text = "\n".join(lines)
    assert f"int8 (PTQ, {cfg.deploy.calib_images} calibration images): test top-1 {row['int8_test_top1']:.4f}" in text
    assert "int8 memory: peak SRAM" in text and "fits 256 KB SRAM / 1 MB flash: yes" in text
