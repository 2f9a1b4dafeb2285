"""Out-of-distribution detection from the maximum softmax probability (Hendrycks & Gimpel 2017).

In-distribution samples are the positives and a higher score means "in-distribution". Metrics:
AUROC, AUPR-in (in as positive), AUPR-out (out as positive, scores negated), TNR at 95% TPR and
detection accuracy max_t (TPR(t) + TNR(t)) / 2 (ODIN's). Ties are treated as one threshold, as in
scikit-learn and torchmetrics.

Built-in OOD sets (pixel images in [0, 1]): "gaussian" (N(0.5, 1) per pixel, clipped, as in
ODIN), "uniform" (U[0, 1]), "blobs" (soft coloured blobs on black: near-OOD for sprite-like data
such as dsprites, where noise is far off), any dataset spec of `cuekit.data` (e.g. "shapes-loc", "dsprites";
its validation images), or "folder:PATH" (every image file under PATH, resized and centre-cropped).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from cuekit.errors import DataError, UsageError

__all__ = ["BUILTIN_OOD", "average_precision", "check_ood_specs", "max_softmax_score", "ood_images", "ood_metrics",
           "roc_curve"]

BUILTIN_OOD = ("gaussian", "uniform", "blobs")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def max_softmax_score(logits: Tensor) -> Tensor:
    """logits (N, K) -> (N,) maximum softmax probability."""
    return logits.float().softmax(-1).amax(-1)


def _labels_scores(scores_in: Tensor, scores_out: Tensor) -> tuple[Tensor, Tensor]:
    if scores_in.numel() == 0 or scores_out.numel() == 0:
        raise UsageError("OOD metrics need at least one in-distribution and one OOD score")
    scores = torch.cat([scores_in.flatten(), scores_out.flatten()]).double().cpu()
    labels = torch.cat([torch.ones(scores_in.numel()), torch.zeros(scores_out.numel())]).double()
    return scores, labels


def roc_curve(scores_in: Tensor, scores_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ROC of in-vs-out by score: -> fpr, tpr, thresholds (descending), starting at (0, 0).

    Point k counts as positive every sample with score >= thresholds[k].
    """
    scores, labels = _labels_scores(scores_in, scores_out)
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order]
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # the last sample of each group of equal scores
    tps = torch.cumsum(y, 0)[last]
    fps = torch.cumsum(1 - y, 0)[last]
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), tps / tps[-1]])
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), fps / fps[-1]])
    thresholds = torch.cat([torch.tensor([float("inf")], dtype=torch.float64), s[last]])
    return fpr, tpr, thresholds


def average_precision(scores_pos: Tensor, scores_neg: Tensor) -> float:
    """Area under the precision-recall curve as sum (R_k - R_{k-1}) P_k (positives: scores_pos)."""
    scores, labels = _labels_scores(scores_pos, scores_neg)
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order]
    last = torch.ones_like(s, dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]
    tps = torch.cumsum(y, 0)[last]
    fps = torch.cumsum(1 - y, 0)[last]
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    recall_prev = torch.cat([torch.zeros(1, dtype=torch.float64), recall[:-1]])
    return float(((recall - recall_prev) * precision).sum())


def ood_metrics(scores_in: Tensor, scores_out: Tensor, tpr_level: float = 0.95) -> dict[str, float]:
    """In-distribution scores (N_in,) and OOD scores (N_out,) -> AUROC, AUPR-in/out, TNR@TPR95, detection accuracy."""
    fpr, tpr, _ = roc_curve(scores_in, scores_out)
    auroc = float(torch.trapezoid(tpr, fpr))
    reach = tpr >= tpr_level - 1e-12
    tnr = float(1 - fpr[reach].min())
    det = float(((tpr + 1 - fpr) / 2).max())
    return {"auroc": auroc, "aupr_in": average_precision(scores_in, scores_out),
            "aupr_out": average_precision(-scores_out, -scores_in), "tnr_at_tpr95": tnr, "detection_acc": det}


def _fit(images: Tensor, img_size: int, in_chans: int) -> Tensor:
    """Resize (N, C, H, W) pixel images to img_size (shorter side, centre crop) and match the channels."""
    h, w = images.shape[-2:]
    if (h, w) != (img_size, img_size):
        scale = img_size / min(h, w)
        nh, nw = max(img_size, round(h * scale)), max(img_size, round(w * scale))
        images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
        top, left = (nh - img_size) // 2, (nw - img_size) // 2
        images = images[..., top:top + img_size, left:left + img_size]
    c = images.shape[1]
    if c == in_chans:
        return images.clamp(0, 1)
    if in_chans == 1 and c == 3:
        w3 = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
        return (images * w3).sum(1, keepdim=True).clamp(0, 1)
    if in_chans == 3 and c == 1:
        return images.expand(-1, 3, -1, -1).clamp(0, 1)
    raise DataError(f"cannot turn {c}-channel images into {in_chans} channels")


def _image_files(path: Path) -> list[Path]:
    """Every image file under an OOD folder, sorted; DataError if the folder is missing or has none."""
    if not path.is_dir():
        raise DataError(f"OOD folder {path} does not exist")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {path}")
    return files


def check_ood_specs(specs: list[str] | tuple[str, ...]) -> None:
    """Check OOD set specs before any work starts: a built-in name, an image dataset spec whose path (if
    any) exists, or folder:PATH with images under it. Raises UsageError / UnknownChoiceError / DataError."""
    from cuekit.data.registry import is_video_dataset, list_datasets

    for spec in specs:
        if spec in BUILTIN_OOD:
            continue
        name, sep, rest = spec.partition(":")
        if name == "folder" and sep:
            _image_files(Path(rest).expanduser())
            continue
        if name not in list_datasets():
            from cuekit.errors import UnknownChoiceError

            raise UnknownChoiceError("OOD set", spec, [*BUILTIN_OOD, "folder:PATH", *list_datasets()])
        if is_video_dataset(spec):
            raise UsageError(f"OOD set {spec!r} is video data; the OOD sets are images")
        if sep and rest and not Path(rest).expanduser().exists():
            raise DataError(f"OOD set {spec!r}: {rest} does not exist")


def _folder_images(path: Path, n: int, img_size: int, in_chans: int) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    files = _image_files(path)[:n]
    out = []
    for f in files:
        try:
            img = Image.open(f).convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read image {f}: {e}") from None
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3)
        out.append(_fit(t.permute(2, 0, 1)[None].float() / 255, img_size, in_chans))
    return torch.cat(out)


def _blobs(n: int, size: int, channels: int, g: torch.Generator) -> Tensor:
    """Soft coloured blobs (1 to 3 Gaussians, sigma 4-12 % of the side) on a black background."""
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = t.view(1, -1, 1), t.view(1, 1, -1)
    out = torch.zeros(n, channels, size, size)
    for k in range(3):
        cy, cx = torch.rand(n, 1, 1, generator=g), torch.rand(n, 1, 1, generator=g)
        sigma = 0.04 + 0.08 * torch.rand(n, 1, 1, generator=g)
        keep = (torch.rand(n, 1, 1, generator=g) < (1.0 if k == 0 else 0.5)).float()
        bump = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2)) * keep
        colour = torch.rand(n, channels, 1, 1, generator=g)
        out = out + colour * bump[:, None]
    return out.clamp(0, 1)


def ood_images(spec: str, n: int, img_size: int, in_chans: int = 3, seed: int = 0) -> Tensor:
    """n OOD images (n, in_chans, img_size, img_size) in [0, 1] from a spec (see the module doc)."""
    if n < 1:
        raise UsageError(f"need n >= 1 OOD images, got {n}")
    g = torch.Generator().manual_seed(seed)
    shape = (n, in_chans, img_size, img_size)
    if spec == "gaussian":
        return (0.5 + torch.randn(shape, generator=g)).clamp(0, 1)
    if spec == "uniform":
        return torch.rand(shape, generator=g)
    if spec == "blobs":
        return _blobs(n, img_size, in_chans, g)
    if spec.startswith("folder:"):
        return _folder_images(Path(spec.partition(":")[2]).expanduser(), n, img_size, in_chans)
    from cuekit.data.registry import create_dataset

    bundle = create_dataset(spec, img_size=img_size, train_size=1, val_size=n, seed=seed + 7)
    ds = bundle.val
    count = min(n, len(ds))
    if hasattr(ds, "render_items"):
        images = ds.render_items(torch.arange(count))[0]
    else:
        images = torch.stack([ds[i][0] for i in range(count)])
    mean = torch.as_tensor(list(bundle.mean)[: images.shape[1]], dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(list(bundle.std)[: images.shape[1]], dtype=images.dtype).view(1, -1, 1, 1)
    return _fit(images * std + mean, img_size, in_chans)
