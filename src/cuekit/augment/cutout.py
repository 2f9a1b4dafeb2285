"""Cutout (DeVries & Taylor 2017): erase square patches at random positions, batched.

The patch centre is uniform over the image and the patch is clipped at the border, so it can be
smaller than `size` near an edge (as in the original). Boxes come from the same placement as
CutMix (`cuekit.augment.mix.place_boxes`). The fill is 0, which is the dataset mean when the
images are already normalised (the original applies the mask after normalisation).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from cuekit.augment.mix import as_rng, boxes_to_mask, generator_state, place_boxes, set_generator_state, to_soft
from cuekit.errors import UsageError

__all__ = ["Cutout", "cutout"]


def _side(size: float, sizes: Sequence[int]) -> int:
    if size <= 0:
        raise UsageError(f"cutout size must be positive, got {size}")
    return int(round(size * min(sizes))) if size < 1 else int(size)


def cutout(x: Tensor, size: float = 0.5, holes: int = 1, prob: float = 1.0, fill: float = 0.0,
           rng: np.random.Generator | int | None = None, dims: Sequence[int] = (-2, -1)) -> Tensor:
    """Erase `holes` patches per sample: x (N, ..., H, W) float -> same shape.

    size: patch side in pixels (>= 1) or as a fraction of the shorter side (< 1; 0.5 at 32 px
    gives CIFAR-10's 16 px); prob: chance that a sample is erased at all.
    """
    if holes < 1:
        raise UsageError(f"cutout needs holes >= 1, got {holes}")
    if not 0.0 <= prob <= 1.0:
        raise UsageError(f"cutout prob must be in [0, 1], got {prob}")
    rng = as_rng(rng)
    dims = tuple(sorted(int(d) for d in dims))
    sizes = [x.shape[d] for d in dims]
    n = x.shape[0]
    side = _side(size, sizes)
    on = rng.random(n) < prob
    mask = torch.zeros((n, *sizes), dtype=torch.bool, device=x.device)
    for _ in range(holes):
        lo, hi = place_boxes(sizes, np.full((n, len(sizes)), side), rng)
        hi = np.where(on[:, None], hi, lo)
        mask |= boxes_to_mask(lo, hi, sizes, x.device)
    shape = [n] + [1] * (x.dim() - 1)
    for d, s in zip(dims, sizes):
        shape[d] = s
    return torch.where(mask.view(shape), torch.as_tensor(fill, dtype=x.dtype, device=x.device), x)


class Cutout:
    """Batch transform: Cutout on the images; targets become soft (N, C) when num_classes is given."""

    def __init__(self, num_classes: int | None = None, size: float = 0.5, holes: int = 1, prob: float = 1.0,
                 fill: float = 0.0, seed: int | np.random.Generator | None = None):
        _side(size, [1])
        self.num_classes, self.size, self.holes, self.prob, self.fill = num_classes, size, holes, prob, fill
        self.rng = as_rng(seed)

    def state_dict(self) -> dict:
        """The random state (JSON-able), so a resumed training run draws what an uninterrupted one would."""
        return {"rng": generator_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the random state from `state_dict`."""
        set_generator_state(self.rng, state["rng"])

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, C, H, W) float, y: (N,) int or (N, C) soft -> erased x, targets."""
        out = cutout(x, self.size, self.holes, self.prob, self.fill, self.rng)
        return out, (y if self.num_classes is None else to_soft(y, self.num_classes))

