"""precision/recall/F1@k agree with torchmetrics 1.9 (the oracle), on random and adversarial inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from netaug.metrics import precision_recall_f1_at_k

AVERAGES = ["macro", "micro", "none"]


def scores_from_topk(topk: np.ndarray, num_classes: int, rng: np.random.Generator) -> torch.Tensor:
    """A score matrix whose descending order starts with `topk` (no ties), for torchmetrics."""
    n, kk = topk.shape
    scores = rng.uniform(-1, 0, (n, num_classes))
    for j in range(kk):
        scores[np.arange(n), topk[:, j]] = kk - j
    return torch.tensor(scores)


def oracle(scores: torch.Tensor, labels: np.ndarray, k: int, num_classes: int, average: str) -> dict:
    target = torch.tensor(labels)
    out = {}
    for name, cls in (("precision", MulticlassPrecision), ("recall", MulticlassRecall), ("f1", MulticlassF1Score)):
        out[name] = cls(num_classes=num_classes, top_k=k, average=average)(scores, target).numpy()
    return out


def check(topk: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0) -> None:
    scores = scores_from_topk(topk, num_classes, np.random.default_rng(seed))
    assert np.array_equal(scores.topk(topk.shape[1], dim=1).indices.numpy(), topk)
    for k in (1, 3, 5):
        if k > topk.shape[1]:
            continue
        for average in AVERAGES:
            ours = precision_recall_f1_at_k(topk, labels, k, num_classes, average)
            ref = oracle(scores, labels, k, num_classes, average)
            for key in ("precision", "recall", "f1"):
                np.testing.assert_allclose(ours[key], ref[key], atol=1e-6, err_msg=f"{key} k={k} {average}")


def random_topk(rng, n: int, num_classes: int, kk: int) -> np.ndarray:
    return np.stack([rng.permutation(num_classes)[:kk] for _ in range(n)])


@pytest.mark.parametrize("seed", range(6))
def test_random_inputs(seed):
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(5, 15))
    n = int(rng.integers(1, 200))
    check(random_topk(rng, n, num_classes, 5), rng.integers(0, num_classes, n), num_classes, seed)


def test_every_sample_predicted_as_the_same_class():
    rng = np.random.default_rng(1)
    topk = np.tile(np.array([3, 0, 1, 2, 4]), (60, 1))
    labels = rng.integers(0, 10, 60)
    check(topk, labels, 10)
    collapsed = precision_recall_f1_at_k(topk, labels, 1, 10, "none")
    assert collapsed["recall"][3] == 1.0 and np.count_nonzero(collapsed["recall"]) == 1


def test_classes_that_never_occur_and_k_equal_to_K():
    rng = np.random.default_rng(2)
    labels = rng.choice([0, 2, 5], 80)  # classes 1, 3, 4, 6..9 never occur as labels
    topk = random_topk(rng, 80, 10, 5)
    check(topk, labels, 10)
    check(topk[:, :3], labels, 10)  # k = K = 3
    check(random_topk(rng, 50, 5, 5), rng.integers(0, 5, 50), 5)  # k = K = 5 = num_classes: recall 1


def test_perfect_and_empty_edge_cases():
    labels = np.array([0, 1, 2, 3])
    topk = np.stack([labels, (labels + 1) % 4, (labels + 2) % 4], axis=1)
    for average in AVERAGES:
        out = precision_recall_f1_at_k(topk, labels, 1, 4, average)
        assert np.all(np.asarray(out["precision"]) == 1.0) and np.all(np.asarray(out["f1"]) == 1.0)
    with pytest.raises(ValueError):
        precision_recall_f1_at_k(topk, labels, 4, 4)
    with pytest.raises(ValueError):
        precision_recall_f1_at_k(topk, labels, 1, 4, "weighted")
