"""VideoMix (Yun et al. 2020, arXiv 2012.03457) and the video baselines Mixup and frame-wise CutMix.

All work on float video batches x: (B, C, T, H, W) on any device and return soft targets (B, K).
VideoMix is CutMix with a cuboid: the one box sampler of `cuekit.augment.mix` draws the cuboid
over the axes the variant names, and the target is the true voxel fraction after clipping:
- "spatial": an (h, w) box on every frame (t spans [0, T)),
- "temporal": a run of whole frames [t1, t2) (h, w span the frame),
- "spatiotemporal": a [t1, t2) x [h1, h2) x [w1, w2) cuboid, side_k = size_k (1 - lam)^(1/3).
The time extent is the nearest whole number of frames, any of 0..T (odd ones too), placed uncut; the
(h, w) box follows CutMix exactly. "spatial" is the default variant (docs/video.md says why).
The partner of video i is video B-1-i of the same batch (as in `Mixup` / `CutMix`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cuekit.augment.mix import CutMix, Mixup, _Mixer, boxes_to_mask, mix_targets, sample_boxes, to_soft
from cuekit.errors import UnknownChoiceError, UsageError

__all__ = ["VIDEOMIX_VARIANTS", "FrameCutMix", "VideoMix", "VideoMixup", "check_video"]

# Variant -> the axes of (B, C, T, H, W) the cuboid is sampled over; the other axes are spanned.
VIDEOMIX_VARIANTS: dict[str, tuple[int, ...]] = {
    "spatial": (-2, -1),
    "temporal": (-3,),
    "spatiotemporal": (-3, -2, -1),
}


def check_video(x: Tensor, what: str) -> None:
    """Raise UsageError unless x is a float (B, C, T, H, W) batch."""
    if x.dim() != 5:
        raise UsageError(f"{what} needs video batches (B, C, T, H, W), got shape {tuple(x.shape)}"
                         + (" (images? use mixup / cutmix)" if x.dim() == 4 else ""))
    if not x.is_floating_point():
        raise UsageError(f"{what} needs float videos, got {x.dtype}")


class VideoMix(CutMix):
    """VideoMix: paste a cuboid of video B-1-i into video i; targets mixed by the voxel fraction.

    lam ~ Beta(alpha, alpha) sets the cuboid size (1 - lam of the voxels before clipping); `prob` is the
    chance a batch (or sample, in "pair"/"elem" mode) is mixed at all. The default variant is "spatial"
    (S-VideoMix; docs/video.md says why); a temporal extent is round(T (1 - lam)^(1/d)) whole frames.
    `last_lam` (B,) holds the voxel fraction kept from each video, `last_boxes` the cuboids (lo, hi) over
    the variant's axes.
    """

    def __init__(self, num_classes: int, variant: str = "spatial", alpha: float = 1.0, prob: float = 1.0,
                 mode: str = "batch", seed: int | np.random.Generator | None = None, inplace: bool = False):
        if variant not in VIDEOMIX_VARIANTS:
            raise UnknownChoiceError("VideoMix variant", variant, VIDEOMIX_VARIANTS)
        dims = VIDEOMIX_VARIANTS[variant]
        super().__init__(num_classes, alpha=alpha, prob=prob, mode=mode, correct_lam=True, dims=dims, seed=seed,
                         inplace=inplace, whole_dims=tuple(d for d in dims if d == -3))
        self.variant = variant

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, C, T, H, W) float, y: (B,) int or (B, K) soft -> mixed x, soft targets (B, K)."""
        check_video(x, "VideoMix")
        return super().__call__(x, y)

    def __repr__(self) -> str:
        return f"VideoMix(variant={self.variant!r}, alpha={self.alpha}, prob={self.prob}, mode={self.mode!r})"


class VideoMixup(Mixup):
    """Mixup on whole videos (the VideoMix paper's Mixup baseline): x = lam x_i + (1 - lam) x_{B-1-i}."""

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, C, T, H, W) float, y: (B,) int or (B, K) soft -> mixed x, soft targets (B, K)."""
        check_video(x, "video Mixup")
        if x.shape[0] == 1:  # its own partner: blending would only add rounding error
            self.last_lam = np.ones(1)
            return x, to_soft(y, self.num_classes)
        return super().__call__(x, y)


class FrameCutMix(_Mixer):
    """Frame-wise CutMix baseline: image CutMix on each frame with its own (h, w) box, same partner video.

    One lambda per video (or per batch / pair, as `mode` says) sets the box size; each frame's box is
    placed independently by the shared sampler. The target is the voxel fraction over the whole clip.
    """

    def __init__(self, num_classes: int, alpha: float = 1.0, prob: float = 1.0, mode: str = "batch",
                 seed: int | np.random.Generator | None = None):
        super().__init__(num_classes, alpha, prob, mode, seed)
        self.last_boxes: tuple[np.ndarray, np.ndarray] | None = None  # lo, hi (B, T, 2)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, C, T, H, W) float, y: (B,) int or (B, K) soft -> mixed x, soft targets (B, K)."""
        check_video(x, "frame-wise CutMix")
        b, _, t, h, w = x.shape
        lam, on = self._draw(b)
        if self.mode == "batch":  # one set of per-frame boxes for the whole batch
            lo, hi, _ = sample_boxes((h, w), np.repeat(lam[:1], t), self.rng)
            lo, hi = np.tile(lo[None], (b, 1, 1)), np.tile(hi[None], (b, 1, 1))
        else:
            lo, hi, _ = sample_boxes((h, w), np.repeat(lam, t), self.rng)
            lo, hi = lo.reshape(b, t, 2), hi.reshape(b, t, 2)
        off = ~on[:, None, None]
        lo, hi = np.where(off, 0, lo), np.where(off, 0, hi)
        if self.mode == "pair":  # both members of a pair swap the same regions
            mirror = np.arange(b)[::-1]
            first = (np.arange(b) < (b + 1) // 2)[:, None, None]
            lo, hi = np.where(first, lo, lo[mirror]), np.where(first, hi, hi[mirror])
        pasted = np.prod(hi - lo, axis=2).sum(axis=1)  # (B,) voxels per channel taken from the partner
        lam_c = 1.0 - pasted / float(t * h * w)
        self.last_lam, self.last_boxes = lam_c, (lo, hi)
        mask = boxes_to_mask(lo.reshape(b * t, 2), hi.reshape(b * t, 2), (h, w), x.device).view(b, 1, t, h, w)
        out = torch.where(mask, x.flip(0), x)
        return out, mix_targets(y, torch.as_tensor(lam_c, dtype=torch.float32), self.num_classes)

    def __repr__(self) -> str:
        return f"FrameCutMix(alpha={self.alpha}, prob={self.prob}, mode={self.mode!r})"

