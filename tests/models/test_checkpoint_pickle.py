"""Pickled checkpoints: refused with cuekit's own line by default; `models convert --trust-pickle` on request."""
from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

from cuekit.cli import main
from cuekit.errors import CheckpointError
from cuekit.models import create_model, load_checkpoint, read_state_dict


class MakesADirectory:
    """Unpickling this runs os.makedirs(target): stands in for any code a malicious checkpoint runs."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return os.makedirs, (self.target,)


@pytest.fixture
def deit_style(tmp_path):
    """A timm / DeiT style training checkpoint: weights under "model" beside an argparse.Namespace."""
    model = create_model("pit_nano", num_classes=5).eval()
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "epoch": 299,
                "args": argparse.Namespace(model="pit_nano", lr=5e-4, batch_size=128)}, path)
    return model, path


def test_a_namespace_checkpoint_is_refused_with_cuekits_own_line(deit_style, capsys):
    _, path = deit_style
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    message = str(caught.value)
    assert "\n" not in message and "weights_only" not in message and "\x1b" not in message
    assert str(path) in message and "argparse.Namespace" in message
    assert f"cuekit models convert {path} --model NAME --to OUT.safetensors --trust-pickle" in message
    with pytest.raises(CheckpointError):
        create_model("pit_nano", num_classes=5, checkpoint=path)
    assert main(["models", "convert", str(path), "--model", "pit_nano",
                 "--to", str(path.parent / "out.safetensors")]) == CheckpointError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--trust-pickle" in err and "weights_only" not in err
    assert not (path.parent / "out.safetensors").exists()


def test_trust_pickle_converts_to_a_file_loaded_without_pickle(deit_style, capsys, monkeypatch):
    model, path = deit_style
    out = path.parent / "nano.safetensors"
    assert main(["models", "convert", str(path), "--model", "pit_nano", "--to", str(out), "--trust-pickle"]) == 0
    captured = capsys.readouterr()
    assert "runs any code" in captured.err and str(path) in captured.err
    assert json.loads(out.with_suffix(".json").read_text())["unpickled"] is True

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load called: the converted file must load without pickle")

    monkeypatch.setattr(torch, "load", no_pickle)
    converted = create_model("pit_nano", num_classes=5, checkpoint=out).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=0, atol=0)


def test_a_malicious_pickle_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": create_model("pit_nano", num_classes=5).state_dict(), "x": MakesADirectory(str(marker))},
               path)
    with pytest.raises(CheckpointError, match=r"refused to unpickle .*os\.makedirs.*--trust-pickle"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_checkpoint(create_model("pit_nano", num_classes=5), path)
    assert main(["models", "convert", str(path), "--model", "pit_nano",
                 "--to", str(tmp_path / "evil.safetensors")]) == CheckpointError.exit_code
    assert "refused to unpickle" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "evil.safetensors").exists()
    read_state_dict(path, trust_pickle=True)  # the explicit opt-in does run it: the marker shows the test is real
    assert marker.is_dir()


def test_a_file_that_is_not_a_pickle_names_the_reason(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"\x80\x02" + b"not a checkpoint" * 8)
    with pytest.raises(CheckpointError) as caught:
        read_state_dict(path)
    assert "\n" not in str(caught.value) and "weights_only" not in str(caught.value)
