"""RKD and KD losses against plain loop implementations, and their invariances."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from netaug.losses import kd_kl, rkd_angle, rkd_distance, rkd_loss


def huber(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def loop_distance_loss(s: torch.Tensor, t: torch.Tensor) -> float:
    n = len(s)

    def dist(e):
        d = [[math.sqrt(sum((float(e[i, k]) - float(e[j, k])) ** 2 for k in range(e.shape[1]))) for j in range(n)]
             for i in range(n)]
        pos = [v for row in d for v in row if v > 0]
        mean = sum(pos) / len(pos)
        return [[v / mean for v in row] for row in d]

    ds, dt = dist(s), dist(t)
    return sum(huber(ds[i][j], dt[i][j]) for i in range(n) for j in range(n)) / (n * n)


def loop_angle_loss(s: torch.Tensor, t: torch.Tensor) -> float:
    n = len(s)

    def cos(e, i, j, k):
        u = [float(e[j, c]) - float(e[i, c]) for c in range(e.shape[1])]
        v = [float(e[k, c]) - float(e[i, c]) for c in range(e.shape[1])]
        nu, nv = math.sqrt(sum(x * x for x in u)), math.sqrt(sum(x * x for x in v))
        if nu == 0 or nv == 0:
            return 0.0
        return sum(a * b for a, b in zip(u, v)) / (nu * nv)

    total = sum(huber(cos(s, i, j, k), cos(t, i, j, k)) for i, j, k in itertools.product(range(n), repeat=3))
    return total / n ** 3


@pytest.mark.parametrize("seed", range(3))
def test_values_equal_a_plain_loop(seed):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 9, generator=g, dtype=torch.float64)
    s = s * 3  # large differences exercise the linear part of the Huber loss
    assert rkd_distance(s, t).item() == pytest.approx(loop_distance_loss(s, t), abs=1e-5)
    assert rkd_angle(s, t).item() == pytest.approx(loop_angle_loss(s, t), abs=1e-5)


def test_invariances():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 4, generator=g), torch.randn(8, 6, generator=g)
    d, a = rkd_distance(s, t), rkd_angle(s, t)
    for scale in (0.1, 7.0):
        assert torch.allclose(rkd_distance(s * scale, t), d, atol=1e-5)
        assert torch.allclose(rkd_distance(s, t * scale), d, atol=1e-5)
        assert torch.allclose(rkd_angle(s * scale, t), a, atol=1e-5)
        assert torch.allclose(rkd_angle(s, t * scale), a, atol=1e-5)
    shift = torch.randn(1, 4, generator=g) * 5
    assert torch.allclose(rkd_angle(s + shift, t), a, atol=1e-5)
    assert torch.allclose(rkd_angle(s, t + torch.randn(1, 6, generator=g)), a, atol=1e-5)


def test_zero_for_equal_embeddings_positive_otherwise():
    g = torch.Generator().manual_seed(1)
    e, other = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    assert rkd_distance(e, e).item() == 0 and rkd_angle(e, e).item() == pytest.approx(0, abs=1e-7)
    assert rkd_distance(e, other).item() > 0 and rkd_angle(e, other).item() > 0


def test_no_gradient_reaches_the_teacher_and_the_student_gets_one():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(5, 3, generator=g, requires_grad=True)
    t = torch.randn(5, 4, generator=g, requires_grad=True)
    (rkd_distance(s, t) + 2 * rkd_angle(s, t) + kd_kl(s[:, :3], t[:, :3], 2.0)).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


@pytest.mark.parametrize("student,teacher", [
    (torch.randn(1, 4), torch.randn(1, 6)),  # a batch of one
    (torch.ones(5, 4), torch.ones(5, 6)),  # identical embeddings
    (torch.ones(5, 4), torch.randn(5, 6)),  # collapsed student only
])
def test_degenerate_batches_give_finite_losses_and_gradients(student, teacher):
    s = student.clone().requires_grad_(True)
    loss = rkd_distance(s, teacher) + rkd_angle(s, teacher)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_kd_kl_matches_the_definition():
    g = torch.Generator().manual_seed(3)
    s, t, T = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g), 3.0
    p_t, p_s = (t / T).softmax(1), (s / T).softmax(1)
    expected = (p_t * (p_t.log() - p_s.log())).sum(1).mean() * T * T
    assert kd_kl(s, t, T).item() == pytest.approx(expected.item(), rel=1e-5)
    assert kd_kl(t, t, T).item() == pytest.approx(0, abs=1e-6)


# ---------------------------------------------------------------- the Gram form against the direct one
def direct_relations(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The O(N^3 D) reference: (N, N, D) difference vectors in float64, exact zeros masked (value 0,
    gradient 0), normalised distances and the batched matmul of unit differences."""
    e = e.double()
    diff = e.unsqueeze(0) - e.unsqueeze(1)  # [i, j] = e_j - e_i
    sq = (diff * diff).sum(2)
    nonzero = sq > 0
    norm = torch.where(nonzero, sq, torch.ones_like(sq)).sqrt()
    dist = norm * nonzero
    if nonzero.any():  # all rows equal: every distance stays 0
        dist = dist / dist[nonzero].mean()
    unit = torch.where(nonzero[..., None], diff / norm[..., None], torch.zeros_like(diff))
    return dist, torch.bmm(unit, unit.transpose(1, 2))


def direct_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        td, ta = direct_relations(teacher)
    sd, sa = direct_relations(student)
    return F.smooth_l1_loss(sd, td, beta=1.0) + 2 * F.smooth_l1_loss(sa, ta, beta=1.0)


def embeddings(n: int, d: int, duplicates: bool, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, d, generator=g, dtype=torch.float64) + 3.0  # an offset, as after a ReLU
    t = torch.randn(n, d + 7, generator=g, dtype=torch.float64)
    if duplicates:  # the same image twice in a batch: rows 0 = 1 (and = 2 when there is one) on both sides
        s[1], t[1] = s[0], t[0]
        if n > 3:
            s[n - 1], t[n - 1] = s[0], t[0]
    return s, t


@pytest.mark.parametrize("n", [2, 3, 64, 128])
@pytest.mark.parametrize("d", [1, 10, 448, 1280])
@pytest.mark.parametrize("duplicates", [False, True])
def test_gram_form_equals_the_direct_form_in_value_and_gradient(n, d, duplicates):
    s, t = embeddings(n, d, duplicates, seed=n * 10_000 + d)
    ours_s = s.clone().requires_grad_(True)
    ours = rkd_loss(ours_s, t, 1.0, 2.0)
    ours.backward()
    ref_s = s.clone().requires_grad_(True)
    ref = direct_loss(ref_s, t)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-12)
    scale = ref_s.grad.abs().max().item()
    assert torch.isfinite(ours_s.grad).all()
    assert (ours_s.grad - ref_s.grad).abs().max().item() <= 1e-5 * scale + 1e-15
    # float32 embeddings (what a model gives) reach the same value and gradient
    s32 = s.float().requires_grad_(True)
    loss32 = rkd_loss(s32, t.float(), 1.0, 2.0)
    loss32.backward()
    assert loss32.dtype == torch.float32
    assert loss32.item() == pytest.approx(direct_loss(s.float().double(), t.float().double()).item(), rel=1e-5,
                                          abs=1e-12)


def test_a_duplicate_row_adds_no_gradient_spike():
    """The same image twice in a 16 x 10 batch: the duplicate pair contributes 0, and the gradient
    stays on the scale of the others (F.normalize's eps made it 7.6e8 before)."""
    s, t = embeddings(16, 10, duplicates=True, seed=5)
    s = s.float().requires_grad_(True)
    rkd_loss(s, t.float(), 1.0, 2.0).backward()
    clean, _ = embeddings(16, 10, duplicates=False, seed=5)
    clean = clean.float().requires_grad_(True)
    rkd_loss(clean, t.float(), 1.0, 2.0).backward()
    assert s.grad.abs().max() < 10 * clean.grad.abs().max()


def test_the_terms_add_up_and_the_teacher_gets_no_graph():
    s, t = embeddings(32, 12, duplicates=True, seed=9)
    t = t.requires_grad_(True)
    both = rkd_loss(s, t, 0.7, 1.9)
    assert both.item() == pytest.approx(0.7 * rkd_distance(s, t).item() + 1.9 * rkd_angle(s, t).item(), rel=1e-12)
    assert not both.requires_grad  # neither side asked for a gradient: the teacher's is never built
    assert rkd_loss(s, t, 0.0, 0.0).item() == 0
