"""`cuekit reproduce robustness`: one claim row per (metric family, regularizer), preconditions, controls."""
from __future__ import annotations

import json

import pytest
import torch

from cuekit.report.experiments import VERDICTS, ExperimentConfig, check_claims
from cuekit.robustness import experiment as ex

SEEDS = [0, 1, 2]


def _summary(**over) -> dict:
    """A converged, over-confident baseline's numbers (all preconditions met), with overrides."""
    base = {"acc": 0.88, "confidence": 0.91, "ece": 0.03, "nll": 0.30, "brier": 0.18, "corruption_error": 0.24,
            "corruption_clean_error": 0.12, "near_ood_auroc": 0.66, "far_ood_auroc": 0.5, "fgsm_acc": 0.68,
            "fgsm_clean_acc": 0.88, "occlusion_acc": 0.6, "occlusion_clean_acc": 0.88,
            "occlusion_center_acc": 0.5, "occlusion_boundary_acc": 0.7}
    return {**base, **over}


def _runs(baseline: dict | None = None, **per_reg: dict) -> dict:
    """Fake runs: every regularizer equals the baseline unless overridden (per seed: a list of dicts)."""
    runs = {}
    for i, s in enumerate(SEEDS):
        for reg in ex.REGULARIZERS:
            if reg == "none":
                summary = _summary(**(baseline or {}))
            else:
                summary = _summary(**per_reg.get(reg.replace("-", "_"), [{}] * 3)[i])
            runs[(s, reg)] = {"summary": summary, "train_acc": 1.0}
    return runs


def test_one_row_per_family_and_regularizer_with_one_headline():
    mixup = [{"ece": 0.01}, {"ece": 0.015}, {"ece": 0.012}]   # lowers ECE in every seed
    fgsm_at = [{"fgsm_acc": 0.78}, {"fgsm_acc": 0.80}, {"fgsm_acc": 0.75}, ]
    rows = ex.build_claims(_runs(mixup=mixup, fgsm_at=fgsm_at), SEEDS, ex.REGULARIZERS, 2000, "toy")
    head = check_claims(rows)
    regs = [r for r in ex.REGULARIZERS if r != "none"]
    assert [c["id"] for c in rows] == [f"{f}_{r}" for f in ex.FAMILIES for r in regs]
    assert head["id"] == "ece_mixup" and head["verdict"] == "held"
    assert head["effects"] == pytest.approx([2.0, 1.5, 1.8])  # ECE(none) - ECE(mixup), points
    by_id = {c["id"]: c for c in rows}
    for (family, reg), (_, sign, _) in ex.PAPER_CLAIMS.items():
        assert not by_id[f"{family}_{reg}"]["reference"] and by_id[f"{family}_{reg}"]["expected_sign"] == sign
    assert sum(not c["reference"] for c in rows) == len(ex.PAPER_CLAIMS)
    assert by_id["corruption_fgsm-at"]["expected_sign"] == -1  # "AT does not help corruptions"
    assert by_id["fgsm_fgsm-at"]["verdict"] == "held"
    assert by_id["fgsm_fgsm-at"]["effects"] == pytest.approx([10.0, 12.0, 7.0])
    # A regularizer identical to the baseline has zero effects: never "held".
    assert by_id["ece_ls"]["effects"] == [0.0, 0.0, 0.0] and by_id["ece_ls"]["verdict"] == "inconclusive"


def test_an_under_confident_baseline_makes_the_calibration_rows_inconclusive():
    mixup = [{"ece": 0.01}] * 3
    rows = ex.build_claims(_runs(baseline={"confidence": 0.85}, mixup=mixup), SEEDS, ex.REGULARIZERS, 2000, "toy")
    by_id = {c["id"]: c for c in rows}
    for row in ("ece_mixup", "ece_ls", "nll_mixup"):
        assert by_id[row]["verdict"] == "inconclusive"
        assert any("over-confident" in p for p in by_id[row]["failed_preconditions"])
    assert not by_id["fgsm_fgsm-at"]["failed_preconditions"]  # other families do not depend on it
    small = ex.build_claims(_runs(), SEEDS, ex.REGULARIZERS, 500, "toy")
    assert any("2000 images" in p for p in small[0]["failed_preconditions"])


@pytest.mark.parametrize("baseline, family, words", [
    ({"near_ood_auroc": 0.2}, "ood", "non-degenerate"),
    ({"fgsm_acc": 0.86}, "fgsm", "FGSM"),
    ({"corruption_error": 0.13}, "corruption", "corruptions cost"),
    ({"occlusion_acc": 0.87}, "occlusion", "occlusion costs"),
])
def test_each_family_checks_that_its_test_bites(baseline, family, words):
    rows = ex.build_claims(_runs(baseline=baseline), SEEDS, ex.REGULARIZERS, 2000, "toy")
    for c in rows:
        failed = any(words in p for p in c["failed_preconditions"])
        assert failed == (c["id"].split("_")[0] == family), c["id"]
        if failed:
            assert c["verdict"] == "inconclusive"


def test_the_control_differs_only_in_the_regularizer():
    plan = dict(ex.PLANS[True], train_size=16)
    pool = torch.arange(100)[:, None].repeat(1, 6)  # distinct rows
    jobs = ex.make_jobs(plan, SEEDS, ex.REGULARIZERS, pool, "suite.pt", "cpu")
    assert len(jobs) == len(SEEDS) * len(ex.REGULARIZERS) and jobs[0][1] == "fgsm-at"
    for seed in SEEDS:
        mine = [j for j in jobs if j[0] == seed]
        assert sorted(j[1] for j in mine) == sorted(ex.REGULARIZERS)
        assert all(torch.equal(j[3], mine[0][3]) and j[2] is plan for j in mine)  # same images, same plan
    assert not torch.equal(jobs[0][3], jobs[1][3])  # seeds differ
    a, b = ex.initial_model(3, plan).state_dict(), ex.initial_model(3, plan).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_near_ood_shape_is_never_trained_on():
    lat = ex._latent_pool(dict(ex.PLANS[True], val_size=50, train_pool=200, ood_size=40))
    assert set(lat["val"][:, 1].tolist()) <= set(ex.TRAIN_SHAPES) and set(lat["pool"][:, 1].tolist()) <= set(
        ex.TRAIN_SHAPES)
    assert set(lat["ood"][:, 1].tolist()) == {ex.OOD_SHAPE} and len(lat["ood"]) == 40
    val = {tuple(r) for r in lat["val"].tolist()}
    assert not val & {tuple(r) for r in lat["pool"].tolist()}  # training images never in validation


@pytest.mark.slow
def test_run_experiment_at_toy_scale(tmp_path, monkeypatch):
    monkeypatch.setitem(ex.PLANS, True, dict(
        train_size=32, train_pool=64, val_size=64, ood_size=32, far_ood_size=16, epochs=1, batch_size=16, lr=3e-3,
        width=4, severities=(3,), corruption_images=16, fgsm_images=32, occlusion_images=32, curve_images=16))
    res = ex.run_experiment(ExperimentConfig(out_dir=tmp_path, quick=True, seeds=(0, 1, 2), progress=False))
    assert res["area"] == "robustness" and res["verdict"] in VERDICTS
    head = check_claims(res["claims"])
    assert head["id"] == "ece_mixup" and res["verdict"] == head["verdict"]
    # 64 validation images: the calibration rows cannot be judged, and say why.
    assert head["verdict"] == "inconclusive" and any("2000" in p for p in head["failed_preconditions"])
    assert [r[0] for r in res["table"]["rows"]] == list(ex.REGULARIZERS)
    for name in res["plots"]:
        assert (tmp_path / name).stat().st_size > 1000
    assert all(len(c["effects"]) == 3 for c in res["claims"])
    json.dumps(res, allow_nan=False)  # what `cuekit reproduce` writes


def test_one_worker_job_trains_and_measures_every_family(tmp_path):
    plan = dict(ex.PLANS[True], train_size=32, train_pool=64, val_size=48, ood_size=32, far_ood_size=16, epochs=1,
                batch_size=16, width=4, severities=(2,), corruption_images=16, fgsm_images=24, occlusion_images=24,
                curve_images=16)
    lat = ex._latent_pool(plan)
    suite = ex._build_suite(plan, lat, progress=False)
    path = tmp_path / "suite.pt"
    torch.save(suite, path)
    job = ex.make_jobs(plan, [0], ("none", "fgsm-at"), lat["pool"], str(path), "cpu")[0]
    out = ex._train_one(job)
    assert out["reg"] == "fgsm-at" and 0 <= out["train_acc"] <= 1 and len(out["curve"]) == 1
    summary = out["summary"]
    for _, key, _, _, _ in ex.FAMILIES.values():
        assert 0 <= summary[key] <= 10, key
    assert set(out["metrics"]["ood"]) == {"heart (held-out shape)", "gaussian noise", "uniform noise"}
    # occlusion is filled with the data's per-channel mean, which is not black on this black-background data
    torch.testing.assert_close(suite.occlusion_fill, suite.images.mean((0, 2, 3)))
    assert float(suite.occlusion_fill.min()) > 0
