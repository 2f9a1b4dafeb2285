"""Label-map storage: a few large safetensors shards plus a JSON index, and a reader of the original format.

A store directory holds `index.json` and `shard-00000.safetensors`, ...; shard s covers images
[s * shard_size, (s + 1) * shard_size) of the index's image list, with tensors
`scores: (n, K, h, w) float16` (teacher scores) and `indices: (n, K, h, w) int16` (class ids),
i.e. 4 * K * h * w bytes per image (4.5 KB for top-5 on 15 x 15). Shards are written atomically and
recorded in the index only once complete, so an interrupted generation resumes from the first
missing shard.

The original ReLabel release is one `torch.save`d tensor [2, K, h, w] per image at
`<root>/<class folder>/<image stem>.pt` (scores in [0], class ids as floats in [1]);
`OriginalLabelMaps` reads it with `torch.load(weights_only=True)`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from cuekit.errors import DataError, UsageError
from cuekit.io import atomic_write_json

FORMAT = "cuekit-relabel"
VERSION = 1
INDEX = "index.json"

__all__ = ["LabelMapWriter", "LabelMapStore", "OriginalLabelMaps", "open_label_maps", "shard_name"]


def shard_name(shard: int) -> str:
    """File name of shard number `shard`."""
    return f"shard-{shard:05d}.safetensors"


class LabelMapWriter:
    """Writes the label maps of a fixed, ordered list of images into shards; resumable.

    `images`: the images' names (e.g. relative paths), in order. Opening a directory that already
    holds an index for the same images and settings resumes it: `missing_shards()` lists what is
    left. Different images or settings raise UsageError (choose another --out).
    """

    def __init__(self, out_dir: str | Path, images: Sequence[str], *, num_classes: int, topk: int,
                 map_size: Sequence[int], shard_size: int = 1024, meta: dict | None = None):
        if num_classes > 32767:
            raise UsageError(f"int16 class indices hold at most 32767 classes, got {num_classes}")
        if not 1 <= topk <= num_classes:
            raise UsageError(f"topk must be in 1..{num_classes}, got {topk}")
        if shard_size < 1:
            raise UsageError(f"shard size must be >= 1, got {shard_size}")
        self.dir = Path(out_dir)
        self.images = [str(i) for i in images]
        settings = {"num_classes": int(num_classes), "topk": int(topk),
                    "map_size": [int(map_size[0]), int(map_size[1])], "shard_size": int(shard_size)}
        self.index = {"format": FORMAT, "version": VERSION, **settings, "meta": meta or {},
                      "images": self.images, "shards": {}}
        path = self.dir / INDEX
        if path.exists():
            old = _read_index(self.dir)
            same = all(old.get(k) == v for k, v in settings.items()) and old.get("images") == self.images
            if not same:
                raise UsageError(f"{self.dir} already holds label maps of other images or settings; "
                                 "choose another --out")
            self.index["shards"] = old.get("shards", {})
            self.index["meta"] = old.get("meta", self.index["meta"])
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.index)

    @property
    def num_shards(self) -> int:
        """Number of shards the image list needs."""
        size = self.index["shard_size"]
        return (len(self.images) + size - 1) // size

    def shard_range(self, shard: int) -> range:
        """Image positions covered by a shard."""
        size = self.index["shard_size"]
        return range(shard * size, min((shard + 1) * size, len(self.images)))

    def missing_shards(self) -> list[int]:
        """Shards not yet written (or whose file went missing)."""
        return [s for s in range(self.num_shards)
                if str(s) not in self.index["shards"] or not (self.dir / shard_name(s)).exists()]

    def write_shard(self, shard: int, scores: Tensor, indices: Tensor) -> None:
        """Store shard `shard`: scores (n, K, h, w) float, indices (n, K, h, w) int, n = its image count."""
        from safetensors.torch import save_file

        k, (h, w) = self.index["topk"], self.index["map_size"]
        n = len(self.shard_range(shard))
        if scores.shape != (n, k, h, w) or indices.shape != (n, k, h, w):
            raise UsageError(f"shard {shard} needs scores and indices of shape {(n, k, h, w)}, got "
                             f"{tuple(scores.shape)} and {tuple(indices.shape)}")
        fp16 = scores.detach().float().clamp(-65504, 65504).half().cpu().contiguous()
        ids = indices.detach().to(torch.int16).cpu().contiguous()
        path = self.dir / shard_name(shard)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({"scores": fp16, "indices": ids}, str(tmp), metadata={"first": str(shard * self.index["shard_size"]),
                                                                        "count": str(n)})
        os.replace(tmp, path)
        self.index["shards"][str(shard)] = {"file": shard_name(shard), "count": n, "bytes": path.stat().st_size}
        atomic_write_json(self.dir / INDEX, self.index)


def _read_index(root: Path) -> dict:
    path = root / INDEX
    if not path.exists():
        raise DataError(f"no label maps at {root}: {INDEX} is missing")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable label-map index ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise DataError(f"{path}: not a cuekit label-map index")
    return index


class LabelMapStore:
    """Reads a store written by LabelMapWriter: `store[i]` or `store.get(name)` -> (scores, indices).

    scores: (K, h, w) float32, indices: (K, h, w) int64. Shards are loaded whole and a few kept
    in memory. A missing or corrupt shard raises DataError naming the image asked for.
    """

    def __init__(self, root: str | Path, cache_shards: int = 4):
        self.root = Path(root)
        self.index = _read_index(self.root)
        self.images: list[str] = self.index["images"]
        self.position = {name: i for i, name in enumerate(self.images)}
        self.num_classes = int(self.index["num_classes"])
        self.topk = int(self.index["topk"])
        self.map_size = tuple(self.index["map_size"])
        self.shard_size = int(self.index["shard_size"])
        self.meta = self.index.get("meta", {})
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}
        self._cache_shards = max(1, cache_shards)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def complete(self) -> bool:
        """Whether every shard has been written."""
        need = (len(self.images) + self.shard_size - 1) // self.shard_size
        return all(str(s) in self.index["shards"] for s in range(need))

    def bytes_per_image(self) -> float:
        """Mean stored bytes per image over the written shards (files, headers included)."""
        shards = self.index["shards"].values()
        n = sum(s["count"] for s in shards)
        return sum(s["bytes"] for s in shards) / n if n else float("nan")

    def _load_shard(self, shard: int, name: str) -> tuple[Tensor, Tensor]:
        if shard in self._cache:
            return self._cache[shard]
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if str(shard) not in self.index["shards"]:
            raise DataError(f"no label map for image {name!r}: shard {shard} of {self.root} was never written "
                            "(generation unfinished? rerun `cuekit relabel generate` with the same --out)")
        path = self.root / shard_name(shard)
        if not path.exists():
            raise DataError(f"no label map for image {name!r}: {path} is missing")
        try:
            tensors = load_file(str(path))
            scores, ids = tensors["scores"], tensors["indices"]
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
            raise DataError(f"corrupt label map for image {name!r}: cannot read {path} ({e})") from None
        n = len(range(shard * self.shard_size, min((shard + 1) * self.shard_size, len(self.images))))
        expect = (n, self.topk, *self.map_size)
        if tuple(scores.shape) != expect or tuple(ids.shape) != expect:
            raise DataError(f"corrupt label map for image {name!r}: {path} holds shape {tuple(scores.shape)}, "
                            f"expected {expect}")
        if len(self._cache) >= self._cache_shards:
            self._cache.pop(next(iter(self._cache)))
        self._cache[shard] = (scores, ids)
        return scores, ids

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        if not 0 <= i < len(self.images):
            raise IndexError(i)
        name = self.images[i]
        scores, ids = self._load_shard(i // self.shard_size, name)
        j = i % self.shard_size
        idx = ids[j].long()
        if idx.min() < 0 or idx.max() >= self.num_classes or not torch.isfinite(scores[j]).all():
            raise DataError(f"corrupt label map for image {name!r}: class ids outside 0..{self.num_classes - 1} "
                            "or non-finite scores")
        return scores[j].float(), idx

    def get(self, name: str) -> tuple[Tensor, Tensor]:
        """Label map of the image called `name` (as listed at generation)."""
        if name not in self.position:
            raise DataError(f"no label map for image {name!r} in {self.root}")
        return self[self.position[name]]


class OriginalLabelMaps:
    """Reader of the original ReLabel release: `<root>/<class>/<stem>.pt`, each a [2, K, h, w] tensor.

    `get(image_path)` -> (scores (K, h, w) float32, indices (K, h, w) int64), the path mapped as the
    original code does (last two components, extension replaced by .pt).
    """

    def __init__(self, root: str | Path, num_classes: int = 1000):
        self.root = Path(root)
        self.num_classes = num_classes
        if not self.root.is_dir():
            raise DataError(f"label-map folder not found: {self.root}")

    def path_of(self, image_path: str | Path) -> Path:
        """Where the original release keeps the map of `image_path`."""
        parts = Path(image_path).parts[-2:]
        return self.root / Path(*parts).with_suffix(".pt")

    def get(self, image_path: str | Path) -> tuple[Tensor, Tensor]:
        """Scores (K, h, w) float32 and class ids (K, h, w) int64 of one image."""
        path = self.path_of(image_path)
        if not path.exists():
            raise DataError(f"no label map for image {str(image_path)!r}: {path} is missing")
        try:
            t = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (torch raises many types on a damaged file)
            raise DataError(f"corrupt label map for image {str(image_path)!r}: cannot read {path} ({e})") from None
        if not isinstance(t, Tensor) or t.dim() != 4 or t.shape[0] != 2:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise DataError(f"corrupt label map for image {str(image_path)!r}: {path} holds {shape}, "
                            "expected a [2, K, h, w] tensor")
        idx = t[1].long()
        if idx.min() < 0 or idx.max() >= self.num_classes:
            raise DataError(f"corrupt label map for image {str(image_path)!r}: class ids outside "
                            f"0..{self.num_classes - 1}")
        return t[0].float(), idx


def open_label_maps(root: str | Path, num_classes: int = 1000) -> LabelMapStore | OriginalLabelMaps:
    """A store written by cuekit (has index.json) or else an original-release folder."""
    root = Path(root)
    if (root / INDEX).exists():
        return LabelMapStore(root)
    return OriginalLabelMaps(root, num_classes)
