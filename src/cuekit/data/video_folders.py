"""`video-folder:PATH`: class-per-folder real videos, as video files (decoded with PyAV) or folders of frame images.

Layout (one spec for both kinds of sample; a class folder may mix them):

    PATH/[train|val|test/]CLASS/clip.mp4                    a video file (.mp4 .avi .mkv .webm .mov ...)
    PATH/[train|val|test/]CLASS/clip/frame_0001.jpg ...     a folder of frame images, in natural order

Splits: PATH/train + PATH/val when both exist; PATH/train + PATH/test (no val) uses test as the validation
split; otherwise a seeded split of PATH/train (or of PATH itself). PATH/test, when present, is also the
bundle's `test` split.

Clip sampling: `frames` frames `stride` frames apart. Training draws the clip's start uniformly, validation
takes the centre clip; multi-view testing (`with_test_views`) takes `clips` uniformly spaced clips times
`crops` crops along the long side. A video shorter than the clip uses the largest stride that fits, and below `frames`
frames repeats frames in order. Frames are resized (shorter side img_size * 128/112) as they are decoded;
training then takes one random-resized crop and (unless flip=False) one horizontal flip for the whole clip,
validation the centre crop. Samples are (clip (3, T, img_size, img_size) float, normalised with the Kinetics-400
mean/std that torchvision's video weights use, label int).

PyAV is imported only when a video file is read. Each read opens the file, seeks to the key frame before
the clip and decodes only up to the clip's last frame; no handle stays open, so DataLoader workers work.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cuekit.data.folders import seeded_split, seeded_subset
from cuekit.data.registry import DataBundle, register_dataset
from cuekit.errors import DataError, UsageError

__all__ = ["DEFAULT_FRAMES", "DEFAULT_IMG_SIZE", "DEFAULT_STRIDE", "KINETICS_MEAN", "KINETICS_STD",
           "VIDEO_EXTENSIONS", "FRAME_EXTENSIONS", "VideoClipDataset", "VideoDataBundle", "clip_bundle",
           "clip_indices", "count_video_frames", "crop_offsets", "natural_key", "random_clip_indices",
           "read_video_folder", "scan_video_folder", "uniform_clip_indices", "with_test_views"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # torchvision's video weights (R3D_18_Weights.KINETICS400_V1)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
DEFAULT_FRAMES = 16  # torchvision's video models: 16-frame clips at 112 px
DEFAULT_IMG_SIZE = 112
DEFAULT_STRIDE = 2
RESIZE_RATIO = 128 / 112  # shorter side before cropping: 128 for 112-px crops, as torchvision's video recipe
TRAIN_SCALE = (0.25, 1.0)  # random-resized-crop area range (of the resized frame)
TRAIN_RATIO = (3 / 4, 4 / 3)


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: "frame_2" before "frame_10"."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.lower())
                 for part in re.split(r"(\d+)", name) if part)


def _is_visible(name: str) -> bool:
    return not name.startswith(".")


def _frame_files(folder: Path) -> list[str]:
    """The frame images of a frame folder, naturally sorted (full paths)."""
    try:
        names = [e.name for e in os.scandir(folder)
                 if _is_visible(e.name) and e.name.lower().endswith(FRAME_EXTENSIONS) and e.is_file()]
    except OSError as e:
        raise DataError(f"cannot list frame folder {folder}: {e}") from None
    return [str(folder / n) for n in sorted(names, key=natural_key)]


def _has_frames(folder: Path) -> bool:
    with os.scandir(folder) as it:
        return any(_is_visible(e.name) and e.name.lower().endswith(FRAME_EXTENSIONS) for e in it)


def scan_video_folder(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, samples [(path, label)]) of a class-per-folder tree of video files and frame folders.

    Classes are the sorted subfolder names (as torchvision's ImageFolder); clips within a class are in
    natural order. Raises DataError for a missing folder, no class folders, an empty class or an empty
    frame folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"video folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and _is_visible(d.name))
    if not classes:
        raise DataError(f"{root}: no class folders (expected {root}/CLASS/clip.mp4 or "
                        f"{root}/CLASS/clip/frame_0001.jpg)")
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        folder = root / name
        found = 0
        for entry in sorted(os.scandir(folder), key=lambda e: natural_key(e.name)):
            if not _is_visible(entry.name):
                continue
            if entry.is_dir():
                if not _has_frames(Path(entry.path)):
                    raise DataError(f"frame folder {entry.path} has no frame images ({', '.join(FRAME_EXTENSIONS)})")
            elif not entry.name.lower().endswith(VIDEO_EXTENSIONS):
                continue
            samples.append((entry.path, label))
            found += 1
        if not found:
            raise DataError(f"class folder {folder} is empty: no video files ({', '.join(VIDEO_EXTENSIONS)}) "
                            "or frame folders")
    return classes, samples


def _fitting_stride(num_frames: int, frames: int, stride: int) -> int:
    """The largest stride <= `stride` at which `frames` frames fit in the video; 0 if not even stride 1 fits."""
    if frames <= 1:
        return max(1, stride)
    return min(stride, (num_frames - 1) // (frames - 1))


def clip_indices(num_frames: int, frames: int, stride: int, start: int | None = None) -> list[int]:
    """Frame indices of the clip of `frames` frames `stride` apart beginning at `start` (None: the centre clip).

    Short videos: the stride shrinks to the largest that fits; with fewer than `frames` frames, every frame
    is used in order, repeated evenly ([k * num_frames // frames for k ...]).
    """
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    s = _fitting_stride(num_frames, frames, stride)
    if s == 0:
        return [k * num_frames // frames for k in range(frames)]
    span = (frames - 1) * s + 1
    last_start = num_frames - span
    start = last_start // 2 if start is None else min(max(0, start), last_start)
    return [start + k * s for k in range(frames)]


def uniform_clip_indices(num_frames: int, frames: int, stride: int, clips: int) -> list[list[int]]:
    """Frame indices of `clips` test clips spaced uniformly over a video (multi-clip testing).

    Clip k starts at floor(last_start * (2k + 1) / (2 clips)), the centre of the k-th of `clips` equal
    segments of the possible starts (mmaction2's test sampling); one clip is the centre clip of
    `clip_indices`. A video too short for the clip gives `clips` copies of its one fitting clip.
    """
    if clips < 1:
        raise UsageError(f"--clips must be at least 1, got {clips}")
    s = _fitting_stride(num_frames, frames, stride)
    if s == 0:
        return [clip_indices(num_frames, frames, stride)] * clips
    last_start = num_frames - ((frames - 1) * s + 1)
    return [clip_indices(num_frames, frames, stride, start=last_start * (2 * k + 1) // (2 * clips))
            for k in range(clips)]


def crop_offsets(long_side: int, size: int, crops: int) -> list[int]:
    """Offsets of `crops` square crops of `size` along a side of `long_side` pixels: evenly spaced from one
    end to the other (3 crops: start, centre, end, as SlowFast's testing); one crop is the centre crop."""
    if crops < 1:
        raise UsageError(f"--crops must be at least 1, got {crops}")
    room = max(0, long_side - size)
    if crops == 1:
        return [room // 2]
    return [room * j // (crops - 1) for j in range(crops)]


def random_clip_indices(num_frames: int, frames: int, stride: int,
                        generator: torch.Generator | None = None) -> list[int]:
    """A training clip: `clip_indices` at a uniformly random start (torch RNG, so DataLoader workers differ)."""
    s = _fitting_stride(num_frames, frames, stride)
    last_start = num_frames - ((frames - 1) * s + 1) if s else 0
    start = int(torch.randint(0, last_start + 1, (1,), generator=generator)) if last_start > 0 else 0
    return clip_indices(num_frames, frames, stride, start)


def _scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side equal to `short_side`, aspect ratio kept."""
    if width <= height:
        return short_side, max(short_side, round(height * short_side / width))
    return max(short_side, round(width * short_side / height)), short_side


def _import_av():
    try:
        import av
    except ImportError:
        raise DataError("reading video files needs PyAV: pip install av (or convert the videos to frame "
                        "folders)") from None
    return av


def _video_stream(container, path: str):
    """The first video stream of an open PyAV container; DataError when it has none."""
    if not container.streams.video:
        raise DataError(f"{path}: no video stream")
    return container.streams.video[0]


def count_video_frames(path: str) -> int:
    """Frames of a video file's first video stream: the container's count, else a count of its packets."""
    av = _import_av()
    try:
        with av.open(path) as container:
            stream = _video_stream(container, path)
            if stream.frames and stream.frames > 0:
                return int(stream.frames)
            n = sum(1 for p in container.demux(stream) if p.size and p.pts is not None)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(f"cannot decode video {path}: {e}") from None
    if n == 0:
        raise DataError(f"{path}: the video has no frames")
    return n


class _SeekMissed(Exception):
    """The seek landed after the first wanted frame: decode from the start instead."""


def _decode_frames(container, stream, wanted: list[int], size: tuple[int, int], seek: bool
                   ) -> tuple[dict[int, np.ndarray], int | None]:
    """Decode the sorted frame indices `wanted` as rgb24 arrays (H, W, 3) of `size` (w, h).

    seek=True seeks to the key frame before wanted[0]; seek=False decodes on from the current position.

    Frame indices come from timestamps at the stream's average rate (frame counting when there are no
    timestamps). A wanted index without a frame of its own (variable rate) gets the next frame; indices past
    the end get the last frame. Returns the frames and the true frame count if the stream ended early.
    """
    rate, tb = stream.average_rate or stream.guessed_rate, stream.time_base
    start_pts = stream.start_time or 0
    by_pts = rate is not None and tb is not None
    if seek and by_pts and wanted[0] > 0:
        container.seek(start_pts + int(wanted[0] / rate / tb), stream=stream, backward=True, any_frame=False)
    else:
        seek = False
    w, h = size
    out: dict[int, np.ndarray] = {}
    pos, seq, last, last_index = 0, 0, None, -1
    for frame in container.decode(stream):
        if by_pts and frame.pts is not None:
            index = round(float((frame.pts - start_pts) * tb * rate))
        elif seek:
            raise _SeekMissed
        else:
            index = seq
        seq += 1
        if seek and last is None and index > wanted[0]:
            raise _SeekMissed
        last, last_index = frame, index
        if wanted[pos] <= index:
            arr = frame.to_ndarray(format="rgb24", width=w, height=h)
            while pos < len(wanted) and wanted[pos] <= index:
                out[wanted[pos]] = arr
                pos += 1
            if pos == len(wanted):
                return out, None
    if last is None:
        return out, 0
    arr = last.to_ndarray(format="rgb24", width=w, height=h)
    for i in wanted[pos:]:
        out[i] = arr
    return out, last_index + 1


def _read_video_clip(path: str, num_frames: int, pick, short_side: int
                     ) -> tuple[np.ndarray, list[int], int | None]:
    """(frames (T, H, W, 3) uint8, their indices, corrected frame count or None) of a video file.

    `pick(num_frames) -> indices` chooses the clip; the file is opened here and closed before returning.
    When the video turns out shorter than `num_frames`, the clip is picked again within its real length.
    """
    av = _import_av()
    try:
        with av.open(path) as container:
            stream = _video_stream(container, path)
            indices = pick(num_frames)
            wanted = sorted(set(indices))
            cc = stream.codec_context
            size = _scaled_size(cc.width, cc.height, short_side)
            try:
                got, true_count = _decode_frames(container, stream, wanted, size, seek=True)
            except _SeekMissed:
                container.seek(0, backward=True, any_frame=False)
                got, true_count = _decode_frames(container, stream, wanted, size, seek=False)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise DataError(f"cannot decode video {path}: {e}") from None
    if true_count == 0 or not got:
        raise DataError(f"{path}: no decodable frames")
    if true_count is not None and true_count < num_frames:
        indices = pick(true_count)  # the container over-counted: resample within the real frames
        return _read_video_clip(path, true_count, lambda _n: indices, short_side)[0], indices, true_count
    return np.stack([got[i] for i in indices]), indices, None


def _read_frame_folder_clip(folder: str, pick, short_side: int) -> tuple[np.ndarray, list[int]]:
    """(frames (T, H, W, 3) uint8, their indices) of a folder of frame images, resized as they are read."""
    from PIL import Image

    files = _frame_files(Path(folder))
    if not files:
        raise DataError(f"frame folder {folder} has no frame images")
    indices = pick(len(files))
    cache: dict[int, np.ndarray] = {}
    size = None
    for i in indices:
        if i in cache:
            continue
        try:
            with Image.open(files[i]) as img:
                if size is None:
                    size = _scaled_size(img.width, img.height, short_side)
                img.draft("RGB", size)  # JPEG: decode at a reduced scale when that is enough
                cache[i] = np.asarray(img.convert("RGB").resize(size, Image.BILINEAR))
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read frame {files[i]}: {e}") from None
    return np.stack([cache[i] for i in indices]), indices


class VideoClipDataset(Dataset):
    """Clips of class-per-folder videos: (clip (3, T, S, S) float normalised, label int).

    samples: [(path, label)], a path being a video file or a folder of frame images. train=True: a random
    clip, one random-resized crop (area TRAIN_SCALE) and, when `flip`, one random horizontal flip for all
    frames (torch's global RNG, seeded per DataLoader worker); train=False: the centre clip and the centre
    crop. `last_indices` holds the frame indices of the clip read last (in this process).
    Multi-view testing (`with_test_views`): samples become (views (clips * crops, 3, T, S, S), label),
    clip-major, `clips` uniformly spaced clips, each resized to shorter side S and cut into `crops` crops
    along its long side.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], *, frames: int = DEFAULT_FRAMES,
                 stride: int = DEFAULT_STRIDE, img_size: int = DEFAULT_IMG_SIZE, train: bool = False,
                 mean: Sequence[float] = KINETICS_MEAN, std: Sequence[float] = KINETICS_STD,
                 resize_ratio: float = RESIZE_RATIO, train_scale: tuple[float, float] = TRAIN_SCALE,
                 flip: bool = True):
        if frames < 1 or stride < 1 or img_size < 1:
            raise UsageError(f"clip settings must be positive: frames={frames}, stride={stride}, img_size={img_size}")
        self.samples = list(samples)
        self.labels = [label for _, label in self.samples]
        self.frames, self.stride, self.img_size, self.train = frames, stride, img_size, train
        self.mean, self.std, self.resize_ratio, self.train_scale = tuple(mean), tuple(std), resize_ratio, train_scale
        self.flip = flip
        self.clips, self.crops, self.multi_view = 1, 1, False  # set by `with_test_views`
        self._frame_counts: dict[int, int] = {}  # video files whose count was read or corrected (per process)
        self.last_indices: list[int] = []

    def __len__(self) -> int:
        return len(self.samples)

    def _pick(self, num_frames: int) -> list[int]:
        if self.train:
            return random_clip_indices(num_frames, self.frames, self.stride)
        return clip_indices(num_frames, self.frames, self.stride)

    def read_frames(self, i: int) -> tuple[Tensor, list[int]]:
        """The raw clip of sample i: (frames (T, 3, H', W') uint8 with shorter side img_size*resize_ratio, indices)."""
        return self._read(i, self._pick, max(self.img_size, round(self.img_size * self.resize_ratio)))

    def _read(self, i: int, pick, short: int) -> tuple[Tensor, list[int]]:
        """Frames (N, 3, H', W') uint8 with shorter side `short` at the indices `pick(num_frames)` chooses."""
        path, _ = self.samples[i]
        if os.path.isdir(path):
            arr, indices = _read_frame_folder_clip(path, pick, short)
        else:
            if not os.path.isfile(path):
                raise DataError(f"video file not found: {path}")
            n = self._frame_counts.get(i)
            if n is None:
                n = self._frame_counts[i] = count_video_frames(path)
            arr, indices, corrected = _read_video_clip(path, n, pick, short)
            if corrected is not None:
                self._frame_counts[i] = corrected
        return torch.from_numpy(arr).permute(0, 3, 1, 2), indices

    def _normalise(self, raw: Tensor) -> Tensor:
        """uint8 frames (..., T, 3, S, S) -> float (..., 3, T, S, S) normalised with mean / std."""
        x = raw.transpose(-4, -3).float()
        mean, std = torch.tensor(self.mean)[:, None, None, None], torch.tensor(self.std)[:, None, None, None]
        return x.sub_(mean * 255).div_(std * 255)

    def _test_views(self, i: int) -> Tensor:
        """(clips * crops, 3, T, S, S): uniformly spaced clips x crops along the long side, clip-major."""
        size, t = self.img_size, self.frames
        # One crop: the validation preprocessing (resize, centre crop); several: the shorter side resized to S.
        short = size if self.crops > 1 else max(size, round(size * self.resize_ratio))
        raw, indices = self._read(i, lambda n: [j for clip in uniform_clip_indices(n, t, self.stride, self.clips)
                                                for j in clip], short)
        self.last_indices = indices
        raw = raw.reshape(self.clips, t, *raw.shape[1:])  # (clips, T, 3, H', W')
        h, w = raw.shape[-2:]
        views = []
        for clip in raw:
            for off in crop_offsets(max(h, w), size, self.crops):
                top, left = (off, (w - size) // 2) if h > w else ((h - size) // 2, off)
                views.append(clip[..., top:top + size, left:left + size])
        return self._normalise(torch.stack(views))

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        if self.multi_view:
            return self._test_views(i), self.samples[i][1]
        raw, indices = self.read_frames(i)
        self.last_indices = indices
        size = self.img_size
        if self.train:
            from torchvision.transforms import RandomResizedCrop
            from torchvision.transforms.v2 import functional as TF

            top, left, h, w = RandomResizedCrop.get_params(raw, list(self.train_scale), list(TRAIN_RATIO))
            raw = TF.resized_crop(raw, top, left, h, w, [size, size], antialias=True)  # uint8: the fast path
            if self.flip and torch.rand(()) < 0.5:
                raw = raw.flip(-1)
        else:
            top, left = (raw.shape[-2] - size) // 2, (raw.shape[-1] - size) // 2
            raw = raw[..., top:top + size, left:left + size]
        return self._normalise(raw), self.samples[i][1]  # (3, T, S, S)


def with_test_views(ds: Dataset, clips: int, crops: int) -> Dataset:
    """The clips of `ds` (a VideoClipDataset or a Subset of one) as multi-view test samples:
    (views (clips * crops, 3, T, S, S), label), `clips` uniformly spaced clips x `crops` crops along the long
    side (see `VideoClipDataset`). UsageError for data that is not read from video files."""
    from torch.utils.data import Subset

    if clips < 1 or crops < 1:
        raise UsageError(f"--clips and --crops must be at least 1, got {clips} and {crops}")
    if isinstance(ds, Subset):
        return Subset(with_test_views(ds.dataset, clips, crops), ds.indices)
    if not isinstance(ds, VideoClipDataset):
        raise UsageError("--clips / --crops need video read from files (video-folder:, kinetics:, mini-kinetics:, "
                         "ssv2:, ucf101:, hmdb51:); this data's clips are generated, not cut from videos")
    new = copy.copy(ds)
    new.train, new.multi_view, new.clips, new.crops = False, True, clips, crops
    new._frame_counts = dict(ds._frame_counts)
    return new


@dataclasses.dataclass
class VideoDataBundle(DataBundle):
    """A DataBundle of video clips, plus the PATH/test split when the data has one, the clip stride and whether
    training flips clips horizontally."""

    test: Dataset | None = None
    stride: int = DEFAULT_STRIDE
    flip: bool = True


@dataclasses.dataclass(frozen=True)
class ClipSettings:
    """Resolved clip settings of a video dataset: frames per clip, stride, crop size, training flip."""

    frames: int
    stride: int
    img_size: int
    flip: bool
    defaults: tuple[str, ...] = ()  # the settings left at their defaults, for a note

    def dataset(self, samples: Sequence[tuple[str, int]], train: bool) -> VideoClipDataset:
        """A VideoClipDataset of `samples` with these settings (training or validation clips)."""
        return VideoClipDataset(samples, frames=self.frames, stride=self.stride, img_size=self.img_size,
                                train=train, flip=self.flip)


def clip_settings(frames: int | None, stride: int | None, img_size: int | None, flip: bool | None,
                  flip_default: bool = True) -> ClipSettings:
    """Clip settings from the flags (None: the default); UsageError for values below 1."""
    defaults = [f"{DEFAULT_FRAMES} frames (--frames)"] if frames is None else []
    defaults += [f"{DEFAULT_IMG_SIZE} px (--img-size)"] if img_size is None else []
    frames = DEFAULT_FRAMES if frames is None else frames
    stride = DEFAULT_STRIDE if stride is None else stride
    for flag, value in (("--frames", frames), ("--stride", stride), ("--img-size", img_size)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    return ClipSettings(frames, stride, img_size or DEFAULT_IMG_SIZE, flip_default if flip is None else flip,
                        tuple(defaults))


def clip_bundle(spec: str, settings: ClipSettings, classes: Sequence[str], train: Sequence[tuple[str, int]],
                val: Sequence[tuple[str, int]], *, train_idx: list[int] | None = None,
                val_idx: list[int] | None = None, train_size: int | None = None, val_size: int | None = None,
                seed: int = 0, test: Sequence[tuple[str, int]] | None = None) -> VideoDataBundle:
    """A VideoDataBundle of listed (path, label) samples: training clips, validation clips, optional test clips.

    train_idx / val_idx: the samples of `train` / `val` each split uses (None: all); train_size / val_size:
    a seeded subset of them.
    """
    if settings.defaults:
        from cuekit.data.folders import note

        note(f"{spec}: clips use the default {' and '.join(settings.defaults)}")
    train_idx = list(range(len(train))) if train_idx is None else train_idx
    val_idx = list(range(len(val))) if val_idx is None else val_idx
    train_ds = seeded_subset(settings.dataset(train, True), train_idx, train_size, seed)
    val_ds = seeded_subset(settings.dataset(val, False), val_idx, val_size, seed)
    return VideoDataBundle(train=train_ds, val=val_ds, num_classes=len(classes), class_names=list(classes),
                           in_chans=3, img_size=settings.img_size, mean=KINETICS_MEAN, std=KINETICS_STD,
                           resize_ratio=RESIZE_RATIO, frames=settings.frames,
                           test=None if test is None else settings.dataset(test, False),
                           stride=settings.stride, flip=settings.flip)


def read_video_folder(path: str | Path, *, frames: int | None = None, stride: int | None = None,
                      img_size: int | None = None, train_size: int | None = None, val_size: int | None = None,
                      seed: int = 0, val_split: float = 0.1, flip: bool | None = None) -> VideoDataBundle:
    """Train / val (/ test) clip datasets of a class-per-folder video tree (layout: see the module docstring)."""
    root = Path(path).expanduser()
    settings = clip_settings(frames, stride, img_size, flip)
    if not root.is_dir():
        raise DataError(f"video folder not found: {root}")

    test_samples = test_classes = None
    if (root / "test").is_dir():
        test_classes, test_samples = scan_video_folder(root / "test")
    if (root / "train").is_dir():
        classes, train_samples = scan_video_folder(root / "train")
        held_out = "val" if (root / "val").is_dir() else "test" if test_samples is not None else None
    else:
        classes, train_samples = scan_video_folder(root)
        held_out = None
    if held_out == "val":
        val_classes, val_samples = scan_video_folder(root / "val")
    elif held_out == "test":
        val_classes, val_samples = test_classes, test_samples
    for split, names in (("val", val_classes if held_out else None), ("test", test_classes)):
        if names is not None and names != classes:
            raise DataError(f"{root}: {split} has different class folders from train "
                            f"({', '.join(names)} vs {', '.join(classes)})")
    train_idx = val_idx = None
    if not held_out:  # a seeded split of one sample list
        if len(train_samples) < 2:
            raise DataError(f"{root}: only {len(train_samples)} clip: too few to split off a validation set")
        train_idx, val_idx = seeded_split(len(train_samples), val_split, seed)
        val_samples = train_samples
    return clip_bundle(f"video-folder:{path}", settings, classes, train_samples, val_samples, train_idx=train_idx,
                       val_idx=val_idx, train_size=train_size, val_size=val_size, seed=seed, test=test_samples)


@register_dataset("video-folder", video=True)
def video_folder_dataset(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0,
                         val_split=0.1, frames=None, stride=None, flip=None) -> DataBundle:
    """Class-per-folder videos (files via PyAV, or frame folders): PATH/train + PATH/val, else a seeded split."""
    if not path:
        raise UsageError("video-folder data needs a path: --data video-folder:PATH")
    if task is not None:
        raise UsageError(f"video-folder data has one label (the class folder); --task {task!r} does not apply")
    return read_video_folder(path, frames=frames, img_size=img_size, train_size=train_size, val_size=val_size,
                             seed=seed, val_split=val_split, stride=stride, flip=flip)
