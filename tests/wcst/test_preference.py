"""Preference runs, abundance probes and parallel workers on tiny synthetic data."""
from __future__ import annotations

import pytest
from wcst_helpers import FactorialSource  # noqa: E402

from cuekit.errors import DataError, UnknownChoiceError, UsageError
from cuekit.wcst.abundance import CENSUS_LABEL, perturbed_state, run_census, run_radius_rerun
from cuekit.wcst.datasets import build_cue_conflict
from cuekit.wcst.flatness import run_flatness
from cuekit.wcst.preference import plot_learning_curves, run_preference, summarize_preference
from cuekit.wcst.runs import FitSettings, adopted_cue


@pytest.fixture(scope="module")
def visible_hidden():
    """Two cues with 3 values; only c0 is drawn in the images, c1 is invisible."""
    src = FactorialSource(2, 3, repeats=60, rendered=[0])
    return build_cue_conflict(src, src.cue_names, train_per_class=40, valid_per_class=10,
                              offdiag_train_per_class=20, seed=0).materialize()


FAST = dict(model="mlp", epochs=4, batch_size=20, lr=3e-3)


def test_model_adopts_the_only_visible_cue(visible_hidden, tmp_path):
    res = run_preference(visible_hidden, FitSettings(**FAST), seeds=[0], progress=False)
    run = res["runs"][0]
    assert all(len(c) == FAST["epochs"] + 1 for c in run["curves"].values())
    assert run["adopted"] == "c0" and res["summary"]["order"] == ["c0", "c1"]
    assert run["final"]["c0"] == 1.0
    # with K = 2 a reader of c0 never agrees with c1 off the diagonal: (L^(K-1) - L) / (L^K - L) = 0
    assert run["final"]["c1"] == 0.0
    assert run["diagonal_acc"] == 1.0
    png = plot_learning_curves(res, visible_hidden.cues, tmp_path / "curves.png")
    assert png.stat().st_size > 1000


def test_summary_orders_by_mean_and_counts_adoptions():
    runs = [{"final": {"a": 0.9, "b": 0.4}, "adopted": "a", "diagonal_acc": 1.0},
            {"final": {"a": 0.3, "b": 0.6}, "adopted": "b", "diagonal_acc": 0.8},
            {"final": {"a": 0.9, "b": 0.5}, "adopted": "a", "diagonal_acc": 0.9}]
    s = summarize_preference(runs, ["a", "b"])
    assert s["order"] == ["a", "b"]
    assert s["mean"]["a"] == pytest.approx(0.7) and s["std"]["a"] == pytest.approx(0.34641016, abs=1e-6)
    assert s["adoption"] == {"a": 2, "b": 1}


def test_adopted_cue_needs_a_single_leader_above_chance():
    assert adopted_cue({"a": 0.9, "b": 0.4}, 1 / 3) == "a"
    assert adopted_cue({"a": 0.5, "b": 0.5}, 1 / 3) is None
    assert adopted_cue({"a": 1 / 3, "b": 0.2}, 1 / 3) is None
    s = summarize_preference([{"final": {"a": 0.3, "b": 0.3}, "adopted": None, "diagonal_acc": 0.3}], ["a", "b"])
    assert s["adoption"] == {"a": 0, "b": 0} and s["undecided"] == 1


@pytest.mark.slow
def test_parallel_workers_give_the_same_runs(visible_hidden):
    settings = FitSettings(**{**FAST, "epochs": 1})
    one = run_preference(visible_hidden, settings, seeds=[0, 1], workers=1, progress=False)
    two = run_preference(visible_hidden, settings, seeds=[0, 1], workers=2, progress=False)
    assert [r["curves"] for r in one["runs"]] == [r["curves"] for r in two["runs"]]


def test_cue_solution_of_the_invisible_cue_cannot_learn_it(visible_hidden):
    res = run_flatness(visible_hidden, FitSettings(**FAST), seeds=[0], radii=[0.5, 1.0], directions=2, probes=2,
                       max_eval=60, trace_samples=30, progress=False)
    s = res["summary"]
    assert s["c0"]["own_cue_acc"][0] == 1.0
    assert s["c1"]["own_cue_acc"][0] < 0.6          # images carry no trace of c1
    for run in res["runs"]:
        assert run["loss_increase"]["radii"] == [0.5, 1.0] and len(run["loss_increase"]["delta_loss_all"][0]) == 2
    with pytest.raises(UsageError, match="> 0"):
        run_flatness(visible_hidden, FitSettings(**FAST), seeds=[0], radii=[0.0, 1.0], progress=False)


def test_perturbed_state_moves_each_filter_by_the_radius_times_its_norm():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    model[1].running_mean.fill_(7.0)
    out = perturbed_state(model, radius=0.5, seed=0)
    state = model.state_dict()
    for name in ("0.weight", "3.weight"):
        moved = (out[name] - state[name]).flatten(1).norm(dim=1)
        assert torch.allclose(moved, 0.5 * state[name].flatten(1).norm(dim=1), rtol=1e-4)
    for name in ("0.bias", "1.weight", "1.bias", "3.bias", "1.running_mean", "1.running_var"):
        assert torch.equal(out[name], state[name])     # 1-D parameters and buffers stay


def test_radius_rerun_and_census(visible_hidden):
    settings = FitSettings(**{**FAST, "epochs": 2})
    res = run_radius_rerun(visible_hidden, settings, settings, seeds=[0], radii=[0.0], cues=["c0"], progress=False)
    assert res["landing"]["c0"] == [[1.0, 0.0]]     # the c0 solution, unperturbed, stays on c0
    census = run_census(visible_hidden, settings, inits=2, progress=False)
    assert census["label"] == CENSUS_LABEL and census["counts"] == {"c0": 2, "c1": 0}


def test_training_errors_are_clear(visible_hidden):
    with pytest.raises(UnknownChoiceError, match="'resnet21'"):
        run_preference(visible_hidden, FitSettings(model="resnet21"), seeds=[0], progress=False)
    with pytest.raises(DataError, match="fewer than one batch"):
        run_preference(visible_hidden, FitSettings(model="mlp", batch_size=1000), seeds=[0], progress=False)
