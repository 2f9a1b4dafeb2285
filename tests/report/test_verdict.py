"""The one verdict rule, mean_spread and make_result's checks, on hand-made effect lists."""
from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cuekit.report import make_result, mean_spread, verdict


def test_held_when_every_seed_has_the_sign_and_mean_exceeds_spread():
    assert verdict([0.05, 0.06, 0.055]) == "held"
    assert verdict([0.05, 0.06, 0.055], expected_sign=1) == "held"


def test_did_not_hold_when_every_seed_has_the_opposite_sign():
    assert verdict([-0.05, -0.06, -0.04]) == "did not hold"


def test_mixed_signs_are_inconclusive():
    assert verdict([0.5, -0.1, 0.6, 0.7]) == "inconclusive"
    assert verdict([0.0, 0.3, 0.4]) == "inconclusive"  # a zero effect is not the paper's sign


def test_mean_inside_the_spread_is_inconclusive():
    effects = [0.01, 0.02, 1.0]  # all positive, but one seed dominates
    assert statistics.fmean(effects) < statistics.stdev(effects)
    assert verdict(effects) == "inconclusive"
    assert verdict([-e for e in effects]) == "inconclusive"


def test_fewer_than_three_seeds_is_always_inconclusive():
    assert verdict([]) == "inconclusive"
    assert verdict([1.0]) == "inconclusive"
    assert verdict([1.0, 1.1]) == "inconclusive"
    assert verdict([-1.0, -1.1], expected_sign=-1) == "inconclusive"


def test_expected_sign_minus_one():
    lower_is_better = [-0.02, -0.03, -0.025]  # e.g. error of the method minus the baseline's
    assert verdict(lower_is_better, expected_sign=-1) == "held"
    assert verdict([-e for e in lower_is_better], expected_sign=-1) == "did not hold"


def test_nan_effect_is_inconclusive():
    assert verdict([0.1, math.nan, 0.1]) == "inconclusive"


@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), max_size=8))
def test_flipping_the_sign_mirrors_the_verdict(effects):
    mirrored = {"held": "did not hold", "did not hold": "held", "inconclusive": "inconclusive"}
    assert verdict(effects, expected_sign=-1) == verdict([-e for e in effects], expected_sign=1)
    assert verdict([-e for e in effects]) == mirrored[verdict(effects)]
    if verdict(effects) == "held":
        assert len(effects) >= 3 and min(effects) > 0


def test_mean_spread():
    assert mean_spread([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_spread([4.0]) == (4.0, 0.0)


def _result(**kw):
    base = dict(area="a", title="t", claim="c", measured="m", verdict="inconclusive",
                table={"columns": ["x"], "rows": [[1]]})
    return make_result(**{**base, **kw})


def test_make_result_rejects_a_verdict_outside_the_rule():
    with pytest.raises(ValueError, match="verdict must be one of"):
        _result(verdict="holds")
    with pytest.raises(ValueError, match="does not follow the rule"):
        _result(verdict="held", effects=[0.1, -0.1, 0.2], expected_sign=1)
    with pytest.raises(ValueError, match="both"):
        _result(effects=[0.1, 0.2, 0.3])


def test_make_result_keeps_effects_that_agree_with_the_rule():
    r = _result(verdict="held", effects=[-0.1, -0.2, -0.15], expected_sign=-1, seeds=[0, 1, 2])
    assert r["effects"] == [-0.1, -0.2, -0.15] and r["expected_sign"] == -1 and r["seeds"] == [0, 1, 2]
    assert "effects" not in _result()  # the original contract's keys are unchanged without them
