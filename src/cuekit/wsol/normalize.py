"""CAM normalizations compared in "Normalization Matters in WSOL" (Kim et al., ICCV'21).

Each maps a batch of CAMs (N, H, W) (already upsampled to the evaluation size) to score maps in
[0, 1], per map, on any device:

* minmax: (F - min F) / (max F - min F)                    (the wsolevaluation default)
* max:    max(F, 0) / max F                                 (negative activations clipped)
* pas:    min(1, (F - min F) / P_90(F - min F))             (Percentile-as-a-Standard, Bae et al.)
* ivr:    max(F - P_q(F), 0) / (max F - P_q(F))             (inferior value removal, q = 0.45)

P_q(F) = sorted(F.flatten())[int(F.size * q)], the index quantile of the official code. A map
that is constant or holds NaN becomes all zeros, as in the official code; so does a map whose
denominator is not positive (max: no positive value; ivr: P_q equals the maximum). For pas
with P_90(F - min F) = 0 the limit is used: 1 where F > min F, else 0.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cuekit.errors import UnknownChoiceError, UsageError

NORMALIZATIONS = ("minmax", "max", "pas", "ivr")
DEFAULT_IVR_PERCENTILE = 0.45
PAS_PERCENTILE = 0.9


def _flat(cams: Tensor) -> Tensor:
    if cams.dim() != 3:
        raise UsageError(f"CAMs must be (N, H, W), got shape {tuple(cams.shape)}")
    return cams.reshape(cams.shape[0], -1)


def _invalid(flat: Tensor) -> Tensor:
    """(N,) True for maps that are constant or hold NaN."""
    nan = torch.isnan(flat).any(dim=1)
    return nan | (flat.amax(dim=1) == flat.amin(dim=1))


def index_quantile(flat: Tensor, q: float) -> Tensor:
    """(N,) values sorted(row)[int(len(row) * q)] of (N, P) rows: the official percentile rule."""
    if not 0.0 <= q < 1.0:
        raise UsageError(f"percentile must be in [0, 1), got {q}")
    k = int(flat.shape[1] * q)
    return torch.kthvalue(flat, k + 1, dim=1).values


def _finish(out: Tensor, invalid: Tensor, shape) -> Tensor:
    bad = invalid | torch.isnan(out).any(dim=1)
    out = torch.where(bad[:, None], torch.zeros_like(out), out)
    return out.reshape(shape)


def minmax_norm(cams: Tensor) -> Tensor:
    """(F - min) / (max - min) per map: (N, H, W) -> (N, H, W) in [0, 1]."""
    flat = _flat(cams)
    invalid = _invalid(flat)
    mn = flat.amin(dim=1, keepdim=True)
    mx = flat.amax(dim=1, keepdim=True)
    out = (flat - mn) / (mx - mn)
    return _finish(out, invalid, cams.shape)


def max_norm(cams: Tensor) -> Tensor:
    """max(F, 0) / max F per map (zeros where max F <= 0)."""
    flat = _flat(cams)
    invalid = _invalid(flat)
    pos = flat.clamp(min=0)
    mx = pos.amax(dim=1, keepdim=True)
    out = pos / mx
    return _finish(out, invalid | (mx[:, 0] <= 0), cams.shape)


def pas_norm(cams: Tensor, percentile: float = PAS_PERCENTILE) -> Tensor:
    """min(1, (F - min F) / P_90(F - min F)) per map (PaS; the official code fixes 0.9)."""
    flat = _flat(cams)
    invalid = _invalid(flat)
    shifted = flat - flat.amin(dim=1, keepdim=True)
    p = index_quantile(shifted, percentile)[:, None]
    safe = torch.where(p > 0, p, torch.ones_like(p))
    out = torch.where(p > 0, (shifted / safe).clamp(max=1), (shifted > 0).to(flat.dtype))
    return _finish(out, invalid, cams.shape)


def ivr_norm(cams: Tensor, percentile: float = DEFAULT_IVR_PERCENTILE) -> Tensor:
    """max(F - P_q(F), 0) / (max F - P_q(F)) per map (IVR, q = 0.45 by default)."""
    flat = _flat(cams)
    invalid = _invalid(flat)
    p = index_quantile(flat, percentile)[:, None]
    shifted = (flat - p).clamp(min=0)
    mx = shifted.amax(dim=1, keepdim=True)
    out = shifted / mx
    return _finish(out, invalid | (mx[:, 0] <= 0), cams.shape)


def normalize_cams(cams: Tensor, method: str = "minmax", percentile: float = DEFAULT_IVR_PERCENTILE) -> Tensor:
    """Normalize CAMs (N, H, W) or (H, W) with `method` in NORMALIZATIONS; `percentile` is IVR's q."""
    if method not in NORMALIZATIONS:
        raise UnknownChoiceError("normalization", method, NORMALIZATIONS)
    squeeze = cams.dim() == 2
    if squeeze:
        cams = cams[None]
    if not cams.is_floating_point():
        cams = cams.float()
    if method == "minmax":
        out = minmax_norm(cams)
    elif method == "max":
        out = max_norm(cams)
    elif method == "pas":
        out = pas_norm(cams)
    else:
        out = ivr_norm(cams, percentile)
    return out[0] if squeeze else out


def upsample_cams(cams: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Bicubic upsampling of CAMs (N, h, w) to (N, H, W), half-pixel centres (like cv2 INTER_CUBIC)."""
    if isinstance(size, int):
        size = (size, size)
    if cams.dim() != 3:
        raise UsageError(f"CAMs must be (N, h, w), got shape {tuple(cams.shape)}")
    if tuple(cams.shape[-2:]) == tuple(size):
        return cams
    return F.interpolate(cams[:, None], size=tuple(size), mode="bicubic", align_corners=False)[:, 0]
