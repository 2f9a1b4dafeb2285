"""Evaluation preprocessing of a single image file, as a checkpoint's metadata describes it."""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from cuekit.errors import DataError


def load_image_tensor(path: str | Path, metadata: dict) -> Tensor:
    """An image file as the model's input (1, C, H, W): resized, centre-cropped and normalised as the
    checkpoint's metadata (img_size, resize_ratio, mean, std, in_chans) says."""
    from PIL import Image, UnidentifiedImageError
    from torchvision import transforms as T

    size = int(metadata.get("img_size") or 224)
    chans = int(metadata.get("in_chans", 3))
    mean = list(metadata.get("mean") or [0.0, 0.0, 0.0])[:chans]
    std = list(metadata.get("std") or [1.0, 1.0, 1.0])[:chans]
    tf = T.Compose([T.Resize(round(size * float(metadata.get("resize_ratio", 1.0)))), T.CenterCrop(size),
                    T.ToTensor(), T.Normalize(mean, std)])
    try:
        img = Image.open(path).convert("L" if chans == 1 else "RGB")
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    return tf(img)[None]
