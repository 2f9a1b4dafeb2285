"""LabelPooling (ReLabel, Yun et al. CVPR'21): soft targets of a random crop from a stored top-k label map.

A label map holds, per image, the teacher's top-k class scores at every cell of an h x w grid:
`scores: (B, K, h, w) float` and `indices: (B, K, h, w) int` (class ids). The target of a crop is
`softmax(RoIAlign_1x1(map, crop box))`. RoIAlign with one output bin is linear in the map, so it is a
weighted sum over map cells whose weights factor into a row part and a column part; `label_pooling`
computes those weights exactly as torchvision's `roi_align` (aligned=False, sampling_ratio=-1, the
original code's `coords * size - 0.5` offset) and scatters `weight * score` into (B, classes), never
building a dense (B, classes, h, w) map.

Boxes are normalised (x1, y1, x2, y2) in [0, 1], in the frame of the image after its horizontal
flip (if any): `flips[b]` True means the image was mirrored before the crop was taken, so the label
map is mirrored too (done exactly by mirroring the box).
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cuekit.errors import UsageError

__all__ = [
    "label_pooling", "label_pooling_dense", "pooling_weights", "densify", "original_relabel",
    "RandomResizedCropWithBox", "relabel_cutmix", "mirror_boxes",
]


def mirror_boxes(boxes: Tensor, flips: Tensor | None) -> Tensor:
    """Boxes (B, 4) normalised (x1, y1, x2, y2) in a flipped frame -> the same boxes in the unflipped map."""
    if flips is None:
        return boxes
    flips = torch.as_tensor(flips, dtype=torch.bool, device=boxes.device)
    mirrored = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], dim=1)
    return torch.where(flips[:, None], mirrored, boxes)


def _axis_weights(lo: Tensor, hi: Tensor, size: int) -> Tensor:
    """RoIAlign (1 output bin) weights along one axis: lo, hi (B,) map coords -> (B, size), rows sum <= 1.

    Follows torchvision's CPU kernel: extent max(hi - lo, 1), ceil(extent) sample points at bin
    centres, points beyond [-1, size] contribute zero, others clamp to [0, size - 1] and split
    bilinearly between two neighbouring cells; the total is divided by the number of points.
    """
    extent = torch.clamp(hi - lo, min=1.0)
    grid = torch.ceil(extent).clamp(min=1).long()  # (B,)
    g_max = int(grid.max().item()) if grid.numel() else 1
    it = torch.arange(g_max, device=lo.device, dtype=lo.dtype)
    pos = lo[:, None] + (it[None, :] + 0.5) * extent[:, None] / grid[:, None].to(lo.dtype)  # (B, G)
    used = (it[None, :] < grid[:, None]) & (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0.0)
    low = torch.floor(pos).long()
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    pos = torch.where(at_end, low.to(pos.dtype), pos)
    high = torch.where(at_end, low, low + 1)
    frac = pos - low.to(pos.dtype)
    w_low = (1 - frac) * used
    w_high = frac * used
    weights = torch.zeros(lo.shape[0], size, device=lo.device, dtype=lo.dtype)
    weights.scatter_add_(1, low, w_low)
    weights.scatter_add_(1, high.clamp(max=size - 1), w_high)
    return weights / grid[:, None].to(lo.dtype)


def pooling_weights(boxes: Tensor, map_size: Sequence[int], flips: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-cell weights of RoIAlign_1x1 over each box: -> row weights (B, h), column weights (B, w).

    The pooled value of any map M (B, C, h, w) is sum_{r,c} rows[b, r] * cols[b, c] * M[b, :, r, c].
    """
    h, w = int(map_size[0]), int(map_size[1])
    boxes = mirror_boxes(boxes.float(), flips)
    rows = _axis_weights(boxes[:, 1] * h - 0.5, boxes[:, 3] * h - 0.5, h)
    cols = _axis_weights(boxes[:, 0] * w - 0.5, boxes[:, 2] * w - 0.5, w)
    return rows, cols


def _check_maps(scores: Tensor, indices: Tensor, boxes: Tensor) -> None:
    if scores.dim() != 4 or scores.shape != indices.shape:
        raise UsageError(f"label maps must be scores and indices of equal shape (B, K, h, w), got "
                         f"{tuple(scores.shape)} and {tuple(indices.shape)}")
    if boxes.shape != (scores.shape[0], 4):
        raise UsageError(f"boxes must be (B, 4) = ({scores.shape[0]}, 4), got {tuple(boxes.shape)}")


def label_pooling(scores: Tensor, indices: Tensor, boxes: Tensor, num_classes: int, flips: Tensor | None = None,
                  mode: str = "original", temperature: float = 1.0, return_logits: bool = False) -> Tensor:
    """Soft targets (B, num_classes) of crops `boxes` (B, 4) from top-k label maps.

    scores: (B, K, h, w) float teacher scores; indices: (B, K, h, w) int class ids.
    mode "original" (the paper's, the default): softmax over all classes of the pooled map, whose
    unstored classes are filled with 0 (a little uniform mass goes to every class). mode "topk":
    the softmax runs over the classes stored in the cells the box touches (the mask is applied
    after pooling), every other class gets exactly 0. return_logits: the pooled scores
    (B, num_classes) instead.
    """
    _check_maps(scores, indices, boxes)
    if mode not in ("topk", "original"):
        raise UsageError(f"label pooling mode must be 'topk' or 'original', got {mode!r}")
    b, k, h, w = scores.shape
    rows, cols = pooling_weights(boxes.to(scores.device), (h, w), flips)
    cell = rows[:, :, None] * cols[:, None, :]  # (B, h, w)
    contrib = (scores.float() * cell[:, None]).reshape(b, -1)
    idx = indices.reshape(b, -1).long()
    pooled = torch.zeros(b, num_classes, device=scores.device, dtype=torch.float32)
    pooled.scatter_add_(1, idx, contrib)
    if return_logits:
        return pooled
    if mode == "original":
        return F.softmax(pooled / temperature, dim=1)
    touched = (cell > 0)[:, None].expand(b, k, h, w).reshape(b, -1)
    present = torch.zeros(b, num_classes, device=scores.device, dtype=torch.int32).scatter_add_(
        1, idx, touched.int()) > 0
    return F.softmax((pooled / temperature).masked_fill(~present, float("-inf")), dim=1)


def densify(scores: Tensor, indices: Tensor, num_classes: int) -> Tensor:
    """Top-k maps (B, K, h, w) -> the zero-filled dense map (B, num_classes, h, w) of the original code."""
    b, _, h, w = scores.shape
    dense = torch.zeros(b, num_classes, h, w, device=scores.device, dtype=torch.float32)
    return dense.scatter_(1, indices.long(), scores.float())


def label_pooling_dense(scores: Tensor, indices: Tensor, boxes: Tensor, num_classes: int,
                        flips: Tensor | None = None, mode: str = "original") -> Tensor:
    """The dense-map formulation: scatter to (B, C, h, w), torchvision RoIAlign, softmax -> (B, C).

    The reference `label_pooling` is checked against; mode as in `label_pooling` (the mask is
    applied after RoIAlign).
    """
    from torchvision.ops import roi_align

    _check_maps(scores, indices, boxes)
    b, _, h, w = scores.shape
    dense = densify(scores, indices, num_classes)
    bx = mirror_boxes(boxes.float().to(scores.device), flips)
    scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=bx.device)
    rois = torch.cat([torch.arange(b, device=bx.device, dtype=torch.float32)[:, None], bx * scale - 0.5], dim=1)
    pooled = roi_align(dense, rois, output_size=(1, 1)).flatten(1)
    if mode == "original":
        return F.softmax(pooled, dim=1)
    rows, cols = pooling_weights(boxes.to(scores.device), (h, w), flips)
    touched = (rows[:, :, None] * cols[:, None, :] > 0)[:, None]
    present = (densify(torch.ones_like(scores), indices, num_classes) * touched).flatten(2).amax(2) > 0
    return F.softmax(pooled.masked_fill(~present, float("-inf")), dim=1)


def original_relabel(label_maps: Tensor, coords: Tensor, num_classes: int = 1000) -> Tensor:
    """The original repository's `get_labelmaps` + `get_relabel`, as published, for comparison.

    label_maps: (B, 2, K, h, w) with scores in [:, 0] and indices (as float) in [:, 1]; coords:
    (B, 4) as the original data loader builds them, i.e. normalised (top, left, bottom, right),
    which the original passes to roi_align as if (x1, y1, x2, y2) (so the box is transposed).
    """
    from torchvision.ops import roi_align

    b, _, _, h, w = label_maps.shape
    dense = torch.zeros(b, num_classes, h, w, device=label_maps.device)
    dense.scatter_(1, label_maps[:, 1].long(), label_maps[:, 0].float())
    rois = torch.cat([torch.arange(b, device=coords.device, dtype=torch.float32)[:, None],
                      coords.float() * h - 0.5], dim=1)
    pooled = roi_align(dense, rois, output_size=(1, 1))
    return F.softmax(pooled.squeeze(-1).squeeze(-1), dim=1)


class RandomResizedCropWithBox:
    """RandomResizedCrop (+ optional horizontal flip first) that also returns the crop's box.

    Call on an image (C, H, W) tensor -> (crop (C, size, size), box (4,) normalised (x1, y1, x2, y2)
    in the flipped frame, flipped: bool), the inputs `label_pooling` expects. Scale and ratio as
    torchvision's RandomResizedCrop (the original used scale (0.08, 1)).
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), flip_prob: float = 0.5,
                 rng: random.Random | None = None):
        self.size, self.scale, self.ratio, self.flip_prob = int(size), scale, ratio, flip_prob
        self.rng = rng or random.Random()

    def sample_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """A crop (top, left, h, w) in pixels, torchvision's sampling rule (10 tries, then centre crop)."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * self.rng.uniform(*self.scale)
            aspect = math.exp(self.rng.uniform(*log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= width and 0 < ch <= height:
                return self.rng.randint(0, height - ch), self.rng.randint(0, width - cw), ch, cw
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            cw, ch = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            ch, cw = height, int(round(height * max(self.ratio)))
        else:
            cw, ch = width, height
        return (height - ch) // 2, (width - cw) // 2, ch, cw

    def __call__(self, image: Tensor) -> tuple[Tensor, Tensor, bool]:
        """image (C, H, W) -> crop (C, size, size), box (4,) float, flipped."""
        _, height, width = image.shape
        flipped = self.rng.random() < self.flip_prob
        if flipped:
            image = image.flip(-1)
        top, left, ch, cw = self.sample_box(height, width)
        crop = image[None, :, top:top + ch, left:left + cw].float()
        crop = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", align_corners=False,
                             antialias=True)[0]
        box = torch.tensor([left / width, top / height, (left + cw) / width, (top + ch) / height])
        return crop, box, flipped


CUTMIX_PARTNER_TARGETS = ("crop", "box")


def relabel_cutmix(images: Tensor, scores: Tensor, indices: Tensor, boxes: Tensor, flips: Tensor,
                   num_classes: int, alpha: float = 1.0, rng: np.random.Generator | int | None = None,
                   mode: str = "original", partner_target: str = "crop") -> tuple[Tensor, Tensor]:
    """CutMix with ReLabel targets, mixed by the pasted area.

    images: (B, C, S, S) crops; scores/indices: (B, K, h, w) their label maps; boxes (B, 4) and
    flips (B,) the crops' boxes as from RandomResizedCropWithBox. One lambda ~ Beta(alpha, alpha)
    and a permutation per batch (as CutMix). Returns the mixed images and targets (B, C):
    (1 - lam) * pool(own map, own crop) + lam * partner, lam the pasted area fraction, where
    partner is pool(partner's map, partner's whole crop) for partner_target "crop" (the paper's
    recipe, the default) or pool(partner's map, the pasted box inside the partner's crop) for "box".
    """
    if partner_target not in CUTMIX_PARTNER_TARGETS:
        raise UsageError(f"partner_target must be one of {CUTMIX_PARTNER_TARGETS}, got {partner_target!r}")
    b, _, hh, ww = images.shape
    from cuekit.augment.mix import as_rng

    rng = as_rng(rng)
    lam = float(rng.beta(alpha, alpha))
    perm = torch.as_tensor(rng.permutation(b), device=images.device)
    cut = math.sqrt(1.0 - lam)
    cw, ch = int(ww * cut), int(hh * cut)
    cx, cy = int(rng.integers(ww)), int(rng.integers(hh))
    x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, ww)
    y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, hh)
    mixed = images.clone()
    mixed[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]
    pasted = (x2 - x1) * (y2 - y1) / float(hh * ww)
    own = label_pooling(scores, indices, boxes, num_classes, flips, mode=mode)
    if pasted == 0:
        return mixed, own
    if partner_target == "crop":
        return mixed, (1 - pasted) * own + pasted * own[perm]
    pb = boxes[perm].float()
    rel = torch.tensor([x1 / ww, y1 / hh, x2 / ww, y2 / hh], device=pb.device)
    sub = torch.stack([pb[:, 0] + rel[0] * (pb[:, 2] - pb[:, 0]), pb[:, 1] + rel[1] * (pb[:, 3] - pb[:, 1]),
                       pb[:, 0] + rel[2] * (pb[:, 2] - pb[:, 0]), pb[:, 1] + rel[3] * (pb[:, 3] - pb[:, 1])], dim=1)
    other = label_pooling(scores[perm], indices[perm], sub, num_classes, torch.as_tensor(flips)[perm], mode=mode)
    return mixed, (1 - pasted) * own + pasted * other
