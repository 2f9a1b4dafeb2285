"""Mixup and CutMix on batches, with one box sampler that CutMix (4-D) and VideoMix (5-D cuboids) share.

Both return the mixed batch and soft targets (N, C) for the one soft-target cross-entropy
(`cuekit.augment.targets.soft_target_cross_entropy`); label smoothing is left to that loss.

Modes (as in timm's `Mixup`): "batch" draws one lambda (and one box) for the whole batch and
mixes sample i with sample N-1-i; "pair" draws one per pair (i, N-1-i) and mixes both members
with each other; "elem" draws one per sample. The partner of sample i is always N-1-i (the
batch order is already random); in an odd batch the middle sample is its own partner.

CutMix lambda is corrected to the pasted fraction after the box is clipped at the border
(CutMix-PyTorch issue #1), so the soft target equals the share of pixels (voxels) from each image.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from cuekit.augment.targets import one_hot
from cuekit.errors import UnknownChoiceError, UsageError

__all__ = ["MIX_MODES", "CutMix", "Mixup", "MixupOrCutMix", "as_rng", "box_sides", "boxes_to_mask", "generator_state",
           "mix_targets", "place_boxes", "sample_box", "sample_boxes", "set_generator_state", "to_soft"]

MIX_MODES = ("batch", "pair", "elem")


def as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A NumPy generator: from a seed, as given, or (None) drawn from NumPy's global state.

    None keeps runs reproducible under `cuekit.train.seed_everything`, which seeds that state.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        seed = int(np.random.randint(0, 2**31 - 1))
    return np.random.default_rng(seed)


def generator_state(rng: np.random.Generator) -> dict:
    """A NumPy generator's state as JSON-able data (its bit generator's state: plain ints and strings)."""
    return copy.deepcopy(rng.bit_generator.state)


def set_generator_state(rng: np.random.Generator, state: dict) -> None:
    """Put `rng` back into a state from `generator_state`; the next draws repeat the ones that followed it."""
    rng.bit_generator.state = state


def to_soft(targets: Tensor, num_classes: int) -> Tensor:
    """Int labels (N,) -> one-hot (N, num_classes) float; soft targets (N, num_classes) pass through."""
    if targets.is_floating_point():
        if targets.dim() != 2 or targets.shape[1] != num_classes:
            raise UsageError(f"soft targets must be (N, {num_classes}), got {tuple(targets.shape)}")
        return targets
    return one_hot(targets, num_classes)


def box_sides(sizes: Sequence[int], lam: float | np.ndarray, whole_axes: Sequence[int] = ()) -> np.ndarray:
    """Box extents (B, d) int covering about 1 - lam of the volume: side_k = floor(size_k * (1 - lam)^(1/d)).

    With d = 2 this is CutMix's r_w = W * sqrt(1 - lam); d = 1 and d = 3 give VideoMix's temporal
    and spatio-temporal cuboids. An axis in `whole_axes` (indices into `sizes`) gets the nearest whole
    number of cells instead, round(size_k * (1 - lam)^(1/d)), any of 0..size_k (see `place_boxes`).
    """
    lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    ratio = np.clip(1.0 - lam, 0.0, 1.0) ** (1.0 / len(sizes))
    exact = ratio[:, None] * np.asarray(sizes, dtype=np.float64)[None, :]
    sides = np.floor(exact)
    whole = list(whole_axes)
    sides[:, whole] = np.floor(exact[:, whole] + 0.5)
    return sides.astype(np.int64)


def place_boxes(sizes: Sequence[int], sides: np.ndarray, rng: np.random.Generator,
                whole_axes: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Place each box on the grid: -> lo, hi (B, d) int, half-open [lo, hi).

    As in CutMix: centre c ~ U{0..size-1}, lo = clip(c - side//2), hi = clip(c + side//2), so a box
    near the border is cut (and its true volume is what the lambda correction uses) and an uncut extent
    is even. An axis in `whole_axes` keeps its side exactly (any width, odd ones too): lo ~ U{0..size-side},
    hi = lo + side, with the same single uniform draw per box and axis.
    """
    sides = np.asarray(sides, dtype=np.int64)
    size = np.asarray(sizes, dtype=np.int64)[None, :]
    u = rng.random(sides.shape)
    centre = np.floor(u * size).astype(np.int64)
    half = sides // 2
    lo, hi = np.clip(centre - half, 0, size), np.clip(centre + half, 0, size)
    for k in whole_axes:
        side = np.clip(sides[:, k], 0, size[0, k])
        lo[:, k] = np.floor(u[:, k] * (size[0, k] - side + 1)).astype(np.int64)
        hi[:, k] = lo[:, k] + side
    return lo, hi


def sample_boxes(sizes: Sequence[int], lam: float | np.ndarray, rng: np.random.Generator | int | None = None,
                 whole_axes: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one box / cuboid sampler: boxes over the grid `sizes` (d dims) for each lambda.

    lam: float or (B,) -> lo, hi (B, d) int (half-open), corrected lambda (B,) = 1 - box volume / grid volume.
    whole_axes: indices into `sizes` whose extent is a whole number of cells placed uncut (VideoMix's frames).
    """
    rng = as_rng(rng)
    lo, hi = place_boxes(sizes, box_sides(sizes, lam, whole_axes), rng, whole_axes)
    volume = np.prod(hi - lo, axis=1).astype(np.float64)
    return lo, hi, 1.0 - volume / float(math.prod(sizes))


def sample_box(sizes: Sequence[int], lam: float, rng: np.random.Generator | int | None = None
               ) -> tuple[tuple[slice, ...], float]:
    """One box as slices per dim (e.g. x[..., t, h, w] = ...) and its corrected lambda."""
    lo, hi, lam_c = sample_boxes(sizes, lam, rng)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo[0], hi[0])), float(lam_c[0])


def boxes_to_mask(lo: np.ndarray, hi: np.ndarray, sizes: Sequence[int], device: torch.device | str = "cpu") -> Tensor:
    """Boxes (B, d) -> mask (B, *sizes) bool, True inside each sample's box."""
    lo_t = torch.as_tensor(lo, device=device)
    hi_t = torch.as_tensor(hi, device=device)
    mask = torch.ones((lo_t.shape[0],) + tuple(sizes), dtype=torch.bool, device=device)
    d = len(sizes)
    for k, n in enumerate(sizes):
        shape = [lo_t.shape[0]] + [1] * d
        shape[k + 1] = n
        pos = torch.arange(n, device=device).view([1] * (k + 1) + [n] + [1] * (d - k - 1))
        inside = (pos >= lo_t[:, k].view([-1] + [1] * d)) & (pos < hi_t[:, k].view([-1] + [1] * d))
        mask &= inside
    return mask


def mix_targets(targets: Tensor, lam: Tensor | float, num_classes: int) -> Tensor:
    """lam * t_i + (1 - lam) * t_{N-1-i}: targets (N,) int or (N, C) soft, lam float or (N,) -> (N, C)."""
    soft = to_soft(targets, num_classes)
    lam_t = torch.as_tensor(lam, dtype=soft.dtype, device=soft.device)
    if lam_t.dim() == 1:
        lam_t = lam_t[:, None]
    return lam_t * soft + (1.0 - lam_t) * soft.flip(0)


class _Mixer:
    """Shared lambda drawing for the three modes."""

    def __init__(self, num_classes: int, alpha: float, prob: float, mode: str, seed):
        if num_classes < 1:
            raise UsageError(f"num_classes must be >= 1, got {num_classes}")
        if alpha <= 0:
            raise UsageError(f"the Beta(alpha, alpha) parameter must be positive, got {alpha}")
        if not 0.0 <= prob <= 1.0:
            raise UsageError(f"prob must be in [0, 1], got {prob}")
        if mode not in MIX_MODES:
            raise UnknownChoiceError("mix mode", mode, MIX_MODES)
        self.num_classes, self.alpha, self.prob, self.mode = num_classes, float(alpha), float(prob), mode
        self.rng = as_rng(seed)
        self.last_lam: np.ndarray | None = None  # lambdas of the last call (B,), after any correction

    def state_dict(self) -> dict:
        """The random state (JSON-able), so a resumed training run draws what an uninterrupted one would."""
        return {"rng": generator_state(self.rng)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the random state from `state_dict`."""
        set_generator_state(self.rng, state["rng"])

    def _draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample lambda (B,) and whether mixing applies (B,), tied as the mode says."""
        if self.mode == "batch":
            lam = np.full(n, self.rng.beta(self.alpha, self.alpha))
            on = np.full(n, self.rng.random() < self.prob)
            return lam, on
        lam = self.rng.beta(self.alpha, self.alpha, size=n)
        on = self.rng.random(n) < self.prob
        if self.mode == "pair":
            mirror = np.arange(n)[::-1]
            first = np.arange(n) < (n + 1) // 2
            lam = np.where(first, lam, lam[mirror])
            on = np.where(first, on, on[mirror])
        return lam, on

    @staticmethod
    def _check(x: Tensor) -> None:
        if not x.is_floating_point():
            raise UsageError(f"mixing needs float images, got {x.dtype}")


class Mixup(_Mixer):
    """Mixup (Zhang et al. 2018): x = lam x_i + (1 - lam) x_j, lam ~ Beta(alpha, alpha); any shape (N, ...)."""

    def __init__(self, num_classes: int, alpha: float = 1.0, prob: float = 1.0, mode: str = "batch",
                 seed: int | np.random.Generator | None = None):
        super().__init__(num_classes, alpha, prob, mode, seed)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, ...) float, y: (N,) int or (N, C) soft -> mixed x, soft targets (N, C)."""
        self._check(x)
        lam, on = self._draw(x.shape[0])
        lam = np.where(on, lam, 1.0)
        self.last_lam = lam
        lam_t = torch.as_tensor(lam, dtype=x.dtype, device=x.device).view([-1] + [1] * (x.dim() - 1))
        mixed = x * lam_t + x.flip(0) * (1.0 - lam_t)
        return mixed, mix_targets(y, torch.as_tensor(lam, dtype=torch.float32), self.num_classes)


class CutMix(_Mixer):
    """CutMix (Yun et al. 2019): paste a box of the partner; targets by the pasted fraction.

    `dims`: the axes the box spans, default (-2, -1) (H, W of (N, C, H, W)); VideoMix uses
    (-2, -1) on (N, C, T, H, W) for spatial, (-3,) for temporal and (-3, -2, -1) for
    spatio-temporal cuboids. `whole_dims` (a subset of `dims`): axes whose extent is the nearest whole
    number of cells to size * (1 - lam)^(1/d), any of 0..size, placed uncut (`place_boxes`); VideoMix's
    time axis, where CutMix's even, border-clipped extents would allow only 0, 2, 4 or 6 of 6 frames.
    correct_lam=False keeps the drawn lambda for the targets (timm's option). inplace=True pastes into `x`
    itself in batch mode (no copy of the batch), for a caller that owns the batch, as the training engine does.
    """

    def __init__(self, num_classes: int, alpha: float = 1.0, prob: float = 1.0, mode: str = "batch",
                 correct_lam: bool = True, dims: Sequence[int] = (-2, -1),
                 seed: int | np.random.Generator | None = None, inplace: bool = False, whole_dims: Sequence[int] = ()):
        super().__init__(num_classes, alpha, prob, mode, seed)
        self.correct_lam, self.inplace = correct_lam, inplace
        self.dims = tuple(int(d) for d in dims)
        if not self.dims or any(d >= 0 for d in self.dims) or len(set(self.dims)) != len(self.dims):
            raise UsageError(f"dims must be distinct negative axes such as (-2, -1), got {dims}")
        self.whole_dims = tuple(int(d) for d in whole_dims)
        if not set(self.whole_dims) <= set(self.dims):
            raise UsageError(f"whole_dims {whole_dims} must be among dims {self.dims}")
        self.last_boxes: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, ..., *box dims) float, y: (N,) int or (N, C) soft -> mixed x, soft targets (N, C)."""
        self._check(x)
        dims = tuple(sorted(self.dims))
        if -dims[0] > x.dim() - 1:
            raise UsageError(f"CutMix dims {self.dims} do not fit an input of shape {tuple(x.shape)}")
        sizes = [x.shape[d] for d in dims]
        n = x.shape[0]
        if self.mode == "batch":
            return self._batch_call(x, y, dims, sizes)
        lam, on = self._draw(n)
        lo, hi, _ = sample_boxes(sizes, lam, self.rng, self._whole_axes(dims))
        lo, hi = np.where(on[:, None], lo, 0), np.where(on[:, None], hi, 0)
        if self.mode == "pair":
            mirror = np.arange(n)[::-1]
            first = (np.arange(n) < (n + 1) // 2)[:, None]
            lo, hi = np.where(first, lo, lo[mirror]), np.where(first, hi, hi[mirror])
        lam_c = 1.0 - np.prod(hi - lo, axis=1) / float(math.prod(sizes))
        lam_used = lam_c if self.correct_lam else np.where(on, lam, 1.0)
        self.last_lam, self.last_boxes = lam_used, (lo, hi)
        partner = x.flip(0)
        mask = boxes_to_mask(lo, hi, sizes, x.device)  # (N, *sizes)
        # Put the box axes where they are in x; other axes broadcast.
        shape = [n] + [1] * (x.dim() - 1)
        for d, s in zip(dims, sizes):
            shape[d] = s
        out = torch.where(mask.view(shape), partner, x)
        return out, mix_targets(y, torch.as_tensor(lam_used, dtype=torch.float32), self.num_classes)

    def _whole_axes(self, dims: tuple[int, ...]) -> list[int]:
        """Indices into the sorted box dims of the whole-cell axes."""
        return [k for k, d in enumerate(dims) if d in self.whole_dims]

    def _batch_call(self, x: Tensor, y: Tensor, dims: tuple[int, ...], sizes: list[int]) -> tuple[Tensor, Tensor]:
        """Batch mode: one box for the whole batch, drawn with Python scalars (the same random numbers as
        `sample_boxes`: one Beta, one uniform for `prob`, one uniform per box axis). Inside a training step
        every NumPy call runs with cold caches, so scalar code keeps the mixer's share of the step small."""
        n = x.shape[0]
        lam = float(self.rng.beta(self.alpha, self.alpha))
        on = self.rng.random() < self.prob
        ratio = min(max(1.0 - lam, 0.0), 1.0) ** (1.0 / len(sizes))
        centres = self.rng.random(len(sizes))
        whole = self._whole_axes(dims)
        lo, hi = [], []
        for k, (size, u) in enumerate(zip(sizes, centres.tolist())):
            if k in whole:  # as `place_boxes`: the nearest whole number of cells, placed uncut
                side = math.floor(ratio * size + 0.5)
                a = math.floor(u * (size - side + 1))
                b = a + side
            else:
                half = math.floor(ratio * size) // 2
                c = math.floor(u * size)
                a, b = min(max(c - half, 0), size), min(max(c + half, 0), size)
            lo.append(a if on else 0)
            hi.append(b if on else 0)
        lam_c = 1.0 - math.prod(b - a for a, b in zip(lo, hi)) / math.prod(sizes)
        lam_used = lam_c if self.correct_lam else (lam if on else 1.0)
        self.last_lam = np.full(n, lam_used)
        self.last_boxes = (np.tile(np.array(lo, dtype=np.int64), (n, 1)), np.tile(np.array(hi, dtype=np.int64), (n, 1)))
        out = x if self.inplace else x.clone()
        if lam_c < 1.0:  # copy only the box of the partner, not a flipped batch
            index = [slice(None)] * x.dim()
            for d, a, b in zip(dims, lo, hi):
                index[d] = slice(a, b)
            out[tuple(index)] = x[tuple(index)].flip(0)
        soft = to_soft(y, self.num_classes)
        return out, soft * lam_used + soft.flip(0) * (1.0 - lam_used)


class MixupOrCutMix:
    """Per batch, CutMix with probability `switch_prob`, else Mixup (timm's combination)."""

    def __init__(self, mixup: Mixup, cutmix: CutMix, switch_prob: float = 0.5,
                 seed: int | np.random.Generator | None = None):
        if not 0.0 <= switch_prob <= 1.0:
            raise UsageError(f"switch_prob must be in [0, 1], got {switch_prob}")
        self.mixup, self.cutmix, self.switch_prob = mixup, cutmix, switch_prob
        self.rng = as_rng(seed)

    def state_dict(self) -> dict:
        """The random states (JSON-able) of the switch and of both mixers."""
        return {"rng": generator_state(self.rng), "mixup": self.mixup.state_dict(), "cutmix": self.cutmix.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the random states from `state_dict` (the mixers may share one generator with the switch)."""
        self.mixup.load_state_dict(state["mixup"])
        self.cutmix.load_state_dict(state["cutmix"])
        set_generator_state(self.rng, state["rng"])

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, ...) float, y: (N,) int or soft -> mixed x, soft targets (N, C)."""
        use_cutmix = self.rng.random() < self.switch_prob
        return (self.cutmix if use_cutmix else self.mixup)(x, y)
