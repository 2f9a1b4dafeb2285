"""`moving-shapes`: procedural video clips whose class is a motion, drawn over scenes that give the class away.

Each clip shows one large shape (square, triangle or cross, random colour with a dark outline; about a
fifth of the clip's voxels) that moves right, left, down or up, rotates clockwise or counter-clockwise,
grows or shrinks (task "motion", 8 classes; task "direction": the 4 translations only). The background
is one of as many *scenes* as there are classes (a striped texture in two colours, its own stripe angle
and frequency; the phase and colours jitter per clip), static over the clip, with per-frame noise.

The scene is a shortcut, as object and scene cues are in real action datasets: in the training split
a clip's scene is its class's own scene with probability `scene_bias` (default 0.9), any scene
otherwise; in the test split (the bundle's `val`) the scene is drawn independently of the class. A
model that learned the scene instead of the motion scores high on training-like data
(`MovingShapesDataset(..., scene_bias=...)` builds such a split) and falls towards chance on the test
split. No single frame carries the class: it takes two frames to see a motion.

Samples are (clip (3, T, S, S) float in [0, 1], label int); `dataset.labels` (N,) and
`dataset.scenes` (N,) int64. Every clip is a pure function of (seed, split, index).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cuekit.data.registry import DataBundle, register_dataset
from cuekit.data.shapes_loc import shape_mask
from cuekit.errors import UnknownChoiceError, UsageError

__all__ = ["MOTIONS", "MovingShapesDataset", "render_clip"]

MOTIONS = ("right", "left", "down", "up", "rotate-cw", "rotate-ccw", "grow", "shrink")
TASKS = {"motion": MOTIONS, "direction": MOTIONS[:4]}
SCENE_CONTRAST = 1.0          # stripe contrast, as a share of the distance between the scene's two colours
# Object radius range, as a share of the clip size (grow/shrink start at 0.8x and end at 0.8x * GROWTH): large
# enough that the moving object fills a fair share of a clip's voxels, about 20 % (its outline not counted; 8 %
# with the earlier 0.16-0.22), so that a pasted cuboid's label share is not mostly scene.
OBJECT_RADIUS = (0.28, 0.34)
GROWTH = 1.7                  # size ratio of the last to the first frame of "grow" (and first to last of "shrink")
TRAVEL = 0.3                  # distance a translating object covers over the clip, as a share of the clip size
_OBJECT_SHAPES = ("square", "triangle", "cross")  # no disc or ring: a rotation must show
_SPLITS = {"train": 0, "test": 1, "biased": 2}
# Two colours per scene, far apart from one another so that every scene is easy to tell.
_SCENE_COLORS = np.array([
    [[0.15, 0.35, 0.15], [0.45, 0.75, 0.35]],   # grass
    [[0.20, 0.30, 0.60], [0.55, 0.75, 0.95]],   # water
    [[0.55, 0.40, 0.20], [0.85, 0.75, 0.50]],   # sand
    [[0.35, 0.35, 0.38], [0.65, 0.65, 0.68]],   # concrete
    [[0.50, 0.15, 0.20], [0.90, 0.55, 0.55]],   # brick
    [[0.30, 0.15, 0.45], [0.70, 0.55, 0.85]],   # dusk
    [[0.10, 0.40, 0.40], [0.40, 0.85, 0.80]],   # pool
    [[0.45, 0.45, 0.10], [0.85, 0.85, 0.40]],   # field
], np.float32)
_OBJECT_COLORS = np.array([[1.0, 0.2, 0.2], [0.2, 1.0, 0.3], [0.3, 0.5, 1.0], [1.0, 0.95, 0.2],
                           [1.0, 0.3, 1.0], [0.2, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.6, 0.1]], np.float32)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel row and column indices (size, size) float32, read-only (built once per size)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _scene(rng: np.random.Generator, scene: int, num_scenes: int, size: int) -> np.ndarray:
    """Background (size, size, 3) float32 of scene `scene`: stripes at the scene's angle and frequency, in two
    colours drawn per clip (the texture, not the colour, tells the scene)."""
    yy, xx = (g / size for g in _grid(size))
    angle = math.pi * scene / num_scenes
    freq = 2.0 + 1.5 * (scene % 3)
    phase = rng.uniform(0, 2 * math.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle)) + phase)
    palette = _SCENE_COLORS[int(rng.integers(len(_SCENE_COLORS)))]
    c0, c1 = palette + rng.uniform(-0.06, 0.06, (2, 3)).astype(np.float32)
    return c0 + SCENE_CONTRAST * (c1 - c0) * stripes[..., None]


def render_clip(rng: np.random.Generator, motion: int, scene: int, num_scenes: int, frames: int, size: int,
                return_mask: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One clip (frames, size, size, 3) float32 in [0, 1]: motion `motion` (index into MOTIONS) over scene `scene`.

    return_mask: also return the object's mask per frame, (frames, size, size) bool.
    """
    kind = MOTIONS[motion]
    t = np.arange(frames, dtype=np.float32) / (frames - 1)  # clip progress per frame, 0 to 1
    grow = kind in ("grow", "shrink")
    lo, hi = OBJECT_RADIUS
    r0 = rng.uniform(lo * 0.8, hi * 0.8) * size if grow else rng.uniform(lo, hi) * size
    radius = np.full(frames, r0, np.float32)
    if grow:
        scale = 1.0 + (GROWTH - 1.0) * (t if kind == "grow" else 1.0 - t)
        radius = r0 * scale
    theta = np.full(frames, rng.uniform(0, 2 * math.pi), np.float32)
    if kind.startswith("rotate"):
        # +-40 degrees: never the same picture under a square's or a triangle's symmetry (90, 120 degrees)
        theta = theta + (1 if kind == "rotate-cw" else -1) * math.radians(40) * t
    travel = TRAVEL * size
    dx, dy = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}.get(kind, (0, 0))
    margin = float(radius.max()) + 0.5  # the path stays inside the clip (as far as the size allows)
    lo_x, hi_x = margin + max(0.0, -dx * travel), size - margin - max(0.0, dx * travel)
    lo_y, hi_y = margin + max(0.0, -dy * travel), size - margin - max(0.0, dy * travel)
    cx0 = rng.uniform(lo_x, hi_x) if hi_x > lo_x else size / 2
    cy0 = rng.uniform(lo_y, hi_y) if hi_y > lo_y else size / 2
    cx, cy = cx0 + dx * travel * t, cy0 + dy * travel * t

    shape = _OBJECT_SHAPES[int(rng.integers(len(_OBJECT_SHAPES)))]
    color = _OBJECT_COLORS[int(rng.integers(len(_OBJECT_COLORS)))]
    yy, xx = (g + 0.5 for g in _grid(size))
    du, dv = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    u, v = du * cos + dv * sin, -du * sin + dv * cos
    r = radius[:, None, None]
    inner = shape_mask(shape, u, v, r)
    outline = shape_mask(shape, u * r / (r + 1.2), v * r / (r + 1.2), r)  # the shape 1.2 px larger

    background = _scene(rng, scene, num_scenes, size)
    clip = np.broadcast_to(background, (frames, size, size, 3)).copy()
    clip[outline] = 0.05
    clip[inner] = color
    clip += np.float32(0.03) * rng.standard_normal(clip.shape, dtype=np.float32)
    np.clip(clip, 0.0, 1.0, out=clip)
    return (clip, inner) if return_mask else clip


class MovingShapesDataset(Dataset):
    """`n` clips of split `split` ("train": scenes biased to the class; "test": scenes independent of it;
    "biased": a held-out split drawn like "train"). Items: (clip (3, T, S, S) float, label int)."""

    def __init__(self, n: int, *, split: str = "train", task: str = "motion", frames: int = 8, img_size: int = 32,
                 scene_bias: float = 0.9, seed: int = 0):
        if task not in TASKS:
            raise UnknownChoiceError("moving-shapes task", task, TASKS)
        if split not in _SPLITS:
            raise UnknownChoiceError("moving-shapes split", split, _SPLITS)
        if n < 1:
            raise UsageError(f"moving-shapes needs at least one clip, got {n}")
        if frames < 2:
            raise UsageError(f"moving-shapes clips need at least 2 frames to show a motion, got {frames}")
        if img_size < 16:
            raise UsageError(f"moving-shapes needs --img-size >= 16, got {img_size}")
        if not 0.0 <= scene_bias <= 1.0:
            raise UsageError(f"scene_bias must be in [0, 1], got {scene_bias}")
        self.n, self.split, self.task = n, split, task
        self.frames, self.img_size, self.seed = frames, img_size, seed
        self.classes = list(TASKS[task])
        self.num_scenes = len(self.classes)
        self.scene_bias = scene_bias if split != "test" else 0.0
        rng = np.random.default_rng([seed, _SPLITS[split], 7])
        self.labels = rng.integers(0, len(self.classes), n)
        random_scene = rng.integers(0, self.num_scenes, n)
        own = rng.random(n) < self.scene_bias
        self.scenes = np.where(own, self.labels, random_scene)

    def __len__(self) -> int:
        return self.n

    def clip(self, i: int) -> np.ndarray:
        """Clip i as (T, S, S, 3) float32 in [0, 1]."""
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], int(i)])
        return render_clip(rng, MOTIONS.index(self.classes[self.labels[i]]), int(self.scenes[i]), self.num_scenes,
                           self.frames, self.img_size)

    def tensors(self) -> tuple[Tensor, Tensor]:
        """Every clip rendered at once: (clips (N, 3, T, S, S) float, labels (N,) int64), for in-memory training."""
        frames = np.empty((self.n, self.frames, self.img_size, self.img_size, 3), np.float32)
        for i in range(self.n):
            frames[i] = self.clip(i)
        clips = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).contiguous()
        return clips, torch.as_tensor(self.labels, dtype=torch.int64)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i = i % self.n
        return torch.from_numpy(self.clip(i)).permute(3, 0, 1, 2).contiguous(), int(self.labels[i])


@register_dataset("moving-shapes", video=True)
def moving_shapes_dataset(path=None, *, task=None, img_size=None, train_size=None, val_size=None, seed=0,
                          val_split=0.1, frames=None) -> DataBundle:
    """Procedural video: motions (8 classes) over scenes that predict the class in train, not in val (test)."""
    if path:
        raise UsageError("moving-shapes is built in and takes no path")
    task = task or "motion"
    img_size, frames = img_size or 32, frames or 8
    train = MovingShapesDataset(train_size or 4000, split="train", task=task, frames=frames, img_size=img_size,
                                seed=seed)
    val = MovingShapesDataset(val_size or 1000, split="test", task=task, frames=frames, img_size=img_size,
                              seed=seed)
    return DataBundle(train=train, val=val, num_classes=len(train.classes), class_names=list(train.classes),
                      in_chans=3, img_size=img_size, task=task, frames=frames)
