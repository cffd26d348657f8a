"""precision@k, recall@k and F1@k with exactly torchmetrics 1.9's multiclass semantics, in numpy.

Numpy only, so analysis scripts can compute them from Parquet without torch. See docs/metrics.md.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Average = Literal["macro", "micro", "none"]


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, with 0 where den is 0 (torchmetrics' zero_division=0)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den != 0)


def _macro(score: np.ndarray, included: np.ndarray) -> float:
    weights = included.astype(np.float64)
    total = weights.sum()
    return float((weights * score).sum() / total) if total > 0 else 0.0


def topk_predictions(topk: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """A sample's top-k prediction: its label when the label is among its k best classes, else its top-1."""
    hit = (topk[:, :k] == labels[:, None]).any(axis=1)
    return np.where(hit, labels, topk[:, 0])


def precision_recall_f1_at_k(topk, labels, k: int, num_classes: int, average: Average = "macro"
                             ) -> dict[str, float | np.ndarray]:
    """{"precision", "recall", "f1"} at k, as torchmetrics' Multiclass{Precision,Recall,F1Score}(top_k=k).

    `topk` is an (N, K) array of class indices, best first, with K >= k; `labels` is (N,).
    Macro averages skip classes as torchmetrics does: precision and recall skip classes with no
    TP, FP or FN when k == 1 and classes absent from the labels when k > 1; F1 always skips only
    classes with no TP, FP or FN. `average="none"` gives per-class arrays of length num_classes.
    """
    topk = np.asarray(topk)
    labels = np.asarray(labels)
    if topk.ndim != 2 or labels.ndim != 1 or len(topk) != len(labels):
        raise ValueError(f"topk must be (N, K) and labels (N,), got {topk.shape} and {labels.shape}")
    if not 1 <= k <= topk.shape[1]:
        raise ValueError(f"k must be in [1, K={topk.shape[1]}], got {k}")
    if average not in ("macro", "micro", "none"):
        raise ValueError(f"average must be macro, micro or none, got {average!r}")
    topk, labels = topk.astype(np.int64), labels.astype(np.int64)
    pred = topk_predictions(topk, labels, k)
    tp = np.bincount(labels[pred == labels], minlength=num_classes)[:num_classes]
    fp = np.bincount(pred, minlength=num_classes)[:num_classes] - tp
    fn = np.bincount(labels, minlength=num_classes)[:num_classes] - tp

    if average == "micro":
        return {"precision": float(_safe_divide(tp.sum(), tp.sum() + fp.sum())),
                "recall": float(_safe_divide(tp.sum(), tp.sum() + fn.sum())),
                "f1": float(_safe_divide(2 * tp.sum(), 2 * tp.sum() + fn.sum() + fp.sum()))}
    precision = _safe_divide(tp, tp + fp)
    recall = _safe_divide(tp, tp + fn)
    f1 = _safe_divide(2 * tp, 2 * tp + fn + fp)
    if average == "none":
        return {"precision": precision, "recall": recall, "f1": f1}
    seen = (tp + fp + fn) > 0
    pr_included = seen if k == 1 else (tp + fn) > 0
    return {"precision": _macro(precision, pr_included), "recall": _macro(recall, pr_included),
            "f1": _macro(f1, seen)}
