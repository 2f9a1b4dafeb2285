"""The reproduce section runs end to end at a tiny scale and reports by the shared verdict rule."""
from __future__ import annotations

from cuekit.relabel.experiment import run_experiment
from cuekit.report.experiments import ExperimentConfig, verdict


def test_tiny_relabel_experiment_returns_a_valid_result(tmp_path):
    tiny = dict(teacher_n=128, n=64, val_n=64, teacher_epochs=1, epochs=1, width=4, batch=32)
    res = run_experiment(ExperimentConfig(out_dir=tmp_path, quick=True, img_size=16), scale=tiny)
    assert res["area"] == "relabel" and (tmp_path / "relabel_accuracy.png").exists()
    assert len(res["effects"]) == 3 and res["verdict"] == verdict(res["effects"], +1)
    names = {row[1] for row in res["table"]["rows"]}
    assert {"single label", "label smoothing 0.1", "ReLabel", "teacher"} <= names
