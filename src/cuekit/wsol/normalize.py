"""CAM normalizations compared in "Normalization Matters in WSOL" (Kim et al., ICCV'21).

Each maps a batch of CAMs (N, H, W) or one map (H, W) (already upsampled to the evaluation size)
to score maps in [0, 1], per map, on any device. Every function takes a numpy array or a torch
tensor and returns the same kind (numpy in, numpy out):

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

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cuekit.errors import UnknownChoiceError, UsageError

NORMALIZATIONS = ("minmax", "max", "pas", "ivr")
DEFAULT_IVR_PERCENTILE = 0.45
PAS_PERCENTILE = 0.9

ArrayLike = Any  # a numpy array or a torch tensor


def as_float_tensor(x: ArrayLike) -> tuple[Tensor, Callable[[Tensor], ArrayLike]]:
    """A floating-point tensor view of a numpy array or tensor (integers become float32), and a
    function that turns a result back into the input's kind (numpy in, numpy out)."""
    if isinstance(x, Tensor):
        t = x
        back = _identity
    else:
        arr = np.asarray(x)
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.array(arr)  # torch.from_numpy needs a writeable array
        t = torch.from_numpy(arr)
        back = _to_numpy
    if not t.is_floating_point():
        t = t.float()
    return t, back


def _identity(t: Tensor) -> Tensor:
    return t


def _to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _batched(cams: Tensor) -> tuple[Tensor, bool]:
    """(N, H, W) from (N, H, W) or (H, W), and whether a single map was given."""
    if cams.dim() == 2:
        return cams[None], True
    if cams.dim() != 3:
        raise UsageError(f"CAMs must be (N, H, W) or (H, W), got shape {tuple(cams.shape)}")
    return cams, False


def _flat(cams: Tensor) -> Tensor:
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


def _minmax_norm(cams: Tensor) -> Tensor:
    """(F - min) / (max - min) per map: (N, H, W) -> (N, H, W) in [0, 1]."""
    flat = _flat(cams)
    invalid = _invalid(flat)
    mn = flat.amin(dim=1, keepdim=True)
    mx = flat.amax(dim=1, keepdim=True)
    out = (flat - mn) / (mx - mn)
    return _finish(out, invalid, cams.shape)


def _max_norm(cams: Tensor) -> Tensor:
    """max(F, 0) / max F per map (zeros where max F <= 0)."""
    flat = _flat(cams)
    invalid = _invalid(flat)
    pos = flat.clamp(min=0)
    mx = pos.amax(dim=1, keepdim=True)
    out = pos / mx
    return _finish(out, invalid | (mx[:, 0] <= 0), cams.shape)


def _pas_norm(cams: Tensor, percentile: float = PAS_PERCENTILE) -> Tensor:
    """min(1, (F - min F) / P_90(F - min F)) per map (PaS; the official code fixes 0.9)."""
    flat = _flat(cams)
    invalid = _invalid(flat)
    shifted = flat - flat.amin(dim=1, keepdim=True)
    p = index_quantile(shifted, percentile)[:, None]
    safe = torch.where(p > 0, p, torch.ones_like(p))
    out = torch.where(p > 0, (shifted / safe).clamp(max=1), (shifted > 0).to(flat.dtype))
    return _finish(out, invalid, cams.shape)


def _ivr_norm(cams: Tensor, percentile: float = DEFAULT_IVR_PERCENTILE) -> Tensor:
    """max(F - P_q(F), 0) / (max F - P_q(F)) per map (IVR, q = 0.45 by default)."""
    flat = _flat(cams)
    invalid = _invalid(flat)
    p = index_quantile(flat, percentile)[:, None]
    shifted = (flat - p).clamp(min=0)
    mx = shifted.amax(dim=1, keepdim=True)
    out = shifted / mx
    return _finish(out, invalid | (mx[:, 0] <= 0), cams.shape)


def _apply(kernel: Callable[..., Tensor], cams: ArrayLike, *args: Any) -> ArrayLike:
    t, back = as_float_tensor(cams)
    batch, single = _batched(t)
    out = kernel(batch, *args)
    return back(out[0] if single else out)


def minmax_norm(cams: ArrayLike) -> ArrayLike:
    """(F - min) / (max - min) per map: (N, H, W) or (H, W) -> the same shape in [0, 1]."""
    return _apply(_minmax_norm, cams)


def max_norm(cams: ArrayLike) -> ArrayLike:
    """max(F, 0) / max F per map (zeros where max F <= 0): (N, H, W) or (H, W)."""
    return _apply(_max_norm, cams)


def pas_norm(cams: ArrayLike, percentile: float = PAS_PERCENTILE) -> ArrayLike:
    """min(1, (F - min F) / P_90(F - min F)) per map (PaS): (N, H, W) or (H, W)."""
    return _apply(_pas_norm, cams, percentile)


def ivr_norm(cams: ArrayLike, percentile: float = DEFAULT_IVR_PERCENTILE) -> ArrayLike:
    """max(F - P_q(F), 0) / (max F - P_q(F)) per map (IVR, q = 0.45 by default): (N, H, W) or (H, W)."""
    return _apply(_ivr_norm, cams, percentile)


def normalize_cams(cams: ArrayLike, method: str = "minmax", percentile: float = DEFAULT_IVR_PERCENTILE) -> ArrayLike:
    """Normalize CAMs (N, H, W) or (H, W) with `method` in NORMALIZATIONS; `percentile` is IVR's q."""
    if method not in NORMALIZATIONS:
        raise UnknownChoiceError("normalization", method, NORMALIZATIONS)
    if method == "minmax":
        return _apply(_minmax_norm, cams)
    if method == "max":
        return _apply(_max_norm, cams)
    if method == "pas":
        return _apply(_pas_norm, cams, PAS_PERCENTILE)
    return _apply(_ivr_norm, cams, percentile)


def upsample_cams(cams: ArrayLike, size: int | tuple[int, int]) -> ArrayLike:
    """Bicubic upsampling of CAMs (N, h, w) or (h, w) to (N, H, W) or (H, W), half-pixel centres
    (like cv2 INTER_CUBIC); size is H = W or (H, W)."""
    if isinstance(size, int):
        size = (size, size)
    t, back = as_float_tensor(cams)
    batch, single = _batched(t)
    if tuple(batch.shape[-2:]) != tuple(size):
        batch = F.interpolate(batch[:, None], size=tuple(size), mode="bicubic", align_corners=False)[:, 0]
    return back(batch[0] if single else batch)
