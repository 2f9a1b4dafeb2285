"""Readers for the wsolevaluation metadata format (CUB, ImageNet, OpenImages) from local folders.

A split folder (e.g. metadata/CUB/test) holds:
  image_ids.txt        <image_id>                     (a path relative to the image root)
  class_labels.txt     <image_id>,<label>
  image_sizes.txt      <image_id>,<width>,<height>
  localization.txt     <image_id>,<x0>,<y0>,<x1>,<y1>  one line per box (CUB, ImageNet), or
                       <image_id>,<mask_path>,<ignore_path>  one line per instance mask
                       (OpenImages; the ignore path only on an image's first line).
Boxes are rescaled to the evaluation size with the reference's `int(x * new / old)`; masks are
resized with OpenCV's nearest-neighbour rule (as the reference's cv2.resize INTER_NEAREST),
OR-ed over instances, and the ignore region (ignore box minus foreground) is coded 255.

Also CUB-200-2011 in its own release format (`read_cub_metadata`): a folder CUB_200_2011/ with
  images.txt              <image_id> <image_name>          (1-based ids; names relative to images/)
  image_class_labels.txt  <image_id> <class_id>            (1-based class ids)
  train_test_split.txt    <image_id> <is_training_image>   (1 train, 0 test)
  bounding_boxes.txt      <image_id> <x> <y> <width> <height>   (pixels)
  classes.txt             <class_id> <class_name>
  images/<class>/<file>.jpg
read into the same WSOLMetadata: labels 0-based, boxes (x, y, x + width, y + height), which is what the
wsolevaluation metadata holds for the same CUB images (e.g. `60 27 325 304` -> `60,27,385,331`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from cuekit.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class WSOLMetadata:
    """One split's metadata: ids in file order, labels, sizes (w, h), boxes or mask paths."""

    root: Path
    image_ids: list[str]
    labels: dict[str, int]
    sizes: dict[str, tuple[int, int]]
    boxes: dict[str, list[tuple[float, float, float, float]]]
    mask_paths: dict[str, list[str]]
    ignore_paths: dict[str, str]

    @property
    def has_masks(self) -> bool:
        return bool(self.mask_paths)


def _lines(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"metadata file not found: {path}")
    out = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            out.append([f.strip() for f in line.split(",")])
    return out


def read_wsol_metadata(metadata_root: str | Path) -> WSOLMetadata:
    """Read a wsolevaluation split folder (image_ids, class_labels, image_sizes, localization)."""
    root = Path(metadata_root)
    if not root.is_dir():
        raise DataError(f"metadata folder not found: {root}")
    image_ids = [f[0] for f in _lines(root / "image_ids.txt")]
    labels: dict[str, int] = {}
    for f in _lines(root / "class_labels.txt"):
        try:
            labels[f[0]] = int(f[1])
        except (IndexError, ValueError):
            raise DataError(f"{root / 'class_labels.txt'}: bad line {','.join(f)!r}") from None
    sizes: dict[str, tuple[int, int]] = {}
    if (root / "image_sizes.txt").is_file():
        for f in _lines(root / "image_sizes.txt"):
            try:
                sizes[f[0]] = (int(f[1]), int(f[2]))
            except (IndexError, ValueError):
                raise DataError(f"{root / 'image_sizes.txt'}: bad line {','.join(f)!r}") from None
    boxes: dict[str, list] = {}
    masks: dict[str, list[str]] = {}
    ignores: dict[str, str] = {}
    if (root / "localization.txt").is_file():
        for f in _lines(root / "localization.txt"):
            if len(f) == 5:
                try:
                    boxes.setdefault(f[0], []).append(tuple(float(v) for v in f[1:]))
                except ValueError:
                    raise DataError(f"{root / 'localization.txt'}: bad box line {','.join(f)!r}") from None
            elif len(f) in (2, 3):
                masks.setdefault(f[0], []).append(f[1])
                if len(f) == 3 and f[2]:
                    ignores[f[0]] = f[2]
            else:
                raise DataError(f"{root / 'localization.txt'}: expected 5 (box) or 3 (mask) fields, "
                                f"got {','.join(f)!r}")
    missing = [i for i in image_ids if i not in labels]
    if missing:
        raise DataError(f"{root}: no class label for {len(missing)} images, e.g. {missing[0]}")
    if boxes and not sizes:
        raise DataError(f"{root}: image_sizes.txt is needed to rescale the boxes")
    return WSOLMetadata(root, image_ids, labels, sizes, boxes, masks, ignores)


def resize_box(box, image_size: tuple[int, int], new_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Rescale (x0, y0, x1, y1) from image_size (w, h) to new_size (w, h), truncating like the reference."""
    (w, h), (nw, nh) = image_size, new_size
    x0, y0, x1, y1 = (float(v) for v in box)
    return int(x0 * nw / w), int(y0 * nh / h), int(x1 * nw / w), int(y1 * nh / h)


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source indices (n_out,) of OpenCV's INTER_NEAREST resize along one axis: floor(i / (n_out / n_in)),
    at most n_in - 1 (Pillow's NEAREST samples pixel centres instead and picks other pixels)."""
    if n_in < 1 or n_out < 1:
        raise DataError(f"cannot resize {n_in} pixels to {n_out}")
    inverse_scale = 1.0 / (n_out / n_in)  # OpenCV computes the inverse of the scale, in double precision
    return np.minimum(np.floor(np.arange(n_out) * inverse_scale).astype(np.int64), n_in - 1)


def resize_nearest(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image (h, w, ...) to size (w, h) exactly as cv2.resize(..., INTER_NEAREST) does."""
    w, h = size
    rows = nearest_indices(image.shape[0], h)
    cols = nearest_indices(image.shape[1], w)
    return image[rows[:, None], cols[None, :]]


def load_mask(mask_root: str | Path, mask_paths: list[str], ignore_path: str | None,
              size: tuple[int, int]) -> np.ndarray:
    """GT mask (h, w) uint8 at size (w, h): 1 = object (any instance), 255 = ignore, 0 = background.

    As the reference's get_mask: each file read as grayscale, resized with OpenCV's nearest-neighbour
    rule, thresholded at 0.5."""
    from PIL import Image

    root = Path(mask_root)

    def read(rel: str) -> np.ndarray:
        path = root / rel
        try:
            with Image.open(path) as img:
                gray = np.asarray(img.convert("L"))
        except OSError as e:
            raise DataError(f"cannot read mask {path}: {e}") from None
        return resize_nearest(gray, size) > 0.5

    fg = np.zeros((size[1], size[0]), bool)
    for rel in mask_paths:
        fg |= read(rel)
    out = fg.astype(np.uint8)
    if ignore_path:
        out[read(ignore_path) & ~fg] = 255
    return out


def find_cub_root(path: str | Path) -> Path:
    """The CUB_200_2011 folder (the one holding images.txt): `path` itself or `path`/CUB_200_2011."""
    root = Path(path).expanduser()
    for cand in (root, root / "CUB_200_2011"):
        if (cand / "images.txt").is_file():
            return cand
    if not root.exists():
        raise DataError(f"CUB folder not found: {root}")
    raise DataError(f"{root}: not a CUB-200-2011 folder: images.txt not found there nor in {root / 'CUB_200_2011'}")


def _cub_table(path: Path, fields: str, types: tuple) -> list[tuple]:
    """The rows of one space-separated CUB file, each converted with `types`; DataError naming the file."""
    if not path.is_file():
        raise DataError(f"CUB file not found: {path}")
    rows = []
    for k, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != len(types):
                raise ValueError
            rows.append(tuple(t(v) for t, v in zip(types, parts)))
        except ValueError:
            raise DataError(f"{path}: line {k}: expected '{fields}', got {line.strip()!r}") from None
    return rows


def read_cub_metadata(path: str | Path, split: str = "test", sizes: bool = False) -> tuple[WSOLMetadata, list[str]]:
    """One split ("train" or "test") of CUB-200-2011 in its release format -> (metadata, class names).

    Image ids are the names in images.txt (paths relative to images/); labels are 0-based; each image's box
    is (x, y, x + width, y + height) in pixels. `sizes` True reads every image's (width, height) from its
    file header now (needed by `localization_for`); otherwise WSOLImageDataset reads them when asked.
    Raises DataError naming the missing or malformed file (and line).
    """
    if split not in ("train", "test"):
        raise DataError(f"CUB has a train and a test split, not {split!r}")
    root = find_cub_root(path)
    classes = _cub_table(root / "classes.txt", "<class_id> <class_name>", (int, str))
    class_ids = [c for c, _ in classes]
    if class_ids != list(range(1, len(classes) + 1)):
        raise DataError(f"{root / 'classes.txt'}: class ids must run 1..{len(classes)} in order")
    images = _cub_table(root / "images.txt", "<image_id> <image_name>", (int, str))
    name_of = dict(images)
    if len(name_of) != len(images):
        raise DataError(f"{root / 'images.txt'}: an image id is listed twice")

    def per_image(file: str, fields: str, types: tuple) -> dict[int, tuple]:
        rows = _cub_table(root / file, fields, types)
        out = {r[0]: r[1:] for r in rows}
        unknown = [i for i in out if i not in name_of]
        if unknown:
            raise DataError(f"{root / file}: image id {unknown[0]} is not in images.txt")
        missing = [i for i in name_of if i not in out]
        if missing:
            raise DataError(f"{root / file}: no line for image id {missing[0]} ({name_of[missing[0]]})")
        return out

    labels = per_image("image_class_labels.txt", "<image_id> <class_id>", (int, int))
    is_train = per_image("train_test_split.txt", "<image_id> <is_training_image>", (int, int))
    boxes = per_image("bounding_boxes.txt", "<image_id> <x> <y> <width> <height>", (int, float, float, float, float))
    for i, (c,) in labels.items():
        if not 1 <= c <= len(classes):
            raise DataError(f"{root / 'image_class_labels.txt'}: image id {i} has class {c}, outside 1..{len(classes)}"
                            " of classes.txt")
    for i, (t,) in is_train.items():
        if t not in (0, 1):
            raise DataError(f"{root / 'train_test_split.txt'}: image id {i} has {t}; expected 1 (train) or 0 (test)")
    for i, (_, _, w, h) in boxes.items():
        if not (w > 0 and h > 0):
            raise DataError(f"{root / 'bounding_boxes.txt'}: image id {i} has a box of width {w:g} and height {h:g}")
    want = 1 if split == "train" else 0
    ids = [i for i, _ in images if is_train[i][0] == want]
    image_ids = [name_of[i] for i in ids]
    meta = WSOLMetadata(
        root=root, image_ids=image_ids, labels={name_of[i]: labels[i][0] - 1 for i in ids}, sizes={},
        boxes={name_of[i]: [(x, y, x + w, y + h)] for i in ids for (x, y, w, h) in [boxes[i]]},
        mask_paths={}, ignore_paths={})
    if sizes:
        for image_id in image_ids:
            meta.sizes[image_id] = image_size(root / "images" / image_id)
    return meta, [name for _, name in classes]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file from its header; DataError naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def subset_metadata(meta: WSOLMetadata, size: int | None, seed: int) -> WSOLMetadata:
    """The metadata restricted to a seeded sample of `size` images (kept in file order); all when size is None."""
    if size is None or size >= len(meta.image_ids):
        return meta
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    keep = sorted(torch.randperm(len(meta.image_ids), generator=g)[:size].tolist())
    return dataclasses.replace(meta, image_ids=[meta.image_ids[i] for i in keep])


class WSOLImageDataset(Dataset):
    """Images of a wsolevaluation split as (image (3, S, S) normalized, label), with
    `localization(i)` -> {"boxes": (K, 4) at S x S, "mask": (S, S) uint8 or None}.

    Evaluation resizes to (S, S) without cropping, as the protocol does; `train=True` gives the
    protocol's training transform (resize to S * 256/224, random S crop, horizontal flip).
    """

    def __init__(self, data_root: str | Path, metadata_root: str | Path | WSOLMetadata, img_size: int = 224,
                 train: bool = False, mask_root: str | Path | None = None):
        from torchvision import transforms as T

        self.data_root = Path(data_root)
        if not self.data_root.is_dir():
            raise DataError(f"image folder not found: {self.data_root}")
        self.meta = metadata_root if isinstance(metadata_root, WSOLMetadata) else read_wsol_metadata(metadata_root)
        self.img_size = img_size
        self.mask_root = Path(mask_root) if mask_root else None
        norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        if train:
            big = round(img_size * 256 / 224)
            self.transform = T.Compose([T.Resize((big, big)), T.RandomCrop(img_size), T.RandomHorizontalFlip(), *norm])
        else:
            self.transform = T.Compose([T.Resize((img_size, img_size)), *norm])
        self.num_classes = max(self.meta.labels.values()) + 1 if self.meta.labels else 0

    def __len__(self) -> int:
        return len(self.meta.image_ids)

    def image_id(self, i: int) -> str:
        return self.meta.image_ids[i]

    @property
    def samples(self) -> list[tuple[str, int]]:
        """(image file, label) of every sample, in order (for `cuekit data check`)."""
        return [(str(self.data_root / i), self.meta.labels[i]) for i in self.meta.image_ids]

    def __getitem__(self, i: int):
        from PIL import Image

        image_id = self.meta.image_ids[i]
        path = self.data_root / image_id
        try:
            img = Image.open(path).convert("RGB")
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        return self.transform(img), self.meta.labels[image_id]

    def localization(self, i: int) -> dict:
        """GT boxes and mask of sample i at the evaluation size."""
        image_id = self.meta.image_ids[i]
        if image_id in self.meta.boxes and image_id not in self.meta.sizes:  # CUB's release lists no sizes
            self.meta.sizes[image_id] = image_size(self.data_root / image_id)
        return localization_for(self.meta, image_id, (self.img_size, self.img_size), self.mask_root)


def localization_for(meta: WSOLMetadata, image_id: str, size: tuple[int, int],
                     mask_root: str | Path | None = None) -> dict:
    """{"boxes": (K, 4) int64 or None, "mask": (h, w) uint8 or None} of one image at size (w, h)."""
    boxes = None
    if image_id in meta.boxes:
        if image_id not in meta.sizes:
            raise DataError(f"no image size for {image_id} in image_sizes.txt")
        boxes = np.array([resize_box(b, meta.sizes[image_id], size) for b in meta.boxes[image_id]], np.int64)
    mask = None
    if image_id in meta.mask_paths:
        if mask_root is None:
            raise DataError("this split has masks: pass the mask root folder (--mask-root)")
        mask = load_mask(mask_root, meta.mask_paths[image_id], meta.ignore_paths.get(image_id), size)
    if boxes is None and mask is None:
        raise DataError(f"no localization (box or mask) for {image_id}")
    return {"boxes": boxes, "mask": mask}


def stack_localization(items: list[dict]) -> tuple[list | None, np.ndarray | None]:
    """Per-batch GT: a list of box arrays (or None) and stacked masks (or None)."""
    boxes = [it["boxes"] for it in items]
    masks = [it.get("mask") for it in items]
    box_list = boxes if all(b is not None for b in boxes) else None
    mask_arr = np.stack(masks) if all(m is not None for m in masks) else None
    return box_list, mask_arr

