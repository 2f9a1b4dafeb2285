"""Fixtures shared by all tests."""
from __future__ import annotations

import pytest

from cuekit.data import DataBundle
from shared_helpers import make_blobs_bundle


@pytest.fixture
def blobs() -> DataBundle:
    return make_blobs_bundle()
