"""Robustness and uncertainty: common corruptions, calibration, OOD detection, FGSM, the benchmark."""
from __future__ import annotations

from cuekit.robustness.corruptions import COMMON_CORRUPTIONS, CORRUPTIONS, EXTRA_CORRUPTIONS, corrupt, occlude

__all__ = ["COMMON_CORRUPTIONS", "CORRUPTIONS", "EXTRA_CORRUPTIONS", "corrupt", "occlude"]
