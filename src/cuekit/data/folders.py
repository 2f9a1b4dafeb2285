"""Readers for local copies of real data: class-per-folder images and CIFAR-10/100 (never downloaded)."""
from __future__ import annotations

import io
import pickle
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from cuekit.data.registry import DataBundle, register_dataset
from cuekit.errors import DataError, UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
DEFAULT_IMG_SIZE = 224  # folder data without --img-size: the ImageNet recipe's size


def note(message: str) -> None:
    """Print a one-line note on stderr (what a reader chose for the user, e.g. a default size)."""
    print(f"cuekit: note: {message}", file=sys.stderr)


def note_default_size(spec: str, first_image: str | None, size: int) -> None:
    """Say that folder data is resized to the default `size`, and how much the first image is scaled by it."""
    from PIL import Image

    text = f"{spec}: images are resized to {size} px, the default for this data (set --img-size to change it)"
    if first_image is not None:
        try:
            with Image.open(first_image) as img:
                w, h = img.size
        except (OSError, ValueError):
            w = h = 0
        if min(w, h) > 0:
            factor = size / min(w, h)
            how = (f"upscaled about {factor:.1f}x, which costs time and adds no detail" if factor > 1.5 else
                   f"downscaled about {1 / factor:.1f}x" if factor < 1 / 1.5 else "kept near their size")
            text += f"; the first image ({Path(first_image).name}) is {w}x{h} px, so images are {how}"
    note(text)


def standard_transforms(img_size: int, mean, std, train: bool, small: bool | None = None):
    """The usual recipes: ImageNet-style (RandomResizedCrop / resize+centre-crop) for large images,
    CIFAR-style (pad-4 random crop + flip) for small ones (<= 64 px)."""
    from torchvision import transforms as T

    small = img_size <= 64 if small is None else small
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    if small:
        if train:
            return T.Compose([T.Resize(img_size), T.CenterCrop(img_size),
                              T.RandomCrop(img_size, padding=max(1, img_size // 8)),
                              T.RandomHorizontalFlip(), *norm])
        return T.Compose([T.Resize(img_size), T.CenterCrop(img_size), *norm])
    if train:
        return T.Compose([T.RandomResizedCrop(img_size), T.RandomHorizontalFlip(), *norm])
    return T.Compose([T.Resize(round(img_size * 256 / 224)), T.CenterCrop(img_size), *norm])


def seeded_split(n: int, val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) indices of n samples: a seeded permutation, `val_split` of it (at least one) held out."""
    if not 0.0 < val_split < 1.0:
        raise UsageError(f"--val-split must be in (0, 1), got {val_split}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(n * val_split))
    if n - n_val < 1:
        raise DataError(f"only {n} images: too few to split off a validation set")
    return perm[n_val:], perm[:n_val]


def seeded_subset(ds: Dataset, indices: list[int], size: int | None, seed: int) -> Dataset:
    """`ds` restricted to `indices`, or to a seeded sample of `size` of them when size is smaller."""
    if size is not None and size < len(indices):
        g = torch.Generator().manual_seed(seed + 1)
        indices = [indices[i] for i in torch.randperm(len(indices), generator=g)[:size].tolist()]
    return Subset(ds, indices)


class _TransformedView(Dataset):
    """The same ImageFolder samples seen through another transform (train vs eval)."""

    def __init__(self, folder, transform):
        self.folder, self.transform = folder, transform

    def __len__(self) -> int:
        return len(self.folder.samples)

    def __getitem__(self, i: int):
        path, label = self.folder.samples[i]
        try:
            img = self.folder.loader(path)
        except Exception as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        return self.transform(img), label


def _image_folder(root: Path):
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    try:
        return ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{root}: not a class-per-folder image tree ({e})") from None


@register_dataset("folder")
def folder_dataset(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0,
                   val_split=0.1) -> DataBundle:
    """Class-per-folder images (ImageFolder): PATH/train + PATH/val if present, else a seeded split."""
    if not path:
        raise UsageError("folder data needs a path: --data folder:PATH")
    root = Path(path).expanduser()
    default_size = img_size is None
    img_size = img_size or DEFAULT_IMG_SIZE
    mk = lambda train: standard_transforms(img_size, IMAGENET_MEAN, IMAGENET_STD, train)
    if (root / "train").is_dir() and (root / "val").is_dir():
        tr, va = _image_folder(root / "train"), _image_folder(root / "val")
        if tr.classes != va.classes:
            raise DataError(f"{root}: train and val have different class folders")
        train_idx, val_idx = list(range(len(tr.samples))), list(range(len(va.samples)))
    else:
        tr = va = _image_folder(root)
        train_idx, val_idx = seeded_split(len(tr.samples), val_split, seed)
    train = seeded_subset(_TransformedView(tr, mk(True)), train_idx, train_size, seed)
    val = seeded_subset(_TransformedView(va, mk(False)), val_idx, val_size, seed)
    if default_size:
        note_default_size(f"folder:{path}", tr.samples[0][0] if tr.samples else None, img_size)
    return DataBundle(train=train, val=val, num_classes=len(tr.classes), class_names=list(tr.classes),
                      in_chans=3, img_size=img_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                      resize_ratio=1.0 if img_size <= 64 else 256 / 224)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Reads CIFAR's python-format batches, refusing every class but numpy arrays (no code runs)."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR file")


def _load_pickle(path: Path) -> dict:
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as e:
        raise DataError(f"cannot read CIFAR file {path}: {e}") from None


class ArrayImages(Dataset):
    """uint8 images (N, H, W, 3) and labels (N,) seen through a torchvision transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def read_cifar(root: Path, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(train_x, train_y, test_x, test_y, class_names) from the binary or python CIFAR format."""
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"CIFAR-{classes} folder not found: {root}")
    tag = f"cifar-{classes}"
    for cand in (root, root / f"{tag}-binary", root / f"{tag}-batches-bin", root / f"{tag}-python",
                 root / f"{tag}-batches-py"):
        if classes == 100 and (cand / "train.bin").is_file():
            return _cifar_binary(cand, ["train.bin"], ["test.bin"], 2, cand / "fine_label_names.txt")
        if classes == 10 and (cand / "data_batch_1.bin").is_file():
            return _cifar_binary(cand, [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"],
                                 1, cand / "batches.meta.txt")
        if classes == 100 and (cand / "train").is_file():
            return _cifar_python(cand, ["train"], ["test"], "fine_labels", "meta", "fine_label_names")
        if classes == 10 and (cand / "data_batch_1").is_file():
            return _cifar_python(cand, [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                                 "labels", "batches.meta", "label_names")
    raise DataError(f"{root}: no CIFAR-{classes} files found (expected the binary or python "
                    f"version, e.g. {tag}-binary/ or {tag}-python/)")


def _cifar_binary(d: Path, train_files, test_files, label_bytes: int, names_file: Path):
    rec = label_bytes + 3072

    def load(files):
        chunks = []
        for f in files:
            p = d / f
            if not p.is_file():
                raise DataError(f"missing CIFAR file {p}")
            raw = np.fromfile(p, dtype=np.uint8)
            if raw.size % rec:
                raise DataError(f"{p}: size {raw.size} is not a multiple of the {rec}-byte record")
            chunks.append(raw.reshape(-1, rec))
        raw = np.concatenate(chunks)
        x = raw[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(x), raw[:, label_bytes - 1].astype(np.int64)

    (trx, try_), (tex, tey) = load(train_files), load(test_files)
    names = names_file.read_text().split() if names_file.is_file() else []
    return trx, try_, tex, tey, names


def _cifar_python(d: Path, train_files, test_files, label_key, meta_file, names_key):
    def load(files):
        xs, ys = [], []
        for f in files:
            p = d / f
            if not p.is_file():
                raise DataError(f"missing CIFAR file {p}")
            batch = _load_pickle(p)
            xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    (trx, try_), (tex, tey) = load(train_files), load(test_files)
    meta = d / meta_file
    names = list(_load_pickle(meta)[names_key]) if meta.is_file() else []
    return trx, try_, tex, tey, names


def _cifar_bundle(classes: int):
    def builder(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0,
                val_split=0.1) -> DataBundle:
        if not path:
            raise UsageError(f"CIFAR-{classes} needs its local folder: --data cifar{classes}:PATH "
                             "(cuekit never downloads data)")
        trx, try_, tex, tey, names = read_cifar(Path(path), classes)
        size = img_size or 32
        train = ArrayImages(trx, try_, standard_transforms(size, CIFAR_MEAN, CIFAR_STD, True, small=True))
        val = ArrayImages(tex, tey, standard_transforms(size, CIFAR_MEAN, CIFAR_STD, False, small=True))
        train = seeded_subset(train, list(range(len(train))), train_size, seed)
        val = seeded_subset(val, list(range(len(val))), val_size, seed)
        return DataBundle(train=train, val=val, num_classes=classes,
                          class_names=names or [str(i) for i in range(classes)], in_chans=3,
                          img_size=size, mean=CIFAR_MEAN, std=CIFAR_STD)

    builder.__doc__ = f"CIFAR-{classes} from a local copy (test set as validation)."
    return builder


register_dataset("cifar10")(_cifar_bundle(10))
register_dataset("cifar100")(_cifar_bundle(100))
