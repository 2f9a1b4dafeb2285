"""The `cuekit reproduce transmit` section at a tiny scale (slow: trains three small models)."""
from __future__ import annotations

import pytest

from cuekit.report.experiments import VERDICTS, ExperimentConfig
from cuekit.transmit.experiment import Scale, run_experiment


@pytest.mark.slow
def test_run_experiment_tiny(tmp_path):
    scale = Scale(model="resnet8", width=4, train_size=128, val_size=64, epochs=1, batch_size=32, rate_mbit=1.0,
                  rtt_ms=10.0)
    res = run_experiment(ExperimentConfig(out_dir=tmp_path, seeds=(0, 1, 2)), scale=scale)
    assert res["verdict"] in VERDICTS and len(res["effects"]) == 3
    assert res["claims"][0]["id"] == "usable_sooner" and res["claims"][0]["headline"]
    assert all((tmp_path / p).is_file() for p in res["plots"])
    for seed in res["details"]["per_seed"]:
        paper = seed["stages"]["paper"]
        assert [r["bits"] for r in paper] == [2, 4, 6, 8, 10, 12, 14, 16]
        assert all(a["time_s"] <= b["time_s"] for a, b in zip(paper, paper[1:]))
        assert abs(paper[-1]["acc"] - seed["acc_float16"]) <= 2 / 64  # 16 bits: at most a prediction or two moves
        # each request waited the added round trip: the manifest and eight parts, one after another
        assert paper[-1]["time_s"] >= 9 * 0.010
