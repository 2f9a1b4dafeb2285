"""Cue sources and the diagonal / off-diagonal cue-conflict construction of WCST-ML.

A *cue source* is a set of N images with several labelled attributes (cues). For K chosen cues,
L = the smallest number of distinct values among them. Each cue is cut into L *levels*:
categorical cues keep their L most frequent values (ties keep the smaller id first, so with four
equally frequent dSprites colours the levels are red, green, blue and white is never a level);
ordinal cues are cut into L contiguous bins holding about N/L samples each. The *diagonal set*
holds the samples whose cues are all at the same level (label = that level): every cue explains
it equally well. The *off-diagonal set* D_k of cue k holds the samples outside the diagonal whose
cue-k level is defined, labelled by that level: only cue k explains it.

Sources: Color-dSprites (built in), UTKFace from a local folder, and any image folder with a CSV
of attributes.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cuekit.errors import DataError, UnknownChoiceError, UsageError

CATEGORICAL = "categorical"
ORDINAL = "ordinal"
SPLITS = ("train", "valid")
DIAGONAL = "diagonal"


@dataclasses.dataclass
class Cue:
    """One attribute of every sample: values (N,) int or float, and how to cut it into levels."""

    name: str
    kind: str                                   # CATEGORICAL or ORDINAL
    values: np.ndarray                          # (N,) per-sample value (class id or number)
    value_names: dict | None = None             # value -> readable name (used in level names)


class CueSource:
    """Base class: N images with named cues. Subclasses implement `cue` and `load_images`."""

    name: str = "source"
    cue_names: tuple[str, ...] = ()
    in_chans: int = 3
    default_img_size: int = 64

    def __len__(self) -> int:
        raise NotImplementedError

    def cue(self, name: str) -> Cue:
        """The cue called `name`; raises UnknownChoiceError for a cue this source does not have."""
        raise NotImplementedError

    def load_images(self, indices: np.ndarray, img_size: int) -> torch.Tensor:
        """Images of sample indices: (n,) int -> (n, C, img_size, img_size) float in [0, 1]."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """A short name of one sample for error messages (file name, latent ids)."""
        return f"sample {index}"

    def _unknown(self, name: str) -> UnknownChoiceError:
        return UnknownChoiceError(f"cue of {self.name}", name, self.cue_names)


# ----------------------------------------------------------------------------------------------
# Levels


@dataclasses.dataclass
class CueLevels:
    """The L levels of one cue: per-sample level (-1 = none of the L) and what each level means."""

    cue: str
    kind: str
    level_of_sample: np.ndarray                 # (N,) int8 in [-1, L)
    level_names: list[str]
    definition: list                            # categorical: the value id of each level;
    #                                             ordinal: (low, high) value range of each level
    counts: list[int]                           # samples per level in the whole source


def _unique_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(values, return_inverse, return_counts), in O(N) for small-range integers."""
    if values.dtype.kind in "iub" and values.size:
        lo, hi = int(values.min()), int(values.max())
        if hi - lo < 1 << 20:
            shifted = values.astype(np.int64) - lo
            counts = np.bincount(shifted, minlength=hi - lo + 1)
            present = np.flatnonzero(counts)
            position = np.full(counts.size, -1, dtype=np.int64)
            position[present] = np.arange(present.size)
            return (present + lo).astype(values.dtype), position[shifted], counts[present]
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return uniq, inverse.reshape(-1), counts


def count_values(cue: Cue) -> int:
    """The number of distinct values a cue takes."""
    return int(_unique_counts(np.asarray(cue.values))[0].size)


def _ordinal_cutoffs(counts: np.ndarray, num_levels: int) -> list[int]:
    """Greedy cut of sorted distinct values into `num_levels` contiguous bins of about equal count.

    counts: (D,) samples per distinct value (sorted by value). Returns the end position (exclusive,
    in distinct values) of every bin; each bin holds at least one distinct value.
    """
    d = counts.size
    cum = np.cumsum(counts)
    total = cum[-1]
    ends, start = [], 0
    for level in range(1, num_levels):
        target = total * level / num_levels
        lo, hi = start + 1, d - (num_levels - level)   # leave one value for every later bin
        cands = np.arange(lo, hi + 1)
        best = cands[np.argmin(np.abs(cum[cands - 1] - target))]
        ends.append(int(best))
        start = int(best)
    ends.append(d)
    return ends


def _value_label(v: float) -> str:
    return f"{v:g}" if float(v).is_integer() else f"{v:.3g}"


def compute_levels(cue: Cue, num_levels: int) -> CueLevels:
    """Cut `cue` into `num_levels` levels (see the module docstring for the rule)."""
    uniq, inverse, counts = _unique_counts(np.asarray(cue.values))
    if uniq.size < 2:
        raise DataError(f"cue {cue.name!r} has a single value ({_value_label(uniq[0]) if uniq.size else 'none'}): "
                        "it cannot define classes")
    if uniq.size < num_levels:
        raise DataError(f"cue {cue.name!r} has {uniq.size} values, fewer than the {num_levels} levels asked for")
    level_of_value = np.full(uniq.size, -1, dtype=np.int8)
    names: list[str] = []
    definition: list = []
    if cue.kind == CATEGORICAL:
        order = np.argsort(-counts, kind="stable")[:num_levels]   # most frequent first, ties by id
        for level, u in enumerate(order):
            level_of_value[u] = level
            vid = uniq[u].item()
            definition.append(vid)
            names.append(str((cue.value_names or {}).get(vid, _value_label(vid))))
    elif cue.kind == ORDINAL:
        start = 0
        for level, end in enumerate(_ordinal_cutoffs(counts, num_levels)):
            level_of_value[start:end] = level
            lo, hi = uniq[start].item(), uniq[end - 1].item()
            definition.append((lo, hi))
            lo_name, hi_name = (str((cue.value_names or {}).get(v, _value_label(v))) for v in (lo, hi))
            names.append(lo_name if lo == hi else f"{lo_name}..{hi_name}")
            start = end
    else:
        raise UsageError(f"cue {cue.name!r}: kind must be {CATEGORICAL!r} or {ORDINAL!r}, got {cue.kind!r}")
    per_sample = level_of_value[inverse]
    level_counts = np.bincount(per_sample[per_sample >= 0], minlength=num_levels).tolist()
    return CueLevels(cue.name, cue.kind, per_sample, names, definition, level_counts)


# ----------------------------------------------------------------------------------------------
# Cue-conflict sets


@dataclasses.dataclass
class ConflictSplit:
    """One split (train or valid) of the diagonal set or of one cue's off-diagonal set."""

    indices: np.ndarray                         # (n,) int64 sample indices into the source
    labels: np.ndarray                          # (n,) int64 class = level of the set's cue
    levels: np.ndarray                          # (n, K) int8 level of every chosen cue (-1 = none)

    def __len__(self) -> int:
        return int(self.indices.size)


@dataclasses.dataclass
class CueConflictData:
    """The diagonal set and every cue's off-diagonal set, each split into train and valid.

    `diagonal[split]` and `off_diagonal[cue][split]` are ConflictSplits; `sizes` holds the sizes of
    the whole diagonal and off-diagonal sets before caps. Images are fetched from `source`, once,
    by `materialize` (then kept in memory, uint8).
    """

    source: CueSource
    cues: tuple[str, ...]
    num_levels: int
    level_names: dict[str, list[str]]
    level_definitions: dict[str, list]
    diagonal: dict[str, ConflictSplit]
    off_diagonal: dict[str, dict[str, ConflictSplit]]
    sizes: dict[str, int]
    seed: int = 0
    img_size: int = 32
    _cache_index: np.ndarray | None = None      # sorted sample indices held in _cache_images
    _cache_images: torch.Tensor | None = None   # (M, C, H, W) uint8

    def split(self, set_name: str, split: str) -> ConflictSplit:
        """`set_name` is "diagonal" or a cue name; `split` is "train" or "valid"."""
        if split not in SPLITS:
            raise UnknownChoiceError("split", split, SPLITS)
        if set_name == DIAGONAL:
            return self.diagonal[split]
        if set_name not in self.off_diagonal:
            raise UnknownChoiceError("cue-conflict set", set_name, (DIAGONAL, *self.off_diagonal))
        return self.off_diagonal[set_name][split]

    def materialize(self) -> "CueConflictData":
        """Load the images of every split into memory once (uint8); returns self."""
        if self._cache_images is not None:
            return self
        parts = [s.indices for s in self.diagonal.values()]
        parts += [s.indices for d in self.off_diagonal.values() for s in d.values()]
        index = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        size = self.img_size
        imgs = torch.empty(index.size, self.source.in_chans, size, size, dtype=torch.uint8)
        for i in range(0, index.size, 1024):     # uint8 chunk by chunk: no float copy of the whole set
            imgs[i:i + 1024] = self.source.load_images(index[i:i + 1024], size).clamp_(0, 1).mul_(255).round_()
        self._cache_images = imgs
        self._cache_index = index
        return self

    def images(self, indices: np.ndarray) -> torch.Tensor:
        """Images of sample indices: (n,) -> (n, C, H, W) float in [0, 1] (from memory if materialized)."""
        indices = np.asarray(indices, dtype=np.int64)
        if self._cache_images is not None:
            pos = np.searchsorted(self._cache_index, indices)
            if indices.size and (pos.max() >= self._cache_index.size
                                 or not np.array_equal(self._cache_index[pos], indices)):
                raise DataError("an index outside the materialized cue-conflict sets was requested")
            return self._cache_images[torch.from_numpy(pos)].float().div_(255)
        return self.source.load_images(indices, self.img_size)

    def dataset(self, set_name: str, split: str, label_cue: str | None = None) -> "ConflictDataset":
        """A torch Dataset of (image (C, H, W) float, int label) for one set and split.

        label_cue: label by this cue's level instead of the set's own label (the diagonal set is
        labelled by every cue alike).
        """
        part = self.split(set_name, split)
        labels = part.labels if label_cue is None else part.levels[:, self._cue_pos(label_cue)].astype(np.int64)
        if label_cue is not None and (labels < 0).any():
            raise DataError(f"some samples of {set_name}/{split} have no level of cue {label_cue!r}")
        return ConflictDataset(self, part.indices, labels)

    def cue_training_set(self, cue: str, split: str = "train", diagonal_per_class: int | None = None,
                         seed: int = 0) -> "ConflictDataset":
        """Diagonal + D_cue, labelled by cue's level: the data only `cue` explains fully (cue-k solutions).

        diagonal_per_class: use a seeded random subset of this many diagonal samples per class
        (default: the whole diagonal split).
        """
        diag, off = self.split(DIAGONAL, split), self.split(cue, split)
        keep = np.arange(len(diag))
        if diagonal_per_class is not None:
            rng = np.random.default_rng(seed)
            parts = []
            for level in range(self.num_levels):
                mine = np.flatnonzero(diag.labels == level)
                if mine.size < diagonal_per_class:
                    raise DataError(f"the diagonal {split} split has {mine.size} samples of level {level}, fewer "
                                    f"than the {diagonal_per_class} asked for")
                parts.append(np.sort(rng.choice(mine, size=diagonal_per_class, replace=False)))
            keep = np.concatenate(parts)
        return ConflictDataset(self, np.concatenate([diag.indices[keep], off.indices]),
                               np.concatenate([diag.labels[keep], off.labels]))

    def _cue_pos(self, cue: str) -> int:
        if cue not in self.cues:
            raise UnknownChoiceError("cue", cue, self.cues)
        return self.cues.index(cue)

    def bundle(self, train_set: Dataset | None = None, val_set: Dataset | None = None):
        """A DataBundle for cuekit.train: default train = diagonal/train, val = diagonal/valid."""
        from cuekit.data.registry import DataBundle

        return DataBundle(train=train_set if train_set is not None else self.dataset(DIAGONAL, "train"),
                          val=val_set if val_set is not None else self.dataset(DIAGONAL, "valid"),
                          num_classes=self.num_levels, class_names=self.class_names(),
                          in_chans=self.source.in_chans, img_size=self.img_size, name=f"wcst:{self.source.name}")

    def class_names(self) -> list[str]:
        """Name of each class (level) on the diagonal: the cues' level names joined by "/"."""
        return ["/".join(self.level_names[c][i] for c in self.cues) for i in range(self.num_levels)]

    def summary(self) -> dict:
        """JSON-able description: cues, levels, set sizes and split sizes."""
        return {
            "source": self.source.name, "cues": list(self.cues), "num_levels": self.num_levels,
            "levels": {c: self.level_names[c] for c in self.cues},
            "level_definitions": {c: self.level_definitions[c] for c in self.cues},
            "sizes": dict(self.sizes),
            "splits": {name: {s: len(self.split(name, s)) for s in SPLITS} for name in (DIAGONAL, *self.cues)},
            "seed": self.seed, "img_size": self.img_size,
        }


class ConflictDataset(Dataset):
    """(image, label) pairs of some source samples; batched fetching through `__getitems__`."""

    def __init__(self, data: CueConflictData, indices: np.ndarray, labels: np.ndarray):
        self.data = data
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitems__(self, items: list[int]) -> list[tuple[torch.Tensor, int]]:
        imgs = self.data.images(self.indices[np.asarray(items, dtype=np.int64)])
        return list(zip(imgs.unbind(0), self.labels[items].tolist()))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([int(i)])[0]

    def subset(self, n: int) -> "ConflictDataset":
        """The first `n` samples."""
        return ConflictDataset(self.data, self.indices[:n], self.labels[:n])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images and labels at once: (n, C, H, W) float, (n,) long."""
        return self.data.images(self.indices), torch.from_numpy(self.labels)


def _take_per_class(pool: np.ndarray, labels: np.ndarray, num_levels: int, n_train: int | None,
                    n_valid: int | None, valid_fraction: float, rng: np.random.Generator,
                    set_desc: str, level_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced, seeded, disjoint train/valid picks from `pool` (sample indices) by label."""
    by_class = [pool[labels == c] for c in range(num_levels)]
    smallest = min(p.size for p in by_class)
    if n_train is None and n_valid is None:
        n_valid = max(1, round(smallest * valid_fraction))
        n_train = smallest - n_valid
    elif n_train is None:
        n_train = smallest - n_valid
    elif n_valid is None:
        n_valid = max(1, round(n_train * valid_fraction / (1 - valid_fraction)))
    need = n_train + n_valid
    train, valid = [], []
    for c, p in enumerate(by_class):
        if p.size < need or n_train < 0:
            raise DataError(f"{set_desc} has {p.size} samples of level {c} ({level_names[c]}), fewer than the "
                            f"{need} needed for {n_train} train + {n_valid} valid per class; lower the "
                            "per-class caps")
        pick = p[rng.choice(p.size, size=need, replace=False)] if need else p[:0]
        train.append(np.sort(pick[:n_train]))
        valid.append(np.sort(pick[n_train:]))
    return np.concatenate(train), np.concatenate(valid)


def build_cue_conflict(
    source: CueSource,
    cues: Sequence[str],
    *,
    train_per_class: int | None = None,
    valid_per_class: int | None = None,
    offdiag_train_per_class: int | None = 0,
    offdiag_valid_per_class: int | None = None,
    valid_fraction: float = 0.3,
    seed: int = 0,
    img_size: int | None = None,
) -> CueConflictData:
    """Build the diagonal and off-diagonal sets of `cues` over `source`, class-balanced and seeded.

    Caps are per class (level). None takes as many as the smallest class allows (valid_fraction of
    it for valid); offdiag_* default to 0 train (preference needs only off-diagonal valid) and the
    diagonal's valid cap. Raises DataError where a set has too few samples for a cap.
    """
    cues = tuple(cues)
    if len(cues) < 2:
        raise UsageError(f"a cue-conflict audit needs at least 2 cues, got {len(cues)} ({', '.join(cues) or 'none'})")
    if len(set(cues)) != len(cues):
        raise UsageError(f"cue listed twice in {', '.join(cues)}")
    if not 0.0 < valid_fraction < 1.0:
        raise UsageError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    for n, what in ((train_per_class, "train"), (valid_per_class, "valid"),
                    (offdiag_train_per_class, "off-diagonal train"), (offdiag_valid_per_class, "off-diagonal valid")):
        if n is not None and n < 0:
            raise UsageError(f"the {what} per-class cap must be >= 0, got {n}")
    cue_objs = [source.cue(c) for c in cues]     # raises for an unknown cue
    n_values = {c.name: count_values(c) for c in cue_objs}
    for name, n in n_values.items():
        if n < 2:
            raise DataError(f"cue {name!r} has a single value in {source.name}: it cannot define classes")
    num_levels = min(n_values.values())
    levels = [compute_levels(c, num_levels) for c in cue_objs]
    lv = np.stack([x.level_of_sample for x in levels], axis=1)  # (N, K) int8
    defined = lv >= 0
    diag_mask = defined.all(axis=1) & (lv == lv[:, :1]).all(axis=1)
    rng = np.random.default_rng(seed)
    sizes = {DIAGONAL: int(diag_mask.sum())}

    diag_pool = np.flatnonzero(diag_mask)
    diag_labels = lv[diag_pool, 0].astype(np.int64)
    d_train, d_valid = _take_per_class(diag_pool, diag_labels, num_levels, train_per_class, valid_per_class,
                                       valid_fraction, rng, "the diagonal set", levels[0].level_names)
    if d_train.size == 0:
        raise DataError("the diagonal set gets no training samples; raise the train per-class cap")

    def split_of(idx: np.ndarray, k: int | None) -> ConflictSplit:
        labels = lv[idx, 0 if k is None else k].astype(np.int64)
        return ConflictSplit(indices=idx.astype(np.int64), labels=labels, levels=lv[idx].copy())

    diagonal = {"train": split_of(d_train, None), "valid": split_of(d_valid, None)}
    off: dict[str, dict[str, ConflictSplit]] = {}
    n_off_valid = len(d_valid) // num_levels if offdiag_valid_per_class is None else offdiag_valid_per_class
    for k, name in enumerate(cues):
        mask = defined[:, k] & ~diag_mask
        sizes[name] = int(mask.sum())
        pool = np.flatnonzero(mask)
        o_train, o_valid = _take_per_class(pool, lv[pool, k].astype(np.int64), num_levels, offdiag_train_per_class,
                                           n_off_valid, valid_fraction, rng,
                                           f"the off-diagonal set of cue {name!r}", levels[k].level_names)
        off[name] = {"train": split_of(o_train, k), "valid": split_of(o_valid, k)}
    return CueConflictData(
        source=source, cues=cues, num_levels=num_levels,
        level_names={x.cue: x.level_names for x in levels},
        level_definitions={x.cue: x.definition for x in levels},
        diagonal=diagonal, off_diagonal=off, sizes=sizes, seed=seed,
        img_size=int(img_size or source.default_img_size))


# ----------------------------------------------------------------------------------------------
# Sources


@functools.lru_cache(maxsize=1)
def _dsprites_latent_table() -> np.ndarray:
    """Latent class ids of every Color-dSprites image: (2949120, 6) int8 (about 18 MB, built once)."""
    from cuekit.data import dsprites

    n = int(np.prod(dsprites.LATENT_SIZES))
    out = np.empty((n, len(dsprites.LATENT_NAMES)), dtype=np.int8)
    step = 1 << 19
    for s in range(0, n, step):
        out[s:s + step] = dsprites.index_to_latents(torch.arange(s, min(n, s + step))).numpy()
    return out


class DSpritesSource(CueSource):
    """Color-dSprites (built in, rendered on demand): cues color, shape (categorical), scale,
    orientation, posx, posy (ordinal, by latent class id).

    `orientations`: keep only these orientation class ids (default all 40). `range(10)` (0..81 deg)
    keeps one symmetry period of the square, so every kept latent renders a different image and the
    orientation of every shape can be read from the pixels (over 0..360 deg a square at 0 and at 90
    deg, or an ellipse at 0 and 180 deg, are the same image in different orientation bins).
    """

    name = "dsprites"
    default_img_size = 64
    CATEGORICAL_CUES = ("color", "shape")

    def __init__(self, antialias: bool = True, orientations: Sequence[int] | None = None):
        from cuekit.data import dsprites

        self.antialias = antialias
        self.cue_names = tuple(dsprites.LATENT_NAMES)
        self.sizes = tuple(dsprites.LATENT_SIZES)
        self.orientations: tuple[int, ...] | None = None
        self._index: np.ndarray | None = None     # (N,) dsprites index of each kept sample; None = all
        self._latents: np.ndarray | None = None   # (N, 6) int8 latents of the kept samples, built once
        if orientations is not None:
            kept = sorted({int(o) for o in orientations})
            n_orient = self.sizes[self.cue_names.index("orientation")]
            if not kept or kept[0] < 0 or kept[-1] >= n_orient:
                raise UsageError(f"orientations must be class ids in [0, {n_orient}), got {list(orientations)}")
            if len(kept) < 2:
                raise UsageError("keep at least 2 orientations")
            col = self.cue_names.index("orientation")
            self.orientations = tuple(kept)
            self._index = np.flatnonzero(np.isin(_dsprites_latent_table()[:, col], kept)).astype(np.int64)
            self.name = f"dsprites[orientation {kept[0]}..{kept[-1]}]" if kept == list(range(kept[0], kept[-1] + 1)) \
                else f"dsprites[{len(kept)} orientations]"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_latents": None}     # rebuilt on demand; keeps worker jobs small

    def __len__(self) -> int:
        return int(np.prod(self.sizes)) if self._index is None else int(self._index.size)

    def latents(self) -> np.ndarray:
        """(N, 6) int8 latent class ids of every image of this source."""
        if self._index is None:
            return _dsprites_latent_table()
        if self._latents is None:
            self._latents = _dsprites_latent_table()[self._index]
        return self._latents

    def dsprites_index(self, indices: np.ndarray) -> np.ndarray:
        """Color-dSprites dataset index of this source's sample indices: (n,) -> (n,) int64."""
        idx = np.asarray(indices, dtype=np.int64)
        return idx if self._index is None else self._index[idx]

    def cue(self, name: str) -> Cue:
        if name not in self.cue_names:
            raise self._unknown(name)
        from cuekit.data import dsprites

        col = self.cue_names.index(name)
        class_names = getattr(dsprites, "LATENT_CLASS_NAMES", {}).get(name)
        names = dict(enumerate(class_names)) if class_names else None
        kind = CATEGORICAL if name in self.CATEGORICAL_CUES else ORDINAL
        return Cue(name, kind, self.latents()[:, col], names)

    def load_images(self, indices: np.ndarray, img_size: int) -> torch.Tensor:
        from cuekit.data import dsprites

        lat = dsprites.index_to_latents(torch.from_numpy(self.dsprites_index(indices)))
        return dsprites.render(lat, img_size, antialias=self.antialias)

    def render_latents(self, latents: np.ndarray, img_size: int) -> torch.Tensor:
        """Render latent rows (n, 6) class ids -> (n, 3, H, W) float."""
        from cuekit.data import dsprites

        return dsprites.render(torch.as_tensor(np.asarray(latents, dtype=np.int64)), img_size,
                               antialias=self.antialias)

    def describe(self, index: int) -> str:
        return f"dsprites image {int(self.dsprites_index(np.array([index]))[0])} " \
               f"(latents {self.latents()[index].tolist()})"


def _load_image_file(path: Path, img_size: int, in_chans: int = 3) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB" if in_chans == 3 else "L").resize((img_size, img_size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    t = torch.from_numpy(arr.copy()).float().div_(255)
    return t.permute(2, 0, 1) if t.dim() == 3 else t[None]


class _FileSource(CueSource):
    """Images stored as files, one per sample."""

    files: list[Path]

    def __len__(self) -> int:
        return len(self.files)

    def load_images(self, indices: np.ndarray, img_size: int) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size == 0:
            return torch.zeros(0, self.in_chans, img_size, img_size)
        return torch.stack([_load_image_file(self.files[i], img_size, self.in_chans) for i in idx])

    def describe(self, index: int) -> str:
        return str(self.files[index])


UTKFACE_PATTERN = re.compile(r"^(\d{1,3})_(\d+)_(\d+)_")
UTKFACE_GENDERS = {0: "male", 1: "female"}
UTKFACE_ETHNICITIES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Others"}


class UTKFaceSource(_FileSource):
    """UTKFace from a local folder: `[age]_[gender]_[race]_[date].jpg` files (searched recursively).

    Cues: ethnicity (categorical: 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others), gender (categorical:
    0 male, 1 female), age (ordinal, in decades = age // 10). Files whose names do not follow the
    pattern or carry an out-of-range gender/race are skipped and listed in `skipped`.
    """

    name = "utkface"
    cue_names = ("ethnicity", "gender", "age")

    def __init__(self, root: str | Path):
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"UTKFace folder not found: {root}")
        files, ages, genders, races, skipped = [], [], [], [], []
        for p in sorted(root.rglob("*")):
            if p.suffix.lower() not in (".jpg", ".jpeg", ".png") or not p.is_file():
                continue
            m = UTKFACE_PATTERN.match(p.name)
            if not m or int(m.group(2)) not in UTKFACE_GENDERS or int(m.group(3)) not in UTKFACE_ETHNICITIES:
                skipped.append(p.name)
                continue
            files.append(p)
            ages.append(int(m.group(1)))
            genders.append(int(m.group(2)))
            races.append(int(m.group(3)))
        if not files:
            raise DataError(f"{root}: no UTKFace images named [age]_[gender]_[race]_[date].jpg"
                            + (f" ({len(skipped)} files skipped, e.g. {skipped[0]})" if skipped else ""))
        self.root, self.files, self.skipped = root, files, skipped
        self._values = {"age": np.asarray(ages) // 10, "gender": np.asarray(genders),
                        "ethnicity": np.asarray(races)}

    def cue(self, name: str) -> Cue:
        if name not in self.cue_names:
            raise self._unknown(name)
        if name == "age":
            return Cue("age", ORDINAL, self._values["age"], None)
        names = UTKFACE_GENDERS if name == "gender" else UTKFACE_ETHNICITIES
        return Cue(name, CATEGORICAL, self._values[name], dict(names))


FILE_COLUMNS = ("file", "filename", "image", "path", "img")


class CSVSource(_FileSource):
    """Any image folder plus a CSV of attributes: one row per image, one column per cue.

    The file column (default: the first of file, filename, image, path, img, else the first column)
    holds paths relative to `image_root` (default: the CSV's folder). Every other column is a cue.
    A cue is ordinal if listed in `ordinal`, categorical if listed in `categorical`; otherwise
    numeric columns with more than `max_categorical` distinct values are ordinal, the rest
    categorical. Rows with a missing file name, a wrong number of fields, or (for a cue in use)
    an empty or non-numeric ordinal cell raise DataError naming the row.
    """

    def __init__(self, csv_path: str | Path, image_root: str | Path | None = None, *, file_column: str | None = None,
                 ordinal: Sequence[str] = (), categorical: Sequence[str] = (), max_categorical: int = 10,
                 check_files: bool = True):
        csv_path = Path(csv_path).expanduser()
        if not csv_path.is_file():
            raise DataError(f"attribute CSV not found: {csv_path}")
        self.csv_path = csv_path
        self.root = Path(image_root).expanduser() if image_root else csv_path.parent
        self.name = f"csv:{csv_path.name}"
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"cannot read {csv_path}: {e}") from None
        if not rows or not any(cell.strip() for cell in rows[0]):
            raise DataError(f"{csv_path}: empty CSV (a header row naming the columns is required)")
        header = [h.strip() for h in rows[0]]
        if len(set(header)) != len(header) or "" in header:
            raise DataError(f"{csv_path}: the header must name every column once, got {header}")
        if file_column is None:
            file_column = next((h for h in header if h.lower() in FILE_COLUMNS), header[0])
        if file_column not in header:
            raise UnknownChoiceError("file column", file_column, header)
        self.header, self.file_column = header, file_column
        fcol = header.index(file_column)
        self.cue_names = tuple(h for h in header if h != file_column)
        if not self.cue_names:
            raise DataError(f"{csv_path}: no attribute columns besides the file column {file_column!r}")
        for name in (*ordinal, *categorical):
            if name not in self.cue_names:
                raise UnknownChoiceError(f"cue of {self.name}", name, self.cue_names)
        both = set(ordinal) & set(categorical)
        if both:
            raise UsageError(f"cue {sorted(both)[0]!r} is listed as both ordinal and categorical")
        self.ordinal, self.categorical, self.max_categorical = set(ordinal), set(categorical), max_categorical
        self.files, self.cells, self.lines = [], [], []
        for line, row in enumerate(rows[1:], start=2):
            if not row or all(not c.strip() for c in row):
                continue  # blank lines are allowed
            if len(row) != len(header):
                raise DataError(f"{csv_path}: row {line} has {len(row)} fields, the header has {len(header)}")
            name = row[fcol].strip()
            if not name:
                raise DataError(f"{csv_path}: row {line} has an empty {file_column!r} cell")
            path = self.root / name
            if check_files and not path.is_file():
                raise DataError(f"{csv_path}: row {line}: image file {path} not found")
            self.files.append(path)
            self.cells.append([c.strip() for c in row])
            self.lines.append(line)
        if not self.files:
            raise DataError(f"{csv_path}: no data rows")

    def _column(self, name: str) -> list[str]:
        col = self.header.index(name)
        out = []
        for cells, line in zip(self.cells, self.lines):
            if cells[col] == "":
                raise DataError(f"{self.csv_path}: row {line}: cue {name!r} is missing (empty cell)")
            out.append(cells[col])
        return out

    def cue(self, name: str) -> Cue:
        if name not in self.cue_names:
            raise self._unknown(name)
        raw = self._column(name)
        numbers = []
        for text, line in zip(raw, self.lines):
            try:
                numbers.append(float(text))
            except ValueError:
                if name in self.ordinal:
                    raise DataError(f"{self.csv_path}: row {line}: ordinal cue {name!r} has the non-numeric "
                                    f"value {text!r}") from None
                numbers = None
                break
        if numbers is not None and not all(np.isfinite(numbers)):
            bad = next(line for v, line in zip(numbers, self.lines) if not np.isfinite(v))
            raise DataError(f"{self.csv_path}: row {bad}: cue {name!r} is not a finite number")
        if name in self.ordinal or (name not in self.categorical and numbers is not None
                                    and len(set(numbers)) > self.max_categorical):
            return Cue(name, ORDINAL, np.asarray(numbers, dtype=np.float64), None)
        if numbers is not None:
            ids = np.asarray(numbers)
            if np.all(ids == np.round(ids)):
                ids = ids.astype(np.int64)
            uniq = np.unique(ids)
            codes = np.searchsorted(uniq, ids)
            return Cue(name, CATEGORICAL, codes, {i: _value_label(u) for i, u in enumerate(uniq.tolist())})
        uniq = sorted(set(raw))
        code = {v: i for i, v in enumerate(uniq)}
        return Cue(name, CATEGORICAL, np.asarray([code[v] for v in raw], dtype=np.int64), dict(enumerate(uniq)))

    def describe(self, index: int) -> str:
        return f"{self.csv_path} row {self.lines[index]} ({self.files[index].name})"


def open_source(spec: str, *, image_root: str | None = None, ordinal: Sequence[str] = (),
                categorical: Sequence[str] = ()) -> CueSource:
    """A cue source from a spec: "dsprites", "utkface:PATH" or "csv:PATH.csv" (images under
    `image_root`, default the CSV's folder)."""
    kind, _, path = spec.partition(":")
    if kind == "dsprites":
        if path:
            raise UsageError("dsprites is built in and takes no path: use --data dsprites")
        return DSpritesSource()
    if kind in ("utkface", "csv") and not path:
        raise UsageError(f"{kind} data needs a path: --data {kind}:PATH")
    if kind == "utkface":
        return UTKFaceSource(path)
    if kind == "csv":
        return CSVSource(path, image_root, ordinal=ordinal, categorical=categorical)
    raise UnknownChoiceError("cue source", kind, ("dsprites", "utkface", "csv"))
