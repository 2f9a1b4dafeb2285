"""`cuekit reproduce robustness` at toy scale: the result follows the reproduce contract."""
from __future__ import annotations

import pytest

from cuekit.report.experiments import VERDICTS, ExperimentConfig, verdict


def test_run_experiment_at_toy_scale(tmp_path, monkeypatch):
    from cuekit.robustness import experiment

    monkeypatch.setitem(experiment.SCALES, True, dict(train_size=128, val_size=32, epochs=1, batch_size=32, width=4,
                                                      severities=(3,)))
    res = experiment.run_experiment(ExperimentConfig(out_dir=tmp_path, quick=True, seeds=(0, 1, 2)))
    assert res["area"] == "robustness" and res["verdict"] in VERDICTS
    assert res["verdict"] == verdict(res["effects"], res["expected_sign"])
    assert [r[0] for r in res["table"]["rows"]] == list(experiment.REGULARIZERS)
    for name in res["plots"]:
        assert (tmp_path / name).stat().st_size > 1000
    grid = res["details"]["grid"]
    assert set(grid) == {"ls", "mixup", "cutmix", "cutout"} and set(grid["ls"]) == set(experiment.METRICS)
    assert all(len(cell["effects"]) == 3 for reg in grid.values() for cell in reg.values())


@pytest.mark.slow
def test_quick_experiment_runs(tmp_path):
    from cuekit.robustness.experiment import run_experiment

    res = run_experiment(ExperimentConfig(out_dir=tmp_path, quick=True))
    assert res["details"]["time_s"] < 240
