"""`shapes-loc`: a procedural localization dataset for CPU work (no downloads).

Each image holds one object of a class given by its shape (disc, square, triangle, cross, ring),
in a random colour, size, rotation and position, on a cluttered background: a smooth colour field,
stripes, pixel noise and small distractor strokes and dots in other colours. The class is the
shape only, so a classifier has to look at the object; its box (x0, y0, x1, y1, inclusive pixel
coordinates) and mask are known exactly, which is what weakly supervised localization needs.

Samples are (image (3, S, S) float in [0, 1], label); `dataset.boxes` (N, 4) int64,
`dataset.masks` (N, S, S) uint8 (1 = object), `dataset.localization(i)` -> {"boxes", "mask"}.
Everything is a pure function of (seed, index).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from cuekit.data.registry import DataBundle, register_dataset
from cuekit.errors import UsageError

SHAPES = ("disc", "square", "triangle", "cross", "ring")


def shape_mask(kind: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Mask of a shape of radius r in rotated, centred coordinates (u, v)."""
    if kind == "disc":
        return u * u + v * v <= r * r
    if kind == "square":
        s = r * 0.8
        return (np.abs(u) <= s) & (np.abs(v) <= s)
    if kind == "triangle":
        # equilateral, circumradius r: inside three half-planes
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = math.pi / 2 + 2 * math.pi * k / 3
            inside &= (u * math.cos(a) + v * math.sin(a)) >= -r / 2
        return inside
    if kind == "cross":
        arm = r * 0.33
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    if kind == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(kind)


def render_sample(rng: np.random.Generator, size: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    """One image (size, size, 3) float32 in [0, 1] and its object mask (size, size) bool."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # background: smooth colour field (bilinear upsampling of a 3x3 grid) + stripes + noise
    grid = rng.uniform(0.15, 0.85, (3, 3, 3)).astype(np.float32)
    gy = yy / size * 2
    gx = xx / size * 2
    iy = np.minimum(gy.astype(int), 1)
    ix = np.minimum(gx.astype(int), 1)
    fy = (gy - iy)[..., None]
    fx = (gx - ix)[..., None]
    img = ((1 - fy) * (1 - fx) * grid[iy, ix] + (1 - fy) * fx * grid[iy, ix + 1]
           + fy * (1 - fx) * grid[iy + 1, ix] + fy * fx * grid[iy + 1, ix + 1])
    angle = rng.uniform(0, math.pi)
    freq = rng.uniform(3, 8) / size * 2 * math.pi
    stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * freq)
    img = img + rng.uniform(0.05, 0.15) * stripes[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
    # distractors: short strokes and dots, never a whole shape
    for _ in range(rng.integers(2, 6)):
        color = rng.uniform(0, 1, 3).astype(np.float32)
        cy, cx = rng.uniform(0, size, 2)
        if rng.random() < 0.5:
            a = rng.uniform(0, math.pi)
            length = rng.uniform(0.1, 0.3) * size
            t = (xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)
            d = np.abs(-(xx - cx) * math.sin(a) + (yy - cy) * math.cos(a))
            sel = (np.abs(t) <= length / 2) & (d <= max(0.6, size / 64))
        else:
            sel = (xx - cx) ** 2 + (yy - cy) ** 2 <= (rng.uniform(0.02, 0.05) * size) ** 2
        img[sel] = color
    # the object
    r = rng.uniform(0.16, 0.32) * size
    cy, cx = rng.uniform(r, size - r, 2)
    theta = rng.uniform(0, 2 * math.pi)
    du, dv = xx - cx, yy - cy
    u = du * math.cos(theta) + dv * math.sin(theta)
    v = -du * math.sin(theta) + dv * math.cos(theta)
    mask = shape_mask(SHAPES[label], u, v, r)
    if not mask.any():  # tiny renders: keep at least the centre pixel
        mask[min(int(cy), size - 1), min(int(cx), size - 1)] = True
    color = rng.uniform(0, 1, 3).astype(np.float32)
    texture = 1 + 0.15 * rng.standard_normal((size, size, 1)).astype(np.float32)
    img = np.where(mask[..., None], color * texture, img)
    img = img + 0.04 * rng.standard_normal(img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), mask


def mask_to_box(mask: np.ndarray) -> np.ndarray:
    """Tight inclusive box (x0, y0, x1, y1) of a non-empty boolean mask."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.int64)


class ShapesLocDataset(Dataset):
    """`n` shapes-loc samples of `img_size` px drawn from `seed` (held in memory as uint8)."""

    def __init__(self, n: int, img_size: int = 64, seed: int = 0, num_classes: int = len(SHAPES)):
        if n < 1 or img_size < 8:
            raise UsageError(f"shapes-loc needs n >= 1 and img_size >= 8, got {n}, {img_size}")
        if not 2 <= num_classes <= len(SHAPES):
            raise UsageError(f"shapes-loc has 2..{len(SHAPES)} classes, got {num_classes}")
        self.img_size, self.seed, self.num_classes = img_size, seed, num_classes
        rng = np.random.default_rng([seed, 7919])
        self.labels = torch.as_tensor(rng.integers(0, num_classes, n), dtype=torch.long)
        images = np.empty((n, 3, img_size, img_size), np.uint8)
        masks = np.empty((n, img_size, img_size), np.uint8)
        boxes = np.empty((n, 4), np.int64)
        for i in range(n):
            img, mask = render_sample(np.random.default_rng([seed, i]), img_size, int(self.labels[i]))
            images[i] = np.round(img.transpose(2, 0, 1) * 255).astype(np.uint8)
            masks[i] = mask
            boxes[i] = mask_to_box(mask)
        self.images = torch.from_numpy(images)
        self.masks = torch.from_numpy(masks)
        self.boxes = torch.from_numpy(boxes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i].float() / 255.0, int(self.labels[i])

    def localization(self, i: int) -> dict:
        """GT of sample i at the image size: {"boxes": (1, 4) int64, "mask": (S, S) uint8}."""
        return {"boxes": self.boxes[i][None].numpy(), "mask": self.masks[i].numpy()}


@register_dataset("shapes-loc")
def build_shapes_loc(path: str | None = None, *, task: str | None = None, img_size: int | None = None,
                     train_size: int | None = None, val_size: int | None = None, seed: int = 0,
                     val_split: float = 0.1) -> DataBundle:
    """shapes-loc: 5 shape classes on cluttered backgrounds with boxes and masks (default 64 px,
    4,000 train / 500 val). `task` may name the number of classes, e.g. "4" (default 5)."""
    if path:
        raise UsageError("shapes-loc is built in and takes no path")
    try:
        num_classes = len(SHAPES) if task in (None, "", "shape") else int(task)
    except ValueError:
        raise UsageError(f"shapes-loc task must be 'shape' or a class count 2..{len(SHAPES)}, got {task!r}") from None
    size = img_size or 64
    train = ShapesLocDataset(train_size or 4000, size, seed, num_classes)
    val = ShapesLocDataset(val_size or 500, size, seed + 1_000_003, num_classes)
    return DataBundle(train=train, val=val, num_classes=num_classes, class_names=list(SHAPES[:num_classes]),
                      in_chans=3, img_size=size, task="shape")
