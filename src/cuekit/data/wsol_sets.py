"""The WSOL benchmarks' datasets by name, for every command's `--data NAME:PATH` (cuekit.wsol.data reads them).

`cub:PATH`: CUB-200-2011 in its release format (PATH = the CUB_200_2011 folder or its parent), the official
train split for training and the test split, with its boxes, for validation. `openimages:ROOT`: OpenImages30k
in the wsolevaluation layout (ROOT/dataset/OpenImages/<image_id>, the masks beside the images, and
ROOT/metadata/OpenImages/{train,test}/), the test split with its instance and ignore masks for PxAP. Both
use the WSOL protocol's transforms (training: resize to S * 256/224, random S crop, flip; evaluation: resize to
S x S, no crop) and their validation split has `localization(i)`, so `cuekit wsol train/eval` take them too.
"""
from __future__ import annotations

from pathlib import Path

from cuekit.data.registry import DataBundle, register_dataset
from cuekit.errors import DataError, UsageError

DEFAULT_SIZE = 224  # the WSOL protocol's input size


def _bundle(train, val, class_names: list[str], size: int) -> DataBundle:
    from cuekit.wsol.data import IMAGENET_MEAN, IMAGENET_STD

    return DataBundle(train=train, val=val, num_classes=len(class_names), class_names=class_names, in_chans=3,
                      img_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)


@register_dataset("cub")
def cub_dataset(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0,
                val_split=0.1) -> DataBundle:
    """CUB-200-2011 from its release files (images.txt, bounding_boxes.txt, ...): train split, test split as val."""
    from cuekit.data.folders import note_default_size
    from cuekit.wsol.data import WSOLImageDataset, find_cub_root, read_cub_metadata, subset_metadata

    if not path:
        raise UsageError("CUB needs its local folder: --data cub:PATH (the CUB_200_2011 folder or its parent; "
                         "cuekit never downloads data)")
    root = find_cub_root(path)
    size = img_size or DEFAULT_SIZE
    train_meta, names = read_cub_metadata(root, "train")
    test_meta, _ = read_cub_metadata(root, "test")
    images = root / "images"
    train = WSOLImageDataset(images, subset_metadata(train_meta, train_size, seed), size, train=True)
    val = WSOLImageDataset(images, subset_metadata(test_meta, val_size, seed), size, train=False)
    if img_size is None and train_meta.image_ids:
        note_default_size(f"cub:{path}", str(images / train_meta.image_ids[0]), size)
    return _bundle(train, val, names, size)


@register_dataset("openimages")
def openimages_dataset(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0,
                       val_split=0.1) -> DataBundle:
    """OpenImages30k in the wsolevaluation layout (ROOT/dataset/OpenImages, ROOT/metadata/OpenImages): test masks."""
    from cuekit.wsol.data import WSOLImageDataset, read_wsol_metadata, subset_metadata

    if not path:
        raise UsageError("OpenImages needs the wsolevaluation root: --data openimages:ROOT (holding "
                         "dataset/OpenImages/ and metadata/OpenImages/)")
    root = Path(path).expanduser()
    images, metadata = root / "dataset" / "OpenImages", root / "metadata" / "OpenImages"
    for folder in (images, metadata / "train", metadata / "test"):
        if not folder.is_dir():
            raise DataError(f"{root}: not a wsolevaluation OpenImages root: {folder} not found")
    train_meta, test_meta = read_wsol_metadata(metadata / "train"), read_wsol_metadata(metadata / "test")
    if not test_meta.has_masks:
        raise DataError(f"{metadata / 'test' / 'localization.txt'}: no mask lines (<image_id>,<mask>,<ignore>)")
    size = img_size or DEFAULT_SIZE
    train = WSOLImageDataset(images, subset_metadata(train_meta, train_size, seed), size, train=True)
    val = WSOLImageDataset(images, subset_metadata(test_meta, val_size, seed), size, train=False, mask_root=images)
    n = max(max(train_meta.labels.values(), default=-1), max(test_meta.labels.values(), default=-1)) + 1
    return _bundle(train, val, [str(i) for i in range(n)], size)
