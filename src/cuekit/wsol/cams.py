"""Score maps from a CAM model, and the evaluation loop: model -> CAMs -> bicubic upsampling ->
each normalization -> streaming metrics (the wsolevaluation pipeline with IVR's normalization step).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from cuekit.errors import DataError, UsageError
from cuekit.wsol.metrics import DEFAULT_CAM_CURVE_INTERVAL, LocalizationEvaluator
from cuekit.wsol.normalize import (
    DEFAULT_IVR_PERCENTILE,
    NORMALIZATIONS,
    ArrayLike,
    as_float_tensor,
    normalize_cams,
    upsample_cams,
)


def cams_from_features(features: ArrayLike, fc_weight: ArrayLike, classes: ArrayLike) -> ArrayLike:
    """CAMs (N, h, w): classifier weights (K, C) of `classes` (N,) over features (N, C, h, w), channel
    mean. numpy or torch; the result is the kind of `features`."""
    feats, back = as_float_tensor(features)
    weight = torch.as_tensor(fc_weight)
    cls = torch.as_tensor(classes, device=weight.device)
    w = weight[cls.long()].to(device=feats.device, dtype=feats.dtype)
    return back(torch.einsum("nc,nchw->nhw", w, feats) / feats.shape[1])


def _model_inputs(model: nn.Module, images: ArrayLike, classes: ArrayLike | None):
    """Images (N, 3, H, W) and classes (N,) as tensors on the model's device, and the function that
    returns results in the kind of `images` (numpy in, numpy out)."""
    x, back = as_float_tensor(images)
    param = next(model.parameters(), None)
    if param is not None:
        # a numpy batch takes the model's dtype (numpy images are usually float64); tensors keep theirs
        numpy_in = not isinstance(images, Tensor)
        x = x.to(device=param.device, dtype=param.dtype if numpy_in and param.is_floating_point() else x.dtype)
    if classes is not None:
        classes = torch.as_tensor(classes, device=x.device)
    return x, classes, back


@torch.no_grad()
def compute_cams(model: nn.Module, images: ArrayLike, classes: ArrayLike | None = None) -> tuple[Any, Any]:
    """Logits (N, K) and raw CAMs (N, h, w) of `classes` (default: predicted) from a CAM model, for
    images (N, 3, H, W), numpy or torch (numpy in, numpy out)."""
    if not hasattr(model, "forward_cam"):
        raise UsageError(f"{type(model).__name__} has no forward_cam: use a cam_* model (cuekit models list 'cam_*')")
    x, classes, back = _model_inputs(model, images, classes)
    logits, cams = model.forward_cam(x, classes)
    return back(logits), back(cams)


@torch.no_grad()
def compute_score_maps(model: nn.Module, images: ArrayLike, classes: ArrayLike | None = None, norm: str = "minmax",
                       size: int | tuple[int, int] | None = None,
                       percentile: float = DEFAULT_IVR_PERCENTILE) -> tuple[Any, Any]:
    """Logits (N, K) and score maps (N, H, W) in [0, 1] for images (N, 3, H, W), numpy or torch
    (numpy in, numpy out): CAM -> bicubic to `size` (default: the image size) -> normalization `norm`."""
    x, classes, back = _model_inputs(model, images, classes)
    logits, cams = compute_cams(model, x, classes)
    size = size or tuple(x.shape[-2:])
    return back(logits), back(normalize_cams(upsample_cams(cams.double(), size), norm, percentile))


def _image_id(dataset: Any, i: int) -> str:
    return dataset.image_id(i) if hasattr(dataset, "image_id") else f"{i:06d}"


@torch.no_grad()
def evaluate_wsol(model: nn.Module, dataset: Any, norms: Sequence[str] = NORMALIZATIONS, batch_size: int = 64,
                  device: str | torch.device = "cpu", percentile: float = DEFAULT_IVR_PERCENTILE,
                  cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL, max_images: int | None = None,
                  save_maps: str | Path | None = None, keep: int = 0, progress: bool = False) -> dict:
    """Evaluate a CAM model on a dataset with `localization(i)` for every normalization.

    GT-known: the CAM of the ground-truth class is scored; top-1 localization also needs the
    predicted class to be right. Returns {"metrics": {norm: {metric: percent}}, "accuracy":
    top-1 %, "count": n, "examples": {norm: (keep, H, W) maps}, "example_indices": [...]}.
    `save_maps`: write each normalization's score maps as DIR/<norm>/<image_id>.npy (float64).
    """
    if not hasattr(dataset, "localization"):
        raise DataError("the dataset has no localization ground truth (boxes or masks)")
    for n in norms:
        if n not in NORMALIZATIONS:
            raise UsageError(f"unknown normalization {n!r}; choose from {', '.join(NORMALIZATIONS)}")
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    total = len(dataset) if max_images is None else min(max_images, len(dataset))
    evaluators = {n: LocalizationEvaluator(cam_curve_interval) for n in norms}
    correct = 0
    examples: dict[str, list] = {n: [] for n in norms}
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="wsol eval", unit="img", disable=not progress, leave=False)
    for start in range(0, total, batch_size):
        idx = list(range(start, min(start + batch_size, total)))
        items = [dataset[i] for i in idx]
        images = torch.stack([torch.as_tensor(x) for x, _ in items]).to(device)
        labels = torch.as_tensor([int(y) for _, y in items], device=device)
        loc = [dataset.localization(i) for i in idx]
        boxes = [it["boxes"] for it in loc]
        masks = [it.get("mask") for it in loc]
        boxes = boxes if all(b is not None for b in boxes) else None
        masks = np.stack(masks) if all(m is not None for m in masks) else None
        logits, cams = compute_cams(model, images, labels)
        hit = (logits.argmax(1) == labels).cpu().numpy()
        correct += int(hit.sum())
        up = upsample_cams(cams.double(), tuple(images.shape[-2:]))
        for n in norms:
            maps = normalize_cams(up, n, percentile)
            evaluators[n].accumulate(maps, boxes, masks, hit)
            if len(examples[n]) < keep:
                examples[n].extend(maps[: keep - len(examples[n])].cpu().numpy())
            if save_maps is not None:
                arr = maps.cpu().numpy()
                for j, i in enumerate(idx):
                    path = Path(save_maps) / n / (_image_id(dataset, i) + ".npy")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, arr[j])
        bar.update(len(idx))
    bar.close()
    model.train(was_training)
    if total == 0:
        raise DataError("no images to evaluate")
    return {"metrics": {n: ev.compute() for n, ev in evaluators.items()}, "accuracy": 100.0 * correct / total,
            "count": total, "examples": {n: np.stack(v) if v else None for n, v in examples.items()},
            "example_indices": list(range(min(keep, total)))}


def evaluate_score_map_folder(scoremap_root: str | Path, metadata_root: str | Path,
                              mask_root: str | Path | None = None,
                              cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL,
                              batch_size: int = 64, progress: bool = False) -> dict:
    """Score maps made by any tool, saved as SCOREMAP_ROOT/<image_id>.npy (2-D, values in [0, 1],
    like wsolevaluation), against a wsolevaluation metadata split (or "cub:PATH": CUB's test split). GT boxes
    and masks are scaled to each map's size (224 x 224 reproduces the protocol). Returns the flat metrics dict."""
    from cuekit.wsol.data import localization_for, read_cub_metadata, read_wsol_metadata

    if str(metadata_root).startswith("cub:"):  # CUB's release files: the test split, sizes from the image files
        meta, _ = read_cub_metadata(str(metadata_root)[len("cub:"):], "test", sizes=True)
    else:
        meta = read_wsol_metadata(metadata_root)
    root = Path(scoremap_root)
    ev = LocalizationEvaluator(cam_curve_interval)
    from tqdm.auto import tqdm

    ids = meta.image_ids
    groups: dict[tuple[int, int], list] = {}

    def flush(shape):
        batch = groups.pop(shape)
        maps = np.stack([m for m, _ in batch])
        loc = [g for _, g in batch]
        boxes = [g["boxes"] for g in loc]
        masks = [g["mask"] for g in loc]
        ev.accumulate(maps, boxes if all(b is not None for b in boxes) else None,
                      np.stack(masks) if all(m is not None for m in masks) else None)

    for image_id in tqdm(ids, desc="score maps", unit="map", disable=not progress, leave=False):
        path = root / (image_id + ".npy")
        if not path.is_file():
            raise DataError(f"score map not found: {path}")
        try:
            m = np.load(path)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read score map {path}: {e}") from None
        if m.ndim != 2:
            raise DataError(f"{path}: a score map must be 2-D, got shape {m.shape}")
        if m.dtype.kind != "f":
            raise DataError(f"{path}: a score map must hold floats, got {m.dtype}")
        if m.size and not (m.min() >= 0 and m.max() <= 1):  # NaN fails both comparisons
            raise DataError(f"{path}: score map values must lie in [0, 1] without NaN, got min {m.min():.4g}, "
                            f"max {m.max():.4g} (normalize it first, e.g. cuekit.wsol.normalize_cams)")
        h, w = m.shape
        groups.setdefault((h, w), []).append((m.astype(np.float64, copy=False),
                                              localization_for(meta, image_id, (w, h), mask_root)))
        if len(groups[(h, w)]) >= batch_size:
            flush((h, w))
    for shape in list(groups):
        flush(shape)
    out = ev.compute()
    out["count"] = len(ids)
    return out
