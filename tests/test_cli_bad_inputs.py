"""Every `cuekit` command given bad input: a one-line error, the documented exit code, never a traceback.

The table covers each leaf command (a test checks that none is missing), including the five inputs that used
to end in tracebacks: an image model on video data and the reverse, `--device cuda` without a GPU,
`--workers -1` and `--out` pointing at an existing file.
"""
from __future__ import annotations

import argparse

import pytest
import torch

from cuekit.cli import build_parser, main
from shared_helpers import write_image_folder

# A CUDA device this machine does not have: "cuda" without a GPU, one index past the last GPU with one.
NO_SUCH_CUDA = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"

# (command words, extra arguments, text the error must contain). {file}: an existing file; {imgs}: a 2-class image
# folder; {one_class}: a 1-class image folder; {bad_imgs}: an image folder with one unreadable file; {img_ckpt},
# {vid_ckpt}: checkpoints of an image and a video model; {garbage}: a .safetensors file of garbage; {tmp}: a fresh
# folder. Every row exits with code 2.
# Small settings, so that a row whose check is missing ends quickly (and fails on its exit code) instead of training.
TINY = ["--train-size", "8", "--val-size", "4", "--epochs", "1", "--batch-size", "4", "--no-progress"]
WCST_TINY = ["--train-per-class", "4", "--valid-per-class", "2", "--epochs", "1", "--batch-size", "4", "--model", "mlp",
             "--no-progress"]
WSOL_TINY = [*TINY, "--no-eval"]
BENCH_TINY = [*TINY, "--regularizers", "none", "--corruptions", "gaussian_noise", "--severities", "1", "--ood",
              "gaussian", "--epsilons", "0", "--occlusion", "0.5"]
BAD_INPUTS = [
    # the five of the issue
    ("train", ["--model", "resnet8", "--data", "moving-shapes", "--frames", "4", "--img-size", "16", *TINY,
               "--out", "{tmp}/a"], "resnet8 is an image model but moving-shapes is video data"),
    ("train", ["--model", "video_cnn_small", "--data", "dsprites", "--img-size", "16", *TINY, "--out", "{tmp}/b"],
     "video_cnn_small is a video model but dsprites is image data"),
    ("train", ["--device", NO_SUCH_CUDA, "--out", "{tmp}/c"], "argument --device"),
    ("train", ["--workers", "-1", "--out", "{tmp}/d"], "argument --workers: must be at least 0, got -1"),
    ("train", ["--out", "{file}"], "is an existing file; give a folder"),
    # degenerate setups that cannot work
    ("train", ["--data", "folder:{one_class}", "--img-size", "16", *TINY, "--out", "{tmp}/e"],
     "has 1 class (only): a classifier needs at least 2"),
    ("train", ["--img-size", "0"], "argument --img-size: must be at least 1"),
    ("train", ["--model", "video_cnn_small", "--data", "moving-shapes", "--frames", "0", "--img-size", "16", *TINY],
     "argument --frames"),
    ("train", ["--epochs", "0"], "argument --epochs"),
    ("train", ["--out", "{file}/run"], "is a file, so no folder can be made inside it"),
    ("train", ["--data", "folder:{tmp}/missing", "--out", "{tmp}/f"], "not found"),
    ("train", ["--data", "folder:{bad_imgs}", "--check-data", "--img-size", "16", *TINY, "--out", "{tmp}/g"],
     "1 of 8 files of folder:"),
    ("train", ["--model", "resnet21"], "unknown model 'resnet21'"),
    ("train", ["--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    ("eval", ["--ckpt", "{img_ckpt}", "--data", "moving-shapes"], "image model but moving-shapes is video data"),
    ("eval", ["--ckpt", "{vid_ckpt}", "--data", "dsprites"], "video model but dsprites is image data"),
    ("eval", ["--ckpt", "{img_ckpt}", "--device", NO_SUCH_CUDA], "argument --device"),
    ("eval", ["--ckpt", "{img_ckpt}", "--workers", "-1"], "argument --workers"),
    ("eval", ["--ckpt", "{img_ckpt}", "--out", "{file}"], "is an existing file"),
    ("eval", ["--ckpt", "{img_ckpt}", "--batch-size", "0"], "argument --batch-size"),
    ("eval", ["--ckpt", "{img_ckpt}", "--val-size", "0"], "argument --val-size"),
    ("eval", ["--ckpt", "{tmp}/missing.safetensors"], "checkpoint not found"),
    ("eval", ["--ckpt", "{garbage}"], "garbage.safetensors"),
    ("predict", ["--ckpt", "{img_ckpt}", "{file}", "--topk", "0"], "argument --topk: must be at least 1, got 0"),
    ("predict", ["--ckpt", "{img_ckpt}", "{file}", "--device", NO_SUCH_CUDA], "argument --device"),
    ("predict", ["--ckpt", "{img_ckpt}", "{imgs}/circle/0.png", "--out", "{file}"], "is an existing file"),
    ("predict", ["--ckpt", "{img_ckpt}", "{file}"], "cannot read image"),
    ("predict", ["--ckpt", "{vid_ckpt}", "{imgs}/circle/0.png"], "this checkpoint is a video model"),
    ("data", [], "`cuekit data` needs a subcommand: list, preview, check"),
    ("data list", ["extra"], "unrecognized arguments"),
    ("data preview", ["dsprites", "--out", "{tmp}"], "is a folder; give a file name"),
    ("data preview", ["dsprites", "--out", "{file}/p.png"], "is a file, so no folder"),
    ("data preview", ["dsprites", "--n", "0"], "argument --n"),
    ("data preview", ["moving-shapes", "--frames", "0", "--n", "2", "--img-size", "16"], "argument --frames"),
    ("data preview", ["dsprites", "--frames", "2"], "--frames is for video datasets"),
    ("data check", ["folder:{tmp}/missing"], "not found"),
    ("data check", ["folder:{imgs}", "--workers", "-1"], "argument --workers"),
    ("data check", ["folder:{imgs}", "--out", "{file}"], "is an existing file"),
    ("models", [], "`cuekit models` needs a subcommand"),
    ("models list", ["--out", "{file}"], "is an existing file"),
    ("models info", ["nope"], "unknown model 'nope'"),
    ("models info", ["resnet8", "--img-size", "0", "--no-throughput"], "argument --img-size"),
    ("models info", ["resnet8", "--threads", "0", "--no-throughput"], "argument --threads"),
    ("models info", ["resnet8", "--device", NO_SUCH_CUDA, "--no-throughput"], "argument --device"),
    ("models info", ["resnet8", "--out", "{file}", "--no-throughput"], "is an existing file"),
    ("models convert", ["{tmp}/missing.pth", "--model", "resnet8", "--to", "{tmp}/x.safetensors"],
     "checkpoint not found"),
    ("models convert", ["{garbage}", "--model", "resnet8", "--to", "{tmp}/x.safetensors"], "garbage.safetensors"),
    ("models export", ["resnet8", "--format", "torch-export", "--out", "{tmp}"], "is a folder"),
    ("models export", ["resnet8", "--format", "torch-export", "--checkpoint", "{tmp}/missing"],
     "checkpoint not found"),
    ("models export", ["resnet8", "--format", "pickle"], "invalid choice"),
    ("reproduce", ["nope"], "unknown area 'nope'"),
    ("reproduce", ["--device", NO_SUCH_CUDA], "argument --device"),
    ("reproduce", ["--workers", "-1"], "argument --workers"),
    ("reproduce", ["--seeds", "0"], "argument --seeds"),
    ("reproduce", ["--report-only", "--out", "{file}"], "is an existing file"),
    ("reproduce", ["--report-only", "--out", "{tmp}/r", "--markdown", "{tmp}"], "is a folder"),
    ("wcst", [], "`cuekit wcst` needs a subcommand"),
    ("wcst audit", ["--device", NO_SUCH_CUDA, *WCST_TINY], "argument --device"),
    ("wcst audit", ["--workers", "-1", *WCST_TINY], "argument --workers"),
    ("wcst audit", ["--out", "{file}", *WCST_TINY], "is an existing file"),
    ("wcst audit", ["--img-size", "0", *WCST_TINY], "argument --img-size"),
    ("wcst audit", ["--cues", "color"], "at least 2 cues"),
    ("wcst audit", ["--data", "utkface:{tmp}/missing"], "not found"),
    ("wcst flatness", ["--directions", "0", *WCST_TINY], "argument --directions"),
    ("wcst abundance", ["--inits", "0", *WCST_TINY], "argument --inits"),
    ("wcst complexity", ["--bases", "0", "--img-size", "16"], "argument --bases"),
    ("wcst complexity", ["--out", "{file}", "--bases", "2", "--img-size", "16"], "is an existing file"),
    ("wsol", [], "`cuekit wsol` needs a subcommand"),
    ("wsol train", ["--device", NO_SUCH_CUDA, *WSOL_TINY], "argument --device"),
    ("wsol train", ["--out", "{file}", *WSOL_TINY], "is an existing file"),
    ("wsol train", ["--img-size", "0", *WSOL_TINY], "argument --img-size"),
    ("wsol train", ["--model", "resnet8", "--train-size", "8", "--val-size", "4", "--img-size", "32",
                    "--out", "{tmp}/w"], "not a CAM model"),
    ("wsol eval", ["--out", "{tmp}/w"], "give --ckpt"),
    ("wsol eval", ["--ckpt", "{tmp}/missing", "--out", "{tmp}/w"], "checkpoint not found"),
    ("wsol eval", ["--ckpt", "{img_ckpt}", "--out", "{tmp}/w"], "not a CAM model"),
    ("relabel", [], "`cuekit relabel` needs a subcommand"),
    ("relabel generate", ["--teacher", "nope", "--out", "{tmp}/l"], "unknown model 'nope'"),
    ("relabel generate", ["--teacher", "resnet8", "--out", "{tmp}/l"], "--weights"),
    ("relabel generate", ["--teacher", "{vid_ckpt}", "--out", "{tmp}/l"], "label maps need an image classifier"),
    ("relabel generate", ["--teacher", "{img_ckpt}", "--out", "{file}"], "is an existing file"),
    ("relabel generate", ["--teacher", "{img_ckpt}", "--out", "{tmp}/l", "--topk", "0"], "argument --topk"),
    ("relabel generate", ["--teacher", "{img_ckpt}", "--out", "{tmp}/l", "--device", NO_SUCH_CUDA],
     "argument --device"),
    ("relabel generate", ["--teacher", "{img_ckpt}", "--out", "{tmp}/l", "--workers", "-1"], "argument --workers"),
    ("relabel show", ["{tmp}/missing"], "no label maps"),
    ("relabel check", ["{tmp}", "--gt", "{tmp}/missing"], "metadata folder not found"),
    ("relabel check", ["{tmp}", "--gt", "{tmp}", "--limit", "-1"], "--limit must be >= 0"),
    ("robustness", [], "`cuekit robustness` needs a subcommand"),
    ("robustness bench", ["--device", NO_SUCH_CUDA, *BENCH_TINY], "argument --device"),
    ("robustness bench", ["--out", "{file}", *BENCH_TINY], "is an existing file"),
    ("robustness bench", ["--img-size", "0"], "argument --img-size"),
    ("robustness bench", ["--regularizers", "bogus"], "unknown regularizer 'bogus'"),
    ("robustness bench", ["--severities", "9"], "--severities"),
    ("robustness eval", ["--ckpt", "{tmp}/missing"], "checkpoint not found"),
    ("robustness eval", ["--ckpt", "{vid_ckpt}"], "robustness eval measures image classifiers"),
    ("robustness eval", ["--ckpt", "{img_ckpt}", "--data", "moving-shapes"], "is video data"),
    ("robustness eval", ["--ckpt", "{img_ckpt}", "--bins", "0"], "argument --bins"),
    ("robustness eval", ["--ckpt", "{img_ckpt}", "--out", "{file}"], "is an existing file"),
    ("rank-study", ["--device", NO_SUCH_CUDA], "argument --device"),
    ("rank-study", ["--out", "{file}", "--quick", "--networks", "1", "--no-progress"], "is an existing file"),
    ("rank-study", ["--networks", "0"], "argument --networks"),
    ("rank-study", ["--ratios", "a"], "argument --ratios"),
    ("rank-study", ["--ratios", "2", "--out", "{tmp}/k"], "dimension ratios must lie in (0, 1]"),
    ("transmit", [], "`cuekit transmit` needs a subcommand"),
    ("transmit pack", ["{tmp}/missing.safetensors", "--out", "{tmp}/t"], "checkpoint not found"),
    ("transmit pack", ["{img_ckpt}", "--out", "{file}"], "is an existing file"),
    ("transmit pack", ["{img_ckpt}", "--out", "{tmp}/t", "--bits", "40"], "more than the 32-bit codes"),
    ("transmit serve", ["{tmp}/missing"], "not a folder"),
    ("transmit serve", ["{file}"], "not a folder"),
    ("transmit fetch", ["not-a-url"], "must start with http:// or https://"),
    ("transmit fetch", ["http://127.0.0.1:9/", "--trust", "zz"], "neither 64 hex characters"),
    ("transmit pack", ["{img_ckpt}", "--out", "{tmp}/t", "--sign", "{tmp}/missing.key"], "signing key"),
    ("transmit pack", ["{img_ckpt}", "--out", "{tmp}/t", "--sign", "{file}"], "is not a PEM private key"),
    ("transmit keygen", ["--out", "{file}/k"], "is a file"),
    ("transmit verify", ["{tmp}"], "not a progressive package"),
    ("transmit verify", ["{tmp}", "--trust", "zz"], "neither 64 hex characters"),
    ("transmit fetch", ["http://127.0.0.1:9/", "--topk", "0"], "argument --topk"),
    ("transmit fetch", ["http://127.0.0.1:9/", "--device", NO_SUCH_CUDA], "argument --device"),
    ("transmit fetch", ["http://127.0.0.1:9/", "--out", "{file}"], "is an existing file"),
    ("nara", [], "`cuekit nara` needs a subcommand"),
    ("nara train", ["--out", "{file}", "--mother-steps", "1", "--prior-steps", "1", "--no-progress"],
     "is an existing file"),
    ("nara train", ["--mother-steps", "0"], "argument --mother-steps"),
    ("nara train", ["--domain", "audio"], "invalid choice"),
    ("nara sample", ["--ckpt", "{tmp}/missing"], "no NARA domain"),
    ("nara sample", ["--num", "0"], "argument --num"),
    ("nara sample", ["--tau", "-1"], "--tau"),
    ("nara bench", ["--taus", "a"], "--taus must be comma-separated numbers"),
    ("nara bench", ["--samples", "0"], "argument --samples"),
    ("nara bench", ["--repeats", "0"], "argument --repeats"),
]


def leaf_commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> set[str]:
    """Every command path the parser accepts, groups included ("train", "data", "data preview", ...)."""
    found = {" ".join(words)} if words else set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= leaf_commands(sub, (*words, name))
    return found


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    """The files the table's placeholders name, made once."""
    from cuekit.models.registry import create_model
    from cuekit.train.checkpoint import save_weights

    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "afile").write_text("not an image, a checkpoint or a folder\n")
    (root / "garbage.safetensors").write_bytes(b"\x00garbage, not safetensors")
    imgs = write_image_folder(root / "imgs", per_class=4)
    one_class = write_image_folder(root / "one_class", classes=("only",), per_class=4)
    bad_imgs = write_image_folder(root / "bad_imgs", per_class=4)
    (bad_imgs / "square" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    common = {"in_chans": 3, "img_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3, "resize_ratio": 1.0, "task": None,
              "config": {}}
    save_weights(root / "img.safetensors", create_model("resnet8", num_classes=2, img_size=16),
                 {**common, "model": "resnet8", "num_classes": 2, "class_names": ["circle", "square"],
                  "frames": None, "data": f"folder:{imgs}"})
    save_weights(root / "vid.safetensors", create_model("video_cnn_small", num_classes=8, img_size=16),
                 {**common, "model": "video_cnn_small", "num_classes": 8, "class_names": [str(i) for i in range(8)],
                  "frames": 4, "data": "moving-shapes"})
    return {"file": str(root / "afile"), "imgs": str(imgs), "one_class": str(one_class), "bad_imgs": str(bad_imgs),
            "img_ckpt": str(root / "img.safetensors"), "vid_ckpt": str(root / "vid.safetensors"),
            "garbage": str(root / "garbage.safetensors")}


def run_bad(argv: list[str], capsys) -> tuple[int, str, str]:
    """main(argv) -> (exit code, stdout, stderr); any exception escaping main fails the test with its name."""
    try:
        code = main(argv)
    except SystemExit as e:  # only --help / --version may exit this way
        pytest.fail(f"main raised SystemExit({e.code}) instead of returning an exit code")
    except BaseException as e:  # noqa: BLE001  (the point: nothing may escape as a traceback)
        pytest.fail(f"a traceback instead of a one-line error: {type(e).__name__}: {e}")
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(err: str, needle: str) -> None:
    """stderr ends with exactly one error line, which holds `needle`; warnings and notes may come before it."""
    lines = err.strip().splitlines()
    errors = [ln for ln in lines if "error:" in ln]
    assert "Traceback" not in err, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert needle in errors[0], err


@pytest.mark.parametrize("command, args, needle", BAD_INPUTS,
                         ids=[f"{c}:{' '.join(a)[:40]}" for c, a, _ in BAD_INPUTS])
def test_bad_input_is_a_one_line_error_with_exit_code_2(command, args, needle, inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # commands with a default --out write nothing outside the test's folder
    fill = {**inputs, "tmp": str(tmp_path)}
    argv = command.split() + [a.format(**fill) for a in args]
    code, _, err = run_bad(argv, capsys)
    assert_one_line_error(err, needle.format(**fill))
    assert code == 2, err


def test_the_table_covers_every_command():
    covered = {command for command, _, _ in BAD_INPUTS}
    missing = leaf_commands(build_parser()) - covered
    assert not missing, f"commands without a bad-input row: {sorted(missing)}"


def test_every_default_passes_the_shared_checks():
    """The checks installed on every parser (counts, --device, --out) accept each command's own defaults."""
    from cuekit.cli import MINIMUM

    def walk(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from walk(sub)
            else:
                yield parser.prog, action

    for prog, action in walk(build_parser()):
        if action.dest in MINIMUM and isinstance(action.default, int):
            assert action.default >= MINIMUM[action.dest], (prog, action.dest)
