"""Fixtures of the optimizer tests: one torch thread per test."""
from __future__ import annotations

from shared_helpers import one_torch_thread  # noqa: F401  (autouse)
