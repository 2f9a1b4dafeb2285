"""The one verdict rule, mean_spread and make_result's checks, on hand-made effect lists."""
from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cuekit.report import claim, make_result, mean_spread, precondition, verdict


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


def _claim(**kw):
    base = dict(id="c", claim="X beats Y", measure="acc X - acc Y", effects=[0.1, 0.2, 0.15], headline=True)
    return claim(**{**base, **kw})


def _result(claims=None, **kw):
    base = dict(area="a", title="t", claim="c", measured="m", table={"columns": ["x"], "rows": [[1]]},
                regime="r", claims=claims if claims is not None else [_claim()])
    return make_result(**{**base, **kw})


def test_a_claim_follows_the_rule_unless_a_precondition_fails():
    assert _claim()["verdict"] == "held"
    assert _claim(effects=[-0.1, -0.2, -0.15])["verdict"] == "did not hold"
    assert _claim(expected_sign=-1, effects=[-0.1, -0.2, -0.15])["verdict"] == "held"
    failed = _claim(preconditions=[precondition("baseline beats chance", False, "0.2 vs 0.25"),
                                   precondition("cue learnable", True)])
    assert failed["verdict"] == "inconclusive" and failed["failed_preconditions"] == ["baseline beats chance"]
    assert _claim(effects=[0.1, 0.2])["verdict"] == "inconclusive"  # fewer than 3 seeds


def test_make_result_takes_the_headline_claims_verdict():
    side = _claim(id="side", headline=False, effects=[-0.1, -0.2, -0.3])
    r = _result(claims=[side, _claim()], seeds=[0, 1, 2])
    assert r["verdict"] == "held" and r["effects"] == [0.1, 0.2, 0.15] and r["expected_sign"] == 1
    assert [c["verdict"] for c in r["claims"]] == ["did not hold", "held"] and r["regime"] == "r"
    with pytest.raises(ValueError, match="headline claim"):
        _result(verdict="did not hold")


def test_make_result_rejects_malformed_claims():
    with pytest.raises(ValueError, match="exactly one claim must be the headline"):
        _result(claims=[_claim(headline=False)])
    with pytest.raises(ValueError, match="exactly one claim must be the headline"):
        _result(claims=[_claim(), _claim(id="d")])
    with pytest.raises(ValueError, match="appears twice"):
        _result(claims=[_claim(), _claim(headline=False)])
    with pytest.raises(ValueError, match="non-empty"):
        _result(claims=[])
    forged = _claim(preconditions=[precondition("p", False)])
    forged["verdict"] = "held"
    with pytest.raises(ValueError, match="does not follow the rule"):
        _result(claims=[forged])
    with pytest.raises(ValueError, match="reference row cannot be the headline"):
        _claim(reference=True)
    with pytest.raises(ValueError, match="expected_sign"):
        _claim(expected_sign=0)


def test_the_runner_accepts_a_headline_made_inconclusive_by_a_failed_precondition(tmp_path):
    from cuekit.report.runner import check_result

    head = _claim(preconditions=[precondition("baseline converged", False, "still rising")])
    result, warnings = check_result(_result(claims=[head], seeds=[0, 1, 2]), tmp_path)
    assert result["verdict"] == "inconclusive" and warnings == []
