"""The `cuekit reproduce adamp` experiment: its measurements and its result at a tiny scale."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cuekit.data import materialise
from cuekit.optim import experiment
from cuekit.report.experiments import ExperimentConfig
from cuekit.report.runner import check_result


def test_weight_tracker_measures_norm_and_channel_angle():
    """A known rotation of each channel's weight and a known rescaling give the expected numbers."""
    w = nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    tracker = experiment.WeightTracker([w])
    assert tracker.initial_norm == pytest.approx(math.sqrt(5))
    with torch.no_grad():
        w.copy_(torch.tensor([[3.0, 3.0], [0.0, 4.0]]))  # row 0 turns by 45 degrees, row 1 only grows
    tracker(0, None, None, 0.0)
    assert tracker.angles == [pytest.approx(math.pi / 8, rel=1e-5)]  # mean of pi/4 and 0
    assert tracker.norms == [pytest.approx(math.sqrt(9 + 9 + 16))]


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


@pytest.fixture
def tiny_scale(monkeypatch):
    tiny = experiment.Scale(train_size=128, val_size=64, batch_size=32, epochs=1, width=4)
    monkeypatch.setattr(experiment, "QUICK", tiny)
    return tiny


def test_run_experiment_tiny(tmp_path, tiny_scale):
    """The whole experiment at a tiny scale: a valid result, both plots, one curve per step, and
    the caller's thread count restored afterwards."""
    torch.set_num_threads(2)
    result = experiment.run_experiment(ExperimentConfig(out_dir=tmp_path, seeds=(0, 1, 2)))
    assert torch.get_num_threads() == 2
    checked, warnings = check_result(result, tmp_path)
    assert warnings == []
    assert checked["plots"] == ["adamp_norms.png", "adamp_accuracy.png"]
    assert [r[0] for r in result["table"]["rows"]] == ["SGD", "SGDP", "AdamW", "AdamP"]
    assert len(result["effects"]) == 6 and result["verdict"] in ("held", "did not hold", "inconclusive")
    steps = tiny_scale.train_size // tiny_scale.batch_size * tiny_scale.epochs
    for seed_runs in result["details"]["curves"].values():
        for run in seed_runs.values():
            assert len(run["norms"]) == steps and len(run["angles"]) == steps
    assert "quick (smoke scale, 32 px)" in result["measured"]


def test_pairs_use_the_same_initialisation(tiny_scale):
    """Baseline and projected runs start from identical weights (the effect is a paired one)."""
    from cuekit.data import create_dataset

    data = materialise(create_dataset("dsprites", task=experiment.TASK, img_size=32,
                                               train_size=64, val_size=32, seed=0))
    small = experiment.Scale(train_size=64, val_size=32, batch_size=32, epochs=1, width=4)
    runs = experiment.run_pair("adam", data, seed=3, scale=small)
    assert runs["adamw"]["initial_norm"] == runs["adamp"]["initial_norm"]
    assert set(runs) == {"adamw", "adamp"}
