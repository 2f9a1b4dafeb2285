"""Data augmentation and targets: soft targets / label smoothing (more regularizers per area)."""
from __future__ import annotations

from cuekit.augment.targets import one_hot, smooth_targets, soft_target_cross_entropy

__all__ = ["one_hot", "smooth_targets", "soft_target_cross_entropy"]
