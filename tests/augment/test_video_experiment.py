"""`reproduce videomix`: the wiring at toy scale, one row per claim, preconditions, and a control that differs
from the baseline only in the batch transform."""
import dataclasses

import pytest
import torch

from cuekit.augment import video_experiment as ve
from cuekit.report.experiments import VERDICTS, ExperimentConfig

TOY = dict(img_size=16, frames=4, train_size=48, eval_size=24, curve_size=16, epochs=2, batch_size=16, lr=3e-3,
           widths=(4, 8, 8, 8), scene_bias=0.8, plateau_epochs=1, plateau_tol=1.0, headroom=1.0)
CLAIM_IDS = ["videomix_s_in_distribution", "videomix_s_scene_independent", "videomix_s_no_scene_bias",
             "videomix_t_in_distribution", "videomix_st_in_distribution", "videomix_s_vs_video_mixup",
             "videomix_s_vs_frame_cutmix", "video_mixup_vs_baseline", "frame_cutmix_vs_baseline"]


def _toy_data(seed: int = 0) -> dict:
    return {name: ve._render((seed, *spec, TOY)) for name, spec in ve._splits(TOY).items()}


def test_reproduce_videomix_runs_at_toy_scale_and_reports_what_it_computed(tmp_path, monkeypatch):
    monkeypatch.setattr(ve, "_plan", lambda config: TOY)
    threads = torch.get_num_threads()
    result = ve.run_experiment(ExperimentConfig(out_dir=tmp_path, seeds=(0, 1, 2), progress=False))
    assert torch.get_num_threads() == threads
    assert result["area"] == "videomix" and result["verdict"] in VERDICTS
    assert (tmp_path / result["plots"][0]).stat().st_size > 0
    claims = {c["id"]: c for c in result["claims"]}
    assert list(claims) == CLAIM_IDS
    assert [c["id"] for c in result["claims"] if c["headline"]] == ["videomix_s_in_distribution"]
    assert result["verdict"] == claims["videomix_s_in_distribution"]["verdict"]
    assert all(c["expected_sign"] == 1 for c in result["claims"])
    assert {c["id"] for c in result["claims"] if c["reference"]} == {"video_mixup_vs_baseline",
                                                                     "frame_cutmix_vs_baseline"}
    runs = result["details"]["runs"]
    assert list(runs["biased"]) == list(ve.METHODS) and list(runs["control"]) == list(ve.CONTROL_METHODS)
    assert all(len(rs) == 3 for group in runs.values() for rs in group.values())

    def diff(group, a, b, key):
        return [x[key] - y[key] for x, y in zip(runs[group][a], runs[group][b])]

    assert claims["videomix_s_in_distribution"]["effects"] == pytest.approx(
        diff("biased", "videomix-s", "baseline", "heldout_acc"))
    assert claims["videomix_s_scene_independent"]["effects"] == pytest.approx(
        diff("biased", "videomix-s", "baseline", "test_acc"))
    assert claims["videomix_s_no_scene_bias"]["effects"] == pytest.approx(
        diff("control", "videomix-s", "baseline", "test_acc"))
    assert claims["videomix_st_in_distribution"]["effects"] == pytest.approx(
        diff("biased", "videomix-st", "baseline", "heldout_acc"))
    assert claims["videomix_s_vs_frame_cutmix"]["effects"] == pytest.approx(
        diff("biased", "videomix-s", "frame cutmix", "heldout_acc"))
    for group in runs.values():
        for rs in group.values():
            for r in rs:
                assert len(r["curve"]) == TOY["epochs"] and 0 <= r["test_acc"] <= 100 and 0 <= r["train_acc"] <= 100
    # A run in a worker process equals the same run here (seeded, one thread).
    torch.set_num_threads(1)
    try:
        again = ve._train_one((2, "videomix-st", "biased", TOY, "cpu", _toy_data(2)))
    finally:
        torch.set_num_threads(threads)
    assert again["heldout_acc"] == runs["biased"]["videomix-st"][2]["heldout_acc"]
    assert again["curve"] == runs["biased"]["videomix-st"][2]["curve"]


class _Stop(Exception):
    pass


def test_methods_of_a_seed_differ_only_in_the_batch_transform(monkeypatch):
    """Same data, same initial weights, same settings: only `reg` differs between baseline and VideoMix."""
    import cuekit.train

    seen = {}

    def capture(cfg, model=None, data=None, **kw):
        seen[cfg.reg] = (cfg, {k: v.clone() for k, v in model.state_dict().items()}, data)
        raise _Stop

    monkeypatch.setattr(cuekit.train, "train", capture)
    data = _toy_data(0)
    for method in ("baseline", "videomix-s"):
        with pytest.raises(_Stop):
            ve._train_one((0, method, "control", TOY, "cpu", data))
    (cfg_b, w_b, data_b), (cfg_s, w_s, data_s) = seen[None], seen["videomix-s"]
    assert dataclasses.replace(cfg_s, reg=None) == cfg_b
    assert all(torch.equal(w_b[k], w_s[k]) for k in w_b)
    assert data_b.train.tensors[0] is data_s.train.tensors[0] is data["train_control"][0]
    assert torch.equal(data_b.val.tensors[0], data_s.val.tensors[0])


def test_control_data_differ_from_training_data_only_in_the_scene():
    data = _toy_data(0)
    (clips_b, labels_b, scenes_b), (clips_c, labels_c, scenes_c) = data["train"], data["train_control"]
    assert torch.equal(labels_b, labels_c)
    assert (scenes_b == labels_b).float().mean() > 0.6 > (scenes_c == labels_c).float().mean()
    same_scene = scenes_b == scenes_c
    assert 0 < same_scene.sum() < len(same_scene)
    # the same motion, object and noise; only a clip whose scene was redrawn differs
    assert torch.equal(clips_b[same_scene], clips_c[same_scene])
    assert all(not torch.equal(a, b) for a, b in zip(clips_b[~same_scene], clips_c[~same_scene]))


def _fake_runs(base_curve: list[float], base_acc: float, gain: list[float]) -> dict:
    def run(acc, curve):
        return {"curve": curve, "heldout_acc": acc, "test_acc": acc - 10, "test_scene_agreement": 20.0,
                "heldout_scene_agreement": 80.0, "train_acc": 100.0}

    group = {m: [run(base_acc + (g if m != "baseline" else 0), base_curve) for g in gain] for m in ve.METHODS}
    return {"biased": group, "control": {m: group[m] for m in ve.CONTROL_METHODS}}


def test_a_baseline_still_rising_makes_the_claims_inconclusive():
    plan = {**TOY, "epochs": 6, "plateau_epochs": 2}
    rising = ve._summarise(_fake_runs([40, 50, 60, 70, 80, 90], 90.0, [2.0, 3.0, 2.5]), plan, [0, 1, 2], True)
    head = rising["claims"][0]
    assert head["verdict"] == "inconclusive" == rising["verdict"]
    assert any("stopped rising" in p for p in head["failed_preconditions"])
    flat = ve._summarise(_fake_runs([40, 80, 90, 90, 90, 90], 90.0, [2.0, 3.0, 2.5]), plan, [0, 1, 2], True)
    assert flat["verdict"] == "held" and flat["claims"][0]["failed_preconditions"] == []
    hurt = ve._summarise(_fake_runs([40, 80, 90, 90, 90, 90], 90.0, [-2.0, -3.0, -2.5]), plan, [0, 1, 2], True)
    assert hurt["verdict"] == "did not hold"


def test_a_baseline_at_chance_or_at_the_ceiling_is_inconclusive():
    plan = {**TOY, "epochs": 4, "plateau_epochs": 2}
    at_chance = ve._summarise(_fake_runs([13, 13, 13, 13], 13.0, [2.0, 3.0, 2.5]), plan, [0, 1, 2], True)
    assert any("beats chance" in p for p in at_chance["claims"][0]["failed_preconditions"])
    perfect = ve._summarise(_fake_runs([99.5] * 4, 99.5, [0.1, 0.2, 0.3]), plan, [0, 1, 2], True)
    assert perfect["verdict"] == "inconclusive"
    assert any("room to improve" in p for p in perfect["claims"][0]["failed_preconditions"])
