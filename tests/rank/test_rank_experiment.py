"""`cuekit reproduce rexnet` at a reduced size: the result contract, plots and honest labels."""
from __future__ import annotations

from cuekit.rank import experiment
from cuekit.report.experiments import VERDICTS, ExperimentConfig


def test_run_experiment_small(tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "QUICK_RANK", dict(networks=2, networks_per_width=2, d_out_range=(8, 12),
                                                         ratios=(0.25, 1.0), inputs=("gaussian",),
                                                         sample_factors=(4.0,), depths=(1,)))
    monkeypatch.setattr(experiment, "QUICK_TRAIN", dict(experiment.QUICK_TRAIN, train_size=128, val_size=64,
                                                          epochs=1, batch_size=64))
    res = experiment.run_experiment(ExperimentConfig(out_dir=tmp_path, quick=True, seeds=(0, 1, 2), img_size=16))
    assert res["area"] == "rexnet" and res["verdict"] in VERDICTS
    assert len(res["table"]["rows"]) == 3 and res["seeds"] == [0, 1, 2]
    for name in res["plots"]:
        assert (tmp_path / name).is_file()
    d = res["details"]
    assert d["rank_ordering_verdict"] in VERDICTS and len(d["rank_ordering_effects"]) == 3
    assert len(d["rank_study"]["cells"]) == 4  # 1 setting x 4 blocks
    params = d["training"]["params"]
    assert abs(params["linear"] - params["stagewise"]) / params["linear"] < 0.01
    assert "quick" in d["scale"] and "MMACs" in res["measured"]
