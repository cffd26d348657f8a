"""What every training trial (sweep and final) shares: its data cached per worker process, and the
last evaluation that writes per-sample predictions and test metrics@k."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from netaug.config import SpaceConfig
from netaug.io import write_parquet
from netaug.records import KS, PREDICTIONS_SCHEMA
from netaug.spos import path_id

_DATA_CACHE: dict[str, object] = {}


def cached_data(cfg: SpaceConfig):
    """The trial's data, loaded once per worker process (Tune reuses the process for the next trial)."""
    from netaug.data import load_data

    key = json.dumps(cfg.data.__dict__, sort_keys=True)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_data(cfg.data)
    return _DATA_CACHE[key]


def final_evaluation(trainer, fragment: Path, trial_id: str, base_model: str = "base", with_aug: bool = True) -> dict:
    """Val and test of the base (named `base_model`) and, `with_aug`, of the largest augmented model
    (as "aug:<id>"); per-sample predictions to the Parquet `fragment`; test metrics@k of the base."""
    from netaug.metrics import precision_recall_f1_at_k

    num_classes = trainer.data.num_classes
    subnets = [(base_model, "min")]
    if with_aug and trainer.augmented is not None:
        subnets.append((f"aug:{path_id(trainer.augmented.config('max'))}", "max"))
    rows = []
    out: dict = {}
    for split in ("val", "test"):
        results = trainer.evaluate(split, subnets)
        if trainer.augmented is None:  # evaluate() names a plain model "base"
            results = {base_model: results["base"]}
        for model, res in results.items():
            n = len(res.labels)
            rows.append(pa.table({
                "trial_id": [trial_id] * n, "model": [model] * n, "split": [split] * n,
                "sample_index": list(range(n)), "label": res.labels.tolist(), "topk": res.topk.tolist(),
                "topk_prob": res.topk_prob.tolist()}, schema=PREDICTIONS_SCHEMA))
        base = results[base_model]
        out[f"{split}_top1_final"] = base.top1
        out[f"{split}_loss_final"] = base.loss
        if split == "test":
            out["test_top1"] = base.top1
            for k in KS:
                scores = precision_recall_f1_at_k(base.topk, base.labels, k, num_classes, "macro")
                for name, value in scores.items():
                    out[f"test_{name}_at_{k}"] = float(value)
            if len(subnets) > 1:
                out["aug_test_top1"] = results[subnets[1][0]].top1
    write_parquet(pa.concat_tables(rows), fragment)
    return out
