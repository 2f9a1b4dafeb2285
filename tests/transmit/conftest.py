"""Transmission test setup: helpers on sys.path, a small state dict, one torch thread per test."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from transmit_helpers import small_state  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    return small_state()
