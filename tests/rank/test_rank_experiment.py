"""`cuekit reproduce rexnet` at a reduced size: one row per claim, preconditions, the matched control."""
from __future__ import annotations

import pytest

from cuekit.rank import experiment
from cuekit.report.experiments import VERDICTS, ExperimentConfig

RATIOS = experiment.RATIOS


def _curves(**values) -> dict[str, list[float]]:
    return {name: list(v) for name, v in values.items()}


def test_effects_read_the_curves():
    lin = [r for r in RATIOS]
    low_then_full = [0.5] + [1.0] * (len(RATIOS) - 1)
    full = [1.0] * len(RATIOS)
    curves = _curves(linear=lin, relu=full, relu6=full, elu=low_then_full, silu=low_then_full)
    # the expansion effect: mean over nonlinear f of rank at DR 1 minus at DR 0.1 -> (0 + 0 + 0.5 + 0.5) / 4
    assert experiment.expansion_effect(curves) == pytest.approx(0.25)
    # the ordering: ELU/SiLU lose 0.5 at one of the nine DR < 1 -> -0.5 / 9
    assert experiment.ordering_effect(curves) == pytest.approx(-0.5 / 9)
    below = [r for r in RATIOS if r < 1]
    assert experiment.nonlinear_lift_effect(curves) == pytest.approx((sum(low_then_full[:-1]) - sum(below)) / 9)
    reversed_order = _curves(linear=lin, relu=low_then_full, relu6=low_then_full, elu=full, silu=full)
    assert experiment.ordering_effect(reversed_order) > 0


def test_channel_pair_differs_only_in_widths_and_matches_params_and_macs():
    from cuekit.models.complexity import count_macs, count_params
    from cuekit.models.rexnet import ReXNet

    linear, stagewise, info = experiment.channel_pair(experiment.QUICK_TRAIN, num_classes=6, img_size=32)
    assert {k: v for k, v in linear.items() if k != "block_channels"} == \
           {k: v for k, v in stagewise.items() if k != "block_channels"}
    lw, sw = linear["block_channels"], stagewise["block_channels"]
    assert len(lw) == len(sw) and lw == sorted(lw) and len(set(lw)) == len(lw)  # strictly growing
    assert len(set(sw)) <= 6  # one width per stage
    lin_m, sw_m = ReXNet(**linear, num_classes=6), ReXNet(**stagewise, num_classes=6)
    assert abs(count_params(lin_m) / count_params(sw_m) - 1) <= experiment.COST_TOLERANCE
    assert abs(count_macs(lin_m, 32) / count_macs(sw_m, 32) - 1) <= experiment.COST_TOLERANCE
    assert info["params"] == count_params(lin_m) and info["macs"] == count_macs(lin_m, 32)


@pytest.fixture
def small(monkeypatch):
    """A few seconds' run, inline (one worker): tiny random-network draws and tiny training."""
    import cuekit.parallel

    monkeypatch.setattr(cuekit.parallel, "available_cpus", lambda: 1)
    monkeypatch.setattr(experiment, "QUICK_RANK", dict(networks=4, networks_per_width=2, d_out_range=(20, 24)))
    monkeypatch.setattr(experiment, "QUICK_FIGURE", dict(blocks=("ib_dw3x3",), networks=2, networks_per_width=2,
                                                         d_out_range=(20, 24)))
    monkeypatch.setattr(experiment, "QUICK_TRAIN", dict(experiment.QUICK_TRAIN, train_size=96, val_size=64, epochs=1,
                                                        batch_size=48))


def test_rows_follow_the_rule_and_a_failed_precondition_is_named(tmp_path, small, monkeypatch):
    monkeypatch.setattr(experiment, "SATURATED", 0.0)  # nobody is below 0 accuracy: the precondition must fail
    res = experiment.run_experiment(ExperimentConfig(out_dir=tmp_path, quick=True, seeds=(0, 1, 2), img_size=16,
                                                     progress=False))
    rows = {r["id"]: r for r in res["claims"]}
    assert list(rows) == ["expansion_limits_rank", "nonlinearity_expands_rank", "nonlinearity_order",
                          "linear_vs_stagewise", "final_feature_nuclear_norm"]
    assert [r["id"] for r in res["claims"] if r["headline"]] == ["linear_vs_stagewise"]
    assert all(r["expected_sign"] == 1 and len(r["effects"]) == 3 for r in rows.values())
    assert res["verdict"] == rows["linear_vs_stagewise"]["verdict"] == "inconclusive"
    for rid in ("linear_vs_stagewise", "final_feature_nuclear_norm"):
        assert any("saturates" in p for p in rows[rid]["failed_preconditions"])
        assert rows[rid]["verdict"] == "inconclusive"
    assert all(r["verdict"] in VERDICTS for r in rows.values())
    assert "Headline = linear_vs_stagewise" in res["measured"]
    # the rank rows' preconditions are computed from the run: Linear follows DR
    assert rows["nonlinearity_order"]["preconditions"][0]["met"]
    d = res["details"]
    assert len(d["rank_curves"][experiment.RANK_MEASURE]) == 3  # one independent draw per seed
    assert set(d["training"]["acc"]) == {"linear", "stagewise"}
    for name in res["plots"]:
        assert (tmp_path / name).stat().st_size > 1000
