"""Training with ReLabel targets: a dataset of random crops carrying their label maps, and the batch
transform that pools them into soft targets (`cuekit train --relabel DIR`).

`ReLabelDataset` yields (crop (3, S, S), packed (5 + 2 K h w,) float): the crop's box (4), its flip
flag (1), then the label map's scores and class ids. `ReLabelTargets` (a batch transform for
`cuekit.train.train`) unpacks a batch and runs the batched `label_pooling` (optionally CutMix that
pools the pasted box from the partner's map), returning (images, soft targets (B, C)).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from cuekit.errors import UsageError
from cuekit.relabel.pooling import RandomResizedCropWithBox, label_pooling, relabel_cutmix
from cuekit.relabel.storage import LabelMapStore, OriginalLabelMaps, open_label_maps

__all__ = ["ReLabelDataset", "ReLabelTargets", "relabel_training", "builtin_image_names"]


def builtin_image_names(n: int, split: str = "train") -> list[str]:
    """Names given to the images of a built-in dataset's split in a label-map store."""
    return [f"{split}/{i:07d}" for i in range(n)]


def pack(box: Tensor, flipped: bool, scores: Tensor, indices: Tensor) -> Tensor:
    """One sample's crop box (4,), flip and map (K, h, w) x2 -> a flat float tensor (5 + 2 K h w,)."""
    return torch.cat([box.float(), torch.tensor([float(flipped)]), scores.float().flatten(),
                      indices.float().flatten()])


def unpack(packed: Tensor, topk: int, map_size: Sequence[int]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(B, 5 + 2 K h w) -> boxes (B, 4), flips (B,) bool, scores (B, K, h, w), indices (B, K, h, w) long."""
    b = packed.shape[0]
    h, w = map_size
    n = topk * h * w
    if packed.shape[1] != 5 + 2 * n:
        raise UsageError(f"ReLabel batch has {packed.shape[1]} values per sample, expected {5 + 2 * n}")
    scores = packed[:, 5:5 + n].reshape(b, topk, h, w)
    indices = packed[:, 5 + n:].round().long().reshape(b, topk, h, w)
    return packed[:, :4], packed[:, 4] > 0.5, scores, indices


class ReLabelDataset(Dataset):
    """Random crops of `images` with their label maps, for `ReLabelTargets`.

    images: a dataset of (image (3, H, W) float, label) in its un-augmented form; maps: the store
    (by position, or by `names[i]` when given). Each item: (crop (3, size, size), packed target).
    """

    def __init__(self, images: Dataset, maps: LabelMapStore | OriginalLabelMaps, size: int,
                 names: Sequence[str] | None = None, scale: tuple[float, float] = (0.08, 1.0),
                 flip_prob: float = 0.5, seed: int = 0, transpose: bool = False):
        if names is None and len(maps) != len(images):
            raise UsageError(f"the label maps hold {len(maps)} images but the training set has {len(images)}: "
                             "generate them from the same data, --train-size and --seed")
        self.images, self.maps, self.names = images, maps, names
        self.crop = RandomResizedCropWithBox(size, scale=scale, flip_prob=flip_prob, rng=random.Random(seed))
        self.seed, self.transpose = seed, transpose

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image = self.images[i][0]
        scores, indices = self.maps.get(self.names[i]) if self.names is not None else self.maps[i]
        if self.transpose:  # maps stored with rows = x (see `cuekit relabel check`)
            scores, indices = scores.transpose(-1, -2), indices.transpose(-1, -2)
        self.crop.rng.seed(int(torch.randint(0, 2**62, (1,))))  # torch's RNG: seeded per run and per worker
        crop, box, flipped = self.crop(image)
        return crop, pack(box, flipped, scores, indices)


class ReLabelTargets:
    """Batch transform (x, packed) -> (x, soft targets (B, num_classes)) by batched LabelPooling.

    mode: "original" (the paper's softmax over all classes, the default) or "topk" (over the stored
    classes only); cutmix_alpha: if set, CutMix with area-mixed targets, the partner's target pooled
    over its whole crop ("crop", the paper's) or over the pasted box ("box"); localized=False pools
    every crop's target over the whole image instead of the crop: the image's global multi-label
    (the teacher's whole-image soft label, i.e. plain distillation from stored maps), the control
    that differs from ReLabel only in the localisation.
    """

    def __init__(self, num_classes: int, topk: int, map_size: Sequence[int], mode: str = "original",
                 cutmix_alpha: float | None = None, seed: int = 0, partner_target: str = "crop",
                 localized: bool = True, transposed: bool = False):
        self.num_classes, self.topk, self.map_size = num_classes, topk, tuple(map_size)
        self.mode, self.cutmix_alpha = mode, cutmix_alpha
        self.partner_target, self.localized = partner_target, localized
        self.transposed = transposed  # recorded only: the dataset transposes the maps it reads
        import numpy as np

        self.rng = np.random.default_rng(seed)
        self.regularize = True

    def set_regularization(self, on: bool) -> None:
        """CutMix on or off (the engine's --reg-off-epochs: ReLabel's recipe turns it off for the last epochs);
        LabelPooling always runs."""
        self.regularize = bool(on)

    def _settings(self) -> dict:
        settings = {"mode": self.mode, "cutmix_alpha": self.cutmix_alpha, "partner_target": self.partner_target,
                    "localized": self.localized}
        if self.transposed:  # absent when off, so runs saved before the option existed resume unchanged
            settings["transposed"] = True
        return settings

    def state_dict(self) -> dict:
        """The CutMix random state and the settings (JSON-able), for an exact resume of a training run."""
        from cuekit.augment.mix import generator_state

        return {"rng": generator_state(self.rng), "settings": self._settings()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the random state from `state_dict`; refuse other ReLabel settings than the saved ones."""
        from cuekit.augment.mix import set_generator_state

        flags = {"mode": "--relabel-mode", "cutmix_alpha": "--relabel-cutmix",
                 "partner_target": "--relabel-cutmix-target", "localized": "localized",
                 "transposed": "--relabel-transpose"}
        saved, current = state.get("settings", {}), self._settings()
        for key in [*saved, *([] if "transposed" in saved else ["transposed"])]:  # transposed: absent means off
            was, now = saved.get(key, False), current.get(key, False if key == "transposed" else None)
            if was != now:
                raise UsageError(f"the run was trained with {flags.get(key, key)} {was}, not {now}: resume it with "
                                 "the same ReLabel settings")
        set_generator_state(self.rng, state["rng"])

    def __call__(self, x: Tensor, packed: Tensor) -> tuple[Tensor, Tensor]:
        boxes, flips, scores, indices = unpack(packed, self.topk, self.map_size)
        if not self.localized:  # the whole image, in any frame: a full box is its own mirror image
            boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=boxes.device).expand_as(boxes)
        if self.cutmix_alpha and self.regularize:
            return relabel_cutmix(x, scores, indices, boxes, flips, self.num_classes, self.cutmix_alpha,
                                  rng=self.rng, mode=self.mode, partner_target=self.partner_target)
        return x, label_pooling(scores, indices, boxes, self.num_classes, flips, mode=self.mode)


class _FolderImages(Dataset):
    """Un-augmented, normalised images of an ImageFolder subset, at their own resolution."""

    def __init__(self, samples: list[tuple[str, int]], mean, std):
        self.samples, self.mean, self.std = samples, torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        from cuekit.errors import DataError

        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                x = pil_to_tensor(img.convert("RGB")).float() / 255.0
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        return (x - self.mean) / self.std, label


def _folder_train(train: Dataset) -> tuple[list[tuple[str, int]], Path] | None:
    """(samples, folder root) of a `folder:` training split, or None for other datasets."""
    if isinstance(train, Subset) and hasattr(train.dataset, "folder"):
        folder = train.dataset.folder
        return [folder.samples[j] for j in train.indices], Path(folder.root)
    return None


def relabel_training(cfg, relabel_dir: str | Path, mode: str = "original", cutmix_alpha: float | None = None,
                     scale: tuple[float, float] = (0.08, 1.0), partner_target: str = "crop", transpose: bool = False):
    """For `cuekit train --relabel DIR`: -> (DataBundle with ReLabel crops as its train split, batch transform).

    cfg: the TrainConfig (its data, task, sizes and seed build the dataset). Built-in data is matched
    to the maps by position (generate them with the same --data, --train-size and --seed); folder
    data by image path, for maps written by `cuekit relabel generate --data DIR` or the original release.
    transpose: read every map transposed (rows = x), for maps that `cuekit relabel check` finds stored in
    the other order.
    """
    import dataclasses

    from cuekit.data.registry import create_dataset

    bundle = create_dataset(cfg.data, task=cfg.task, img_size=cfg.img_size, train_size=cfg.train_size,
                            val_size=cfg.val_size, seed=cfg.seed, val_split=cfg.val_split)
    maps = open_label_maps(relabel_dir, bundle.num_classes)
    if isinstance(maps, LabelMapStore) and maps.num_classes != bundle.num_classes:
        raise UsageError(f"the label maps in {relabel_dir} have {maps.num_classes} classes, "
                         f"the data {bundle.num_classes}")
    size = cfg.img_size or bundle.img_size
    folder = _folder_train(bundle.train)
    if folder is not None:
        samples, root = folder
        if isinstance(maps, LabelMapStore):
            data_root = Path(maps.meta.get("data_root", root)).resolve()
            try:
                names = [str(Path(p).resolve().relative_to(data_root)) for p, _ in samples]
            except ValueError:
                raise UsageError(f"the label maps in {relabel_dir} were made from {data_root}, "
                                 f"not from {root}") from None
        else:
            names = [p for p, _ in samples]
        images: Dataset = _FolderImages(samples, bundle.mean, bundle.std)
        train = ReLabelDataset(images, maps, size, names=names, scale=scale, seed=cfg.seed, transpose=transpose)
    else:
        if not isinstance(maps, LabelMapStore):
            raise UsageError("built-in data needs label maps from `cuekit relabel generate`")
        train = ReLabelDataset(bundle.train, maps, size, scale=scale, seed=cfg.seed, transpose=transpose)
    if isinstance(maps, LabelMapStore):
        topk, map_size = maps.topk, maps.map_size
    else:
        probe = maps.get(samples[0][0])[0]
        topk, map_size = probe.shape[0], tuple(probe.shape[1:])
    if transpose:
        map_size = (map_size[1], map_size[0])
    transform = ReLabelTargets(bundle.num_classes, topk, map_size, mode=mode, cutmix_alpha=cutmix_alpha,
                               seed=cfg.seed, partner_target=partner_target, transposed=transpose)
    return dataclasses.replace(bundle, train=train), transform
