"""Soft targets: one-hot, label smoothing, and the one soft-target cross-entropy every area uses."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """labels: (N,) int -> (N, num_classes) float one-hot."""
    return F.one_hot(labels.long(), num_classes).to(dtype)


def smooth_targets(targets: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """Label smoothing (Szegedy et al.): (1 - s) * target + s / C; accepts (N,) int or (N, C) soft."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    soft = targets if targets.is_floating_point() else one_hot(targets, num_classes)
    if smoothing == 0:
        return soft
    return soft * (1.0 - smoothing) + smoothing / num_classes


def soft_target_cross_entropy(logits: Tensor, targets: Tensor, smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of logits (N, C) against int labels (N,) or soft targets (N, C).

    Hard labels go through torch's fused kernel; soft targets as -sum(t * log_softmax).
    """
    if not targets.is_floating_point():
        return F.cross_entropy(logits, targets, label_smoothing=smoothing)
    targets = smooth_targets(targets, logits.shape[-1], smoothing)
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
