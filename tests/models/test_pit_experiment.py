"""`cuekit reproduce pit`: the claims table's wiring (rows, signs, preconditions) and the one-change control."""
from __future__ import annotations

import pytest
import torch

from cuekit.models import create_model
from cuekit.models.complexity import count_macs
from cuekit.models.pit_experiment import _plan, build_claims
from cuekit.parallel import torch_threads
from cuekit.report.experiments import ExperimentConfig, check_claims

MACS = {"pit": 17e6, "nopool": 100e6, "vit": 32e6}


def _metrics(pit=(0.9, 0.8, 0.7, 0.65), nopool=(1.1, 0.7, 0.5, 0.45), vit=(1.2, 0.6, 0.5, 0.45), jitter=0.01):
    """Per-seed metrics (3 seeds) from (train_loss, train_acc, val_acc, -) per role."""
    out = {}
    for role, (loss, train_acc, val_acc, _) in {"pit": pit, "nopool": nopool, "vit": vit}.items():
        out[role] = {"train_loss": [loss + jitter * i for i in range(3)],
                     "train_acc": [train_acc - jitter * i for i in range(3)],
                     "val_acc": [val_acc - jitter * i for i in range(3)]}
    return out


def _by_id(rows):
    return {r["id"]: r for r in rows}


def test_rows_follow_the_rule_one_headline_and_signs():
    rows = build_claims(_metrics(), MACS, num_classes=6, regime="test")
    head = check_claims(rows)
    assert head["id"] == "capability"
    assert [r["id"] for r in rows] == ["capability", "generalization", "performance", "pit_vs_vit"]
    assert all(r["expected_sign"] == 1 for r in rows)
    by_id = _by_id(rows)
    # pit: lower training loss, higher val acc, smaller gap (0.05 vs 0.2): every claim holds on these numbers.
    assert by_id["capability"]["effects"] == pytest.approx([0.2, 0.2, 0.2])
    assert by_id["generalization"]["effects"] == pytest.approx([0.1, 0.1, 0.1])
    assert by_id["performance"]["effects"] == pytest.approx([0.2, 0.2, 0.2])
    assert by_id["pit_vs_vit"]["effects"] == pytest.approx([0.2, 0.2, 0.2])
    assert all(r["verdict"] == "held" for r in rows)


def test_opposite_effects_do_not_hold():
    rows = build_claims(_metrics(pit=(1.1, 0.7, 0.5, 0), nopool=(0.9, 0.8, 0.7, 0)), MACS, 6, "test")
    by_id = _by_id(rows)
    assert by_id["capability"]["verdict"] == "did not hold"
    assert by_id["performance"]["verdict"] == "did not hold"


def test_a_control_at_chance_makes_the_ablation_claims_inconclusive_and_names_why():
    rows = build_claims(_metrics(nopool=(1.79, 0.2, 0.17, 0)), MACS, 6, "test")
    by_id = _by_id(rows)
    for cid in ("capability", "generalization", "performance"):
        assert by_id[cid]["verdict"] == "inconclusive"
        assert any("nopool learns the task" in p for p in by_id[cid]["failed_preconditions"])
    assert by_id["pit_vs_vit"]["verdict"] == "held"  # its preconditions do not involve the ablation's control


def test_saturated_control_and_missing_gap_are_named():
    rows = build_claims(_metrics(nopool=(0.1, 0.99, 0.985, 0)), MACS, 6, "test")
    by_id = _by_id(rows)
    assert any("not saturated" in p for p in by_id["capability"]["failed_preconditions"])
    assert any("overfits" in p for p in by_id["generalization"]["failed_preconditions"])
    assert by_id["capability"]["verdict"] == by_id["generalization"]["verdict"] == "inconclusive"


def test_a_smaller_gap_from_fitting_less_is_not_counted_as_generalization():
    # pit fits the training set far worse (0.5 vs 0.8) and so has the smaller gap: no verdict on it.
    rows = build_claims(_metrics(pit=(1.0, 0.5, 0.48, 0)), MACS, 6, "test")
    gen = _by_id(rows)["generalization"]
    assert all(e > 0 for e in gen["effects"])
    assert gen["verdict"] == "inconclusive" and any("fits the training set" in p for p in gen["failed_preconditions"])


def test_macs_ordering_is_a_precondition():
    rows = build_claims(_metrics(), {"pit": 40e6, "nopool": 100e6, "vit": 32e6}, 6, "test")
    vs_vit = _by_id(rows)["pit_vs_vit"]
    assert vs_vit["verdict"] == "inconclusive" and any("MACs" in p for p in vs_vit["failed_preconditions"])


@pytest.mark.parametrize("quick,img_size", [(True, 32), (False, 64)])
def test_the_control_differs_from_pit_only_in_pooling(quick, img_size):
    plan = _plan(ExperimentConfig(out_dir=".", quick=quick, img_size=img_size))
    names = plan["models"]
    assert names["nopool"] == names["pit"] + "_nopool"
    pit = create_model(names["pit"], num_classes=6, img_size=img_size)
    nopool = create_model(names["nopool"], num_classes=6, img_size=img_size)
    shapes = {k: v.shape for k, v in pit.state_dict().items()}
    assert shapes == {k: v.shape for k, v in nopool.state_dict().items()}  # same parameters, layer for layer
    differing = {(n, a.stride, b.stride) for (n, a), (_, b) in zip(pit.named_modules(), nopool.named_modules())
                 if isinstance(a, torch.nn.Conv2d) and a.stride != b.stride}
    assert differing == {("pools.0.conv", (2, 2), (1, 1)), ("pools.1.conv", (2, 2), (1, 1))}
    vit = create_model(names["vit"], num_classes=6, img_size=img_size)
    macs = {n: count_macs(m, img_size) for n, m in (("pit", pit), ("nopool", nopool), ("vit", vit))}
    assert macs["pit"] < macs["vit"] < macs["nopool"]


def test_run_experiment_end_to_end_at_a_tiny_scale(tmp_path, monkeypatch):
    import cuekit.models.pit_experiment as experiment

    tiny = dict(train_size=32, val_size=16, epochs=1, batch_size=16, lr=1e-3)
    real_plan = experiment._plan
    monkeypatch.setattr(experiment, "_plan", lambda config: {**real_plan(config), **tiny})
    threads = torch.get_num_threads()
    result = experiment.run_experiment(ExperimentConfig(out_dir=tmp_path, quick=True, progress=False))
    assert torch.get_num_threads() == threads  # restored
    check_claims(result["claims"])
    assert result["verdict"] == _by_id(result["claims"])["capability"]["verdict"]
    assert [row[0] for row in result["table"]["rows"]] == ["pit_nano", "pit_nano_nopool", "vit_nano"]
    assert (tmp_path / result["plots"][0]).stat().st_size > 0
    metrics = result["details"]["metrics"]
    assert all(len(metrics[role]["val_acc"]) == 3 for role in ("pit", "nopool", "vit"))
    effects = _by_id(result["claims"])["performance"]["effects"]
    assert effects == pytest.approx([a - b for a, b in zip(metrics["pit"]["val_acc"], metrics["nopool"]["val_acc"])])
    assert result["details"]["macs"]["pit"] == count_macs(create_model("pit_nano", num_classes=6), 32)
    # The runs went to worker processes (on a machine with 2+ cores); each equals the same run done here.
    with torch_threads(1):
        run = experiment._train_one((1, "vit_nano", experiment._plan(ExperimentConfig(out_dir=tmp_path)), 32, "cpu"))
    assert metrics["vit"]["val_acc"][1] == run["val_acc"] and metrics["vit"]["train_loss"][1] == run["train_loss"]
