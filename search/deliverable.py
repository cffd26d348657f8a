"""The deliverable of a run: the best tiny model, ready to deploy.

The arm with the best mean val top-1 over its seeds wins (it may be baseline: we deliver the best
model, not the best-looking method); within it, the seed with the best val top-1. Test metrics play
no part in the choice. Its exported base becomes `final/model.pt` (loadable with
`netaug.train.export.load_exported`), `final/model.onnx` (torch.onnx, checked against torch with
onnxruntime on the whole test split) and `final/model.json` (what a deployer needs to know).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from netaug.config import SpaceConfig
from netaug.io import atomic_path
from netaug.stats import format_points

MODEL_PT, MODEL_ONNX, MODEL_JSON = "model.pt", "model.onnx", "model.json"
MODEL_INT8, MODEL_TFLITE = "model.int8.onnx", "model.int8.tflite"
ONNX_TOLERANCE = 1e-4  # max |logit difference| accepted between onnxruntime and torch


def choose(rows: list[dict]) -> tuple[str, dict]:
    """(best arm by mean val top-1, its best seed's row). Ties: lower mean val loss, then the arm listed first."""
    arms = list(dict.fromkeys(r["arm"] for r in rows))

    def mean(arm: str, key: str) -> float:
        values = [r[key] for r in rows if r["arm"] == arm and r.get(key) is not None]
        return float(np.mean(values)) if values else float("nan")

    best_arm = min(arms, key=lambda a: (-mean(a, "val_top1"), mean(a, "val_loss"), arms.index(a)))
    mine = [r for r in rows if r["arm"] == best_arm]
    best = min(mine, key=lambda r: (-r["val_top1"], r.get("val_loss") or 0.0, r["seed"]))
    return best_arm, best


def deliver(cfg: SpaceConfig, run_dir: Path, rows: list[dict]) -> list[str]:
    """Write final/model.{pt,onnx,json} for the chosen arm and seed; returns summary lines."""
    from netaug.data import make_batcher
    from netaug.train.deploy import check_onnx, deployment_facts, export_onnx
    from netaug.train.evaluate import evaluate
    from netaug.train.export import load_exported
    from search.evaluation import cached_data

    arm, row = choose(rows)
    out = run_dir / "final"
    with atomic_path(out / MODEL_PT) as tmp:
        shutil.copyfile(run_dir / row["model_file"], tmp)
    model, payload = load_exported(out / MODEL_PT)
    data = cached_data(cfg)  # the driver's copy, already loaded by the int8 checks
    shape = (data.in_channels, data.resolution, data.resolution)
    facts = deployment_facts(model, shape)
    export_onnx(model, out / MODEL_ONNX, shape)
    batcher = make_batcher(data, cfg.data)
    check = check_onnx(out / MODEL_ONNX, model, (x for x, _ in batcher.batches(data.test, 512)))
    exported_test = evaluate(model, data.test, batcher, 512, 1)
    means = {a: float(np.mean([r["val_top1"] for r in rows if r["arm"] == a])) for a in dict.fromkeys(
        r["arm"] for r in rows)}
    methods = list(dict.fromkeys(r["arm"] for r in rows if r["mode"] != "baseline"))  # NetAug, reparam
    info = {
        "arm": arm, "seed": row["seed"], "mode": row["mode"], "description": row.get("description"),
        "chosen_by": "best mean val top-1 over seeds among all arms (baseline_equal included), then the best seed's "
                     "val top-1 (test plays no part)",
        "why": why_line(arm, row, means, methods),
        "compute": {k: row.get(k) for k in ("unit", "compute", "train_s", "train_flops", "epochs")},
        "mean_val_top1_by_arm": means,
        "hyperparameters": {k: row.get(k) for k in ("r", "s", "aug_loss_weight", "lambda_kd", "share_fraction")},
        "largest_augmented": json.loads(row["largest"]) if row.get("largest") else None,
        "epochs": row["epochs"], "model": payload.get("model_name"), "class": payload["class"],
        "input_shape": [1, *shape], "input_layout": "NCHW float32",
        "normalisation": {"mean": list(data.mean), "std": list(data.std),
                          "formula": "x = (pixel / 255 - mean[c]) / std[c], pixels as uint8 in [0, 255]"},
        "classes": data.class_names(),
        **facts.to_dict(),
        "val_top1": row["val_top1"], "test_top1": row["test_top1"], "test_top1_exported": exported_test.top1,
        "onnx": {**check.to_dict(), "tolerance": ONNX_TOLERANCE,
                 "passed": check.max_abs_logit_diff <= ONNX_TOLERANCE and check.top1_agreement == 1.0},
        "files": {"torch": f"final/{MODEL_PT}", "onnx": f"final/{MODEL_ONNX}", "source": row["model_file"]},
    }
    if row.get("int8_file"):
        info["int8"], info["memory"] = int8_deliverable(cfg, run_dir, row, model, data, batcher, shape)
        if "tflm" in info["int8"]:  # the microcontroller runtime's own figures, at the top level
            info["tflm"] = info["int8"].pop("tflm")
        info["files"].update({"int8": f"final/{MODEL_INT8}",
                              **({"tflite": f"final/{MODEL_TFLITE}"} if "tflite" in info["int8"] else {})})
    with atomic_path(out / MODEL_JSON) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    kib = 1024.0
    agree = round(check.top1_agreement * check.samples)
    lines = [f"delivered: {out / MODEL_PT} (+ {MODEL_ONNX}, {MODEL_JSON}) from arm {arm} ({row.get('description')}), "
             f"seed {row['seed']}: val top-1 {row['val_top1']:.4f}, test top-1 {row['test_top1']:.4f}",
             f"  {facts.macs / 1e6:.2f}M MACs, {facts.params_bn_folded / 1e3:.1f}k params (BN folded); weights "
             f"{facts.weights_bytes_fp32 / kib:.1f} KiB fp32, {facts.weights_bytes_int8 / kib:.1f} KiB int8; "
             f"peak activation {facts.peak_activation_bytes_fp32 / kib:.1f} KiB fp32, "
             f"{facts.peak_activation_bytes_int8 / kib:.1f} KiB int8 ({facts.peak_activation_layer})",
             f"  ONNX vs torch on {check.samples} test images: max |delta logit| {check.max_abs_logit_diff:.2e} "
             f"(tolerance {ONNX_TOLERANCE:g}), top-1 agrees on {agree}/{check.samples}"
             + ("" if info["onnx"]["passed"] else "  ** ONNX PARITY FAILED **")]
    if "int8" in info:
        lines += int8_lines(info["int8"], info["memory"], facts, info.get("tflm"))
    lines.insert(1, "  " + info["why"])
    return lines


def why_line(arm: str, row: dict, means: dict[str, float], methods: list[str]) -> str:
    """Why this arm was delivered, in plain words: the best mean val top-1 of all arms, at what cost. `methods`:
    the arms that train with extra capacity (NetAug, reparam)."""
    ranked = ", ".join(f"{a} {v:.4f}" for a, v in sorted(means.items(), key=lambda kv: -kv[1]))
    if arm == "baseline_equal":
        verdict = (f": {', '.join(methods)} did not pay for {'its' if len(methods) == 1 else 'their'} extra cost "
                   "here" if methods else "")
        return (f"why: plain training at equal compute ({row['epochs']} epochs) had the best mean val top-1 "
                f"({ranked}){verdict}, so you get the plain model")
    if arm == "baseline":
        return (f"why: plain training had the best mean val top-1 ({ranked}), so the delivered model is plain "
                "training's")
    return f"why: the best mean val top-1 of all arms ({ranked}); test played no part"


def int8_deliverable(cfg: SpaceConfig, run_dir: Path, row: dict, model, data, batcher, shape) -> tuple[dict, dict]:
    """final/model.int8.onnx (the chosen trial's int8 model, already scored on val and test) and, with
    deploy.tflite, final/model.int8.tflite scored on test; returns model.json's "int8" and "memory"."""
    from netaug.train.int8 import arrays, calibration_set, memory_facts, quantizable

    out = run_dir / "final"
    with atomic_path(out / MODEL_INT8) as tmp:
        shutil.copyfile(run_dir / row["int8_file"], tmp)
    int8 = {"file": f"final/{MODEL_INT8}", "runtime": "onnxruntime QDQ: per-channel symmetric int8 weights, "
            "per-tensor int8 activations (min-max calibration)", "method": row["int8_method"],
            "calibration_images": row["calib_images"], "dead_inputs_zeroed": row.get("int8_dead_inputs"),
            "val_top1": row["int8_val_top1"],
            "test_top1": row["int8_test_top1"], "fp32_test_top1": row["fp32_onnx_test_top1"],
            "delta_test_top1": row["int8_test_delta"], "test_top1_agreement_with_fp32": row["int8_test_agreement"],
            "ptq": {"val_top1": row["ptq_val_top1"], "test_top1": row["ptq_test_top1"]},
            "qat": None if row.get("qat_test_top1") is None else {
                "epochs": cfg.deploy.qat_epochs, "val_top1": row["qat_val_top1"], "test_top1": row["qat_test_top1"]}}
    if cfg.deploy.tflite:
        import torch

        from netaug.train.tflite import export_tflite_int8, tflite_logits

        calibration = arrays(batcher, calibration_set(data, cfg.deploy.calib_images, cfg.data.split_seed), 64)[0]
        path = export_tflite_int8(quantizable(model, cfg, calibration)[0], out / MODEL_TFLITE, shape, calibration)
        xs, labels = arrays(batcher, data.test)
        pred = tflite_logits(path, xs).argmax(1)
        with torch.no_grad():
            fp32 = np.concatenate([model(torch.from_numpy(x)).numpy() for x in xs]).argmax(1)
        top1 = float((pred == labels).mean())
        int8["tflite"] = {"file": f"final/{MODEL_TFLITE}", "runtime": "ai-edge-litert interpreter, int8 input "
                          "and output", "test_top1": top1, "delta_test_top1": top1 - float((fp32 == labels).mean()),
                          "test_top1_agreement_with_fp32": float((pred == fp32).mean()), "bytes": path.stat().st_size}
    memory = memory_facts(out / MODEL_ONNX, out / MODEL_INT8)
    if cfg.deploy.tflite:
        int8["tflm"] = tflm_facts(path, xs, labels, fp32, memory["true_peak_bytes_int8"],
                                  memory["tflite_peak_bytes_int8"])
    return int8, memory


def tflm_facts(path: Path, xs, labels: np.ndarray, fp32: np.ndarray, estimate: int, padded_estimate: int) -> dict:
    """The .tflite on TensorFlow Lite Micro's interpreter: its buffers inlined first (else TFLM puts the
    weights in the arena), the smallest arena it allocates in, test top-1 and agreement with fp32, seconds
    per image; a model TFLM cannot run gives {"error": one line naming the op}."""
    from netaug.train.int8 import MCU_BUDGETS
    from netaug.train.tflm import TFLMUnsupported, smallest_arena, tflm_logits, write_inline

    offset_bytes = path.stat().st_size
    data = write_inline(path)
    try:
        arena = smallest_arena(data)
        logits, per_image = tflm_logits(data, xs, arena.bytes)
    except TFLMUnsupported as exc:
        return {"error": str(exc)}
    pred = logits.argmax(1)
    top1 = float((pred == labels).mean())
    return {"runtime": "TensorFlow Lite Micro (tflite-micro) interpreter, reference int8 kernels",
            "test_top1": top1, "delta_test_top1": top1 - float((fp32 == labels).mean()),
            "test_top1_agreement_with_fp32": float((pred == fp32).mean()), "seconds_per_image": per_image,
            "arena_bytes": arena.bytes, "arena_head_bytes": arena.head, "arena_tail_bytes": arena.tail,
            "estimate_bytes": estimate, "arena_over_estimate": arena.bytes / estimate,
            "head_over_estimate": arena.head / estimate, "estimate_with_pads_bytes": padded_estimate,
            "head_over_estimate_with_pads": arena.head / padded_estimate, "inlined_buffers": offset_bytes != len(data),
            "file_bytes": len(data),
            "budgets": [{"name": name, "fits": arena.bytes <= sram and len(data) <= flash}
                        for name, sram, flash in MCU_BUDGETS]}


def tflm_line(t: dict, estimate: int) -> str:
    """The summary's TFLM line: accuracy, and its measured arena next to our peak-SRAM estimate."""
    kib = 1024.0
    if "error" in t:
        return f"  TFLM: cannot run the model: {t['error']}; the ONNX models are delivered"
    return (f"  TFLM int8: test top-1 {t['test_top1']:.4f} ({format_points(t['delta_test_top1'])} pts vs fp32), "
            f"agrees on {t['test_top1_agreement_with_fp32']:.2%}, {t['seconds_per_image'] * 1e3:.1f} ms/image; "
            f"arena {t['arena_bytes'] / kib:.1f} KiB = activations {t['arena_head_bytes'] / kib:.1f} KiB (our "
            f"estimate {estimate / kib:.1f} KiB, {t['head_over_estimate']:.2f}x; with the converter's PAD ops "
            f"{t['estimate_with_pads_bytes'] / kib:.1f} KiB, {t['head_over_estimate_with_pads']:.2f}x) + persistent "
            f"{t['arena_tail_bytes'] / kib:.1f} KiB (quantization data, tensor and node structs); with the "
            f"{t['file_bytes'] / kib:.1f} KiB .tflite in flash, fits "
            + ", ".join(f"{b['name']}: {'yes' if b['fits'] else 'no'}" for b in t["budgets"]))


def int8_lines(int8: dict, memory: dict, facts, tflm: dict | None = None) -> list[str]:
    """The summary's int8 lines: accuracy against fp32, true memory and the budgets."""
    kib = 1024.0
    agree = int8["test_top1_agreement_with_fp32"]
    qat = "" if int8["qat"] is None else (f"; QAT ({int8['qat']['epochs']} epochs) {int8['qat']['test_top1']:.4f}, "
                                           f"PTQ {int8['ptq']['test_top1']:.4f}")
    lines = [f"  int8 ({int8['method'].upper()}, {int8['calibration_images']} calibration images): test top-1 "
             f"{int8['test_top1']:.4f} ({format_points(int8['delta_test_top1'])} pts vs fp32 "
             f"{int8['fp32_test_top1']:.4f}), top-1 agrees with fp32 on {agree:.2%}{qat}; final/{MODEL_INT8}"]
    if "tflite" in int8:
        t = int8["tflite"]
        lines.append(f"  TFLite int8: test top-1 {t['test_top1']:.4f} ({format_points(t['delta_test_top1'])} pts vs "
                     f"fp32), agrees on {t['test_top1_agreement_with_fp32']:.2%}; final/{MODEL_TFLITE} "
                     f"({t['bytes'] / kib:.1f} KiB)")
    if tflm is not None:
        lines.append(tflm_line(tflm, memory["true_peak_bytes_int8"]))
    fits = ", ".join(f"{b['name']}: {'yes' if b['fits'] else 'no'}" for b in memory["budgets"])
    lines.append(f"  int8 memory: peak SRAM {memory['true_peak_bytes_int8'] / kib:.1f} KiB with shortcuts alive "
                 f"(per-layer figure {facts.peak_activation_bytes_int8 / kib:.1f} KiB) at {memory['true_peak_at']}; "
                 f"flash {memory['flash_bytes_int8'] / kib:.1f} KiB; fits {fits}")
    return lines
