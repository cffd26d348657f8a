"""Evaluation: loss, top-1/top-5 accuracy and per-sample top-K classes and probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from netaug.data import Batcher, ImageSet


@dataclass
class EvalResult:
    """Metrics of one model on one split, plus what is needed to recompute any metric @k offline."""

    loss: float
    top1: float
    top5: float
    labels: np.ndarray  # (N,) int64
    topk: np.ndarray  # (N, K) int64 class indices, best first
    topk_prob: np.ndarray  # (N, K) float32 softmax probabilities of those classes

    def summary(self) -> dict[str, float]:
        return {"loss": self.loss, "top1": self.top1, "top5": self.top5}


def topk_accuracy(topk: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among their first k predicted classes."""
    return float((topk[:, :k] == labels[:, None]).any(axis=1).mean()) if len(labels) else float("nan")


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, batcher: Batcher, batch_size: int, k: int = 5,
             autocast_dtype: torch.dtype | None = None) -> EvalResult:
    """Evaluate `model` (in eval mode) on a whole split, in order."""
    was_training = model.training
    model.eval()
    total_loss, idx_parts, prob_parts = 0.0, [], []
    try:
        for x, y in batcher.batches(data, batch_size):
            with torch.autocast(batcher.device.type, dtype=autocast_dtype or torch.bfloat16,
                                enabled=autocast_dtype is not None):
                logits = model(x)
            logits = logits.float()
            k = min(k, logits.shape[1])
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            prob, idx = logits.softmax(dim=1).topk(k, dim=1)
            idx_parts.append(idx.cpu())
            prob_parts.append(prob.cpu())
    finally:
        model.train(was_training)
    labels = data.labels.numpy()
    topk = torch.cat(idx_parts).numpy().astype(np.int64)
    topk_prob = torch.cat(prob_parts).numpy().astype(np.float32)
    return EvalResult(total_loss / max(1, len(data)), topk_accuracy(topk, labels, 1),
                      topk_accuracy(topk, labels, 5), labels, topk, topk_prob)
