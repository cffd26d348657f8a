"""netaug/records.py: one name per epoch metric in the epoch loop's results, the Parquet schema and TensorBoard."""

from __future__ import annotations

import pytest

from netaug.records import COST_SCALARS, EPOCH_METRICS, RENAMED, TENSORBOARD, current_names, epoch_metrics, log_epoch


def test_one_epoch_of_run_epochs_is_named_as_epochs_parquet_names_it(digits16, fast_cfg, tmp_path):
    """Trainer.run_epochs hands each stage the metrics under epochs.parquet's names; TensorBoard gets the same
    names (read back from the event file), the cost ones under cost/."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from netaug.train import Trainer

    trainer = Trainer(fast_cfg, digits16)
    trainer.cfg.training.epochs = 1
    seen = []
    subset = digits16.train.take(list(range(100)))
    trainer.run_epochs(seen.append, evals=(("val", "val", "min"), ("train", subset, "min"), ("val_max", "val", "max")))
    (result,) = seen
    m = result.metrics
    assert m["epoch"] == 1 and result.busy_s >= result.record.epoch_s > 0
    assert set(EPOCH_METRICS) - {"compute"} <= set(m)  # compute is the stage's (its calibrated plan)
    assert m["train_loss"] == result.record.train_loss != m["train_top1"]  # training's loss, not the subset's
    assert m["val_top1"] == result.evals["val"].top1 and m["val_loss"] == result.evals["val"].loss
    assert m["train_top1"] == result.evals["train"].top1 and m["val_max_top1"] == result.evals["val_max"].top1
    assert result.record.val == result.evals["val"].summary()  # what Trainer.fit's callers read

    writer = SummaryWriter(str(tmp_path / "tb"))
    log_epoch(writer, {**m, "compute": 4.5})
    writer.close()
    events = EventAccumulator(writer.log_dir)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {*TENSORBOARD, *(f"cost/{k}" for k in COST_SCALARS), "val_top1_by_compute"}
    assert events.Scalars("distill_loss")[0].value == pytest.approx(m["distill_loss"])
    assert events.Scalars("val_top1_by_compute")[0].step == 4500


def test_old_names_become_todays_unless_both_are_there():
    old = {"rkd_loss": 0.5, "path_loss": 1.0, "val_base_top1": 0.9, "lr": 0.1}
    assert current_names(old) == {"distill_loss": 0.5, "aug_loss": 1.0, "val_top1": 0.9, "lr": 0.1}
    both = {"rkd_loss": 0.5, "distill_loss": 0.7}
    assert current_names(both) == both
    assert set(RENAMED.values()) <= set(EPOCH_METRICS) and not set(RENAMED) & set(EPOCH_METRICS)


def test_epoch_metrics_reports_loss_for_val_only():
    from types import SimpleNamespace as N

    record = N(epoch=2, train_loss=1.5, base_loss=1.0, aug_loss=0.4, distill_loss=0.1, teacher_loss=0.0, lr=0.01,
               epoch_s=3.0, train_s=9.0, train_flops=1e9)
    m = epoch_metrics(record, {"val": N(top1=0.8, loss=0.6), "train": N(top1=0.9, loss=0.2)})
    assert m["epoch"] == 3 and m["train_loss"] == 1.5 and m["val_loss"] == 0.6 and m["train_top1"] == 0.9
