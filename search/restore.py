"""Continuing a stage's Tune experiment: one rule for all stages, and a quiet restore."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from ray import tune

from netaug.errors import UserError

_ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"


class _NotYetReported(logging.Filter):
    """Drops Tune's warning, on a restore, that trials have no result files: those not started yet have none."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to fetch metrics for")


@contextlib.contextmanager
def _quiet_analysis() -> Iterator[None]:
    logger, quiet = logging.getLogger(_ANALYSIS_LOGGER), _NotYetReported()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def restored_tuner(path: Path, run_dir: Path, stage: str, resume: bool, trainable, **kwargs) -> tune.Tuner | None:
    """The stage's Tuner restored from `path` (its experiment folder) to continue, or None when there is nothing
    to continue. Without `resume`, an experiment already there is refused: one line naming --out."""
    if not tune.Tuner.can_restore(str(path)):
        return None
    if not resume:
        raise UserError(f"--out: {run_dir} already holds a {stage} run; pass --resume to continue it "
                        "or choose a new --out")
    with _quiet_analysis():
        return tune.Tuner.restore(str(path), trainable=trainable, **kwargs)
