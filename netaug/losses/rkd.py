"""Relational knowledge distillation (Park et al., CVPR 2019): distance- and angle-wise potentials.

Both potentials come from the batch's Gram matrix G = E Eᵀ of the (centred) embeddings, in O(N²·D)
for G and O(N³) for the angles, never from the (N, N, D) difference vectors:
    ‖e_j − e_i‖² = G_ii + G_jj − 2 G_ij,   ⟨e_j − e_i, e_k − e_i⟩ = G_jk − G_ij − G_ik + G_ii.
They are computed in float64 (centring removes the common offset, so the subtraction loses little);
a zero difference (two equal rows) contributes 0 to the potential and to its gradient. Student and
teacher may have different widths D; the teacher side is built once, without a graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Relations:
    """The relations of one batch of embeddings: distances (N, N), normalised by the mean of the
    positive ones, and angle cosines (N, N, N): [i, j, k] = cos(e_j − e_i, e_k − e_i)."""

    distances: torch.Tensor | None
    cosines: torch.Tensor | None


def relations(e: torch.Tensor, distances: bool = True, angles: bool = True) -> Relations:
    """The distance and/or angle relations of an (N, D) embedding, from one Gram matrix (float64)."""
    x = e.double().flatten(1)
    x = x - x.mean(0, keepdim=True)  # translation changes neither potential; it keeps G's entries small
    gram = x @ x.T
    sq_norms = gram.diagonal()
    pair = sq_norms[:, None] + sq_norms[None, :]
    sq = (pair - 2 * gram).clamp_min(0)
    # what is left of an exact zero after rounding: a dot product's error is below D * eps * |a| |b|
    nonzero = sq > 8 * x.shape[1] * torch.finfo(torch.float64).eps * pair
    safe = torch.where(nonzero, sq, torch.ones_like(sq))  # zero pairs: value 0 and gradient 0
    mask = nonzero.to(sq.dtype)
    dist = cos = None
    if distances:
        dist = safe.sqrt() * mask
        dist = dist / (dist.sum() / mask.sum().clamp_min(1)).clamp_min(torch.finfo(torch.float64).tiny)
    if angles:
        inv = safe.rsqrt() * mask
        inner = gram[None, :, :] - gram[:, :, None] - gram[:, None, :] + sq_norms[:, None, None]
        cos = inner * inv[:, :, None] * inv[:, None, :]
    return Relations(dist, cos)


def rkd_loss(student: torch.Tensor, teacher: torch.Tensor, distance_weight: float = 1.0,
             angle_weight: float = 2.0) -> torch.Tensor:
    """w_d · RKD-D + w_a · RKD-A: Huber (delta 1, mean) between the student's and the detached teacher's
    normalised distances (N × N) and angle cosines (N × N × N); one Gram matrix per side."""
    want_d, want_a = distance_weight != 0, angle_weight != 0
    with torch.no_grad():
        t = relations(teacher.detach(), want_d, want_a)
    s = relations(student, want_d, want_a)
    loss = torch.zeros((), dtype=torch.float64, device=student.device)
    if want_d:
        loss = loss + distance_weight * F.smooth_l1_loss(s.distances, t.distances, beta=1.0, reduction="mean")
    if want_a:
        loss = loss + angle_weight * F.smooth_l1_loss(s.cosines, t.cosines, beta=1.0, reduction="mean")
    return loss.to(student.dtype if student.is_floating_point() else torch.float32)


def rkd_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Distance-wise RKD: Huber (delta 1, mean) between the normalised distance matrices."""
    return rkd_loss(student, teacher, 1.0, 0.0)


def rkd_angle(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Angle-wise RKD: Huber (delta 1, mean) between the N x N x N cosine tensors."""
    return rkd_loss(student, teacher, 0.0, 1.0)
