"""`cuekit reproduce AREA --data SPEC`: an area that allows it runs on the user's dataset; others refuse early."""
from __future__ import annotations

import json

import pytest

from cuekit.cli import main
from cuekit.report import experiments
from shared_helpers import write_image_folder


@pytest.fixture(autouse=True)
def quick_calibration(monkeypatch):
    """The machine calibration is tested in tests/test_parallel.py; here it need not take a second."""
    from cuekit.report import calibration

    monkeypatch.setattr(calibration, "calibration_workload", lambda: 0.01)


@pytest.fixture
def tiny_folder(tmp_path):
    """A two-class image folder with its own train/ and val/ splits (20 px images, PNG)."""
    root = tmp_path / "tiny"
    write_image_folder(root / "train", per_class=24, seed=0)
    write_image_folder(root / "val", per_class=10, seed=1)
    return root


def run_cli(args, capsys):
    code = main(["reproduce", *[str(a) for a in args], "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_adamp_runs_on_an_image_folder_and_says_so(tiny_folder, tmp_path, monkeypatch, capsys):
    """The experiment trains on the folder's own splits (subsampled to its sizes) and every page names the data."""
    import cuekit.parallel
    from cuekit.optim import experiment

    monkeypatch.setattr(cuekit.parallel, "available_cpus", lambda: 1)  # runs inline: no worker start-up
    monkeypatch.setattr(experiment, "QUICK", experiment.Scale(train_size=40, selection_size=8, test_size=8,
                                                              batch_size=20, epochs=2, width=4))
    spec = f"folder:{tiny_folder}"
    code, out, err = run_cli(["adamp", "--data", spec, "--seeds", "1", "--out", tmp_path / "r"], capsys)
    record = json.loads((tmp_path / "r" / "adamp" / "results.json").read_text())
    assert record["status"] == "completed", record.get("error")
    assert code == 0
    assert record["config"]["data"] == spec and record["details"]["data"] == spec
    assert spec in record["regime"] and "2 classes" in record["regime"]
    # 48 training images subsampled to the experiment's 40; the 20 val images to 16, cut 8 / 8
    assert record["details"]["split_sizes"] == {"train": 40, "selection": 8, "test": 8}
    assert record["details"]["num_classes"] == 2
    head = next(c for c in record["claims"] if c["headline"])
    chance = next(p for p in head["preconditions"] if "beats chance" in p["what"])
    assert "1/2 +" in chance["what"]  # chance of the user's 2 classes, not dSprites' 6
    assert json.loads((tmp_path / "r" / "reproduce.json").read_text())["data"] == spec
    assert f"Data: {spec}" in (tmp_path / "r" / "index.html").read_text()


def test_an_area_that_refuses_gives_its_reason_and_exit_2(tiny_folder, tmp_path, capsys):
    code, out, err = run_cli(["wcst", "--data", f"folder:{tiny_folder}", "--out", tmp_path / "r"], capsys)
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "wcst" in err and "equally predictive" in err
    assert not (tmp_path / "r").exists()  # nothing ran


def test_several_areas_fail_early_listing_every_refusing_one(tiny_folder, tmp_path, capsys):
    code, out, err = run_cli(["adamp", "wsol", "nara", "--data", f"folder:{tiny_folder}", "--out", tmp_path / "r"],
                             capsys)
    assert code == 2 and "Traceback" not in err
    refused = err.split(":")[2]  # "cuekit: error: --data is refused by wsol, nara: ..."
    assert "wsol" in refused and "nara" in refused and "adamp" not in refused
    assert not (tmp_path / "r").exists()  # adamp, which takes --data, did not run either


@pytest.mark.parametrize("spec, needle", [
    ("folder:{missing}", "not found"),
    ("no-such-data:x", "unknown dataset"),
    ("moving-shapes", "video data"),
])
def test_a_bad_spec_is_one_line_with_exit_2(spec, needle, tmp_path, capsys):
    code, out, err = run_cli(["pit", "--data", spec.format(missing=tmp_path / "nope"), "--out", tmp_path / "r"],
                             capsys)
    assert code == 2
    assert "Traceback" not in err and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_report_only_takes_no_data(tmp_path, capsys):
    code, out, err = run_cli(["--report-only", "--data", "dsprites", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "--data" in err


def test_every_area_either_takes_data_or_says_why_not():
    """The registry of areas is split in two, and each refusal names its area."""
    assert set(experiments.DATA_KINDS) | set(experiments.DATA_REFUSALS) == set(experiments.AREA_MODULES)
    assert not set(experiments.DATA_KINDS) & set(experiments.DATA_REFUSALS)
    assert all(why.startswith(area) for area, why in experiments.DATA_REFUSALS.items())


def test_experiment_data_keeps_the_built_in_data_and_decodes_a_folder_once(tiny_folder):
    """spec None is the built-in render as before; a spec gives tensors of the folder's own splits, seeded."""
    import torch

    from cuekit.data import create_dataset, materialise

    built_in = experiments.experiment_data(None, builtin="dsprites", task="scale", img_size=16, train_size=8,
                                           val_size=4, seed=3)
    before = materialise(create_dataset("dsprites", task="scale", img_size=16, train_size=8, val_size=4, seed=3))
    assert torch.equal(built_in.train.tensors[0], before.train.tensors[0])
    a, b = (experiments.experiment_data(f"folder:{tiny_folder}", builtin="dsprites", task="scale", img_size=16,
                                        train_size=30, val_size=None, seed=1) for _ in range(2))
    assert a.num_classes == 2 and len(a.train) == 30 and len(a.val) == 20
    assert a.train.tensors[0].shape == (30, 3, 16, 16)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])  # the training transform's randomness is seeded


def _tiny_pit(monkeypatch):
    from cuekit.models import pit_experiment

    real_plan = pit_experiment._plan
    monkeypatch.setattr(pit_experiment, "_plan", lambda config: {**real_plan(config), "train_size": 32,
                                                                 "val_size": 16, "epochs": 1, "batch_size": 16})
    return pit_experiment.run_experiment


def _tiny_rexnet(monkeypatch):
    from cuekit.rank import experiment

    monkeypatch.setattr(experiment, "QUICK_RANK", dict(networks=4, networks_per_width=2, d_out_range=(20, 24)))
    monkeypatch.setattr(experiment, "QUICK_FIGURE", dict(blocks=("ib_dw3x3",), networks=2, networks_per_width=2,
                                                         d_out_range=(20, 24)))
    monkeypatch.setattr(experiment, "QUICK_TRAIN", dict(experiment.QUICK_TRAIN, train_size=32, val_size=16, epochs=1,
                                                        batch_size=16))
    return experiment.run_experiment


def _tiny_transmit(monkeypatch):
    from cuekit.transmit.experiment import Scale, run_experiment

    scale = Scale(model="resnet8", width=4, train_size=32, val_size=16, epochs=1, batch_size=16, rate_mbit=1.0,
                  rtt_ms=10.0)
    return lambda config: run_experiment(config, scale=scale)


@pytest.mark.parametrize("area, tiny", [("pit", _tiny_pit), ("rexnet", _tiny_rexnet), ("transmit", _tiny_transmit)])
def test_the_other_image_areas_train_on_the_folder(area, tiny, tiny_folder, tmp_path, monkeypatch):
    """pit, rexnet and transmit train on the folder's two classes (subsampled to their sizes) and say so."""
    import cuekit.parallel
    from cuekit.report.experiments import ExperimentConfig
    from cuekit.report.runner import check_result

    assert area in experiments.DATA_KINDS
    monkeypatch.setattr(cuekit.parallel, "available_cpus", lambda: 1)  # runs inline: no worker start-up
    spec = f"folder:{tiny_folder}"
    result = tiny(monkeypatch)(ExperimentConfig(out_dir=tmp_path, seeds=(0,), progress=False, data=spec))
    check_result(result, tmp_path)
    assert spec in result["regime"] and result["details"]["data"] == spec
    assert result["details"]["split_sizes"] == {"train": 32, "val": 16}
    chance = [p for c in result["claims"] for p in c["preconditions"] if "chance" in p["what"] + p["measured"]]
    assert chance and all("0.500" in p["what"] + p["measured"] for p in chance)  # 2 classes, not dSprites' 6
