"""The columns of the run's Parquet files, shared by their writers (search/) and their readers (analysis/).

trials.parquet: one row per sweep trial; epochs.parquet: one row per trial (sweep or final) and epoch;
predictions.parquet: per-sample top-K of a model; final.parquet: one row per final arm x seed. A trial's
per-epoch report to Tune carries these names too, which is how analysis/ rebuilds a run still in progress.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import pyarrow as pa

KS = (1, 3, 5)
# What a trial's training cost (netaug/train/cost.py, calibrate.py): the unit compute is measured in, the budget
# (plain-training epochs), the recipe's epoch cost in plain epochs per phase (width-augmented, min_w), the epochs
# that bought, compute spent (plain epochs, calibrated), and what was measured: training seconds (steps only) and
# training FLOPs (forward + backward of every pass, counted).
COST_COLUMNS = [("unit", pa.string()), ("budget", pa.float64()), ("cost_width", pa.float64()),
                ("cost_min_w", pa.float64()), ("epochs_planned", pa.int64()), ("compute", pa.float64()),
                ("train_s", pa.float64()), ("train_flops", pa.float64())]
COST_KEYS = tuple(name for name, _ in COST_COLUMNS)
TEST_METRICS = [f"test_{m}_at_{k}" for m in ("precision", "recall", "f1") for k in KS]  # macro, of the base
PREDICTIONS_SCHEMA = pa.schema([
    ("trial_id", pa.string()), ("model", pa.string()), ("split", pa.string()), ("sample_index", pa.int64()),
    ("label", pa.int64()), ("topk", pa.list_(pa.int64())), ("topk_prob", pa.list_(pa.float32())),
])
TRIALS_SCHEMA = pa.schema(
    [("trial_id", pa.string()), ("status", pa.string()), ("error", pa.string()),
     ("r", pa.float64()), ("s", pa.int64()), ("aug_loss_weight", pa.float64()), ("lambda_kd", pa.float64()),
     ("share_fraction", pa.float64()), ("aug_every", pa.int64()), ("aug_fraction", pa.float64()),
     ("reparam_k", pa.int64()),
     ("macs_limit", pa.float64()),
     ("mode", pa.string()), ("arch", pa.string()), ("base_macs", pa.int64()),
     ("aug_macs", pa.int64()), ("epochs_run", pa.int64()), ("val_top1", pa.float64()), ("val_loss", pa.float64()),
     ("test_top1", pa.float64())]
    + [(name, pa.float64()) for name in TEST_METRICS]
    + [("aug_test_top1", pa.float64()), ("search_s", pa.float64()), ("step_s", pa.float64()),
       ("wall_s", pa.float64()), ("started_at", pa.float64())]
    + COST_COLUMNS)
# An epoch's metrics, by one name everywhere (Tune reports, epochs.parquet, TensorBoard, the study's Parquet):
# the mean losses of its steps (`aug_loss`: the sampled augmented models' or SPOS paths' CE; `distill_loss`: KD
# or RKD), the base's val (and train-subset) top-1 and loss, the last lr, seconds, and the last three cumulative.
EPOCH_METRICS = ("train_loss", "base_loss", "aug_loss", "distill_loss", "teacher_loss", "val_top1", "val_loss",
                 "train_top1", "lr", "epoch_s", "compute", "train_s", "train_flops")
# Names runs written before 2026-12-06 used; readers (analysis/, the final stage's merge) rename them on load.
RENAMED = {"rkd_loss": "distill_loss", "path_loss": "aug_loss", "val_base_top1": "val_top1"}
TENSORBOARD = ("train_loss", "base_loss", "aug_loss", "distill_loss", "lr", "val_top1", "val_loss", "train_top1",
               "val_max_top1")  # scalars against the epoch; the cost ones go under cost/
COST_SCALARS = ("train_s", "train_flops", "compute")
EPOCHS_SCHEMA = pa.schema([("trial_id", pa.string()), ("stage", pa.string()), ("arm", pa.string()),
                           ("seed", pa.int64()), ("epoch", pa.int64())]
                          + [(name, pa.float64()) for name in EPOCH_METRICS])
FINAL_SCHEMA = pa.schema(
    [("arm", pa.string()), ("mode", pa.string()), ("seed", pa.int64()), ("r", pa.float64()), ("s", pa.int64()),
     ("aug_loss_weight", pa.float64()), ("lambda_kd", pa.float64()), ("largest", pa.string()),
     ("base_macs", pa.int64()), ("aug_macs", pa.int64()), ("epochs", pa.int64()), ("train_top1", pa.float64()),
     ("val_top1", pa.float64()), ("test_top1", pa.float64())]
    + [(name, pa.float64()) for name in TEST_METRICS]
    + [("wall_s", pa.float64()), ("step_s", pa.float64()),
       # beyond the columns every consumer needs: what a reader checks the pairing and the method with
       ("trial_id", pa.string()), ("status", pa.string()), ("error", pa.string()), ("description", pa.string()),
       ("share_fraction", pa.float64()), ("val_loss", pa.float64()), ("init_digest", pa.string()),
       ("batch_digest", pa.string()), ("model_file", pa.string()),
       # the int8 model of this arm x seed (deploy.int8; netaug/train/int8.py): kept one, then each attempt
       ("int8_method", pa.string()), ("calib_images", pa.int64()), ("int8_dead_inputs", pa.int64()),
       ("fp32_onnx_test_top1", pa.float64()),
       ("int8_val_top1", pa.float64()), ("int8_test_top1", pa.float64()), ("int8_test_delta", pa.float64()),
       ("int8_test_agreement", pa.float64()), ("ptq_val_top1", pa.float64()), ("ptq_test_top1", pa.float64()),
       ("qat_val_top1", pa.float64()), ("qat_test_top1", pa.float64()), ("int8_file", pa.string())]
    + COST_COLUMNS)
INT8_COLUMNS = ("int8_method", "calib_images", "int8_dead_inputs", "fp32_onnx_test_top1", "int8_val_top1",
                "int8_test_top1", "int8_test_delta", "int8_test_agreement", "ptq_val_top1", "ptq_test_top1",
                "qat_val_top1", "qat_test_top1", "int8_file")


def best_trial(rows: Iterable[dict], metric: str) -> dict | None:
    """The sweep's best trial: the highest `metric` (the lowest for val_loss) among trials that did not error; a
    tie goes to the trial that started first (`started_at`, then trial_id). One rule for the final stage's winner,
    the run's summary and the report, so that all three name the same trial when two trials tie (a small val set
    makes ties common), whatever order their rows come in. None: no trial has a result."""
    done = [r for r in rows if r.get("status") != "ERROR" and _number(r.get(metric))]
    if not done:
        return None
    sign = 1.0 if metric == "val_loss" else -1.0
    return min(done, key=lambda r: (sign * r[metric], not _number(r.get("started_at")),
                                     r["started_at"] if _number(r.get("started_at")) else 0.0, str(r["trial_id"])))


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)


def current_names(report: dict) -> dict:
    """A report or row with the metric names of runs written before the renaming (RENAMED) brought up to date."""
    return {RENAMED.get(k, k) if RENAMED.get(k, k) not in report else k: v for k, v in report.items()}


def epoch_metrics(record, evals: dict) -> dict:
    """The one naming of an epoch's metrics: `record` (the trainer's EpochRecord) and the evaluations by prefix
    (`{"val": EvalResult, "train": ..., "val_max": ...}` give val_top1, val_loss, train_top1, val_max_top1)."""
    metrics = {"epoch": record.epoch + 1, "train_loss": record.train_loss, "base_loss": record.base_loss,
               "aug_loss": record.aug_loss, "distill_loss": record.distill_loss, "teacher_loss": record.teacher_loss,
               "lr": record.lr, "epoch_s": record.epoch_s, "train_s": record.train_s,
               "train_flops": record.train_flops}
    for prefix, result in evals.items():  # top-1 of each; the loss of val only (train_loss is training's own)
        metrics[f"{prefix}_top1"] = result.top1
    if "val" in evals:
        metrics["val_loss"] = evals["val"].loss
    return metrics


def log_epoch(writer, metrics: dict) -> None:
    """An epoch's TensorBoard scalars (a SummaryWriter): the metrics against the epoch, cost under cost/, and val
    top-1 against compute spent (in thousandths of a plain epoch) where the stage measures compute."""
    epoch = metrics["epoch"]
    for key in TENSORBOARD:
        if metrics.get(key) is not None:
            writer.add_scalar(key, metrics[key], epoch)
    for key in COST_SCALARS:
        if metrics.get(key) is not None:
            writer.add_scalar(f"cost/{key}", metrics[key], epoch)
    if metrics.get("compute") is not None and metrics.get("val_top1") is not None:
        writer.add_scalar("val_top1_by_compute", metrics["val_top1"], round(metrics["compute"] * 1000))
    writer.flush()
