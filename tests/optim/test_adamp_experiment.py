"""The `cuekit reproduce adamp` experiment: its measurements, its controls and its result at a tiny scale."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cuekit.optim import experiment
from cuekit.optim.factory import create_optimizer
from cuekit.report.experiments import ExperimentConfig
from cuekit.report.runner import check_result

TINY = experiment.Scale(train_size=64, selection_size=32, test_size=32, batch_size=32, epochs=2, width=4)


def test_weight_tracker_measures_norm_channel_angle_and_early_rotation():
    """A known rotation of each channel's weight and a known rescaling give the expected numbers."""
    w = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    tracker = experiment.WeightTracker([w], early_steps=1)
    assert tracker.initial_norm == pytest.approx(math.sqrt(5))
    with torch.no_grad():
        w.copy_(torch.tensor([[3.0, 3.0], [0.0, 4.0]]))  # row 0 turns by 45 degrees, row 1 only grows
    tracker(0, None, None, 0.5)
    assert tracker.angles == [pytest.approx(math.pi / 8, rel=1e-5)]  # mean of pi/4 and 0
    assert tracker.norms == [pytest.approx(math.sqrt(9 + 9 + 16))]
    assert tracker.turned_early == pytest.approx(math.pi / 8, rel=1e-5)
    assert tracker.losses == [0.5]


def test_scale_invariant_net_lists_bn_preceded_convs():
    """Every listed weight is scale-invariant: scaling it leaves the outputs unchanged."""
    net = experiment.ScaleInvariantNet(num_classes=6, width=4).train()
    x = torch.rand(8, 3, 32, 32)
    before = net(x)
    with torch.no_grad():
        for w in net.scale_invariant():
            w.mul_(3.0)
    assert torch.allclose(net(x), before, atol=1e-4)
    assert len(net.scale_invariant()) == 3
    assert experiment.scale_invariance_error(0, 4, 32) < 1e-4


def test_control_adamp_without_projection_is_adamw():
    """The Adam control (AdamP with delta=0) takes the same steps as torch's AdamW: only the projection differs."""
    torch.manual_seed(0)
    nets = [experiment.ScaleInvariantNet(6, width=4) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [create_optimizer("adamp", nets[0], lr=3e-2, weight_decay=1e-2, delta=0.0),
            create_optimizer("adamw", nets[1], lr=3e-2, weight_decay=1e-2)]
    x, y = torch.rand(16, 3, 32, 32), torch.randint(0, 6, (16,))
    for _ in range(5):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        assert set(opts[0].projection_kinds()) == {"none"}
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_plan_pairs_every_baseline_with_its_projected_twin():
    """Each family sweeps the same lrs for both optimizers; the momentum sweep runs SGD at the reference lr."""
    runs = experiment.plan_runs([0, 1, 2])
    for fam in experiment.FAMILIES:
        assert fam.lrs[len(fam.lrs) // 2] == fam.reference_lr
        for proj in (False, True):
            lrs = sorted(r.lr for r in runs if r.seed == 0 and r.family == fam.name and r.projected == proj
                         and r.momentum == experiment.MOMENTUM)
            assert lrs == sorted(fam.lrs)
    sweep = {r.momentum for r in runs if r.seed == 1 and r.family == "sgd" and not r.projected
             and r.lr == experiment._family("sgd").reference_lr}
    assert sweep == set(experiment.MOMENTA)
    assert len(runs) == len(set(runs)) == 3 * (sum(2 * len(f.lrs) for f in experiment.FAMILIES) + 2)


@pytest.mark.parametrize("family", ["sgd", "adam"])
def test_baseline_and_projected_runs_share_initialisation_and_data(family):
    """The control and the method start from the same weights and see the same first batch; only the
    projected run projects, and it projects every conv weight channel-wise."""
    fam = experiment._family(family)
    out = {p: experiment.train_run((experiment.Run(3, family, p, fam.reference_lr), TINY, 32, "cpu"))
           for p in (False, True)}
    assert out[False]["initial_norm"] == out[True]["initial_norm"]
    assert out[False]["losses"][0] == out[True]["losses"][0]  # same weights, same first batch
    assert out[False]["norms"][0] != out[True]["norms"][0]     # ... and then the method differs
    assert out[False]["conv_kinds"] == ["none"] * 3
    assert out[True]["conv_kinds"] == ["channel"] * 3
    steps = TINY.train_size // TINY.batch_size * TINY.epochs
    for r in out.values():
        assert len(r["norms"]) == len(r["angles"]) == steps and len(r["selection_acc"]) == TINY.epochs
        assert 0.0 <= r["test_acc"] <= 1.0 and r["diverged_at"] is None


def test_run_experiment_tiny(tmp_path, monkeypatch):
    """The whole experiment at a tiny scale: a valid result, one row per claim, both plots, and the caller's
    thread count restored."""
    monkeypatch.setattr(experiment, "QUICK", TINY)
    torch.set_num_threads(2)
    result = experiment.run_experiment(ExperimentConfig(out_dir=tmp_path, seeds=(0, 1, 2), progress=False))
    assert torch.get_num_threads() == 2
    checked, warnings = check_result(result, tmp_path)
    assert warnings == []
    assert checked["plots"] == ["adamp_norms.png", "adamp_accuracy.png"]
    ids = [c["id"] for c in result["claims"]]
    assert ids == ["norm_growth_momentum", "effective_step_sgdp", "norm_lower_sgdp", "acc_sgdp_vs_sgd",
                   "effective_step_adamp", "norm_lower_adamp", "acc_adamp_vs_adamw"]
    assert [c["id"] for c in result["claims"] if c["headline"]] == ["acc_sgdp_vs_sgd"]
    assert result["verdict"] == result["claims"][ids.index("acc_sgdp_vs_sgd")]["verdict"]
    assert all(len(c["effects"]) == 3 and c["expected_sign"] == 1 for c in result["claims"])
    assert len(result["table"]["rows"]) == sum(2 * len(f.lrs) for f in experiment.FAMILIES) + 2
    for seed in (0, 1, 2):  # every run of a seed starts from the same weights
        assert len({r["initial_norm"] for r in result["details"]["runs"] if r["seed"] == seed}) == 1
    assert "quick (smoke scale, 32 px)" in result["measured"]
