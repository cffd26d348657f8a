"""SPOS library: uniform path sampling, MACs, BN recalibration per evaluation, limits, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch.utils.flop_counter import FlopCounterMode

from netaug.augment import augment, width_multipliers
from netaug.data import Batcher
from netaug.models import build_model, profile_macs
from netaug.spos import LocalScorer, PathEvaluator, PathSpace, evolution_search, uniform_search
from netaug.train.evaluate import evaluate


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    return augment(build_model("mobilenetv2_tiny", 10, 1, resolution=16), [1, 1.5, 2, 2.5, 3], [1, 2, 3])


def make_evaluator(supernet, digits16):
    batcher = Batcher(digits16.mean, digits16.std)
    calibration = [x for _, (x, _y) in zip(range(2), batcher.batches(digits16.train, 64))]
    val = digits16.val

    def score(model):
        r = evaluate(model, val, batcher, 512)
        return r.top1, r.loss

    return PathEvaluator(supernet, (1, 16, 16), LocalScorer(supernet, calibration, score))


def test_sampled_paths_are_valid_subnetworks_containing_the_base(supernet):
    space = PathSpace.from_grids(supernet, width_multipliers(2, 2), width_multipliers(2, 2))
    assert space.width_choices[0] == (1.0, 1.5, 2.0)
    gen = torch.Generator().manual_seed(0)
    base = supernet.template[0].net.spec
    for _ in range(30):
        path = space.sample(gen)
        spec = supernet.export(path).spec
        assert spec.stem_ch >= base.stem_ch and spec.feature_ch >= base.feature_ch
        for b, bb in zip(spec.blocks, base.blocks):
            assert b.out_ch >= bb.out_ch and (b.mid_ch or 0) >= (bb.mid_ch or 0)
            assert not b.residual or b.in_ch == b.out_ch
        assert supernet.set_active(path) == path
    with pytest.raises(ValueError):
        PathSpace.from_grids(supernet, width_multipliers(4, 2), width_multipliers(4, 2))


def test_sampling_is_uniform_per_layer(supernet):
    space = PathSpace.from_grids(supernet, width_multipliers(3, 4), width_multipliers(3, 4))
    gen = torch.Generator().manual_seed(1)
    draws = [space.sample(gen) for _ in range(3000)]
    for group in (0, 3, supernet.num_width_groups - 1):
        choices = space.width_choices[group]
        counts = [sum(d[0][group] == c for d in draws) for c in choices]
        assert chisquare(counts).pvalue > 0.001, counts
    block = 5
    counts = [sum(d[1][block] == c for d in draws) for c in space.expand_choices[block]]
    assert len(counts) == 5 and chisquare(counts).pvalue > 0.001, counts  # any multiplier <= the supernet's max


def test_path_macs_equal_a_direct_count_on_the_dynamic_network(supernet):
    space = PathSpace.from_grids(supernet, width_multipliers(3, 4), width_multipliers(3, 4))
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        path = space.sample(gen)
        supernet.set_active(path)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            supernet.eval()(torch.zeros(1, 1, 16, 16))
        assert profile_macs(supernet, (1, 16, 16))[0] == counter.get_total_flops() // 2
        assert profile_macs(supernet.export(path), (1, 16, 16))[0] == counter.get_total_flops() // 2


def test_uniform_search_recalibrates_each_evaluation_and_is_deterministic(supernet, digits16):
    space = PathSpace.from_grids(supernet, width_multipliers(2, 2), width_multipliers(2, 2))
    base_macs = profile_macs(supernet.export("min"), (1, 16, 16))[0]
    results = []
    for _ in range(2):
        evaluator = make_evaluator(supernet, digits16)
        best, table = uniform_search(evaluator, space, 6, 3 * base_macs, torch.Generator().manual_seed(3))
        assert len(table) == 6 and len({c.path for c in table}) == 6
        assert evaluator.score.recalibrations == 6  # one BN recalibration before each evaluation
        assert all(c.macs <= 3 * base_macs for c in table)
        assert best.val_top1 == max(c.val_top1 for c in table)
        results.append((best.path, [c.row() for c in table]))
    assert results[0] == results[1]
    again, _ = uniform_search(evaluator, space, 6, 3 * base_macs, torch.Generator().manual_seed(3))
    assert evaluator.score.recalibrations == 6 and again.path == results[0][0]  # cached: nothing re-evaluated


def test_evolution_never_exceeds_the_macs_limit(supernet, digits16):
    space = PathSpace.from_grids(supernet, width_multipliers(2, 2), width_multipliers(2, 2))
    base_macs = profile_macs(supernet.export("min"), (1, 16, 16))[0]
    limit = 2.5 * base_macs
    runs = []
    for _ in range(2):
        evaluator = make_evaluator(supernet, digits16)
        best, table = evolution_search(evaluator, space, limit, torch.Generator().manual_seed(4), population=4,
                                       generations=3, parents=2, mutation_prob=0.3)
        assert all(c.macs <= limit for c in table) and best.macs <= limit
        assert {c.generation for c in table} == {0, 1, 2}
        runs.append(best.path)
    assert runs[0] == runs[1]
    assert np.isfinite([c.val_loss for c in table]).all()


def test_find_astar_is_the_composed_search_and_names_its_choice(supernet, digits16):
    """find_astar (what the sweep, the search stage, the study and the rank benchmark call) gives what its parts
    give when composed by hand: NetAug's path space at (r, s), the seed's generator, the limit in base MACs."""
    from netaug.config import NetAugConfig
    from netaug.spos import find_astar

    netaug = NetAugConfig(r=2.0, s=2)
    reference = make_evaluator(supernet, digits16)
    base_macs = profile_macs(supernet.export("min"), (1, 16, 16))[0]
    space = PathSpace.from_netaug(supernet, netaug)
    best, table = uniform_search(reference, space, 5, 2.5 * base_macs, torch.Generator().manual_seed(9))
    found = find_astar(supernet, make_evaluator(supernet, digits16).score, (1, 16, 16), netaug, 5, 9, 2.5)
    assert found.chosen.path == best.path and [c.row() for c in found.table] == [c.row() for c in table]
    assert found.base_macs == base_macs and supernet.normalize(found.named) == best.path
    with pytest.raises(ValueError, match="unknown search method"):
        find_astar(supernet, reference.score, (1, 16, 16), netaug, 5, 9, method="grid")
