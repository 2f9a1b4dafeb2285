"""DDP under torchrun (gloo, 2 processes) matches one process with the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from cuekit.models import read_state_dict
from shared_helpers import TinyNoBN

WORKER = Path(__file__).with_name("ddp_worker.py")


def _run(nproc: int, out: Path) -> dict[str, torch.Tensor]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(WORKER), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_state_dict(out / "model.safetensors")[0]


def test_two_process_gloo_matches_one_process(tmp_path):
    one = _run(1, tmp_path / "one")
    two = _run(2, tmp_path / "two")
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-5, msg=k)
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["world_size"] == 2
    # training moved the weights away from the shared initialisation
    torch.manual_seed(0)
    init = TinyNoBN().state_dict()
    assert all(not torch.allclose(one[k], init[k]) for k in one)
