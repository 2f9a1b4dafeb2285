"""Color-dSprites, rendered procedurally from an index: 4 colours x the 737,280 dSprites latents, no files.

Latents (in index order, the last varies fastest, as in dSprites with colour outermost):
  color 4 (red, green, blue, white), shape 3 (square, ellipse, heart), scale 6 (linspace 0.5..1),
  orientation 40 (2*pi*k/40, k = 0..39), posx 32 and posy 32 (linspace 0..1).
index = 737280*color + 245760*shape + 40960*scale + 1024*orientation + 32*posx + posy (2,949,120 images).

Geometry (ours; dSprites' generator is not public): the frame is [0, 1]^2 with y pointing down. A
shape at scale 1 fits in a circle of radius `OBJECT_RADIUS` about its rotation centre; position
value v maps that centre to `MARGIN + v * (1 - 2*MARGIN)`, so every shape lies wholly inside the
frame. Orientation turns the shape counter-clockwise on screen. Orientation values exclude 2*pi
(dSprites includes it, which makes its first and last orientation the same image). Shapes are
rotationally symmetric (square every 10 steps = 90 deg, ellipse every 20 = 180 deg); such
equivalent latents render to exactly the same image, every other pair of latents differs.
Edges are anti-aliased analytically from a signed distance (one sample per pixel), or binary
as in dSprites with `antialias=False`; the colour is the dSprites image times an RGB mask.
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Sequence

import torch
from torch.utils.data import Dataset

from cuekit.data.registry import DataBundle, register_dataset
from cuekit.errors import UnknownChoiceError, UsageError

LATENT_NAMES = ("color", "shape", "scale", "orientation", "posx", "posy")
LATENT_SIZES = (4, 3, 6, 40, 32, 32)
LATENT_BASES = (737280, 245760, 40960, 1024, 32, 1)
NUM_IMAGES = math.prod(LATENT_SIZES)  # 2,949,120

COLOR_NAMES = ("red", "green", "blue", "white")
SHAPE_NAMES = ("square", "ellipse", "heart")
COLOR_MASKS = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0))
# Orientation steps after which a shape looks the same: square 90 deg, ellipse 180 deg, heart 360 deg.
SYMMETRY_PERIOD = (10, 20, 40)

LATENT_VALUES: dict[str, tuple[float, ...]] = {
    "color": tuple(float(i) for i in range(4)),
    "shape": tuple(float(i) for i in range(3)),
    "scale": tuple(0.5 + 0.1 * i for i in range(6)),
    "orientation": tuple(2 * math.pi * k / 40 for k in range(40)),
    "posx": tuple(i / 31 for i in range(32)),
    "posy": tuple(i / 31 for i in range(32)),
}
LATENT_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "color": COLOR_NAMES,
    "shape": SHAPE_NAMES,
    "scale": tuple(f"{v:.1f}" for v in LATENT_VALUES["scale"]),
    "orientation": tuple(f"{9 * k}deg" for k in range(40)),
    "posx": tuple(f"{v:.3f}" for v in LATENT_VALUES["posx"]),
    "posy": tuple(f"{v:.3f}" for v in LATENT_VALUES["posy"]),
}

OBJECT_RADIUS = 0.2  # frame units: radius of the circle holding a scale-1 shape
MARGIN = OBJECT_RADIUS + 0.04  # centre range [MARGIN, 1 - MARGIN]: a gap of >= 0.04 frame (1.3 px at 32 px)
ELLIPSE_AXES = (1.0, 0.5)  # semi-axes in object units (bounding radius 1)

# Heart: a 45-degree diamond of side s with a disc of radius s/2 on each upper edge, tip down,
# shifted so its vertical extent is centred on the rotation centre and scaled to bounding radius 1.
_H_TIP = 1 / math.sqrt(2)  # for s = 1: tip at y = +0.707 (down), lobes reach y = -(0.354 + 0.5)
_H_SHIFT = ((0.5 / math.sqrt(2) + 0.5) - _H_TIP) / 2
_H_LOBE = (0.5 / math.sqrt(2), 0.5 / math.sqrt(2) - _H_SHIFT)  # |x|, -y of a lobe centre for s = 1
_HEART_SIDE = 1 / (math.hypot(*_H_LOBE) + 0.5)


def _check_range(latents: torch.Tensor) -> None:
    sizes = torch.tensor(LATENT_SIZES, device=latents.device)
    bad = (latents < 0) | (latents >= sizes)
    if bool(bad.any()):
        row = latents[bad.any(-1)][0].tolist()
        raise UsageError(f"latents {row} out of range; sizes are {dict(zip(LATENT_NAMES, LATENT_SIZES))}")


def _as_latents(latents) -> torch.Tensor:
    latents = torch.as_tensor(latents)
    if latents.shape[-1:] != (6,) or latents.is_floating_point():
        raise UsageError(f"latents must be integer class ids of shape (..., 6), got {tuple(latents.shape)} "
                         f"{latents.dtype}")
    latents = latents.long()
    _check_range(latents)
    return latents


def latents_to_index(latents) -> torch.Tensor:
    """Dataset index of each latent row: latents (..., 6) long class ids -> (...) long."""
    latents = _as_latents(latents)
    bases = torch.tensor(LATENT_BASES, device=latents.device)
    return (latents * bases).sum(-1)


def index_to_latents(index) -> torch.Tensor:
    """Latent class ids of dataset indices: index (...) long in [0, 2949120) -> (..., 6) long."""
    index = torch.as_tensor(index)
    if index.is_floating_point():
        raise UsageError(f"indices must be integers, got {index.dtype}")
    index = index.long()
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= NUM_IMAGES):
        raise UsageError(f"dsprites index out of range [0, {NUM_IMAGES})")
    bases = torch.tensor(LATENT_BASES, device=index.device)
    sizes = torch.tensor(LATENT_SIZES, device=index.device)
    return torch.div(index[..., None], bases, rounding_mode="floor") % sizes


def latent_values(latents) -> torch.Tensor:
    """Physical values of latent class ids (scale, angle in radians, position in [0, 1]):
    latents (..., 6) long -> (..., 6) float64 (colour and shape stay class ids)."""
    latents = _as_latents(latents)
    out = torch.empty(latents.shape, dtype=torch.float64, device=latents.device)
    for j, name in enumerate(LATENT_NAMES):
        table = torch.tensor(LATENT_VALUES[name], dtype=torch.float64, device=latents.device)
        out[..., j] = table[latents[..., j]]
    return out


def _sdf_square(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance (object units) to the square of circumradius 1."""
    h = 1 / math.sqrt(2)
    qx, qy = u.abs() - h, v.abs() - h
    ox, oy = qx.clamp(min=0), qy.clamp(min=0)
    return (ox * ox + oy * oy).sqrt() + torch.maximum(qx, qy).clamp(max=0)


def _sdf_ellipse(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """First-order signed distance (f / |grad f|) to the ellipse with ELLIPSE_AXES: exact on the edge."""
    a, b = ELLIPSE_AXES
    xa, yb = u / a, v / b
    f = xa * xa + yb * yb - 1
    gx, gy = xa / a, yb / b
    return f / (2 * (gx * gx + gy * gy).sqrt()).clamp(min=1e-6)


def _sdf_heart(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance to the heart (tip towards +v): union of a 45-degree diamond and two discs."""
    s = _HEART_SIDE
    x, y = u / s, v / s - _H_SHIFT  # diamond centred at the origin, side 1
    c = 1 / math.sqrt(2)
    du, dv = (x - y) * c, (x + y) * c  # rotate by 45 degrees: the diamond becomes an axis-aligned square
    qx, qy = du.abs() - 0.5, dv.abs() - 0.5
    ox, oy = qx.clamp(min=0), qy.clamp(min=0)
    d_diamond = (ox * ox + oy * oy).sqrt() + torch.maximum(qx, qy).clamp(max=0)
    lx, ly = x.abs() - _H_LOBE[0], y + _H_LOBE[1] + _H_SHIFT
    d_lobes = (lx * lx + ly * ly).sqrt() - 0.5
    return torch.minimum(d_diamond, d_lobes) * s


_SDFS = (_sdf_square, _sdf_ellipse, _sdf_heart)


def render(latents, img_size: int = 64, *, antialias: bool = True, chunk_pixels: int = 1 << 21) -> torch.Tensor:
    """Render Color-dSprites images: latents (N, 6) long class ids -> (N, 3, H, W) float32 in [0, 1].

    Batched and deterministic, on the latents' device; `antialias=False` gives binary edges as in
    dSprites. Rows are processed in chunks of about `chunk_pixels` pixels to bound memory.
    """
    latents = _as_latents(latents)
    if latents.dim() != 2:
        raise UsageError(f"render expects latents of shape (N, 6), got {tuple(latents.shape)}")
    if img_size < 4:
        raise UsageError(f"img_size must be at least 4, got {img_size}")
    dev, n, res = latents.device, latents.shape[0], int(img_size)
    out = torch.empty(n, 3, res, res, dtype=torch.float32, device=dev)
    # Lookup tables computed in float64 on the host, so results never depend on the batch's
    # vectorisation path (no transcendental functions are evaluated per image).
    angles = torch.tensor(LATENT_VALUES["orientation"], dtype=torch.float64)
    cos_t = angles.cos().float().to(dev)
    sin_t = angles.sin().float().to(dev)
    size_t = (torch.tensor(LATENT_VALUES["scale"], dtype=torch.float64) * OBJECT_RADIUS).float().to(dev)
    pos_t = (MARGIN + torch.tensor(LATENT_VALUES["posx"], dtype=torch.float64) * (1 - 2 * MARGIN)).float().to(dev)
    period_t = torch.tensor(SYMMETRY_PERIOD, device=dev)
    masks_t = torch.tensor(COLOR_MASKS, dtype=torch.float32, device=dev)
    grid = (torch.arange(res, dtype=torch.float32, device=dev) + 0.5) / res  # pixel centres

    step = max(1, chunk_pixels // (res * res))
    for start in range(0, n, step):
        lat = latents[start:start + step]
        shape = lat[:, 1]
        k = lat[:, 3] % period_t[shape]  # symmetric orientations share one canonical angle
        cos, sin = cos_t[k][:, None, None], sin_t[k][:, None, None]
        size = size_t[lat[:, 2]][:, None, None]
        dx = grid[None, None, :] - pos_t[lat[:, 4]][:, None, None]  # (n, 1, W)
        dy = grid[None, :, None] - pos_t[lat[:, 5]][:, None, None]  # (n, H, 1)
        # object coordinates: undo the counter-clockwise on-screen rotation (y points down), then the size
        u = (cos * dx - sin * dy) / size
        v = (sin * dx + cos * dy) / size
        dist = torch.empty_like(u)
        for s, sdf in enumerate(_SDFS):
            rows = (shape == s).nonzero().squeeze(1)
            if rows.numel():
                dist[rows] = sdf(u[rows], v[rows])
        dist_px = dist * size * res
        if antialias:
            cover = (0.5 - dist_px).clamp(0.0, 1.0)
        else:
            cover = (dist_px <= 0).float()
        out[start:start + step] = cover[:, None] * masks_t[lat[:, 0]][:, :, None, None]
    return out


def _task_column(task: str) -> int:
    if task not in LATENT_NAMES:
        raise UnknownChoiceError("task", task, LATENT_NAMES)
    return LATENT_NAMES.index(task)


class ColorDSprites(Dataset):
    """Color-dSprites images (3, H, W) float in [0, 1] with the class id of one latent as the label.

    `indices`: dataset indices (see `latents_to_index`) this dataset holds, default all 2,949,120.
    DataLoader fetches whole batches through `__getitems__`, rendered in one batched call.
    """

    def __init__(self, task: str = "shape", indices: Sequence[int] | torch.Tensor | None = None,
                 img_size: int = 64, antialias: bool = True):
        self.task = task
        self.task_column = _task_column(task)
        if indices is None:
            indices = torch.arange(NUM_IMAGES)
        indices = torch.as_tensor(indices)
        if indices.dim() != 1 or indices.is_floating_point():
            raise UsageError(f"indices must be a 1-D integer sequence, got {tuple(indices.shape)} {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= NUM_IMAGES):
            raise UsageError(f"dsprites index out of range [0, {NUM_IMAGES})")
        if img_size < 4:
            raise UsageError(f"img_size must be at least 4, got {img_size}")
        self.indices = indices.long()
        self.img_size = int(img_size)
        self.antialias = antialias
        self.num_classes = LATENT_SIZES[self.task_column]
        self.class_names = list(LATENT_CLASS_NAMES[task])

    def __len__(self) -> int:
        return self.indices.numel()

    @cached_property
    def latents(self) -> torch.Tensor:
        """Latent class ids of every item: (len, 6) long, columns in LATENT_NAMES order."""
        return index_to_latents(self.indices)

    @property
    def labels(self) -> torch.Tensor:
        """The label of every item: (len,) long."""
        return self.latents[:, self.task_column]

    def render_items(self, items: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and labels of dataset positions: -> (n, 3, H, W) float, (n,) long."""
        pos = torch.as_tensor(items, dtype=torch.long)
        n = len(self)
        if pos.numel() and (int(pos.min()) < -n or int(pos.max()) >= n):
            raise IndexError(f"index out of range for a dataset of {n} images")
        lat = index_to_latents(self.indices[pos])
        return render(lat, self.img_size, antialias=self.antialias), lat[:, self.task_column]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        imgs, labels = self.render_items([int(i)])
        return imgs[0], int(labels[0])

    def __getitems__(self, items: list[int]) -> list[tuple[torch.Tensor, int]]:
        imgs, labels = self.render_items(items)
        return list(zip(imgs.unbind(0), labels.tolist()))


@register_dataset("dsprites")
def dsprites_dataset(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0,
                     val_split=0.1) -> DataBundle:
    """Color-dSprites (built in): seeded disjoint random train/val subsets of the 2,949,120 images.

    Defaults: task "shape", 64 px, 20,000 train and train_size // 10 validation images.
    `val_split` is not used (the validation size is `val_size`).
    """
    if path is not None:
        raise UsageError("dsprites is built in and takes no path: use --data dsprites")
    task = task or "shape"
    _task_column(task)
    img_size = 64 if img_size is None else int(img_size)
    train_size = 20_000 if train_size is None else int(train_size)
    val_size = max(1, train_size // 10) if val_size is None else int(val_size)
    if train_size < 1 or val_size < 1:
        raise UsageError(f"dsprites needs train_size >= 1 and val_size >= 1, got {train_size}, {val_size}")
    if train_size + val_size > NUM_IMAGES:
        raise UsageError(f"train_size + val_size = {train_size + val_size} exceeds the {NUM_IMAGES} dsprites images")
    perm = torch.randperm(NUM_IMAGES, generator=torch.Generator().manual_seed(seed))
    train = ColorDSprites(task, perm[:train_size].clone(), img_size)
    val = ColorDSprites(task, perm[train_size:train_size + val_size].clone(), img_size)
    return DataBundle(train=train, val=val, num_classes=train.num_classes, class_names=list(train.class_names),
                      in_chans=3, img_size=img_size, task=task, name="dsprites")
