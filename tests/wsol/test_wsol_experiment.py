"""`cuekit reproduce wsol` at toy scale: a complete result with table, plots and a rule-based verdict."""
from __future__ import annotations

from cuekit.report.experiments import VERDICTS, ExperimentConfig


def test_run_experiment_toy_scale(tmp_path, monkeypatch):
    import cuekit.wsol.experiment as ex

    monkeypatch.setattr(ex, "_settings", lambda config: {"img_size": 16, "train_size": 48, "val_size": 12,
                                                         "epochs": 1, "width": 8, "batch_size": 16, "lr": 0.05})
    res = ex.run_experiment(ExperimentConfig(out_dir=tmp_path, quick=True, seeds=(0, 1, 2), device="cpu"))
    assert res["area"] == "wsol" and res["verdict"] in VERDICTS
    assert [r[0] for r in res["table"]["rows"]] == ["minmax", "max", "pas", "ivr"]
    assert all((tmp_path / p).stat().st_size > 1000 for p in res["plots"])
    d = res["details"]
    assert len(d["box_effects_ivr_minus_best_other"]) == 3 and d["pxap_verdict"] in VERDICTS
    per_seed = d["per_seed"][0]["metrics"]
    best_other = max(per_seed[n]["maxboxacc_v2"] for n in ("minmax", "max", "pas"))
    assert d["box_effects_ivr_minus_best_other"][0] == per_seed["ivr"]["maxboxacc_v2"] - best_other
