"""The SPOS supernet: NetAug's augmented model at the widest setting of the search space."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from netaug.config import SpaceConfig
from netaug.data import DataSplits, make_batcher
from netaug.spos.search import LocalScorer, Score
from netaug.train.evaluate import evaluate


def supernet_scorer(cfg: SpaceConfig, data: DataSplits, state: dict) -> LocalScorer:
    """A scorer of paths of the trained supernet in `state` (a trainer checkpoint): BN recalibration on
    the trainer's fixed calibration batches, then val top-1 and loss with inherited weights."""
    from netaug.train.trainer import Trainer

    trainer = Trainer(cfg, data, mode=Trainer.SUPERNET)
    trainer.model.load_state_dict(state["model"])
    batcher = make_batcher(data, cfg.data, trainer.device, channels_last=cfg.training.channels_last)

    def score(model: torch.nn.Module) -> Score:
        result = evaluate(model, data.val, batcher, cfg.training.eval_batch_size, cfg.training.topk,
                          trainer.autocast_dtype)
        return result.top1, result.loss

    return LocalScorer(trainer.model, trainer.calibration_batches(), score)


def same_supernet(a: SpaceConfig, b: SpaceConfig) -> list[str]:
    """Keys that make two spaces build different supernets (or datasets)."""
    keys = []
    for section in ("data", "model"):
        for key, value in getattr(a, section).__dict__.items():
            if getattr(getattr(b, section), key) != value:
                keys.append(f"{section}.{key}")
    if a.r_max() != b.r_max():
        keys.append("supernet.r_max")
    for key in ("e_max", "s"):
        if getattr(a.supernet, key) != getattr(b.supernet, key):
            keys.append(f"supernet.{key}")
    return keys


def paths_from_json(paths: Sequence) -> list:
    return [(tuple(float(v) for v in w), tuple(float(v) for v in e)) for w, e in paths]
