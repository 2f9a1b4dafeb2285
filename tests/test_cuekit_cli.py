"""The `cuekit` command end to end in a temporary folder, and its handling of bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cuekit import __version__
from cuekit.cli import main
from shared_helpers import write_image_folder


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out
    code, out, _ = run_cli([], capsys)
    assert code == 0 and "train" in out and "predict" in out


def test_train_eval_predict_on_an_image_folder(tmp_path, capsys):
    data = write_image_folder(tmp_path / "imgs", per_class=16)
    spec = f"folder:{data}"
    run = tmp_path / "run"
    code, out, err = run_cli(["train", "--model", "resnet8", "--data", spec, "--img-size", "16", "--epochs", "3",
                              "--batch-size", "8", "--lr", "0.05", "--out", run, "--no-progress"], capsys)
    assert code == 0, err
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed" and len(results["history"]) == 3
    assert (run / "model.safetensors").is_file() and (run / "model.json").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3

    code, out, err = run_cli(["eval", "--ckpt", run / "model.safetensors", "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    ev = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert ev["n"] == results["val_samples"]
    assert abs(ev["acc"] - results["final"]["val_acc"]) < 1e-9  # same split, same weights

    img = data / "circle" / "0.png"
    code, out, err = run_cli(["predict", "--ckpt", run / "model.safetensors", img, "--topk", "2"], capsys)
    assert code == 0, err
    assert "circle" in out and "square" in out


def test_train_eval_predict_a_video_model(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from cuekit.data.preprocess import load_clip_tensor
    from cuekit.models.registry import model_from_checkpoint

    run = tmp_path / "run"
    code, _, err = run_cli(["train", "--model", "video_cnn_small", "--data", "moving-shapes", "--frames", "4",
                            "--img-size", "16", "--train-size", "32", "--val-size", "16", "--epochs", "1",
                            "--batch-size", "16", "--reg", "videomix-st", "--out", run, "--no-progress"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["eval", "--ckpt", run / "model.safetensors", "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["n"] == 16
    frames = tmp_path / "clip"
    frames.mkdir()
    for i in range(6):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(frames / f"frame_{i}.png")
    code, out, err = run_cli(["predict", "--ckpt", run / "model.safetensors", frames, "--topk", "3",
                              "--out", tmp_path / "pr"], capsys)
    assert code == 0, err
    top = json.loads((tmp_path / "pr" / "results.json").read_text())["predictions"][0]["top"]
    model, meta = model_from_checkpoint(run / "model.safetensors")
    x = load_clip_tensor(frames, meta)
    assert x.shape == (1, 3, 4, 16, 16)
    with torch.no_grad():
        probs = model.eval()(x).softmax(-1)[0]
    assert [t["index"] for t in top] == probs.topk(3).indices.tolist()
    img = tmp_path / "still.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    code, _, err = run_cli(["predict", "--ckpt", run / "model.safetensors", img], capsys)
    assert code == 2 and "video model" in err


def test_resume_continues_a_run(tmp_path, capsys):
    data = write_image_folder(tmp_path / "imgs", per_class=8)
    common = ["train", "--model", "resnet8", "--data", f"folder:{data}", "--img-size", "16",
              "--batch-size", "8", "--out", tmp_path / "run", "--no-progress"]
    assert run_cli(common + ["--epochs", "1"], capsys)[0] == 0
    code, _, err = run_cli(common + ["--epochs", "1"], capsys)
    assert code == 2 and "--resume" in err
    assert run_cli(common + ["--epochs", "2", "--resume"], capsys)[0] == 0
    history = json.loads((tmp_path / "run" / "results.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


@pytest.mark.parametrize("args, needle", [
    (["train", "--model", "resnet21"], "resnet20"),
    (["train", "--opt", "sgdd"], "sgd"),
    (["train", "--data", "folder:/does/not/exist"], "not found"),
    (["train", "--data", "cifar1000:/x"], "cifar100"),
    (["predict", "--ckpt", "/does/not/exist.safetensors", "x.png"], "not found"),
])
def test_bad_input_gives_one_line_error(args, needle, capsys, tmp_path):
    code, out, err = run_cli(args + (["--out", tmp_path / "r"] if args[0] == "train" else []), capsys)
    assert code == 2
    assert "Traceback" not in err and needle in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1]


def test_unknown_names_exit_with_code_2(capsys):
    assert run_cli(["train", "--model", "nope"], capsys)[0] == 2


def test_corrupted_checkpoint_in_predict(tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"garbage")
    code, _, err = run_cli(["predict", "--ckpt", bad, "x.png"], capsys)
    assert code == 2 and "cannot read checkpoint" in err and "Traceback" not in err


def test_import_cuekit_stays_light():
    code = ("import sys, cuekit, cuekit.models, cuekit.optim, cuekit.data, cuekit.cli; "
            "cuekit.cli.build_parser(); "
            "bad = [m for m in ('matplotlib', 'aiohttp', 'cv2', 'timm') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_train_on_builtin_dsprites(tmp_path, capsys):
    run = tmp_path / "x"
    code, out, err = run_cli(["train", "--model", "resnet8", "--data", "dsprites", "--task", "color",
                              "--train-size", "512", "--val-size", "128", "--img-size", "32", "--epochs", "2",
                              "--batch-size", "64", "--out", run, "--no-progress"], capsys)
    assert code == 0, err
    results = json.loads((run / "results.json").read_text())
    assert results["train_samples"] == 512 and results["val_samples"] == 128
    meta = json.loads((run / "model.json").read_text())
    assert meta["class_names"] == ["red", "green", "blue", "white"] and meta["task"] == "color"
    # colour is a trivial cue: two short epochs beat chance (0.25) by more than 3 binomial sigmas
    assert results["final"]["val_acc"] > 0.25 + 3 * (0.25 * 0.75 / 128) ** 0.5


def test_train_with_a_regularizer_and_unknown_regularizer(tmp_path, capsys):
    data = write_image_folder(tmp_path / "imgs", per_class=8)
    common = ["train", "--model", "resnet8", "--data", f"folder:{data}", "--img-size", "16", "--batch-size", "8",
              "--epochs", "1", "--no-progress"]
    code, _, err = run_cli(common + ["--reg", "mixup,ls", "--out", tmp_path / "r1"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r1" / "results.json").read_text())["config"]["reg"] == "mixup,ls"
    code, _, err = run_cli(common + ["--reg", "mixpu", "--out", tmp_path / "r2"], capsys)
    assert code == 2 and "mixup" in err and "Traceback" not in err


class _BadData(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        from cuekit.errors import DataError

        raise DataError(f"clip_{i}.mp4: cannot be decoded")


def test_an_error_raised_in_a_dataloader_worker_is_one_line():
    from torch.utils.data import DataLoader

    from cuekit.cli import user_message
    from cuekit.errors import DataError

    with pytest.raises(DataError) as info:
        next(iter(DataLoader(_BadData(), batch_size=2, num_workers=1)))
    assert "Traceback" in str(info.value)  # what torch re-raises
    assert user_message(info.value) == "clip_0.mp4: cannot be decoded"
    assert user_message(DataError("plain")) == "plain"



def _all_parsers(parser):
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_help_states_the_exit_codes_and_every_default_once():
    import re

    from cuekit.cli import build_parser

    root = build_parser()
    top = root.format_help()
    assert "exit codes" in top and re.search(r"^\s+2\s+bad input", top, re.M)
    assert re.search(r"^\s+1\s+the work failed", top, re.M) and re.search(r"^\s+130\s+interrupted", top, re.M)
    for parser in _all_parsers(root):
        text = " ".join(parser.format_help().split())
        assert "(default: None)" not in text and "(default: False)" not in text, parser.prog
        assert not re.search(r"default[^()]*\)\s*\(default:", text), parser.prog  # e.g. "(default: …) (default: None)"
    eval_help = " ".join(next(p for p in _all_parsers(root) if p.prog == "cuekit eval").format_help().split())
    assert "dataset spec (default: the checkpoint's) --task" in eval_help
    assert "--batch-size BATCH_SIZE evaluation batch size (default: 256)" in eval_help


def test_train_help_names_every_kind_of_data_and_the_folder_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in ("dsprites", "moving-shapes", "folder:PATH", "video-folder:PATH", "cifar10:PATH", "224 px",
                 "--check-data", "--skip-bad-images"):
        assert name in text, name


def test_reproduce_help_lists_the_area_names(capsys):
    from cuekit.report.experiments import AREA_MODULES

    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(area in text for area in AREA_MODULES)


@pytest.mark.parametrize("args, warning", [
    (["--img-size", "7"], "--img-size 7 is very small"),
    (["--frames", "1"], "--frames 1 makes one-frame clips"),
])
def test_settings_that_may_be_intended_are_warned_about(args, warning, capsys):
    code, _, err = run_cli(["train", *args, "--model", "nope"], capsys)  # stops right after the warning
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and lines[0].startswith("cuekit: warning:") and warning in lines[0]
    code, _, err = run_cli(["train", "--img-size", "8", "--model", "nope"], capsys)
    assert "warning" not in err


def test_exit_codes_follow_one_scheme(tmp_path, monkeypatch, capsys):
    import errno

    import cuekit.io
    from cuekit.errors import CheckpointError, DataError, TrainingDiverged, UnknownChoiceError, UsageError

    assert UsageError("x").exit_code == DataError("x").exit_code == CheckpointError("x").exit_code == 2
    assert UnknownChoiceError("model", "x", ["y"]).exit_code == 2
    assert TrainingDiverged("x").exit_code == 1

    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cuekit.io, "atomic_write_bytes", full_disk)
    code, _, err = run_cli(["models", "list", "--out", tmp_path / "l"], capsys)
    assert code == 1 and err.startswith("cuekit: error:") and "No space left" in err and "Traceback" not in err

    def vanished(path, data):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))

    monkeypatch.setattr(cuekit.io, "atomic_write_bytes", vanished)
    code, _, err = run_cli(["models", "list", "--out", tmp_path / "l"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
