"""Precomputed corrupted test sets from local copies: CIFAR-10-C, CIFAR-100-C and ImageNet-C (never downloaded).

Formats (Hendrycks & Dietterich 2019, as released):

- `cifar10-c:PATH`, `cifar100-c:PATH`: PATH holds `<corruption>.npy` files, each uint8 (N, 32, 32, 3) with
  N = 5 x n in severity-major order (rows [(s - 1) n, s n) are severity s, the same n test images in each
  block), and `labels.npy`, N integer labels (the n test labels repeated 5 times). The released sets have
  n = 10,000. A `.npy` file named after no corruption is refused (a typo would silently drop a corruption);
  other files are ignored.
- `imagenet-c:PATH`: `PATH/<corruption>/<severity>/<wnid>/<file>.JPEG` (severity 1..5, one folder per
  class). The corruption folders may also sit in the release's category folders (`PATH/noise/gaussian_noise/...`,
  likewise blur, weather, digital, extra). Images are read as RGB; one whose shorter side is not the model's
  size is resized to it (bilinear), then centre-cropped (the released images are 224 x 224: nothing changes
  at 224 px, as in Hendrycks' evaluation, which centre-crops only).

Corruption names are those of `cuekit.robustness.corruptions.CORRUPTIONS` (the 15 common ones and the
four extras). `open_corrupted_sets(spec)` checks the folder; `.check(corruptions, severities)` checks every
file a run needs (shape, dtype, counts, labels; the severity folders and that each holds images) before
any work starts; `.batches(...)` yields uint8 (B, 3, H, W) images with their labels. Every error is a
`DataError` naming the file or folder.

The same formats are registered as datasets (`--data cifar100-c:PATH` for `cuekit data list|preview|check`):
every corruption and severity in one evaluation-only split; training on them is refused.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from cuekit.data.registry import DataBundle, register_dataset
from cuekit.errors import DataError, UnknownChoiceError, UsageError

__all__ = ["CORRUPTED_FORMATS", "CifarC", "CorruptedSets", "ImageNetC", "is_corrupted_spec", "open_corrupted_sets"]

CORRUPTED_FORMATS = {"cifar10-c": 10, "cifar100-c": 100, "imagenet-c": None}  # name -> classes (None: from folders)
N_SEVERITIES = 5
CIFAR_C_SIDE = 32
CATEGORY_FOLDERS = ("noise", "blur", "weather", "digital", "extra")  # ImageNet-C's release tarballs
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
EVAL_ONLY = ("evaluation-only data (corrupted copies of a test set: training on them breaks the benchmark's "
             "protocol); train on the clean data and measure with `cuekit robustness eval --corrupted-data SPEC`")


def _corruption_names() -> tuple[str, ...]:
    from cuekit.robustness.corruptions import CORRUPTIONS

    return tuple(CORRUPTIONS)


def _hint(name: str) -> str:
    close = difflib.get_close_matches(name, _corruption_names(), n=3, cutoff=0.5)
    return f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(_corruption_names())}"


def is_corrupted_spec(spec: str | None) -> bool:
    """Whether a data spec names a precomputed corrupted set (cifar10-c:PATH, cifar100-c:PATH, imagenet-c:PATH)."""
    return bool(spec) and spec.partition(":")[0] in CORRUPTED_FORMATS


class CorruptedSets:
    """The corrupted sets of one folder. `available`: the corruptions found (in CORRUPTIONS order)."""

    spec: str
    root: Path
    available: list[str]
    num_classes: int | None
    class_names: list[str] | None

    def check(self, corruptions: Sequence[str], severities: Sequence[int]) -> None:
        """Raise DataError (naming the file or folder) unless every (corruption, severity) set reads."""
        raise NotImplementedError

    def count(self, corruption: str, severity: int, limit: int | None = None) -> int:
        """Images in one set (at most `limit`)."""
        raise NotImplementedError

    def batches(self, corruption: str, severity: int, batch_size: int, limit: int | None = None,
                workers: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """uint8 images (B, 3, H, W) and int64 labels (B,) of one set, in file order (the first `limit`)."""
        raise NotImplementedError

    def location(self, corruption: str, severity: int) -> str:
        """Where one set is read from (a file or a folder), for messages and results."""
        raise NotImplementedError


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable .npy array ({' '.join(str(e).split())})") from None


class CifarC(CorruptedSets):
    """CIFAR-10-C / CIFAR-100-C: `<corruption>.npy` uint8 (5 n, 32, 32, 3), severity-major, and `labels.npy` (5 n,)."""

    def __init__(self, spec: str, root: Path, classes: int):
        self.spec, self.root, self.num_classes = spec, root, classes
        self.class_names = [str(i) for i in range(classes)]
        label = f"CIFAR-{classes}-C"
        if not root.is_dir():
            raise DataError(f"{label} folder not found: {root}")
        names = set(_corruption_names())
        for p in sorted(root.glob("*.npy")):
            if p.stem != "labels" and p.stem not in names:
                raise DataError(f"{p}: {p.stem!r} is not a corruption ({_hint(p.stem)}); {label} holds "
                                "<corruption>.npy files and labels.npy (move other .npy files out of the folder)")
        labels_path = root / "labels.npy"
        if not labels_path.is_file():
            raise DataError(f"{labels_path} is missing: {label} needs labels.npy beside the <corruption>.npy files")
        self.available = [c for c in _corruption_names() if (root / f"{c}.npy").is_file()]
        if not self.available:
            raise DataError(f"{root}: no <corruption>.npy files (e.g. fog.npy) beside labels.npy")
        self.labels = self._read_labels(labels_path, label)
        self.per_severity = len(self.labels) // N_SEVERITIES
        self._arrays: dict[str, np.ndarray] = {}

    def _read_labels(self, path: Path, label: str) -> np.ndarray:
        y = _load_npy(path, mmap=False)
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise DataError(f"{path}: labels must be a 1-D integer array, got {y.dtype} of shape {y.shape}")
        if len(y) == 0 or len(y) % N_SEVERITIES:
            raise DataError(f"{path}: {len(y)} labels is not 5 severities x n images (a positive multiple of 5)")
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= self.num_classes:
            raise DataError(f"{path}: labels span {lo}..{hi}, outside 0..{self.num_classes - 1} of {label} "
                            f"(the labels of another data set?)")
        blocks = y.reshape(N_SEVERITIES, -1)
        for s in range(1, N_SEVERITIES):
            if not np.array_equal(blocks[s], blocks[0]):
                raise DataError(f"{path}: the labels of severity {s + 1} differ from those of severity 1; severity-"
                                f"major {label} repeats the same {blocks.shape[1]} test labels in each of the 5 blocks")
        return y.astype(np.int64)

    def _array(self, corruption: str) -> np.ndarray:
        if corruption in self._arrays:
            return self._arrays[corruption]
        path = self.root / f"{corruption}.npy"
        if not path.is_file():
            raise DataError(f"{path} is missing (found: {', '.join(self.available)}; --corruptions picks which "
                            "to evaluate)")
        x = _load_npy(path, mmap=True)
        side = CIFAR_C_SIDE
        if x.ndim != 4 or x.shape[1:] != (side, side, 3):
            raise DataError(f"{path}: shape {tuple(x.shape)} is not (N, {side}, {side}, 3) (uint8 images, "
                            "severity-major)")
        if x.dtype != np.uint8:
            raise DataError(f"{path}: dtype {x.dtype}, expected uint8 pixels")
        if len(x) != len(self.labels):
            raise DataError(f"{path} holds {len(x)} images but {self.root / 'labels.npy'} has {len(self.labels)} "
                            f"labels (5 severities x {self.per_severity})")
        self._arrays[corruption] = x
        return x

    def check(self, corruptions: Sequence[str], severities: Sequence[int]) -> None:
        _check_severities(severities)
        for c in corruptions:
            self._array(c)

    def count(self, corruption: str, severity: int, limit: int | None = None) -> int:
        return self.per_severity if limit is None else min(limit, self.per_severity)

    def location(self, corruption: str, severity: int) -> str:
        n = self.per_severity
        return f"{self.root / f'{corruption}.npy'} rows {(severity - 1) * n}..{severity * n - 1}"

    def rows(self, corruption: str, severity: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (k, 32, 32, 3) images and labels (k,) of rows start..stop-1 of one severity block."""
        base = (severity - 1) * self.per_severity
        x = self._array(corruption)
        return np.asarray(x[base + start:base + stop]), self.labels[base + start:base + stop]

    def batches(self, corruption, severity, batch_size, limit=None, workers=0):
        n = self.count(corruption, severity, limit)
        for i in range(0, n, batch_size):
            x, y = self.rows(corruption, severity, i, min(n, i + batch_size))
            yield torch.from_numpy(np.array(x, copy=True)).permute(0, 3, 1, 2), torch.from_numpy(y.copy())


def _check_severities(severities: Sequence[int]) -> None:
    bad = [s for s in severities if s not in range(1, N_SEVERITIES + 1)]
    if bad or not severities:
        raise UsageError(f"corruption severities must be in 1..{N_SEVERITIES}, got {list(severities)}")


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def load_center_image(path: str | Path, img_size: int) -> Tensor:
    """An image file as uint8 (3, img_size, img_size): RGB, shorter side resized to img_size when it differs
    (bilinear), centre crop. DataError naming the file if it does not read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except Exception as e:  # any decoding failure names the file
        raise DataError(f"cannot read image {path}: {' '.join(str(e).split()) or type(e).__name__}") from None
    w, h = img.size
    if min(w, h) != img_size:
        scale = img_size / min(w, h)
        img = img.resize((max(img_size, round(w * scale)), max(img_size, round(h * scale))), Image.BILINEAR)
        w, h = img.size
    left, top = (w - img_size) // 2, (h - img_size) // 2
    img = img.crop((left, top, left + img_size, top + img_size))
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


class _FileImages(Dataset):
    """(path, label) samples as uint8 (3, S, S) tensors; `samples` lets `cuekit data check` find the files."""

    def __init__(self, samples: list[tuple[str, int]], img_size: int, transform=None):
        self.samples, self.img_size, self.transform = samples, img_size, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        img = load_center_image(path, self.img_size)
        return (img if self.transform is None else self.transform(img)), label


class ImageNetC(CorruptedSets):
    """ImageNet-C: `<corruption>/<severity>/<wnid>/<file>.JPEG` (corruption folders optionally grouped in the
    release's category folders). Labels: the index of the wnid in `class_names` (the model's classes, i.e. the
    clean data's sorted class folders); without them, the sorted class folders found."""

    def __init__(self, spec: str, root: Path, class_names: Sequence[str] | None = None, img_size: int = 224):
        self.spec, self.root, self.img_size = spec, root, int(img_size)
        if not root.is_dir():
            raise DataError(f"ImageNet-C folder not found: {root}")
        names = set(_corruption_names())
        self.dirs: dict[str, Path] = {}

        def add(d: Path) -> None:
            if d.name not in names:
                raise DataError(f"{d}: unknown corruption folder {d.name!r} ({_hint(d.name)}); ImageNet-C is "
                                f"{root}/<corruption>/<severity>/<wnid>/<file>.JPEG")
            if d.name in self.dirs:
                raise DataError(f"{d}: corruption {d.name!r} found twice (also {self.dirs[d.name]})")
            self.dirs[d.name] = d

        for entry in sorted(_subdirs(root)):
            if entry.name in CATEGORY_FOLDERS and entry.name not in names:
                for sub in sorted(_subdirs(entry)):
                    add(sub)
            else:
                add(entry)
        if not self.dirs:
            raise DataError(f"{root}: no corruption folders (expected {root}/<corruption>/<severity>/<wnid>/"
                            "<file>.JPEG, e.g. fog/3/n01440764/)")
        self.available = [c for c in _corruption_names() if c in self.dirs]
        self.class_names = list(class_names) if class_names is not None else None
        self.num_classes = len(self.class_names) if self.class_names is not None else None
        self._samples: dict[tuple[str, int], list[tuple[str, int]]] = {}

    def severity_dir(self, corruption: str, severity: int) -> Path:
        if corruption not in self.dirs:
            raise DataError(f"{self.root / corruption} is missing (found: {', '.join(self.available)}; "
                            "--corruptions picks which to evaluate)")
        d = self.dirs[corruption]
        for sub in _subdirs(d):
            if sub.name not in {str(s) for s in range(1, N_SEVERITIES + 1)}:
                raise DataError(f"{sub}: not a severity folder (ImageNet-C has {d}/1 .. {d}/{N_SEVERITIES})")
        out = d / str(severity)
        if not out.is_dir():
            raise DataError(f"severity folder {out} is missing")
        return out

    def check(self, corruptions: Sequence[str], severities: Sequence[int]) -> None:
        """Each set's folder exists and holds at least one image in a class folder (the full listing of a set
        happens when it is evaluated)."""
        _check_severities(severities)
        for c in corruptions:
            for s in severities:
                d = self.severity_dir(c, s)
                loose = next((p for p in d.iterdir() if p.is_file() and _is_image(p)), None)
                if loose is not None:
                    raise DataError(f"{loose}: images must sit in class folders ({d}/<wnid>/<file>.JPEG)")
                if not any(_is_image(p) for cls in _subdirs(d) for p in cls.iterdir()):
                    raise DataError(f"{d}: empty severity folder (no images in <wnid>/ class folders)")

    def wnids(self, corruption: str, severity: int) -> list[str]:
        """The class folders of one set, sorted."""
        return sorted(p.name for p in _subdirs(self.severity_dir(corruption, severity)))

    def samples(self, corruption: str, severity: int) -> list[tuple[str, int]]:
        """Every (image path, label) of one set, sorted by class folder then file name."""
        key = (corruption, severity)
        if key in self._samples:
            return self._samples[key]
        d = self.severity_dir(corruption, severity)
        if self.class_names is None:
            self.class_names = self.wnids(corruption, severity)
            self.num_classes = len(self.class_names)
        index = {name: i for i, name in enumerate(self.class_names)}
        out: list[tuple[str, int]] = []
        for cls in sorted(_subdirs(d)):
            if cls.name not in index:
                raise DataError(f"{cls}: class {cls.name!r} is not one of the {len(index)} classes of the model "
                                f"(the clean data's class folders, e.g. {', '.join(list(index)[:3])})")
            out += [(str(p), index[cls.name]) for p in sorted(cls.iterdir()) if p.is_file() and _is_image(p)]
        if not out:
            raise DataError(f"{d}: empty severity folder (no images in <wnid>/ class folders)")
        self._samples[key] = out
        return out

    def count(self, corruption, severity, limit=None):
        n = len(self.samples(corruption, severity))
        return n if limit is None else min(limit, n)

    def location(self, corruption, severity):
        return str(self.severity_dir(corruption, severity))

    def batches(self, corruption, severity, batch_size, limit=None, workers=0):
        samples = self.samples(corruption, severity)[:limit]
        loader = DataLoader(_FileImages(samples, self.img_size), batch_size=batch_size, shuffle=False,
                            num_workers=workers, persistent_workers=False)
        for x, y in loader:
            yield x, y.long()


def _subdirs(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")]


def open_corrupted_sets(spec: str, *, class_names: Sequence[str] | None = None,
                        img_size: int | None = None) -> CorruptedSets:
    """The corrupted sets of a spec `cifar10-c:PATH`, `cifar100-c:PATH` or `imagenet-c:PATH`.

    class_names: ImageNet-C's label order (the model's classes); img_size: ImageNet-C's crop (default 224).
    """
    name, _, path = spec.partition(":")
    if name not in CORRUPTED_FORMATS:
        raise UnknownChoiceError("corrupted data set", name, CORRUPTED_FORMATS)
    if not path:
        raise UsageError(f"{name} needs its local folder: {name}:PATH (cuekit never downloads data)")
    root = Path(path).expanduser()
    classes = CORRUPTED_FORMATS[name]
    if classes is not None:
        return CifarC(spec, root, classes)
    return ImageNetC(spec, root, class_names=class_names, img_size=img_size or 224)


# ---- the formats as datasets (`cuekit data list|preview|check`; training refused) ----

class _CifarCImages(Dataset):
    """Every corruption and severity of a CIFAR-C folder as one dataset of (image, label); `where(i)` says
    which (corruption, severity) sample i comes from."""

    def __init__(self, sets: CifarC, transform):
        self.sets, self.transform = sets, transform
        self.blocks = [(c, s) for c in sets.available for s in range(1, N_SEVERITIES + 1)]

    def __len__(self) -> int:
        return len(self.blocks) * self.sets.per_severity

    def where(self, i: int) -> tuple[str, int]:
        return self.blocks[i // self.sets.per_severity]

    def __getitem__(self, i: int):
        from PIL import Image

        c, s = self.where(i)
        k = i % self.sets.per_severity
        x, y = self.sets.rows(c, s, k, k + 1)
        return self.transform(Image.fromarray(x[0])), int(y[0])


def _cifar_c_builder(classes: int):
    def builder(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0,
                val_split=0.1) -> DataBundle:
        from cuekit.data.folders import CIFAR_MEAN, CIFAR_STD, seeded_subset, standard_transforms

        name = f"cifar{classes}-c"
        if not path:
            raise UsageError(f"CIFAR-{classes}-C needs its local folder: --data {name}:PATH (cuekit never "
                             "downloads data)")
        sets = open_corrupted_sets(f"{name}:{path}")
        sets.check(sets.available, range(1, N_SEVERITIES + 1))
        size = img_size or CIFAR_C_SIDE
        ds = _CifarCImages(sets, standard_transforms(size, CIFAR_MEAN, CIFAR_STD, False, small=True))
        everything = list(range(len(ds)))
        return DataBundle(train=seeded_subset(ds, everything, train_size, seed),
                          val=seeded_subset(ds, everything, val_size, seed), num_classes=classes,
                          class_names=list(sets.class_names), in_chans=3, img_size=size, mean=CIFAR_MEAN,
                          std=CIFAR_STD, eval_only=EVAL_ONLY)

    builder.__doc__ = (f"CIFAR-{classes}-C from a local copy: <corruption>.npy (5 severities x n) + labels.npy "
                       "(evaluation only).")
    return builder


register_dataset("cifar10-c")(_cifar_c_builder(10))
register_dataset("cifar100-c")(_cifar_c_builder(100))


@register_dataset("imagenet-c")
def imagenet_c_dataset(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0,
                       val_split=0.1) -> DataBundle:
    """ImageNet-C from a local copy: <corruption>/<severity>/<wnid>/<file>.JPEG (evaluation only)."""
    from torchvision import transforms as T

    from cuekit.data.folders import IMAGENET_MEAN, IMAGENET_STD, seeded_subset

    if not path:
        raise UsageError("ImageNet-C needs its local folder: --data imagenet-c:PATH (cuekit never downloads data)")
    size = img_size or 224
    sets = ImageNetC(f"imagenet-c:{path}", Path(path).expanduser(), img_size=size)
    present = [(c, s) for c in sets.available for s in range(1, N_SEVERITIES + 1)
               if (sets.dirs[c] / str(s)).is_dir()]
    for c in sets.available:
        sets.check([c], [s for cc, s in present if cc == c] or [1])
    sets.class_names = sorted({w for c, s in present for w in sets.wnids(c, s)})
    sets.num_classes = len(sets.class_names)
    samples = [item for c, s in present for item in sets.samples(c, s)]
    tf = T.Compose([T.ConvertImageDtype(torch.float32), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    ds = _FileImages(samples, size, tf)
    everything = list(range(len(ds)))
    return DataBundle(train=seeded_subset(ds, everything, train_size, seed),
                      val=seeded_subset(ds, everything, val_size, seed), num_classes=len(sets.class_names),
                      class_names=list(sets.class_names), in_chans=3, img_size=size, mean=IMAGENET_MEAN,
                      std=IMAGENET_STD, eval_only=EVAL_ONLY)
