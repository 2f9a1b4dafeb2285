"""NARA tests run their small models on one torch thread: faster and steadier on a shared machine."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    from cuekit.parallel import torch_threads

    with torch_threads(1):
        yield
