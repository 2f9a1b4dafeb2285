"""`cuekit reproduce wsol` at toy scale: one row per claim, q chosen on held-out only, preconditions, controls."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from cuekit.report.experiments import VERDICTS, ExperimentConfig

TOY = {"img_size": 16, "width": 4, "pretrain_size": 100, "pretrain_epochs": 1, "pretrain_lr": 0.1,
       "train_size": 100, "epochs": 1, "lr": 0.02, "batch_size": 25, "heldout_size": 40, "test_size": 40,
       "history_size": 20}
METHODS = ("cam", "has", "cutmix", "adl")


@pytest.fixture(scope="module")
def toy_result(tmp_path_factory):
    """The whole experiment at toy scale, in-process; the chance margin is set so high that the
    'classifier beats chance' preconditions must fail."""
    import cuekit.wsol.experiment as ex

    mp = pytest.MonkeyPatch()
    mp.setattr(ex, "_settings", lambda config: dict(TOY))
    mp.setattr(ex, "CHANCE_MARGIN", 1000.0)
    out = tmp_path_factory.mktemp("wsol")
    try:
        res = ex.run_experiment(ExperimentConfig(out_dir=out, quick=True, seeds=(0, 1, 2), device="cpu",
                                                 progress=False), workers=1)
    finally:
        mp.undo()
    return res, out


def test_rows_follow_the_rule(toy_result):
    res, out = toy_result
    rows = {c["id"]: c for c in res["claims"]}
    assert set(rows) == {"ivr_vs_minmax_every_method", *(f"ivr_vs_minmax_{m}" for m in METHODS),
                         "ivr_best_box_every_method", "max_best_pxap", "ivr_vs_minmax_pxap_every_method",
                         "ivr_default_q_vs_minmax"}
    heads = [c for c in res["claims"] if c["headline"]]
    assert [c["id"] for c in heads] == ["ivr_vs_minmax_every_method"]
    assert all(c["expected_sign"] == 1 and len(c["effects"]) == 3 for c in res["claims"])
    assert rows["ivr_default_q_vs_minmax"]["reference"] and not heads[0]["reference"]
    assert res["verdict"] == heads[0]["verdict"] and res["verdict"] in VERDICTS
    assert all((out / p).stat().st_size > 1000 for p in res["plots"])
    json.dumps(res)   # the report stores it as JSON


def test_failed_precondition_makes_claims_inconclusive(toy_result):
    res, _ = toy_result
    for c in res["claims"]:
        assert c["verdict"] == "inconclusive"
        assert any("classifier beats chance" in what for what in c["failed_preconditions"])
    head = res["claims"][0]
    assert {p["what"].split()[0] for p in head["preconditions"] if "beats chance" in p["what"]} == {
        "CAM", "HaS", "CutMix", "ADL"}
    split = [p for p in head["preconditions"] if p["what"].startswith("q chosen on the held-out")]
    assert len(split) == 1 and split[0]["met"]     # renders of different seeds share no image


def test_effects_are_computed_from_the_runs(toy_result):
    import cuekit.wsol.experiment as ex

    res, _ = toy_result
    runs = res["details"]["runs"]
    rows = {c["id"]: c for c in res["claims"]}
    for i, seed in enumerate((0, 1, 2)):
        gains = {}
        for m in METHODS:
            run = runs[f"{m}/seed{seed}"]
            test = run["test"]
            gains[m] = test["ivr"]["maxboxacc_v2"] - test["minmax"]["maxboxacc_v2"]
            assert rows[f"ivr_vs_minmax_{m}"]["effects"][i] == pytest.approx(gains[m])
            # q comes from the held-out curve, never from test
            curve = {float(q): v for q, v in run["heldout"]["ivr_curve"].items()}
            assert run["q_box"] == ex.choose_q({q: v["maxboxacc_v2"] for q, v in curve.items()})
            assert run["q_pxap"] == ex.choose_q({q: v["pxap"] for q, v in curve.items()})
        assert rows["ivr_vs_minmax_every_method"]["effects"][i] == pytest.approx(min(gains.values()))
        pxap = {n: np.mean([runs[f"{m}/seed{seed}"]["test"][lab]["pxap"] for m in METHODS])
                for n, lab in (("minmax", "minmax"), ("max", "max"), ("pas", "pas"), ("ivr", "ivr_pxap_q"))}
        best_other = max(v for n, v in pxap.items() if n != "max")
        assert rows["max_best_pxap"]["effects"][i] == pytest.approx(pxap["max"] - best_other)
    assert len(res["table"]["rows"]) == 4 * 5 + 1


def _split(seed: int, n: int = 30, size: int = 16) -> dict:
    import cuekit.wsol.experiment as ex

    return ex._render_split(n, size, seed)


def test_q_is_chosen_without_the_test_split():
    """Changing the test split (images, labels, boxes) leaves the chosen q and the held-out curve as they were."""
    import cuekit.wsol.experiment as ex

    s = dict(TOY, train_size=50, history_size=10)
    base = {"method": "cam", "seed": 0, "settings": s, "device": "cpu", "keep_examples": False, "backbone": None,
            "train": _split(0, 50), "held-out": _split(1)}
    a = ex._train_and_score({**base, "test": _split(2)})
    b = ex._train_and_score({**base, "test": _split(3)})
    assert a["heldout"] == b["heldout"] and (a["q_box"], a["q_pxap"]) == (b["q_box"], b["q_pxap"])
    assert a["test"] != b["test"]


def test_choose_q_takes_the_best_and_the_smallest_on_ties():
    import cuekit.wsol.experiment as ex

    assert ex.choose_q({0.05: 1.0, 0.15: 3.0, 0.25: 3.0, 0.35: 2.0}) == 0.15
    assert 0.45 in ex.Q_GRID and 0.0 not in ex.Q_GRID   # q = 0 would be min-max itself


def test_the_control_differs_only_in_the_method():
    import cuekit.wsol.experiment as ex

    s = dict(TOY)
    base = dataclasses.asdict(ex.train_config("cam", 1, s, 2, 0.02, "cpu"))
    own = {"has": {"has_grid_size", "has_drop_rate"}, "adl": {"adl_drop_rate", "adl_gamma"},
           "cutmix": {"cutmix_beta", "cutmix_prob"}}
    for m in ("has", "adl", "cutmix"):
        cfg = dataclasses.asdict(ex.train_config(m, 1, s, 2, 0.02, "cpu"))
        assert {k for k in cfg if cfg[k] != base[k]} <= {"method"} | own[m]
        assert cfg["method"] == m
    assert ex.method_hparams("has", 224)["has_grid_size"] == 32


def test_backbone_loads_into_every_method_and_keeps_a_fresh_classifier():
    from cuekit.models import create_model
    from cuekit.wsol.pipeline import load_backbone_state

    torch.manual_seed(0)
    donor = create_model("cam_small", num_classes=5, img_size=16, width=4)
    state = {k: v.numpy() for k, v in donor.state_dict().items()}
    torch.manual_seed(1)
    adl = create_model("cam_small", num_classes=5, img_size=16, width=4, adl_after=(-2, -1))
    fc_before = adl.fc.weight.detach().clone()
    load_backbone_state(adl, state)
    for k, v in adl.state_dict().items():
        if k.startswith("features."):
            assert torch.equal(v, donor.state_dict()[k])
    assert torch.equal(adl.fc.weight, fc_before)


def test_centre_prior_and_shared_images():
    import cuekit.wsol.experiment as ex

    maps = ex.centre_prior_maps(3, 16)
    assert maps.shape == (3, 16, 16) and 0 <= maps.min() and maps.max() <= 1
    assert np.array_equal(maps[0], maps[2]) and maps[0].argmax() in {7 * 16 + 7, 7 * 16 + 8, 8 * 16 + 7, 8 * 16 + 8}
    a = np.arange(24, dtype=np.uint8).reshape(4, 6)
    assert ex.shared_images(a, a[[1, 3]]) == 2 and ex.shared_images(a, a[:0]) == 0
