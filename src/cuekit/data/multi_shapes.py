"""`multi-shapes`: procedural images holding several objects of different classes, labelled with one.

Like ImageNet, an image may show several classes but carries a single label (one of its objects,
chosen at random); the validation split also records every class present (`dataset.multilabels`,
ReaL-style), so both single-label and multi-label accuracy can be measured. Classes are the shapes
of `shapes-loc` (disc, square, triangle, cross, ring); each image holds 1 to 3 objects of distinct
classes in random colours, sizes and rotations, on a smooth noisy background. Task "color" instead
makes the class the object's colour (red, green, blue, yellow, magenta; random shape): easier, for
smoke-scale runs on a CPU.

Samples are (image (3, S, S) float in [0, 1], label int); `dataset.multilabels` (N, C) bool,
`dataset.boxes[i]` (n_i, 4) inclusive pixel boxes (x0, y0, x1, y1) of the objects in class order
`dataset.object_classes[i]`. Everything is a pure function of (seed, index).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cuekit.data.registry import DataBundle, register_dataset
from cuekit.data.shapes_loc import SHAPES, shape_mask
from cuekit.errors import UsageError

__all__ = ["COLORS", "MultiShapesDataset", "render_multi", "multilabel_accuracy"]


COLORS = ("red", "green", "blue", "yellow", "magenta")
_HUES = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.95], [0.95, 0.9, 0.1], [0.9, 0.1, 0.9]], np.float32)


def render_multi(rng: np.random.Generator, size: int, classes: list[int], task: str = "shape"
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """One image (size, size, 3) float32 in [0, 1] with one object per class in `classes`, and their boxes.

    task "shape": the class is the object's shape (random colour); "color": its colour (random shape).
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    corner = rng.uniform(0.2, 0.8, (2, 2, 3)).astype(np.float32)
    fy, fx = (yy / size)[..., None], (xx / size)[..., None]
    img = ((1 - fy) * (1 - fx) * corner[0, 0] + (1 - fy) * fx * corner[0, 1]
           + fy * (1 - fx) * corner[1, 0] + fy * fx * corner[1, 1])
    # objects in distinct cells of a 2 x 2 grid, so they rarely overlap
    cells = rng.permutation(4)[:len(classes)]
    boxes = []
    for cls, cell in zip(classes, cells):
        r = rng.uniform(0.11, 0.2) * size
        cy0, cx0 = (cell // 2) * size / 2, (cell % 2) * size / 2
        cy = rng.uniform(cy0 + r, cy0 + size / 2 - r) if size / 2 > 2 * r else cy0 + size / 4
        cx = rng.uniform(cx0 + r, cx0 + size / 2 - r) if size / 2 > 2 * r else cx0 + size / 4
        theta = rng.uniform(0, 2 * math.pi)
        du, dv = xx - cx, yy - cy
        u = du * math.cos(theta) + dv * math.sin(theta)
        v = -du * math.sin(theta) + dv * math.cos(theta)
        shape = SHAPES[cls] if task == "shape" else SHAPES[int(rng.integers(len(SHAPES)))]
        mask = shape_mask(shape, u, v, r)
        if not mask.any():
            mask[min(int(cy), size - 1), min(int(cx), size - 1)] = True
        if task == "shape":
            color = rng.uniform(0, 1, 3).astype(np.float32)
        else:
            color = np.clip(_HUES[cls] + rng.uniform(-0.08, 0.08, 3), 0, 1).astype(np.float32)
        img = np.where(mask[..., None], color, img)
        ys, xs = np.nonzero(mask)
        boxes.append(np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.int64))
    img = img + 0.05 * rng.standard_normal(img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), boxes


class MultiShapesDataset(Dataset):
    """`n` multi-shapes images of `img_size` px from `seed`, held in memory as uint8."""

    def __init__(self, n: int, img_size: int = 32, seed: int = 0, num_classes: int = len(SHAPES),
                 max_objects: int = 3, task: str = "shape"):
        if n < 1 or img_size < 8:
            raise UsageError(f"multi-shapes needs n >= 1 and img_size >= 8, got {n}, {img_size}")
        if not 2 <= num_classes <= len(SHAPES) or not 1 <= max_objects <= min(4, num_classes):
            raise UsageError(f"multi-shapes has 2..{len(SHAPES)} classes and 1..4 objects per image")
        if task not in ("shape", "color"):
            raise UsageError(f"multi-shapes tasks are 'shape' and 'color', got {task!r}")
        self.task = task
        self.img_size, self.seed, self.num_classes = img_size, seed, num_classes
        images = np.empty((n, 3, img_size, img_size), np.uint8)
        labels = np.empty(n, np.int64)
        multi = np.zeros((n, num_classes), bool)
        self.boxes: list[np.ndarray] = []
        self.object_classes: list[list[int]] = []
        for i in range(n):
            rng = np.random.default_rng([seed, i, 4241])
            count = int(rng.integers(1, max_objects + 1))
            classes = [int(c) for c in rng.permutation(num_classes)[:count]]
            img, boxes = render_multi(rng, img_size, classes, task)
            images[i] = np.round(img.transpose(2, 0, 1) * 255).astype(np.uint8)
            labels[i] = classes[int(rng.integers(count))]
            multi[i, classes] = True
            self.boxes.append(np.stack(boxes))
            self.object_classes.append(classes)
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)
        self.multilabels = torch.from_numpy(multi)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i].float() / 255.0, int(self.labels[i])


def multilabel_accuracy(logits: Tensor, multilabels: Tensor) -> float:
    """ReaL-style top-1 accuracy: the fraction of images whose top prediction is any class present.

    logits: (N, C); multilabels: (N, C) bool.
    """
    pred = logits.argmax(1)
    return multilabels[torch.arange(len(pred)), pred].float().mean().item()


@register_dataset("multi-shapes")
def build_multi_shapes(path: str | None = None, *, task: str | None = None, img_size: int | None = None,
                       train_size: int | None = None, val_size: int | None = None, seed: int = 0,
                       val_split: float = 0.1) -> DataBundle:
    """multi-shapes: 1-3 objects of 5 classes per image, one label each; val also labelled with all
    present (default 32 px, 4,000 train / 1,000 val; task shape or color)."""
    if path:
        raise UsageError("multi-shapes is built in and takes no path")
    task = task or "shape"
    if task not in ("shape", "color"):
        raise UsageError(f"multi-shapes tasks are 'shape' (default) and 'color'; got {task!r}")
    size = img_size or 32
    train = MultiShapesDataset(train_size or 4000, size, seed, task=task)
    val = MultiShapesDataset(val_size or 1000, size, seed + 1_000_003, task=task)
    names = list(SHAPES) if task == "shape" else list(COLORS)
    return DataBundle(train=train, val=val, num_classes=len(names), class_names=names,
                      in_chans=3, img_size=size, task=task)
