"""WSOL training methods as training-time pieces for the shared engine (`cuekit.train.train`).

* `cam`: vanilla CAM training, nothing added.
* `has`: Hide-and-Seek (Singh & Lee, ICCV'17), a batch transform hiding random grid cells.
* `adl`: Attention-based Dropout Layer (Choe & Shim, CVPR'19), a module inside the backbone
  (`cuekit.models.cam.ADL`, placed with the model's `adl_after=` option).
* `cutmix`: CutMix (Yun et al., ICCV'19), the shared `cuekit.augment.mix.CutMix` with soft targets.

`make_batch_transform(method, num_classes, ...)` and `model_kwargs_for(method, ...)` give what
`train(cfg, batch_transform=..., model=create_model(..., **model_kwargs))` needs.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from cuekit.errors import UnknownChoiceError, UsageError
from cuekit.models.cam import ADL

METHODS = ("cam", "has", "adl", "cutmix")
BatchTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]

__all__ = ["ADL", "METHODS", "HideAndSeek", "cutmix_transform", "make_batch_transform", "model_kwargs_for"]


class HideAndSeek:
    """Hide each `grid_size` x `grid_size` cell of every training image with probability
    `drop_rate` (set it to `fill`, 0 = the mean of normalized inputs). Labels are unchanged.

    x: (N, C, H, W); works for non-square images (the reference used the height for both axes).
    """

    def __init__(self, grid_size: int = 4, drop_rate: float = 0.5, fill: float = 0.0,
                 generator: torch.Generator | None = None):
        if grid_size < 1 or not 0 <= drop_rate <= 1:
            raise UsageError(f"HaS needs grid_size >= 1 and drop_rate in [0, 1], got {grid_size}, {drop_rate}")
        self.grid_size, self.drop_rate, self.fill, self.generator = grid_size, drop_rate, fill, generator

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        gh, gw = math.ceil(h / self.grid_size), math.ceil(w / self.grid_size)
        hide = torch.rand(n, 1, gh, gw, generator=self.generator) < self.drop_rate
        hide = hide.to(x.device).repeat_interleave(self.grid_size, 2).repeat_interleave(self.grid_size, 3)
        hide = hide[:, :, :h, :w]
        return torch.where(hide, torch.full_like(x, self.fill), x), y


def cutmix_transform(num_classes: int, beta: float = 1.0, prob: float = 1.0, seed: int | None = None):
    """CutMix for WSOL training: the shared `cuekit.augment.mix.CutMix` (one box per batch, pasted
    from the mirrored batch partner, soft targets by the true pasted fraction), Beta(beta, beta)."""
    from cuekit.augment.mix import CutMix

    return CutMix(num_classes, alpha=beta, prob=prob, mode="batch", seed=seed)


def make_batch_transform(method: str, num_classes: int, has_grid_size: int = 4, has_drop_rate: float = 0.5,
                         has_fill: float = 0.0, cutmix_beta: float = 1.0, cutmix_prob: float = 1.0,
                         seed: int | None = None) -> BatchTransform | None:
    """The engine's `batch_transform` for a WSOL method (None for cam and adl)."""
    if method not in METHODS:
        raise UnknownChoiceError("WSOL method", method, METHODS)
    if method == "has":
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return HideAndSeek(has_grid_size, has_drop_rate, has_fill, gen)
    if method == "cutmix":
        return cutmix_transform(num_classes, cutmix_beta, cutmix_prob, seed)
    return None


def model_kwargs_for(method: str, adl_after: Sequence[int] = (-2, -1), adl_drop_rate: float = 0.75,
                     adl_gamma: float = 0.9) -> dict:
    """Extra `create_model` arguments for a method: ADL layers after the last two stages for adl."""
    if method not in METHODS:
        raise UnknownChoiceError("WSOL method", method, METHODS)
    if method == "adl":
        return {"adl_after": tuple(adl_after), "adl_drop_rate": adl_drop_rate, "adl_gamma": adl_gamma}
    return {}
