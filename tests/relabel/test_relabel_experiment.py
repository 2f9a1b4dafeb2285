"""The reproduce section at a tiny scale: one row per claim, the global control, the preconditions."""
from __future__ import annotations

import pytest

from cuekit.relabel import experiment
from cuekit.relabel.experiment import STUDENTS, run_experiment
from cuekit.report.experiments import ExperimentConfig, verdict


def fake_runs(top1: dict[str, list[float]], curve_rise: float = 0.0) -> dict:
    return {s: [{"seed": i, "student": s, "top1": a, "real": a + 0.1, "curve": [0.6, 0.6, 0.6 + curve_rise]}
                for i, a in enumerate(top1[s])] for s in STUDENTS}


BASE = {"one-hot": [0.60, 0.61, 0.62], "label smoothing 0.1": [0.61, 0.62, 0.63],
        "global multi-label": [0.64, 0.65, 0.66], "ReLabel": [0.70, 0.71, 0.72], "ReLabel + CutMix": [0.69, 0.7, 0.71]}


def by_id(rows):
    return {c["id"]: c for c in rows}


def test_the_headline_is_relabel_against_the_global_label_of_the_same_annotator():
    rows = by_id(experiment._claims(fake_runs(BASE), 0.9, [(0.8, 0.5)] * 3, 0.2))
    head = rows["localized_vs_global"]
    assert head["headline"] and head["effects"] == pytest.approx([6.0, 6.0, 6.0]) and head["verdict"] == "held"
    assert rows["relabel_vs_onehot_top1"]["effects"] == pytest.approx([10.0, 10.0, 10.0])
    assert rows["global_vs_onehot"]["reference"]
    assert rows["cutmix_on_relabel"]["verdict"] == "did not hold"
    # ReLabel no better than the global label: the headline does not hold although it beats one-hot
    same = dict(BASE, ReLabel=BASE["global multi-label"])
    rows = by_id(experiment._claims(fake_runs(same), 0.9, [(0.8, 0.5)] * 3, 0.2))
    assert rows["localized_vs_global"]["verdict"] == "inconclusive"
    assert rows["relabel_vs_onehot_top1"]["verdict"] == "held"


def test_failed_preconditions_are_named():
    # maps that do not localize: the headline cannot be judged, the one-hot rows still can
    rows = by_id(experiment._claims(fake_runs(BASE), 0.9, [(0.6, 0.58)] * 3, 0.2))
    assert rows["localized_vs_global"]["verdict"] == "inconclusive"
    assert any("localize" in f for f in rows["localized_vs_global"]["failed_preconditions"])
    assert rows["relabel_vs_onehot_top1"]["verdict"] == "held"
    # an annotator weaker than the student: every row is inconclusive
    rows = by_id(experiment._claims(fake_runs(BASE), 0.5, [(0.8, 0.5)] * 3, 0.2))
    assert all(c["verdict"] == "inconclusive" for c in rows.values())
    # still rising: only the CutMix row needs convergence
    rows = by_id(experiment._claims(fake_runs(BASE, curve_rise=0.05), 0.9, [(0.8, 0.5)] * 3, 0.2))
    assert rows["cutmix_on_relabel"]["verdict"] == "inconclusive" and rows["localized_vs_global"]["verdict"] == "held"


def test_tiny_relabel_experiment_returns_a_valid_result(tmp_path):
    tiny = dict(teacher_n=96, n=48, val_n=48, teacher_epochs=1, epochs=1, width=4, batch=32)
    res = run_experiment(ExperimentConfig(out_dir=tmp_path, quick=True, img_size=16, progress=False), scale=tiny)
    assert res["area"] == "relabel" and (tmp_path / "relabel_accuracy.png").exists()
    assert [c["id"] for c in res["claims"]][0] == "localized_vs_global"
    assert res["verdict"] == res["claims"][0]["verdict"]
    assert all(len(c["effects"]) == 3 for c in res["claims"])
    head = res["claims"][0]
    if not head["failed_preconditions"]:
        assert head["verdict"] == verdict(head["effects"], +1)
    names = {row[0] for row in res["table"]["rows"]}
    assert set(STUDENTS) | {"annotator"} <= names
    # every student of a seed saw the same crops order and initialisation: the one-hot runs are reproducible
    runs = res["details"]["runs"]
    assert [r["seed"] for r in runs["ReLabel"]] == [0, 1, 2]
