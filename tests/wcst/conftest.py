"""WCST test setup: the helpers module on sys.path, and one torch thread per test (shared CPUs)."""
from __future__ import annotations

import sys
from pathlib import Path

from shared_helpers import one_torch_thread  # noqa: F401  (autouse)

sys.path.insert(0, str(Path(__file__).parent))
