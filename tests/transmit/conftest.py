"""Transmission test setup: helpers on sys.path, a small state dict, one torch thread per test."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from shared_helpers import one_torch_thread  # noqa: F401  (autouse)

sys.path.insert(0, str(Path(__file__).parent))

from transmit_helpers import small_state  # noqa: E402


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    return small_state()
