"""Fixtures for the robustness tests."""
from __future__ import annotations

import pytest
import torch
from robustness_helpers import natural_images


@pytest.fixture
def images32() -> torch.Tensor:
    return natural_images(8, 32)
