"""Training: the one trainer (baseline / NetAug), optimizer and schedule, evaluation, export."""

from netaug.train.evaluate import EvalResult, evaluate
from netaug.train.trainer import EpochRecord, Trainer

__all__ = ["EpochRecord", "EvalResult", "Trainer", "evaluate"]
