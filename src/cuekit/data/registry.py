"""Datasets by name for `cuekit train --data SPEC`: "dsprites", "folder:PATH", "cifar100:PATH", ..."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

from torch.utils.data import Dataset

from cuekit.errors import UnknownChoiceError, UsageError


@dataclasses.dataclass
class DataBundle:
    """A train and a validation split plus what a model and a report need to know about them."""

    train: Dataset
    val: Dataset
    num_classes: int
    class_names: list[str]
    in_chans: int = 3
    img_size: int = 32
    mean: Sequence[float] = (0.0, 0.0, 0.0)  # normalisation already applied by the transforms
    std: Sequence[float] = (1.0, 1.0, 1.0)
    task: str | None = None
    name: str = ""
    resize_ratio: float = 1.0  # eval preprocessing: resize shorter side to img_size * ratio, centre-crop
    frames: int | None = None  # video data: frames per clip; samples are (C, T, H, W) clips
    eval_only: str | None = None  # why this data is for evaluation only (e.g. CIFAR-C); training refuses it


def materialise(bundle: DataBundle) -> DataBundle:
    """The bundle with each procedural split (one with `render_items`) rendered once into a TensorDataset.

    Experiments that train several models on the same data render it once instead of every epoch;
    splits without `render_items` (files on disk) are kept as they are.
    """
    import torch
    from torch.utils.data import TensorDataset

    def dense(ds: Dataset) -> Dataset:
        if hasattr(ds, "render_items"):
            x, y = ds.render_items(torch.arange(len(ds)))
            return TensorDataset(x, y)
        return ds

    return dataclasses.replace(bundle, train=dense(bundle.train), val=dense(bundle.val))


DatasetBuilder = Callable[..., DataBundle]
_DATASETS: dict[str, DatasetBuilder] = {}
_VIDEO_DATASETS: set[str] = set()


def register_dataset(name: str, video: bool = False) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Decorator: register `fn(path, *, task, img_size, train_size, val_size, seed, val_split)`.

    `path` is what follows "name:" in the spec (None when absent); the builder returns a
    DataBundle and raises cuekit.errors.DataError / UnknownChoiceError on bad input. A video
    dataset's builder also takes `frames` (clip length, None: its default). A builder may take further
    keyword options (e.g. `split`, `stride`, `flip`): `create_dataset` passes each set one to the builders
    that name it and refuses it for the others.
    """

    def deco(fn: DatasetBuilder) -> DatasetBuilder:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} registered twice")
        _DATASETS[name] = fn
        if video:
            _VIDEO_DATASETS.add(name)
        return fn

    return deco


def list_datasets() -> list[str]:
    """Dataset names accepted in a spec ("name" or "name:PATH")."""
    _ensure_builtin()
    return sorted(_DATASETS)


def dataset_description(name: str) -> str:
    """The first line of a registered dataset builder's docstring (for `cuekit data list`)."""
    _ensure_builtin()
    if name not in _DATASETS:
        raise UnknownChoiceError("dataset", name, _DATASETS)
    doc = (_DATASETS[name].__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def create_dataset(
    spec: str,
    *,
    task: str | None = None,
    img_size: int | None = None,
    train_size: int | None = None,
    val_size: int | None = None,
    seed: int = 0,
    val_split: float = 0.1,
    frames: int | None = None,
    **options: Any,
) -> DataBundle:
    """Build the train/val splits of a dataset spec such as "dsprites" or "folder:/data/imgs".

    train_size=None means the dataset's default (all of a real dataset; 20,000 for dsprites).
    frames: clip length of a video dataset (None: the dataset's default); an image dataset refuses it.
    options: settings only some datasets take (e.g. split=2 for ucf101, stride=4 / flip=False for video files),
    passed to the builders whose signature names them; None means unset; a set one that the dataset does not
    take is a UsageError naming the datasets that do.
    """
    _ensure_builtin()
    name, _, path = spec.partition(":")
    if name not in _DATASETS:
        raise UnknownChoiceError("dataset", name, _DATASETS)
    extra = {}
    if name in _VIDEO_DATASETS:
        extra["frames"] = frames
    elif frames is not None:
        raise UsageError(f"--frames is for video datasets; {name!r} is an image dataset "
                         f"(video: {', '.join(sorted(_VIDEO_DATASETS)) or 'none'})")
    for key, value in options.items():
        if value is None:
            continue
        if not _takes(_DATASETS[name], key):
            takers = sorted(n for n, fn in _DATASETS.items() if _takes(fn, key))
            flag = "--flip / --no-flip" if key == "flip" else "--" + key.replace("_", "-")
            raise UsageError(f"{flag} does not apply to {name!r} data; it applies to: {', '.join(takers) or 'none'}")
        extra[key] = value
    bundle = _DATASETS[name](
        path or None, task=task, img_size=img_size, train_size=train_size, val_size=val_size,
        seed=seed, val_split=val_split, **extra,
    )
    bundle.name = spec
    return bundle


def _takes(fn: DatasetBuilder, key: str) -> bool:
    """Whether a dataset builder takes the keyword option `key`."""
    import inspect

    return key in inspect.signature(fn).parameters


def is_video_dataset(spec: str) -> bool:
    """Whether a dataset spec ("moving-shapes", "video-folder:PATH", ...) names a video dataset (clips)."""
    _ensure_builtin()
    return spec.partition(":")[0] in _VIDEO_DATASETS


def _bundle_is_video(data: DataBundle) -> bool:
    """Whether a bundle holds clips: it says so (`frames`), or, for a bundle built by hand, its first training
    sample is a (C, T, H, W) tensor."""
    if data.frames is not None:
        return True
    try:
        sample = data.train[0][0]
    except (IndexError, TypeError, KeyError):
        return False
    return getattr(sample, "ndim", 0) == 4


def check_model_fits_data(model_name: str | None, data: str | DataBundle) -> None:
    """Refuse a registered image model on video data and a video model on image data (UsageError).

    `data` is a spec or a built bundle; a model that is not registered (None or an unknown name) is not checked.
    """
    from cuekit.models.registry import list_models, model_info

    if not model_name or model_name not in list_models():
        return
    video_model = model_info(model_name).get("input") == "video"
    if isinstance(data, DataBundle):
        video_data, name = _bundle_is_video(data), data.name or "the data"
    else:
        video_data, name = is_video_dataset(data), data
    if video_model and not video_data:
        raise UsageError(f"{model_name} is a video model but {name} is image data; train it on video data "
                         f"({', '.join(sorted(_VIDEO_DATASETS))}) or pick an image model")
    if video_data and not video_model:
        raise UsageError(f"{model_name} is an image model but {name} is video data (clips); pick a video model "
                         "(`cuekit models list` shows them, e.g. video_cnn_small, r3d_18) or image data")


def check_training_data(data: DataBundle, model_name: str | None = None) -> None:
    """Refuse data a classifier cannot learn from: evaluation-only data such as CIFAR-C (UsageError), fewer than
    two classes (DataError), or the wrong kind of data for a registered model (UsageError, see
    `check_model_fits_data`)."""
    from cuekit.errors import DataError

    if data.eval_only:
        raise UsageError(f"{data.name or 'the data'} is {data.eval_only}")
    if data.num_classes < 2:
        names = ", ".join(map(str, data.class_names)) or "none"
        classes = f"{data.num_classes} class" + ("" if data.num_classes == 1 else "es")
        raise DataError(f"{data.name or 'the data'} has {classes} ({names}): a classifier needs at least 2 "
                        "(one class folder per class)")
    check_model_fits_data(model_name, data)


def _ensure_builtin() -> None:
    import cuekit.data  # noqa: F401  (modules register their datasets on import)
