"""Atomically written files get the permissions the umask gives any new file (not mkstemp's 0600)."""
from __future__ import annotations

import os
import stat
import sys

import pytest
import torch
from torch import nn

from cuekit.io import atomic_write_bytes, atomic_write_json, atomic_write_text

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["022", "077", "002"])
def umask(request):
    """Run the test under this umask, restoring the previous one afterwards."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writers_honour_the_umask(tmp_path, umask):
    expected = 0o666 & ~umask
    with open(tmp_path / "reference.txt", "w") as f:  # what any new file gets under this umask
        f.write("x")
    assert mode(tmp_path / "reference.txt") == expected
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "sub" / "index.html", "<html></html>")
    atomic_write_json(tmp_path / "results.json", {"x": 1})
    for name in ("a.bin", "sub/index.html", "results.json"):
        assert mode(tmp_path / name) == expected, name
    atomic_write_text(tmp_path / "results.json", "{}")  # replacing a file: the new one follows the umask too
    assert mode(tmp_path / "results.json") == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "reference.txt", "results.json", "sub"]


def test_checkpoints_and_transmit_packages_honour_the_umask(tmp_path, umask):
    from cuekit.train.checkpoint import save_weights
    from cuekit.transmit.package import pack_state_dict

    expected = 0o666 & ~umask
    model = nn.Linear(3, 2)
    save_weights(tmp_path / "model.safetensors", model, {"model": "linear"})
    pack_state_dict({"w": torch.randn(4, 3)}, tmp_path / "pkg", (8, 8))
    written = [tmp_path / "model.safetensors", tmp_path / "model.json", *(tmp_path / "pkg").iterdir()]
    assert len(written) == 5  # weights, metadata, manifest and two parts
    assert {p.name: mode(p) for p in written} == {p.name: expected for p in written}
