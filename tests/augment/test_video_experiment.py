import statistics

import pytest
import torch

from cuekit.augment import video_experiment
from cuekit.report.experiments import VERDICTS, ExperimentConfig

TOY = dict(img_size=16, frames=4, train_size=48, test_size=24, epochs=1, batch_size=16, lr=3e-3,
           widths=(4, 8, 8, 8), scene_bias=0.8)


def test_reproduce_videomix_runs_at_toy_scale_and_reports_what_it_computed(tmp_path, monkeypatch):
    monkeypatch.setattr(video_experiment, "_plan", lambda config: TOY)
    threads = torch.get_num_threads()
    result = video_experiment.run_experiment(ExperimentConfig(out_dir=tmp_path, seeds=(0, 1, 2), progress=False))
    assert torch.get_num_threads() == threads
    assert result["area"] == "videomix" and result["verdict"] in VERDICTS
    assert (tmp_path / result["plots"][0]).stat().st_size > 0
    d = result["details"]
    assert [row[0] for row in result["table"]["rows"]] == list(video_experiment.METHODS)
    runs = d["runs"]
    assert all(len(runs[m]) == 3 for m in video_experiment.METHODS)
    for i, effect in enumerate(d["effects_videomix_minus_baseline"]):
        mean_vm = statistics.fmean(runs[v][i]["test_acc"] for v in video_experiment.VIDEOMIX)
        assert effect == pytest.approx(mean_vm - runs["baseline"][i]["test_acc"])
    for m in video_experiment.METHODS:
        for r in runs[m]:
            assert 0 <= r["test_acc"] <= 1 and 0 <= r["scene_agreement"] <= 1 and len(r["curve"]) == 1
            # the engine's last validation accuracy is measured on the same test split
            assert r["curve"][-1] == pytest.approx(r["test_acc"])
    # A run in a worker process equals the same run here (seeded, one thread).
    torch.set_num_threads(1)
    try:
        again = video_experiment._train_one((2, "videomix-st", TOY, "cpu"))
    finally:
        torch.set_num_threads(threads)
    assert again["test_acc"] == runs["videomix-st"][2]["test_acc"]
    assert again["scene_agreement"] == runs["videomix-st"][2]["scene_agreement"]
