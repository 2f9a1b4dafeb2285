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


def load_clip_tensor(path: str | Path, metadata: dict) -> Tensor:
    """A video file or a folder of frames as a video model's input (1, C, T, H, W): the centre clip of
    `frames` frames (the checkpoint's stride, else 2; less for a short video), centre crop, normalised as the
    checkpoint's metadata says."""
    from cuekit.data.video_folders import DEFAULT_STRIDE, RESIZE_RATIO, VIDEO_EXTENSIONS, VideoClipDataset
    from cuekit.errors import UsageError

    p = Path(path)
    if not p.is_dir() and p.suffix.lower() not in VIDEO_EXTENSIONS:
        raise UsageError(f"{path}: this checkpoint is a video model; give video files "
                         f"({' '.join(VIDEO_EXTENSIONS)}) or folders of frame images")
    chans = int(metadata.get("in_chans", 3))
    clips = VideoClipDataset([(str(p), 0)], frames=int(metadata["frames"]),
                             stride=int(metadata.get("stride") or DEFAULT_STRIDE),
                             img_size=int(metadata.get("img_size") or 112), train=False,
                             mean=list(metadata.get("mean") or [0.0] * chans)[:chans],
                             std=list(metadata.get("std") or [1.0] * chans)[:chans],
                             resize_ratio=float(metadata.get("resize_ratio") or RESIZE_RATIO))
    return clips[0][0].unsqueeze(0)
