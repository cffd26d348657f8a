"""Relational knowledge distillation (Park et al., CVPR 2019): distance- and angle-wise potentials.

Both compare N x N (or N x N x N) relations inside a batch, so student and teacher embeddings may
have different widths D. The teacher side carries no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_distances(e: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of an (N, D) embedding, exact zeros on the diagonal."""
    return torch.cdist(e, e, compute_mode="donot_use_mm_for_euclid_dist")


def normalised_distances(e: torch.Tensor) -> torch.Tensor:
    """Pairwise distances divided by the mean of the batch's positive distances (left as is if none)."""
    d = pairwise_distances(e)
    positive = d > 0
    if not bool(positive.any()):
        return d
    return d / d[positive].mean()


def angle_cosines(e: torch.Tensor) -> torch.Tensor:
    """(N, N, N): [i, j, k] = cos between (e_j - e_i) and (e_k - e_i); zero difference vectors give 0."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2))


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Distance-wise RKD: Huber (delta 1, mean) between the normalised distance matrices."""
    with torch.no_grad():
        t = normalised_distances(teacher.detach().float())
    return F.smooth_l1_loss(normalised_distances(student.float()), t, beta=1.0, reduction="mean")


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Angle-wise RKD: Huber (delta 1, mean) between the N x N x N cosine tensors."""
    with torch.no_grad():
        t = angle_cosines(teacher.detach().float())
    return F.smooth_l1_loss(angle_cosines(student.float()), t, beta=1.0, reduction="mean")
