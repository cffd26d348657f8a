"""Paired statistics over seeds (netaug.stats) against scipy, and the plain-words answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from netaug.stats import arm_comparisons, comparison_lines, final_table_lines, paired_difference


@pytest.mark.parametrize("n,confidence", [(2, 0.95), (3, 0.95), (5, 0.9), (8, 0.99)])
def test_interval_and_p_value_equal_scipys_paired_t_test(n, confidence):
    rng = np.random.default_rng(n)
    base = rng.uniform(0.7, 0.9, n)
    arm = base + rng.normal(0.01, 0.02, n)
    ours = paired_difference(arm, base, confidence)
    ref = stats.ttest_rel(arm, base)
    ci = ref.confidence_interval(confidence)
    assert ours.n == n and ours.mean == pytest.approx(float(np.mean(arm - base)), abs=1e-15)
    assert ours.p_value == pytest.approx(float(ref.pvalue), rel=1e-10)
    assert ours.low == pytest.approx(float(ci.low), rel=1e-10) and ours.high == pytest.approx(float(ci.high), rel=1e-10)
    assert ours.significant == (ref.pvalue < 1 - confidence)
    # the interval excludes 0 exactly when the test rejects at the same level
    assert (ours.low > 0 or ours.high < 0) == ours.significant


def test_one_seed_and_constant_differences_give_no_test():
    one = paired_difference([0.8], [0.7])
    assert one.n == 1 and one.mean == pytest.approx(0.1) and math.isnan(one.low) and math.isnan(one.p_value)
    assert not one.significant and "no interval" in one.verdict()
    same = paired_difference([0.8, 0.9], [0.7, 0.8])
    assert same.sd < 1e-12 and math.isnan(same.p_value) and not same.significant
    with pytest.raises(ValueError):
        paired_difference([0.1, 0.2], [0.1])


def _rows(values: dict[str, dict[int, float]]) -> list[dict]:
    return [{"arm": arm, "mode": arm, "seed": seed, "test_top1": v, "train_top1": v, "val_top1": v,
             "status": "TERMINATED", "description": f"{arm} method"}
            for arm, by_seed in values.items() for seed, v in by_seed.items()]


def test_arms_are_paired_by_seed_not_by_position():
    rows = _rows({"baseline": {0: 0.80, 1: 0.90, 2: 0.85}, "winner": {2: 0.86, 0: 0.82}})  # seed 1 missing
    (cmp,) = arm_comparisons(rows)
    assert cmp.seeds == (0, 2) and cmp.result.n == 2
    assert cmp.result.mean == pytest.approx(((0.82 - 0.80) + (0.86 - 0.85)) / 2)
    ref = stats.ttest_rel([0.82, 0.86], [0.80, 0.85])
    assert cmp.result.p_value == pytest.approx(float(ref.pvalue))
    line = cmp.line()
    assert line.startswith("winner (winner method) vs baseline: test top-1 +1.50 pts [") and "2 seeds" in line


def test_when_plain_training_wins_the_answer_says_so():
    rows = _rows({"baseline": {0: 0.90, 1: 0.91, 2: 0.92}, "winner": {0: 0.85, 1: 0.87, 2: 0.86},
                  "netaug_fixed": {0: 0.89, 1: 0.905, 2: 0.915}})
    lines = comparison_lines(arm_comparisons(rows), rows)
    assert any("winner (winner method) vs baseline: test top-1 -5.00 pts" in ln for ln in lines)
    assert lines[-1].startswith("Answer: no. Plain training beat every NetAug arm here")
    assert "significantly for winner" in lines[-1]


def test_a_significant_gain_is_reported_as_one():
    rows = _rows({"baseline": {0: 0.80, 1: 0.81, 2: 0.82, 3: 0.80}, "winner": {0: 0.83, 1: 0.845, 2: 0.85, 3: 0.83}})
    lines = comparison_lines(arm_comparisons(rows), rows)
    assert lines[-1].startswith("Answer: yes. winner beat plain training by +3.12 pts")
    table = final_table_lines(rows)
    assert table[0] == "final: 8 trials (8 finished, 0 errored)" and "0.8387 ± 0.0103" in table[-1]


def test_no_baseline_means_no_comparison():
    rows = _rows({"winner": {0: 0.8}})
    assert arm_comparisons(rows) == []
    assert "needs a baseline arm" in comparison_lines([], rows)[0]


def test_a_tie_is_neither_a_loss_nor_a_gain():
    rows = _rows({"baseline": {0: 0.98, 1: 0.97}, "winner": {0: 0.97, 1: 0.98}, "netaug_fixed": {0: 0.96, 1: 0.965}})
    lines = comparison_lines(arm_comparisons(rows), rows)
    assert any("winner (winner method) vs baseline: test top-1 +0.00 pts" in ln and "p = 1 (Holm 1)," in ln
               for ln in lines)
    assert lines[-1].startswith("Answer: no. No NetAug arm beat plain training here: winner tied with it")
    assert "netaug_fixed fell behind" in lines[-1]


def test_the_answer_agrees_with_the_arm_lines_in_the_new_users_case():
    """Found as a new user: one arm 1.67 pts behind baseline with p = 0.0305, another ahead but not
    significantly, 2 seeds. The arm line said "significant at 5%: baseline is better"; the answer said "No arm
    differs significantly". The answer must agree with its lines. Two arms are two tests: after Holm
    (p 0.0305 x 2 = 0.061) the worse arm is not significant either, and line and answer both say so."""
    rows = _rows({"baseline": {0: 0.80, 1: 0.82}, "netaug_fixed": {0: 0.80 - 0.0159, 1: 0.82 - 0.0175},
                  "winner": {0: 0.81, 1: 0.815}})
    comps = {c.arm: c for c in arm_comparisons(rows)}
    fixed, winner = comps["netaug_fixed"], comps["winner"]
    raw = float(stats.ttest_rel([0.7841, 0.8025], [0.80, 0.82]).pvalue)
    assert fixed.result.p_value == pytest.approx(raw) and round(raw, 4) == 0.0305
    assert fixed.family == winner.family == 2 and fixed.holm_p == pytest.approx(2 * raw)
    assert fixed.result.significant and not fixed.significant and not winner.significant
    lines = comparison_lines(list(comps.values()), rows)
    (fixed_line,) = [ln for ln in lines if ln.strip().startswith("netaug_fixed")]
    assert "-1.67 pts [-2.69, -0.65], p = 0.0305 (Holm 0.0609)" in fixed_line
    assert fixed_line.endswith("not significant at 5% after Holm over 2 arms")
    assert lines[-1].startswith("Answer: not shown. No arm differs significantly (Holm over 2 arms)")
    # compared alone, the same arm is one test: significant, and the answer says plain training won
    alone = [r for r in rows if r["arm"] != "winner"]
    lines = comparison_lines(arm_comparisons(alone), alone)
    assert lines[1].endswith("2 seeds: significant at 5%: baseline is better") and "Holm" not in lines[1]
    assert lines[-1].startswith("Answer: no. Plain training beat every NetAug arm here "
                                "(significantly for netaug_fixed)")


def test_an_arm_significantly_behind_after_holm_is_named_in_the_answer():
    rows = _rows({"baseline": {0: 0.80, 1: 0.82, 2: 0.81}, "netaug_fixed": {0: 0.784, 1: 0.8042, 2: 0.7939},
                  "winner": {0: 0.81, 1: 0.815, 2: 0.808}})
    comps = {c.arm: c for c in arm_comparisons(rows)}
    fixed = comps["netaug_fixed"]
    assert fixed.significant and fixed.holm_p < 0.05 and not comps["winner"].significant
    lines = comparison_lines(list(comps.values()), rows)
    assert any(ln.strip().startswith("netaug_fixed") and ln.endswith("significant at 5% after Holm over 2 arms: "
                                                                      "baseline is better") for ln in lines)
    answer = lines[-1]
    assert answer.startswith("Answer: no.") and "No arm differs significantly" not in answer
    assert "netaug_fixed fell significantly behind it" in answer and "winner did not differ significantly" in answer


def test_the_arms_are_one_family_for_holm():
    """Each comparison's Holm p is holm() over the arms' raw p-values; significance follows it."""
    from netaug.stats import holm

    rng = np.random.default_rng(0)
    base = {s: 0.8 + 0.01 * s for s in range(4)}
    shifts = {"a": 0.02, "b": 0.006, "c": 0.0}  # b: raw p 0.032 < 0.05, Holm 0.065
    rows = _rows({"baseline": base, **{arm: {s: v + shift + rng.normal(0, 0.006) for s, v in base.items()}
                                       for arm, shift in shifts.items()}})
    comps = arm_comparisons(rows)
    raw = [c.result.p_value for c in comps]
    assert [c.holm_p for c in comps] == pytest.approx(holm(raw))
    assert all(c.family == 3 for c in comps)
    assert [c.significant for c in comps] == [p < 0.05 for p in holm(raw)] == [True, False, False]
    assert [c.result.significant for c in comps] == [True, True, False]


def test_holm_matches_the_step_down_definition():
    from netaug.stats import holm

    p = [0.01, 0.04, 0.03, float("nan"), 0.5]
    adjusted = holm(p)
    # sorted: 0.01 (x4), 0.03 (x3), 0.04 (x2), 0.5 (x1); running maximum
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.09)
    assert adjusted[1] == pytest.approx(0.09) and adjusted[4] == pytest.approx(0.5)
    assert math.isnan(adjusted[3])
    assert holm([0.4, 0.3]) == [pytest.approx(0.6), pytest.approx(0.6)]
