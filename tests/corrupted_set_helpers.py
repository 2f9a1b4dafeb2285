"""Tiny copies of the precomputed corrupted sets, in the exact on-disk formats of the releases, written by the tests.

- CIFAR-10-C / CIFAR-100-C: `<corruption>.npy` uint8 (5 n, 32, 32, 3), severity-major, and `labels.npy` (5 n,)
  uint8, the n test labels repeated 5 times (as Hendrycks' make_cifar_c script saves them).
- ImageNet-C: `<corruption>/<severity>/<wnid>/<file>.JPEG`.

The pixels encode what a reader must get right: in a CIFAR-C file, pixel (0, 0) of image i of severity s has
red = label, green = s, blue = i; an ImageNet-C image is one flat colour, (40 * label + 20, 40 * s, 100).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

WNIDS = ("n01440764", "n01443537", "n01484850")


def cifar_c_arrays(n: int = 4, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images (5 n, 32, 32, 3) uint8 severity-major, labels (5 n,) uint8) with the pixel code above."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n).astype(np.uint8)
    x = rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8)
    for s in range(1, 6):
        for i in range(n):
            x[(s - 1) * n + i, 0, 0] = (labels[i], s, i)
    return x, np.tile(labels, 5)


def write_cifar_c(root: Path, corruptions=("fog", "contrast"), n: int = 4, classes: int = 10,
                  seed: int = 0) -> np.ndarray:
    """Write `<corruption>.npy` for each corruption and `labels.npy` under root; -> the n test labels."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for k, c in enumerate(corruptions):
        x, y = cifar_c_arrays(n, classes, seed)
        x[:, 1:, :, :] = np.random.default_rng(seed + 1 + k).integers(0, 256, x[:, 1:].shape, dtype=np.uint8)
        np.save(root / f"{c}.npy", x)
    np.save(root / "labels.npy", y)
    return y[:n]


def write_cifar_binary(root: Path, test_labels: np.ndarray, classes: int = 10, n_train: int = 20,
                       seed: int = 0) -> Path:
    """A tiny CIFAR-10 / CIFAR-100 binary copy whose test set has `test_labels`; -> its folder."""
    rng = np.random.default_rng(seed)
    if classes == 10:
        d = Path(root) / "cifar-10-batches-bin"
        d.mkdir(parents=True)
        files = [(f"data_batch_{i}.bin", rng.integers(0, 10, max(1, n_train // 5))) for i in range(1, 6)]
        files.append(("test_batch.bin", np.asarray(test_labels)))
        for name, y in files:
            rec = np.zeros((len(y), 3073), dtype=np.uint8)
            rec[:, 0] = y
            rec[:, 1:] = rng.integers(0, 256, (len(y), 3072))
            rec.tofile(d / name)
        return d
    d = Path(root) / "cifar-100-binary"
    d.mkdir(parents=True)
    for name, y in (("train.bin", rng.integers(0, classes, n_train)), ("test.bin", np.asarray(test_labels))):
        rec = np.zeros((len(y), 3074), dtype=np.uint8)
        rec[:, 1] = y
        rec[:, 2:] = rng.integers(0, 256, (len(y), 3072))
        rec.tofile(d / name)
    return d


def imagenet_c_colour(label: int, severity: int) -> tuple[int, int, int]:
    return 40 * label + 20, 40 * severity, 100


def write_imagenet_c(root: Path, corruptions=("fog",), severities=(1, 2), wnids=WNIDS[:2], per_class: int = 2,
                     size: int = 24) -> Path:
    """Write `<corruption>/<severity>/<wnid>/<file>.JPEG` flat-colour images under root; -> root."""
    root = Path(root)
    for c in corruptions:
        for s in severities:
            for label, wnid in enumerate(wnids):
                d = root / c / str(s) / wnid
                d.mkdir(parents=True, exist_ok=True)
                for k in range(per_class):
                    Image.new("RGB", (size, size), imagenet_c_colour(label, s)).save(
                        d / f"ILSVRC2012_val_{label * 100 + k:08d}.JPEG", quality=95)
    return root


def write_imagenet_val(root: Path, wnids=WNIDS[:2], per_class: int = 2, size: int = 24) -> Path:
    """A tiny clean ImageNet validation folder (class-per-folder, wnid names); -> root."""
    root = Path(root)
    for label, wnid in enumerate(wnids):
        (root / wnid).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            Image.new("RGB", (size, size), imagenet_c_colour(label, 0)).save(root / wnid / f"v{k}.JPEG", quality=95)
    return root
