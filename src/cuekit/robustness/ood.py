"""Out-of-distribution detection: scores and metrics.

Scores (higher = more in-distribution), from a classifier's logits f(x) (N, K):

- `msp`: the maximum softmax probability, max_k softmax(f(x))_k (Hendrycks & Gimpel 2017).
- `odin-t`: ODIN's temperature scaling alone, max_k softmax(f(x) / T)_k (Liang et al. 2018), T = 1000.
- `odin`: ODIN, the same score on the input perturbed against the gradient, x' = x - eps * sign(-grad_x log
  S_y(x; T)) with y the predicted class, i.e. x - eps * sign(grad_x CE(f(x) / T, y)); eps = 0.0014 in
  pixel units ([0, 1] images; ODIN's code divides the step by the normalisation's std, which is the same
  thing), a zero gradient counting as positive (ODIN's `torch.ge(grad, 0)`), the result not clipped to
  [0, 1] (as in ODIN). The attack runs in eval mode. T and eps are the paper's CIFAR settings (its code's
  defaults), not tuned per OOD set.
- `energy`: the negative free energy, T * logsumexp(f(x) / T) (Liu et al. 2020), T = 1.

The ODIN and energy scores are computed in float64 from the float32 logits (at T = 1000 the softmax is
within about 1e-4 of uniform, so float32 would tie many samples); `msp` stays a float32 softmax, as it
always was here (the suite's `ood` results, and the reproduction's numbers, use it).

In-distribution samples are the positives and a higher score means "in-distribution". Metrics:
AUROC, AUPR-in (in as positive), AUPR-out (out as positive, scores negated), TNR at 95% TPR and
detection accuracy max_t (TPR(t) + TNR(t)) / 2 (ODIN's). Ties are treated as one threshold, as in
scikit-learn and torchmetrics.

Built-in OOD sets (pixel images in [0, 1]): "gaussian" (N(0.5, 1) per pixel, clipped, as in
ODIN), "uniform" (U[0, 1]), "blobs" (soft coloured blobs on black: near-OOD for sprite-like data
such as dsprites, where noise is far off), any dataset spec of `cuekit.data` (e.g. "shapes-loc", "dsprites";
its validation images), or "folder:PATH" (every image file under PATH, in sorted order, fitted to the
in-distribution size by one of FOLDER_FITS: `resize-crop` (shorter side resized, centre crop: the ImageNet
evaluation recipe, the default), `resize` (the whole image resized to the square, aspect not kept: ODIN's
"TinyImageNet (resize)" / "LSUN (resize)"), `crop` (a centre crop at the image's own resolution: ODIN's
"(crop)" sets, which took random crops; an image smaller than the crop is refused).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cuekit.errors import DataError, UsageError

__all__ = ["BUILTIN_OOD", "FOLDER_FITS", "OOD_SCORES", "average_precision", "check_ood_scores",
           "check_ood_specs", "energy_score", "max_softmax_score", "odin_perturb", "ood_images", "ood_metrics",
           "ood_scores", "roc_curve", "temperature_score"]

BUILTIN_OOD = ("gaussian", "uniform", "blobs")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
OOD_SCORES = ("msp", "odin-t", "odin", "energy")
FOLDER_FITS = ("resize-crop", "resize", "crop")
ODIN_TEMPERATURE = 1000.0
ODIN_EPSILON = 0.0014
ENERGY_TEMPERATURE = 1.0


def max_softmax_score(logits: Tensor) -> Tensor:
    """logits (N, K) -> (N,) maximum softmax probability."""
    return logits.float().softmax(-1).amax(-1)


def temperature_score(logits: Tensor, temperature: float) -> Tensor:
    """ODIN's temperature-scaled maximum softmax: logits (N, K) -> (N,) float64 max_k softmax(logits / T)_k."""
    return (logits.double() / temperature).softmax(-1).amax(-1)


def energy_score(logits: Tensor, temperature: float = ENERGY_TEMPERATURE) -> Tensor:
    """The negative free energy (Liu et al. 2020): logits (N, K) -> (N,) float64 T * logsumexp(logits / T)."""
    return temperature * torch.logsumexp(logits.double() / temperature, dim=-1)


def odin_perturb(model: nn.Module, images: Tensor, normalise: Callable[[Tensor], Tensor], temperature: float,
                 epsilon: float) -> Tensor:
    """ODIN's input pre-processing: pixel images (N, C, H, W) -> x - eps * sign(grad_x CE(f(x) / T, argmax f(x))).

    `normalise` maps pixels to the model's input (e.g. (x - mean) / std); the step is taken in pixel units,
    a zero gradient counts as +1 (as `torch.ge(grad, 0)` in ODIN's code), nothing is clipped. The model is
    used as it is (put it in eval mode first). Returns float32 pixels on the images' device.
    """
    x = images.detach().float().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(normalise(x)).float() / temperature
        loss = F.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    sign = (grad >= 0).to(x.dtype) * 2 - 1
    return (x - epsilon * sign.to(x.device)).detach()


def check_ood_scores(scores: Sequence[str], odin_temperature: float = ODIN_TEMPERATURE,
                     odin_epsilon: float = ODIN_EPSILON, energy_temperature: float = ENERGY_TEMPERATURE) -> None:
    """Known score names (UnknownChoiceError), T > 0 and eps >= 0 (UsageError)."""
    from cuekit.errors import UnknownChoiceError

    for name in scores:
        if name not in OOD_SCORES:
            raise UnknownChoiceError("OOD score", name, OOD_SCORES)
    if not odin_temperature > 0 or not energy_temperature > 0:
        raise UsageError(f"OOD score temperatures must be > 0, got ODIN T={odin_temperature}, energy "
                         f"T={energy_temperature}")
    if not odin_epsilon >= 0:
        raise UsageError(f"the ODIN perturbation epsilon must be >= 0, got {odin_epsilon}")


@torch.no_grad()
def _forward(model: nn.Module, x: Tensor, normalise: Callable[[Tensor], Tensor]) -> Tensor:
    return model(normalise(x)).float().cpu()


def ood_scores(model: nn.Module, images: Tensor, normalise: Callable[[Tensor], Tensor], scores: Sequence[str],
               odin_temperature: float = ODIN_TEMPERATURE, odin_epsilon: float = ODIN_EPSILON,
               energy_temperature: float = ENERGY_TEMPERATURE, batch_size: int = 256,
               logits: Tensor | None = None) -> dict[str, Tensor]:
    """Each named score (OOD_SCORES) of every image: pixel images (N, C, H, W) (float in [0, 1] or uint8)
    -> {score: (N,) float64 on the CPU}. `logits`: the model's logits of the same images, if already at hand
    (then only `odin` runs the model). `normalise` maps pixels to the model's input on its device."""
    check_ood_scores(scores, odin_temperature, odin_epsilon, energy_temperature)
    if logits is None and any(s != "odin" for s in scores):
        logits = torch.cat([_forward(model, _pixels(images[i:i + batch_size]), normalise)
                            for i in range(0, len(images), batch_size)])
    logits = None if logits is None else logits.float().cpu()
    out: dict[str, Tensor] = {}
    for name in scores:
        if name == "msp":
            out[name] = max_softmax_score(logits).double()
        elif name == "odin-t":
            out[name] = temperature_score(logits, odin_temperature)
        elif name == "energy":
            out[name] = energy_score(logits, energy_temperature)
        else:  # odin: temperature scaling on the perturbed input
            parts = []
            device = getattr(normalise, "device", None)  # the suite's normaliser says where the model is
            for i in range(0, len(images), batch_size):
                x = _pixels(images[i:i + batch_size])
                x = x.to(device) if device is not None else x
                xp = odin_perturb(model, x, normalise, odin_temperature, odin_epsilon)
                parts.append(temperature_score(_forward(model, xp, normalise), odin_temperature))
            out[name] = torch.cat(parts)
    return out


def _pixels(x: Tensor) -> Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x


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


def _fit(images: Tensor, img_size: int, in_chans: int, fit: str = "resize-crop") -> Tensor:
    """Fit (N, C, H, W) pixel images to img_size by one of FOLDER_FITS (see the module doc) and match the
    channels. `crop` needs images at least img_size on each side (UsageError otherwise)."""
    h, w = images.shape[-2:]
    if (h, w) != (img_size, img_size):
        if fit == "crop":
            if min(h, w) < img_size:
                raise UsageError(f"a {w}x{h} image is smaller than the {img_size} px crop (--ood-fit resize or "
                                 "resize-crop scales it)")
            top, left = (h - img_size) // 2, (w - img_size) // 2
            images = images[..., top:top + img_size, left:left + img_size]
        elif fit == "resize":
            images = F.interpolate(images, size=(img_size, img_size), mode="bilinear", align_corners=False,
                                   antialias=min(h, w) > img_size)
        elif fit == "resize-crop":
            scale = img_size / min(h, w)
            nh, nw = max(img_size, round(h * scale)), max(img_size, round(w * scale))
            images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
            top, left = (nh - img_size) // 2, (nw - img_size) // 2
            images = images[..., top:top + img_size, left:left + img_size]
        else:
            from cuekit.errors import UnknownChoiceError

            raise UnknownChoiceError("OOD fit", fit, FOLDER_FITS)
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


def _folder_images(path: Path, n: int, img_size: int, in_chans: int, fit: str = "resize-crop") -> Tensor:
    from PIL import Image, UnidentifiedImageError

    files = _image_files(path)[:n]
    out = []
    for f in files:
        try:
            img = Image.open(f).convert("RGB")
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read image {f}: {e}") from None
        t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, 3)
        try:
            out.append(_fit(t.permute(2, 0, 1)[None].float() / 255, img_size, in_chans, fit))
        except UsageError as e:
            raise DataError(f"OOD image {f}: {e}") from None
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


def ood_images(spec: str, n: int, img_size: int, in_chans: int = 3, seed: int = 0,
               fit: str = "resize-crop") -> Tensor:
    """n OOD images (n, in_chans, img_size, img_size) in [0, 1] from a spec (see the module doc); a folder
    with fewer images gives fewer. `fit`: how folder images are fitted to img_size (FOLDER_FITS)."""
    if n < 1:
        raise UsageError(f"need n >= 1 OOD images, got {n}")
    if fit not in FOLDER_FITS:
        from cuekit.errors import UnknownChoiceError

        raise UnknownChoiceError("OOD fit", fit, FOLDER_FITS)
    g = torch.Generator().manual_seed(seed)
    shape = (n, in_chans, img_size, img_size)
    if spec == "gaussian":
        return (0.5 + torch.randn(shape, generator=g)).clamp(0, 1)
    if spec == "uniform":
        return torch.rand(shape, generator=g)
    if spec == "blobs":
        return _blobs(n, img_size, in_chans, g)
    if spec.startswith("folder:"):
        return _folder_images(Path(spec.partition(":")[2]).expanduser(), n, img_size, in_chans, fit)
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
