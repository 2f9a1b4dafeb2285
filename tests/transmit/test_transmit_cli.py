"""`cuekit transmit pack|fetch` end to end on loopback, errors as one line, light imports."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cuekit.cli import main
from cuekit.transmit.server import ServerThread


@pytest.fixture
def checkpoint(tmp_path):
    """A `cuekit train`-style model.safetensors of a tiny resnet8 for dsprites color (4 classes, 16 px)."""
    from cuekit.models import create_model
    from cuekit.train.checkpoint import save_weights

    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4, width=4)
    meta = {"model": "resnet8", "num_classes": 4, "in_chans": 3, "img_size": 16,
            "class_names": ["red", "green", "blue", "white"], "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
            "resize_ratio": 1.0, "data": "dsprites", "task": "color",
            "config": {"model_kwargs": {"width": 4}, "train_size": 64, "seed": 0, "val_split": 0.1}}
    save_weights(tmp_path / "model.safetensors", model, meta)
    return tmp_path / "model.safetensors"


def test_pack_then_fetch_with_image(tmp_path, checkpoint, capsys):
    from PIL import Image

    assert main(["transmit", "pack", str(checkpoint), "--bits", "4,4,8", "--out", str(tmp_path / "pkgs" / "r8")]) == 0
    out = capsys.readouterr().out
    assert "part-2.bin" in out and "float16 file" in out
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "red.png")
    with ServerThread(tmp_path / "pkgs") as srv:
        rc = main(["transmit", "fetch", srv.url + "r8/", "--image", str(tmp_path / "red.png"), "--topk", "2",
                   "--no-progress", "--out", str(tmp_path / "fetch")])
    assert rc == 0
    res = json.loads((tmp_path / "fetch" / "results.json").read_text())
    assert [s["bits"] for s in res["stages"]] == [4, 8, 16]
    assert all(len(s["predictions"][0]["top"]) == 2 for s in res["stages"])
    assert res["stages"][-1]["part_bytes"] == sum((tmp_path / "pkgs" / "r8" / f"part-{i}.bin").stat().st_size
                                                  for i in range(3))
    assert {e["event"] for e in res["timeline"]} >= {"request", "arrived", "ready"}


def test_fetch_without_image_evaluates_on_builtin_data(tmp_path, checkpoint):
    assert main(["transmit", "pack", str(checkpoint), "--bits", "8,8", "--out", str(tmp_path / "p")]) == 0
    with ServerThread(tmp_path) as srv:
        rc = main(["transmit", "fetch", srv.url + "p/manifest.json", "--eval-size", "32", "--no-progress",
                   "--no-overlap", "--out", str(tmp_path / "f")])
    assert rc == 0
    res = json.loads((tmp_path / "f" / "results.json").read_text())
    assert len(res["stages"]) == 2 and all(0.0 <= s["acc"] <= 1.0 for s in res["stages"])


def test_bad_input_is_one_line_error(tmp_path, checkpoint, capsys):
    assert main(["transmit", "pack", str(checkpoint), "--bits", "16,16,8", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cuekit: error:") and "more than the 32-bit codes" in err and "Traceback" not in err
    assert main(["transmit", "fetch", "ftp://example/x", "--no-progress"]) == 2
    assert main(["transmit", "pack", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "y")]) == 2


def test_cli_module_imports_no_aiohttp():
    code = ("import sys, argparse; import cuekit.cli; import cuekit.transmit; import cuekit.transmit.cli as c; "
            "p = argparse.ArgumentParser(); c.register(p.add_subparsers()); "
            "print('aiohttp' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
