"""The common corruptions (Hendrycks & Dietterich 2019), batched on tensors, seeded, 5 severities.

`corrupt(images, name, severity, seed=...)` takes images (N, C, H, W) with C = 1 or 3, float in
[0, 1] (any float dtype) or uint8, on any device, and returns the same shape, dtype and range.
The 15 benchmark corruptions are in COMMON_CORRUPTIONS; speckle noise, gaussian blur, spatter
and saturate (the held-out ones) in EXTRA_CORRUPTIONS.

Two parameter presets hold the published severities: "imagenet" (224 px; the numbers of the
`imagecorruptions` package 1.1.2) and "cifar" (32 px; those of Hendrycks' CIFAR-10-C script).
preset="auto" picks "cifar" for images whose shorter side is under 112 px, else "imagenet".

How the results relate to the reference code (all documented in docs/robustness.md):
- deterministic corruptions compute the reference's functions in float32; uint8 images are
  pixelated and JPEG-compressed in integer arithmetic, as Pillow and libjpeg do. uint8 results are
  rounded by default; uint8_rounding="truncate" truncates them as `imagecorruptions` does (np.uint8),
  for byte-level parity runs;
- glass blur runs the reference's sequential pixel loop exactly (including that its "swap" is
  a copy on NumPy rows), resolved for all pixels at once by pointer doubling; spatter runs OpenCV's
  Canny edges, 5x5 chamfer distance transform, histogram equalisation and emboss exactly; given the
  reference's random draws both give the reference's output;
- shot noise samples the Poisson law exactly (alias tables for the 256 levels of 8-bit intensities);
  impulse noise flips values with its probability to 2^-16 (16-bit draws) and fog's plasma noise has a
  resolution of 2^-15 of its range;
- frost uses a procedural ice texture instead of six photographs (no files, no downloads), at the
  photographs' mean colour; the CIFAR elastic transform samples once (affine and elastic maps
  composed) where the CIFAR script resamples twice.
Random corruptions draw from a torch.Generator on the images' device, so a seed gives the same
result on the same device (different devices have different random streams). On the CPU a batch
is processed a few images at a time, so that intermediates stay in the processor's cache; fog's and
spatter's random layers are made for the whole batch at once (their work is a sequence of small steps)
and laid over the images a few at a time.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cuekit.errors import UnknownChoiceError, UsageError

__all__ = ["COMMON_CORRUPTIONS", "CORRUPTIONS", "DETERMINISTIC_CORRUPTIONS", "EXTRA_CORRUPTIONS", "PRESETS",
           "SEVERITIES", "UINT8_ROUNDINGS", "corrupt", "frost_texture", "glass_shuffle", "hsv_to_rgb", "occlude",
           "plasma_fractal", "psnr", "resolve_preset", "rgb_to_hsv"]

COMMON_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = COMMON_CORRUPTIONS + EXTRA_CORRUPTIONS
DETERMINISTIC_CORRUPTIONS = ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression",
                             "gaussian_blur", "saturate")
UINT8_ROUNDINGS = ("round", "truncate")  # how float results become uint8: nearest (default), or as np.uint8
SEVERITIES = (1, 2, 3, 4, 5)

# Published severity tables. elastic_transform: (displacement amplitude, smoothing sigma, affine
# jitter), each as a fraction of the image side.
PRESETS: dict[str, dict[str, list]] = {
    "imagenet": {
        "gaussian_noise": [.08, .12, .18, .26, .38],
        "shot_noise": [60, 25, 12, 5, 3],
        "impulse_noise": [.03, .06, .09, .17, .27],
        "speckle_noise": [.15, .2, .35, .45, .6],
        "gaussian_blur": [1, 2, 3, 4, 6],
        "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
        "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
        "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
        "zoom_blur": [(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)],
        "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                 (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
        "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
        "fog": [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)],
        "spatter": [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                    (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)],
        "contrast": [0.4, .3, .2, .1, .05],
        "brightness": [.1, .2, .3, .4, .5],
        "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)],
        "jpeg_compression": [25, 18, 15, 10, 7],
        "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
        "elastic_transform": [(250 * a * 0.005, 0.01, 0.0) for a in (0.05, 0.065, 0.085, 0.1, 0.12)],
    },
    "cifar": {
        "gaussian_noise": [0.04, 0.06, .08, .09, .10],
        "shot_noise": [500, 250, 100, 75, 50],
        "impulse_noise": [.01, .02, .03, .05, .07],
        "speckle_noise": [.06, .1, .12, .16, .2],
        "gaussian_blur": [.4, .6, 0.7, .8, 1],
        "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
        "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
        "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
        "zoom_blur": [(1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)],
        "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                 (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
        "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
        "fog": [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
        "spatter": [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                    (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)],
        "contrast": [.75, .5, .4, .3, 0.15],
        "brightness": [.05, .1, .15, .2, .3],
        "saturate": [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)],
        "jpeg_compression": [80, 65, 58, 50, 40],
        "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
        "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                              (0.1, 0.03, 0.03)],
    },
}
# Preset-specific choices that are not severity tables.
_STYLE = {
    "imagenet": {"zoom_trim": "topleft", "pixelate_up": "nearest", "frost_cell": 1 / 16},
    "cifar": {"zoom_trim": "center", "pixelate_up": "box", "frost_cell": 1 / 4},
}
_LUMA = (0.2989, 0.5870, 0.1140)  # rgb2gray weights of the reference
_CV_GRAY = (0.299, 0.587, 0.114)  # OpenCV RGB2GRAY
_CHUNK_VALUES = 1 << 19  # on the CPU, about this many values per chunk of images (2 MiB of float32)


def resolve_preset(preset: str, height: int, width: int) -> str:
    """"auto" -> "cifar" below 112 px (shorter side), else "imagenet"; checks explicit names."""
    if preset == "auto":
        return "cifar" if min(height, width) < 112 else "imagenet"
    if preset not in PRESETS:
        raise UnknownChoiceError("corruption preset", preset, (*PRESETS, "auto"))
    return preset


# ---------------------------------------------------------------------------------------------
# Filtering helpers (all on (N, C, H, W) float32)


def _border_index(n: int, before: int, after: int, mode: str, device) -> Tensor:
    """Source indices for padding a length-n axis: replicate, reflect101 (OpenCV default) or
    symmetric (SciPy 'reflect', edge pixel repeated); any pad width."""
    i = torch.arange(-before, n + after, device=device)
    if mode == "replicate" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect101":
        period = 2 * (n - 1)
        i = i.remainder(period)
        return torch.where(i >= n, period - i, i)
    if mode == "symmetric":
        period = 2 * n
        i = i.remainder(period)
        return torch.where(i >= n, period - 1 - i, i)
    raise ValueError(mode)


def _take(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """x.index_select(dim, index) for dim -2 or -1 of a 4-D tensor (on the CPU, index_select is fast
    for rows and gather for columns)."""
    if dim == -2:
        return x.index_select(-2, index)
    return x.gather(-1, index.view(1, 1, 1, -1).expand(*x.shape[:-1], index.numel()))


def _pad_axis(x: Tensor, dim: int, before: int, after: int, mode: str) -> Tensor:
    n = x.shape[dim]
    if before == 0 and after == 0:
        return x
    if before < n and after < n and mode in ("replicate", "reflect101"):
        pads = (before, after, 0, 0) if dim == -1 else (0, 0, before, after)
        return F.pad(x, pads, mode="replicate" if mode == "replicate" else "reflect")
    if before <= n and after <= n and mode == "symmetric":
        parts = [x.narrow(dim, 0, before).flip(dim), x, x.narrow(dim, n - after, after).flip(dim)]
        return torch.cat(parts, dim)
    return _take(x, dim, _border_index(n, before, after, mode, x.device))


def _pad(x: Tensor, ph: tuple[int, int], pw: tuple[int, int], mode: str) -> Tensor:
    return _pad_axis(_pad_axis(x, -2, ph[0], ph[1], mode), -1, pw[0], pw[1], mode)


@functools.lru_cache(maxsize=64)
def _gauss_kernel(sigma: float, radius: int) -> tuple[float, ...]:
    """Normalised Gaussian taps exp(-t^2 / 2 sigma^2), t = -radius..radius, computed in float64."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return tuple((k / k.sum()).tolist())


def _shift_sum(x: Tensor, weights: tuple[float, ...], dim: int) -> Tensor:
    """Correlate along dim -2 or -1 with a centred odd 1-D kernel, as a sum of shifted slices
    (on CPU this is far faster than conv2d with one channel)."""
    r = len(weights) // 2
    n = x.shape[dim] - 2 * r
    out = x.narrow(dim, r, n) * weights[r]
    for t, wt in enumerate(weights):
        if t != r and wt != 0:
            out.add_(x.narrow(dim, t, n), alpha=wt)
    return out


def _fft_size(n: int) -> int:
    """The smallest m >= n with no prime factor above 5 (fast FFT lengths)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _fft_filter(xp: Tensor, kernel: Tensor, out_h: int, out_w: int) -> Tensor:
    """Correlate padded images xp (N, C, H + kh - 1, W + kw - 1) with a kernel (kh, kw) through the
    FFT; returns the valid (N, C, out_h, out_w) part."""
    size = (_fft_size(xp.shape[-2]), _fft_size(xp.shape[-1]))  # zero padding beyond xp changes no valid output
    kh, kw = kernel.shape[-2:]
    spec = torch.fft.rfft2(xp.float(), s=size) * torch.fft.rfft2(kernel.flip(-1, -2).float(), s=size)
    full = torch.fft.irfft2(spec, s=size)
    return full[..., kh - 1:kh - 1 + out_h, kw - 1:kw - 1 + out_w]


_BAND_BLOCK = 16  # outputs per block of the banded matrix products (small blocks: few wasted zero taps)
_BAND_MIN_TAPS = 9  # kernels at least this long correlate by matrix products, shorter ones by shifted slices


@functools.lru_cache(maxsize=128)
def _band_blocks(n: int, weights: tuple[float, ...], mode: str, dtype: torch.dtype,
                 device: str) -> tuple[tuple[int, int, int, int, Tensor, Tensor], ...]:
    """Correlation along a length-n axis with a centred odd kernel, border `mode` folded in, as blocks of
    a banded (n, n) matrix: (first output, outputs, first input, end input, block, its transpose)."""
    r = len(weights) // 2
    src = _border_index(n, r, r, mode, "cpu")
    full = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)
    for k, wt in enumerate(weights):
        full.index_put_((rows, src[k:k + n]), torch.full((n,), float(wt), dtype=torch.float64), accumulate=True)
    blocks = []
    for j0 in range(0, n, _BAND_BLOCK):
        t = min(_BAND_BLOCK, n - j0)
        cols = full[j0:j0 + t].abs().sum(0).nonzero().squeeze(1)
        lo, hi = int(cols.min()), int(cols.max()) + 1
        m = full[j0:j0 + t, lo:hi].to(dtype=dtype, device=device)
        blocks.append((j0, t, lo, hi, m.contiguous(), m.T.contiguous()))
    return tuple(blocks)


def _correlate_axis(x: Tensor, weights: tuple[float, ...], dim: int, mode: str) -> Tensor:
    """Correlate every row (dim -1) or column (dim -2) of x with a centred odd kernel, border `mode`.

    Short kernels: sums of shifted slices of the padded images. Long ones: products with the blocks of
    a banded matrix that holds the border too (no padded copy; a matrix product is many times faster
    per tap than a pass over the images on the CPU)."""
    r = len(weights) // 2
    if r == 0:
        return x * weights[0]
    if len(weights) < _BAND_MIN_TAPS or not x.is_floating_point():
        return _shift_sum(_pad_axis(x, dim, r, r, mode), weights, dim)
    n = x.shape[dim]
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    for j0, t, lo, hi, m, mt in _band_blocks(n, tuple(weights), mode, x.dtype, str(x.device)):
        if dim == -1:
            out[..., j0:j0 + t] = x[..., lo:hi] @ mt
        else:
            out[..., j0:j0 + t, :] = m @ x[..., lo:hi, :]
    return out


def _filter_separable(x: Tensor, kh: tuple[float, ...] | None, kw: tuple[float, ...] | None, mode: str) -> Tensor:
    """Correlate every channel with kh along H and kw along W (odd, centred), border `mode`."""
    if kh is not None and len(kh) > 1:
        x = _correlate_axis(x, kh, -2, mode)
    if kw is not None and len(kw) > 1:
        x = _correlate_axis(x, kw, -1, mode)
    return x


def _gaussian_blur(x: Tensor, sigma: float | tuple[float, float], truncate: float = 4.0,
                   mode: str = "replicate") -> Tensor:
    """SciPy/scikit-image Gaussian filter: radius int(truncate * sigma + 0.5) per axis."""
    sh, sw = (sigma, sigma) if not isinstance(sigma, tuple) else sigma
    ks = [None if s <= 0 else _gauss_kernel(float(s), int(truncate * s + 0.5)) for s in (sh, sw)]
    return _filter_separable(x, ks[0], ks[1], mode)


def _filter2d(x: Tensor, kernel: Tensor, mode: str = "reflect101") -> Tensor:
    """OpenCV filter2D: correlate every channel with a (kh, kw) kernel, centred, border reflect101."""
    h, w = x.shape[-2:]
    kh, kw = kernel.shape
    xp = _pad(x, (kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), mode)
    if kernel.numel() > 25:
        return _fft_filter(xp, kernel.to(x.device), h, w)
    out = None
    for i in range(kh):
        for j in range(kw):
            wt = float(kernel[i, j])
            if wt == 0:
                continue
            part = xp[..., i:i + h, j:j + w]
            out = part * wt if out is None else out.add_(part, alpha=wt)
    return out if out is not None else torch.zeros_like(x)


def _to_rgb(x: Tensor) -> Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _from_rgb(y: Tensor, channels: int) -> Tensor:
    if channels == 3:
        return y
    w = torch.tensor(_LUMA, dtype=y.dtype, device=y.device).view(1, 3, 1, 1)
    return (y * w).sum(1, keepdim=True)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV in [0, 1], with scikit-image's conventions (ties: blue > green > red).

    The cases are told apart by indicators ceil(v - c) (1 where channel c is below the maximum v; all
    differences are in [0, 1]) and chosen by lerp with them: the same values as comparisons and torch.where,
    several times cheaper on the CPU."""
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = v - x.amin(1)
    grey = delta.ceil().neg_().add_(1)  # 1 where r = g = b: those pixels get hue and saturation 0
    safe = delta + grey
    s = delta / (v.ceil().neg_().add_(1).add_(v))  # v where v > 0, else 1
    not_blue = (v - b).ceil_()  # 1 unless blue is the maximum
    not_green = (v - g).ceil_()
    h_blue = (r - g).div_(safe).add_(4.0)
    h_green = (b - r).div_(safe).add_(2.0)
    h_red = (g - b).div_(safe)
    # lerp with weights 0 and 1 returns either end exactly: green's hue where green is the maximum, else
    # red's; then blue's where blue is the maximum
    h = torch.lerp(h_blue, torch.lerp(h_green, h_red, not_green), not_blue)
    h = h.div_(6.0).remainder_(1.0).mul_(grey.neg_().add_(1))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """(N, 3, H, W) HSV -> RGB: channel n (R 5, G 3, B 1) = v - v s clip(min(k, 4 - k), 0, 1),
    k = (n + 6 h) mod 6, the closed form of scikit-image's sector table."""
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device).view(1, 3, 1, 1)
    k = (n + 6.0 * h).remainder(6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Random fields


def _rand(shape, g, device) -> Tensor:
    return torch.rand(shape, generator=g, device=device)


def _randn(shape, g, device) -> Tensor:
    return torch.randn(shape, generator=g, device=device)


def plasma_fractal(n: int, size: int, decay: float, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> Tensor:
    """Diamond-square height maps (n, size, size) in [0, 1], size a power of two (used by fog).

    As the reference: the grid wraps around; each level sets square centres, then the two kinds of
    diamond points, to the mean of their four neighbours plus uniform noise in [-w^2, w^2], w = 100
    divided by `decay` at every level. Each level's points are held as contiguous (n, k, k) arrays.
    """
    if size & (size - 1):
        raise ValueError(f"plasma size must be a power of two, got {size}")
    corners = torch.zeros(n, 1, 1, device=device)  # the points set so far, `size / k` apart
    wibble = 100.0
    # All the noise at once: 16-bit uniform integers v, the noise (2 v + 1) w^2 / 2^16 (a resolution of 2^-15 of
    # its range, far finer than the 8-bit images it ends in; on the CPU a quarter of torch.rand's work)
    draws = _random_words((n * (size * size - 1),), generator, device, torch.int16).to(torch.float32)
    used = 0

    def noisy_mean(total: Tensor) -> Tensor:
        nonlocal used
        count = total.numel()
        noise = draws[used:used + count].view(total.shape)
        used += count
        scale = wibble * wibble / 32768
        return noise.mul_(scale).add_(total, alpha=0.25).add_(scale / 2)

    def wrapped(a: Tensor) -> Tensor:  # (n, k, k) -> (n, k + 2, k + 2), the grid wrapping around
        return F.pad(a[:, None], (1, 1, 1, 1), mode="circular")[:, 0]

    while corners.shape[-1] < size:
        k = corners.shape[-1]
        c = wrapped(corners)
        here, down, right = c[:, 1:-1, 1:-1], c[:, 2:, 1:-1], c[:, 1:-1, 2:]
        centres = noisy_mean(here + down + right + c[:, 2:, 2:])  # (i + 1/2, j + 1/2)
        s = wrapped(centres)
        top = noisy_mean(centres + s[:, :-2, 1:-1] + here + right)  # (i, j + 1/2)
        left = noisy_mean(centres + s[:, 1:-1, :-2] + here + down)  # (i + 1/2, j)
        finer = torch.empty(n, 2 * k, 2 * k, device=device)
        finer[:, 0::2, 0::2], finer[:, 0::2, 1::2] = corners, top
        finer[:, 1::2, 0::2], finer[:, 1::2, 1::2] = left, centres
        corners = finer
        wibble /= decay
    flat = corners.flatten(1)
    lo, hi = flat.amin(1).view(-1, 1, 1), flat.amax(1).view(-1, 1, 1)
    return corners.sub_(lo).div_((hi - lo).clamp_min(1e-12))


@functools.lru_cache(maxsize=64)
def _bicubic_rows(n_in: int, n_out: int) -> Tensor:
    """(n_out, n_in) matrix of bicubic upsampling along one axis (align_corners=False), from F.interpolate."""
    eye = torch.eye(n_in)[:, None, :, None].expand(n_in, 1, n_in, 2)  # impulses as 2-wide images
    up = F.interpolate(eye, size=(n_out, 2), mode="bicubic", align_corners=False)[:, 0, :, 0]
    return up.T.contiguous()


def _value_noise(n: int, h: int, w: int, cells: float, g, device) -> Tensor:
    """Smooth random field (n, 1, h, w) in [0, 1]: uniform noise on a coarse grid, bicubic upsampling
    (as separable matrix products: the same values as F.interpolate, far faster on the CPU)."""
    gh, gw = max(2, math.ceil(h / cells) + 2), max(2, math.ceil(w / cells) + 2)
    coarse = _rand((n, 1, gh, gw), g, device)
    uh, uw = int(cells * gh), int(cells * gw)
    oy = int(_rand((1,), g, device).item() * max(1, uh - h))
    ox = int(_rand((1,), g, device).item() * max(1, uw - w))
    rows = _bicubic_rows(gh, uh)[oy:oy + h].to(device)  # (h, gh)
    cols = _bicubic_rows(gw, uw)[ox:ox + w].to(device)  # (w, gw)
    return (rows @ coarse @ cols.T).clamp_(0, 1)


# Per-channel mean and standard deviation (RGB, 0-1) of the five ImageNet-C frost photographs that
# `imagecorruptions` picks from (frost1-frost5; frost2 and frost3 are the same picture).
_FROST_PHOTO_STATS = (
    ((0.305, 0.585, 0.650), (0.106, 0.065, 0.060)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.787, 0.805, 0.841), (0.084, 0.087, 0.089)),
    ((0.540, 0.599, 0.648), (0.112, 0.112, 0.117)),
    ((0.441, 0.484, 0.528), (0.174, 0.170, 0.163)),
)


def frost_texture(n: int, height: int, width: int, cell: float = 1 / 16, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> Tensor:
    """Procedural ice: (n, 3, H, W) in [0, 1], with bright crystal ridges.

    Ridged multi-octave noise (1 - |2v - 1|, sharpened) gives thin branching veins over a smooth
    haze and fine grain. Each texture takes the per-channel mean and spread of one of the five
    ImageNet-C frost photographs, drawn uniformly as `imagecorruptions` draws the photograph, so
    that frost brightens and tints images as much as the reference does. `cell` is the coarsest
    feature size as a fraction of the shorter side.
    """
    side = min(height, width)
    pattern = _randn((n, 1, height, width), generator, device).mul_(0.04)  # fine grain
    amp = 1.9
    for octave in range(3):
        cells = max(2.0, side * cell / 2 ** octave)
        ridge = 1 - (2 * _value_noise(n, height, width, cells, generator, device) - 1).abs_()
        ridge2 = ridge.mul_(ridge)
        pattern.add_(ridge2.mul_(ridge2).mul_(ridge2), alpha=amp)  # ridge ** 6: thin bright veins
        amp *= 0.6
    pattern.add_(_value_noise(n, height, width, max(2.0, side * cell * 4), generator, device), alpha=0.25)
    sample = pattern[..., ::2, ::2].flatten(1)  # every fourth pixel is plenty for the mean and spread
    spread, mean = torch.std_mean(sample, 1)
    z = pattern.sub_(mean.view(-1, 1, 1, 1)).div_(spread.clamp_min(1e-6).view(-1, 1, 1, 1))
    stats = torch.tensor(_FROST_PHOTO_STATS, device=device)  # (5, 2, 3)
    pick = stats[torch.randint(0, len(_FROST_PHOTO_STATS), (n,), generator=generator, device=device)]
    mean, spread = pick[:, 0, :, None, None], pick[:, 1, :, None, None]
    return (mean + spread * z).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Geometric helpers


@functools.lru_cache(maxsize=128)
def _zoom_axis(n: int, factor: float, trim: str) -> tuple[Tensor, Tensor, Tensor]:
    """SciPy `zoom(order=1)` of the centre crop ceil(n / factor), cut back to n samples.

    -> lower index, upper index, weight of the upper one (each (n,), on the CPU).
    """
    crop = int(math.ceil(n / factor))
    top = (n - crop) // 2
    out_len = int(round(crop * factor))
    start = 0 if trim == "topleft" else (out_len - n) // 2
    i = torch.arange(start, start + n, dtype=torch.float64)
    pos = i * (crop - 1) / (out_len - 1) if out_len > 1 else torch.zeros_like(i)
    lo = torch.floor(pos).clamp(0, crop - 1)
    frac = (pos - lo).float()
    hi = (lo + 1).clamp(max=crop - 1)
    return (lo.long() + top), (hi.long() + top), frac


def _clipped_zoom(x: Tensor, factor: float, trim: str) -> Tensor:
    """Zoom into the centre by `factor` with bilinear interpolation: (N, C, H, W) -> same."""
    lo, hi, f = (t.to(x.device) for t in _zoom_axis(x.shape[-2], factor, trim))
    y = torch.lerp(_take(x, -2, lo), _take(x, -2, hi), f.view(-1, 1))
    lo, hi, f = (t.to(x.device) for t in _zoom_axis(x.shape[-1], factor, trim))
    return torch.lerp(_take(y, -1, lo), _take(y, -1, hi), f)


def _motion_taps(radius: int, sigma: float, angle_deg: float, h: int, w: int) -> list[tuple[int, int, float]]:
    """ImageMagick's motion kernel as `imagecorruptions` reimplements it: (dy, dx, weight) taps, equal
    shifts merged. Weights exp(-i^2 / 2 sigma^2) normalised, i = 0..2r; shift i by
    (-ceil(i sin a - 0.5), -ceil(i cos a - 0.5)); shifts stop once one leaves the image."""
    width = 2 * int(radius) + 1
    i = np.arange(width)
    k = np.exp(-i ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    rad = np.deg2rad(angle_deg)
    taps: dict[tuple[int, int], float] = {}
    for t in range(width):
        dy = -math.ceil(t * math.sin(rad) - 0.5)
        dx = -math.ceil(t * math.cos(rad) - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break  # the reference stops at the first shift outside the image
        taps[(dy, dx)] = taps.get((dy, dx), 0.0) + float(k[t])
    return [(dy, dx, wt) for (dy, dx), wt in taps.items()]


def _motion_blur(x: Tensor, radius: int, sigma: float, angles_deg: Tensor) -> Tensor:
    """Directional blur, one angle per image: out[p] = sum_i w_i x[p - (dy_i, dx_i)], edges replicated.
    x: (N, C, H, W), angles_deg: (N,) -> (N, C, H, W)."""
    n, c, h, w = x.shape
    taps = [_motion_taps(radius, sigma, float(a), h, w) for a in angles_deg.tolist()]
    reach = max(max(abs(dy), abs(dx)) for image_taps in taps for dy, dx, _ in image_taps)
    xp = _pad(x, (reach, reach), (reach, reach), "replicate")
    out = torch.empty_like(x)
    for i, image_taps in enumerate(taps):
        acc = None
        for dy, dx, wt in image_taps:
            part = xp[i, :, reach - dy:reach - dy + h, reach - dx:reach - dx + w]
            acc = part * wt if acc is None else acc.add_(part, alpha=wt)
        out[i] = acc
    return out


@functools.lru_cache(maxsize=64)
def _box_taps(n_in: int, n_out: int) -> tuple[Tensor, Tensor]:
    """Pillow's BOX resampling along one axis: output o averages the inputs whose centres fall in its
    span (support 0.5 * scale, at least half a pixel). -> source indices (L, n_out) and weights
    (L, n_out) float64 (0 for unused taps; L the longest run)."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    runs = []
    for o in range(n_out):
        centre = (o + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        taps = [s for s in range(lo, hi) if -0.5 < (s - centre + 0.5) * (1.0 / fscale) <= 0.5]  # as Pillow rounds
        runs.append(taps if taps else [lo])
    length = max(len(r) for r in runs)
    index = torch.tensor([[r[min(t, len(r) - 1)] for r in runs] for t in range(length)])
    weight = torch.tensor([[1.0 / len(r) if t < len(r) else 0.0 for r in runs] for t in range(length)],
                          dtype=torch.float64)
    return index, weight


def _box_resize_axis(x: Tensor, n_out: int, dim: int) -> Tensor:
    """Pillow BOX resize of float images along dim -2 or -1: each output is the mean of a run of inputs."""
    index, weight = _box_taps(x.shape[dim], n_out)
    index, weight = index.to(x.device), weight.to(device=x.device, dtype=x.dtype)
    out = None
    for t in range(index.shape[0]):
        wt = weight[t].view(-1, 1) if dim == -2 else weight[t]
        part = _take(x, dim, index[t]) * wt
        out = part if out is None else out.add_(part)
    return out


_PIL_BITS = 22  # Pillow's fixed-point precision for 8-bit resampling (32 - 8 - 2)


@functools.lru_cache(maxsize=64)
def _box_runs(n_in: int, n_out: int) -> tuple[int, Tensor, list[tuple[Tensor, Tensor | None]], Tensor]:
    """Pillow's BOX runs along one axis (contiguous: a first input and a length per output), as the work
    of _box_resize_axis_u8: the shortest length L, the runs' starts, the further taps (index, and a 0/1
    mask where not every run has that tap, else None) and the fixed-point weights. On the CPU."""
    index, weight = _box_taps(n_in, n_out)
    lengths = (weight > 0).sum(0)
    shortest = int(lengths.min())
    starts = index[0].contiguous()
    more = [((starts + k).clamp(max=n_in - 1), None if bool((lengths > k).all()) else (lengths > k).to(torch.int16))
            for k in range(shortest, int(lengths.max()))]
    fixed = torch.floor((1 << _PIL_BITS) / lengths.double() + 0.5).to(torch.int32)
    return shortest, starts, more, fixed


def _box_resize_axis_u8(x: Tensor, n_out: int, dim: int) -> Tensor:
    """Pillow BOX resize of uint8 images along dim -2 or -1, in Pillow's arithmetic: each of the L
    taps of a run weighs 1/L rounded to 22-bit fixed point, each result is rounded half up -> uint8.

    A run's sum is the sum of the shortest runs' length of consecutive inputs (window sums, taken at the
    run's start) plus its further inputs (Pillow's runs differ by one at most)."""
    n = x.shape[dim]
    shortest, starts, more, fixed = _box_runs(n, n_out)
    dev = x.device

    def along(t: Tensor) -> Tensor:
        return t.to(dev).view(-1, 1) if dim == -2 else t.to(dev)

    xs = x.to(torch.int16 if 255 * (shortest + len(more)) <= 32767 else torch.int32)
    window = xs
    for length in range(1, shortest):  # sums of `length + 1` consecutive inputs
        window = window.narrow(dim, 0, n - length) + xs.narrow(dim, length, n - length)
    acc = _take(window, dim, starts.to(dev))
    for index, mask in more:
        part = _take(xs, dim, index.to(dev))
        acc.add_(part if mask is None else part.mul_(along(mask)))
    acc = acc.to(torch.int32).mul_(along(fixed)).add_(1 << (_PIL_BITS - 1))
    return acc.bitwise_right_shift_(_PIL_BITS).to(torch.uint8)


@functools.lru_cache(maxsize=64)
def _nearest_index(n_in: int, n_out: int) -> Tensor:
    """Pillow's NEAREST resize: source pixel floor((i + 0.5) * n_in / n_out), the position accumulated
    in float64 step by step as Pillow does (which can land just below a whole number), on the CPU."""
    step = n_in / n_out
    position, index = step * 0.5, []
    for _ in range(n_out):
        index.append(min(int(position), n_in - 1))
        position += step
    return torch.tensor(index)


def _nearest_resize(x: Tensor, h: int, w: int, out: Tensor | None = None) -> Tensor:
    """Pillow NEAREST resize of (N, C, h0, w0) to (N, C, h, w), any dtype (columns first, then whole rows)."""
    rows = _nearest_index(x.shape[-2], h).to(x.device)
    cols = _nearest_index(x.shape[-1], w).to(x.device)
    wide = _take(x, -1, cols)
    return torch.index_select(wide, -2, rows, out=out) if out is not None else wide.index_select(-2, rows)


# ---------------------------------------------------------------------------------------------
# The corruptions: fn(x (N, C, H, W) float32 in [0, 1], params, generator, preset) -> same.
# x is the function's own copy: it may be overwritten.


def _gaussian_noise(x, c, g, preset):
    return _randn(x.shape, g, x.device).mul_(c).add_(x)


_ALIAS_MAX_MEAN = 150  # above this mean, the alias tables grow large: torch's sampler instead


@functools.lru_cache(maxsize=32)
def _poisson_alias_tables(c: float) -> tuple[Tensor, int]:
    """Walker alias tables for Poisson(q c / 255), q = 0..255, built in float64 by Vose's method.

    -> the tables (256 * 2^b,) int32, one entry per (level, outcome) packing t * 2^b + alias, and b: a drawn
    outcome is kept when a uniform (31 - b)-bit integer is at most t (t = -1: never), else its alias is taken.
    Outcomes 0..2^b - 1 (the law's mass beyond them is below 1e-20).
    """
    levels = 256
    lam = torch.arange(levels, dtype=torch.float64) * (c / (levels - 1))
    b = max(1, (int(c + 12 * math.sqrt(c) + 24) - 1).bit_length())
    size = 1 << b
    k = torch.arange(size, dtype=torch.float64)
    log_lam = torch.log(lam.clamp_min(1e-300))[:, None]
    pmf = torch.exp(k[None] * log_lam - lam[:, None] - torch.lgamma(k + 1)[None])
    pmf[0] = 0.0
    pmf[0, 0] = 1.0  # Poisson(0) is 0
    accept, alias = [], []
    for row in (pmf / pmf.sum(1, keepdim=True) * size).tolist():
        row_accept, row_alias = [1.0] * size, list(range(size))
        small = [i for i, v in enumerate(row) if v < 1]
        large = [i for i, v in enumerate(row) if v >= 1]
        while small and large:  # pair a deficient outcome with an abundant one
            s, g = small.pop(), large.pop()
            row_accept[s], row_alias[s] = row[s], g
            row[g] = (row[g] + row[s]) - 1
            (small if row[g] < 1 else large).append(g)
        accept += row_accept
        alias += row_alias
    t = torch.round(torch.tensor(accept, dtype=torch.float64).clamp(0, 1) * (1 << (31 - b))).long() - 1
    return (t * size + torch.tensor(alias)).to(torch.int32), b


def _random_words(shape, g, device, dtype: torch.dtype) -> Tensor:
    """Uniformly random bit patterns of an integer dtype (int16: [-2^15, 2^15), int32: [-2^31, 2^31)), cut
    from 64-bit draws: on the CPU a 64-bit draw costs little more than one torch.rand float."""
    numel = math.prod(shape)
    words = torch.empty(-(-numel // (8 // dtype.itemsize)), dtype=torch.int64, device=device)
    words.random_(-2 ** 63, 2 ** 63 - 1, generator=g)
    return words.view(dtype)[:numel].view(shape)


def _poisson_small(lam: Tensor, g) -> Tensor:
    """Poisson draws for small means (here below 0.25) by inversion: lam (any shape) -> counts (float)."""
    u = _rand(lam.shape, g, lam.device).double()
    lam = lam.double()
    p = torch.exp(-lam)
    cdf = p.clone()
    counts = torch.zeros_like(lam)
    for i in range(1, 64):
        more = u > cdf
        if not bool(more.any()):
            break
        counts += more
        p = p * lam / i
        cdf = cdf + p
    return counts.float()


def _shot_noise(x, c, g, preset):
    # Poisson(x c) exactly: x = q / 255 + d with q the 8-bit level below; Poisson(q c / 255) from alias tables,
    # plus Poisson(d c) by inversion where d > 0. One uniform 31-bit integer per value: its low b bits pick one
    # of 2^b outcomes, its high bits accept it or take its alias. Integer arithmetic and clamps only (on the CPU
    # comparisons, boolean masks and torch.where cost several times more).
    if c > _ALIAS_MAX_MEAN:  # large means (the CIFAR preset's mildest severities): torch's own sampler
        return torch.poisson(x * c, generator=g).div_(c)
    table, b = _poisson_alias_tables(float(c))
    mask = (1 << b) - 1
    levels = x.mul_(255)
    q = (levels + 1e-3).floor_().clamp_(0, 255)
    rest = levels.sub_(q)  # grey levels above q: 0 on the 8-bit grid, up to float rounding
    u = _random_words(x.shape, g, x.device, torch.int32).bitwise_and_(0x7FFFFFFF)
    outcome = u.bitwise_and(mask)
    index = q.to(torch.int32).bitwise_left_shift_(b).bitwise_or_(outcome).view(-1)
    entry = table.to(x.device).index_select(0, index).view(x.shape)
    keep = entry.bitwise_right_shift(b).sub_(u.bitwise_right_shift_(b)).add_(1).clamp_(0, 1)
    alias = entry.bitwise_and_(mask)
    counts = outcome.sub_(alias).mul_(keep).add_(alias).float()
    if rest.numel() and float(rest.amax()) > 1e-3:  # inputs off the 8-bit grid by more than 0.001 grey levels
        counts += _poisson_small(rest.mul_(rest > 1e-3).mul_(c / 255), g)
    return counts.div_(c)


def _impulse_noise(x, c, g, preset):
    # Salt-and-pepper as scikit-image: each value flips with probability c, to 0 or 1 with equal odds. One 16-bit
    # draw v per value, uniform in [-2^15, 2^15): pepper below -2^15 + k, salt below -2^15 + 2k, k = c / 2 in
    # units of 2^-16. Indicators from clamps of integer differences (cheaper than comparisons on the CPU).
    k = round(c / 2 * 65536)
    v = _random_words(x.shape, g, x.device, torch.int16).to(torch.float32)
    keep = (v - (2 * k - 32769)).clamp_(0, 1)  # v >= 2k - 2^15
    not_pepper = v.sub_(k - 32769).clamp_(0, 1)  # v >= k - 2^15
    return x.mul_(keep).add_(not_pepper.sub_(keep))


def _speckle_noise(x, c, g, preset):
    return _randn(x.shape, g, x.device).mul_(c).add_(1).mul_(x)


def _gaussian_blur_c(x, c, g, preset):
    return _gaussian_blur(x, float(c))


def glass_shuffle(images: Tensor, offsets: Tensor, delta: int) -> Tensor:
    """The pixel shuffle of glass blur, exactly as the reference loop runs it, vectorised.

    The reference visits pixel (r, c) for r from H - delta down to delta + 1 and, inside, c from
    W - delta down to delta + 1, and runs `x[r, c], x[r', c'] = x[r', c'], x[r, c]` with
    (r', c') = (r + dy, c + dx). On NumPy rows that statement is a copy, not a swap: x[r, c]
    takes the current value of x[r', c'] and x[r', c'] keeps it. So pixel (r, c) ends with the
    final value of its source when the source was visited before it (a later raster position
    inside the visited range), else the source's value from before the pass. Following those
    links by pointer doubling gives every pixel's origin at once.

    images: (N, C, H, W); offsets: (N, H - 2 delta, W - 2 delta, 2) int (dx, dy) in [-delta, delta),
    indexed in visiting order -> (N, C, H, W).
    """
    n, ch, h, w = images.shape
    dev = images.device
    rows = torch.arange(h - delta, delta, -1, device=dev)
    cols = torch.arange(w - delta, delta, -1, device=dev)
    if rows.numel() == 0 or cols.numel() == 0:
        return images
    pos = (rows[:, None] * w + cols[None, :]).reshape(-1)  # visited positions
    src_r = rows[None, :, None] + offsets[..., 1].to(dev)
    src_c = cols[None, None, :] + offsets[..., 0].to(dev)
    src = (src_r * w + src_c).reshape(n, -1)
    visited = ((src_r >= delta + 1) & (src_r <= h - delta) & (src_c >= delta + 1) & (src_c <= w - delta))
    follows = visited.reshape(n, -1) & (src > pos[None, :])
    ident = torch.arange(h * w, device=dev).expand(n, -1)
    link, origin = ident.clone(), ident.clone()
    link[:, pos] = pos[None, :] + follows * (src - pos[None, :])
    origin[:, pos] = src
    for _ in range(max(1, (h * w).bit_length())):
        jumped = link.gather(1, link)
        if torch.equal(jumped, link):  # every chain has reached its end
            break
        link = jumped
    source = origin.gather(1, link)
    return images.reshape(n, ch, h * w).gather(2, source[:, None, :].expand(n, ch, h * w)).view(n, ch, h, w)


def _glass_blur(x, c, g, preset):
    sigma, delta, iterations = c
    n, ch, h, w = x.shape
    y = torch.floor(_gaussian_blur(x, sigma).clamp_(0, 1).mul_(255)).div_(255)  # the reference truncates to uint8
    shape = (n, max(0, h - 2 * delta), max(0, w - 2 * delta), 2)
    for _ in range(iterations):
        y = glass_shuffle(y, torch.randint(-delta, delta, shape, generator=g, device=x.device), delta)
    return _gaussian_blur(y, sigma)


@functools.lru_cache(maxsize=32)
def _disk_parts(radius: float, alias_blur: float) -> tuple[Tensor, tuple[int, ...], tuple[float, ...]]:
    """The reference's anti-aliased disk kernel K: a binary disk on a (2 max(8, r) + 1)^2 grid,
    normalised, then an OpenCV Gaussian blur (3x3 below radius 8, else 5x5, border reflect101).

    -> K (float32), the disk's half-width per row (from the top; empty when the blur reaches the
    grid's border, so that K is not the disk convolved with the Gaussian), the 1-D Gaussian taps.
    """
    r_grid = 8 if radius <= 8 else int(radius)
    ksize = 3 if radius <= 8 else 5
    t = torch.arange(-r_grid, r_grid + 1, dtype=torch.float64)
    disk = ((t[None, :] ** 2 + t[:, None] ** 2) <= radius ** 2).double()
    disk /= disk.sum()
    g1 = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g1 = torch.exp(-g1 ** 2 / (2 * alias_blur ** 2))
    g1 = tuple((g1 / g1.sum()).tolist())
    kernel = _filter_separable(disk[None, None].float(), g1, g1, "reflect101")[0, 0]
    rg = ksize // 2
    unbounded = _filter_separable(F.pad(disk[None, None], (rg,) * 4), g1, g1, "replicate")[0, 0]
    inner = unbounded[rg:-rg, rg:-rg]
    spill = unbounded.abs().sum() - inner.abs().sum()
    half_widths: tuple[int, ...] = ()
    if float(spill) < 1e-12 and float((inner - kernel.double()).abs().max()) < 1e-7 * float(kernel.max()):
        rows = [int((disk[i] > 0).sum()) for i in range(disk.shape[0])]
        half_widths = tuple(count // 2 for count in rows if count > 0)
    return kernel, half_widths, g1


def _defocus_blur(x, c, g, preset):
    kernel, half_widths, g1 = _disk_parts(float(c[0]), float(c[1]))
    if not half_widths:  # the blur reaches the kernel's border: filter with the kernel itself
        return _filter2d(x, kernel)
    # K = disk * Gaussian: the disk as horizontal runs (window sums), then the separable Gaussian.
    h, w = x.shape[-2:]
    reach, rg = len(half_widths) // 2, len(g1) // 2
    pad = reach + rg
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad < min(h, w) else _pad(x, (pad, pad), (pad, pad),
                                                                                      "reflect101")
    hp, wp = h + 2 * rg, w + 2 * rg  # size after the disk, before the Gaussian
    n = xp.shape[-1]
    rows_of: dict[int, list[int]] = {}  # half-width -> the disk's rows with that run
    for i, a in enumerate(half_widths):
        rows_of.setdefault(a, []).append(i)
    # Window sums of 1, 3, 5, ... pixels, each from the last plus a sum of two (in place: the images, the
    # pair sums, one window sum and the result are all the memory it takes)
    pairs = xp[..., :-1] + xp[..., 1:]
    window, width = xp, 1
    out = None
    for a in sorted(rows_of):
        while width < 2 * a + 1:
            if window is xp:
                window = xp[..., :n - 2] + pairs[..., 1:]
            else:
                window = window[..., :n - width - 1].add_(pairs[..., width:])
            width += 2
        for i in rows_of[a]:  # row i of the disk: the run of 2a + 1 pixels centred on the column
            part = window[..., i:i + hp, reach - a:reach - a + wp]
            out = part.clone() if out is None else out.add_(part)
    out.mul_(1.0 / sum(2 * a + 1 for a in half_widths))
    return _shift_sum(_shift_sum(out, g1, -2), g1, -1)


def _motion_blur_c(x, c, g, preset):
    angles = _rand((x.shape[0],), g, x.device).cpu() * 90 - 45
    return _motion_blur(x, c[0], c[1], angles)


def _zoom_factors(c) -> np.ndarray:
    return np.arange(c[0], c[1], c[2])  # the reference's np.arange, float quirks included


def _zoom_blur(x, c, g, preset):
    trim = _STYLE[preset]["zoom_trim"]
    factors = _zoom_factors(c)
    out = x.clone()
    for z in factors:
        out += _clipped_zoom(x, float(z), trim)
    return out.div_(len(factors) + 1)


def _snow(x, c, g, preset):
    n, ch, h, w = x.shape
    layer = _randn((n, 1, h, w), g, x.device) * c[1] + c[0]
    layer = _clipped_zoom(layer, float(c[2]), _STYLE[preset]["zoom_trim"])
    layer = (layer * (layer >= c[3])).clamp_(0, 1)
    angles = _rand((n,), g, x.device).cpu() * 90 - 135
    layer = _motion_blur(layer, c[4], c[5], angles)
    layer = torch.round(layer * 255) / 255
    rgb = _to_rgb(x)
    gray = (rgb * torch.tensor(_CV_GRAY, device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    rgb = c[6] * rgb + (1 - c[6]) * torch.maximum(rgb, gray * 1.5 + 0.5)
    out = rgb + layer + layer.flip(-1, -2)
    return _from_rgb(out.clamp(0, 1), ch)


def _frost(x, c, g, preset):
    n, ch, h, w = x.shape
    ice = frost_texture(n, h, w, _STYLE[preset]["frost_cell"], g, x.device)
    return _from_rgb(c[0] * _to_rgb(x) + c[1] * ice, ch)


def _fog_layers(n: int, h: int, w: int, c, g, device) -> Tensor:
    """The fog of n images: plasma fractals (n, 1, h, w) (the whole batch at once: its levels are many small
    steps)."""
    size = 1 << (max(h, w) - 1).bit_length()  # next power of two
    return plasma_fractal(n, size, c[1], g, device)[:, None, :h, :w]


def _fog(x, c, g, preset, layers: Tensor | None = None):
    n, ch, h, w = x.shape
    fog = _fog_layers(n, h, w, c, g, x.device) if layers is None else layers
    max_val = x.flatten(1).amax(1).view(-1, 1, 1, 1)
    return x.add_(fog, alpha=c[0]).mul_(max_val / (max_val + c[0]))


def _brightness(x, c, g, preset):
    if x.shape[1] == 1:
        return x + c
    # Raising V in HSV with H and S fixed scales the pixel by v'/v (black becomes grey v').
    v = x.amax(1, keepdim=True)
    v_new = (v + c).clamp_(0, 1)
    black = v.ceil().neg_().add_(1)  # 1 where v = 0, else 0 (v in [0, 1]; cheaper than a comparison)
    return x.mul_(v_new / (v + black)).add_(v_new.mul_(black))


def _saturate(x, c, g, preset):
    hsv = rgb_to_hsv(_to_rgb(x))
    hsv[:, 1] = (hsv[:, 1] * c[0] + c[1]).clamp(0, 1)
    return _from_rgb(hsv_to_rgb(hsv), x.shape[1])


def _contrast(x, c, g, preset):
    mean = x.mean((2, 3), keepdim=True)
    return x.sub_(mean).mul_(c).add_(mean)


@functools.lru_cache(maxsize=2)
def _jpeg_rawmode(channels: int) -> str:
    """How Pillow's JPEG encoder reads the image: grey as it is; RGB in Pillow's own 4-byte pixels where its
    libjpeg is libjpeg-turbo (which reads RGBX itself, the same bytes; no row repacking), else packed RGB."""
    if channels == 1:
        return "L"
    from PIL import features

    return "RGBX" if features.check_feature("libjpeg_turbo") else "RGB"


def _jpeg_u8(x, c, g, preset, out=None):
    """JPEG at quality c, as Pillow saves and reads it: uint8 -> uint8, the same bytes. Pillow's encoder (its
    libjpeg call is faster than torchvision's here) gets the planes without a copy, merged into its RGB layout
    in C, and is called through Image.tobytes (Image.save adds only Python bookkeeping: file-format options,
    a file object); torchvision decodes the batch (faster than Pillow), and one strided copy stores the
    decoded images (height, width, channel) as planes."""
    from PIL import Image
    from torchvision.io import decode_jpeg

    n, ch, h, w = x.shape
    planes = x.detach().cpu().contiguous().numpy()
    encoded = []
    for image in planes:
        bands = [Image.frombuffer("L", (w, h), plane, "raw", "L", 0, 1) for plane in image]
        rgb = Image.merge("RGB", bands) if ch == 3 else bands[0]
        # the encoder's arguments: raw mode, quality; the rest (subsampling, tables, ...) Pillow's defaults
        encoded.append(torch.frombuffer(bytearray(rgb.tobytes("jpeg", (_jpeg_rawmode(ch), int(c)))),
                                        dtype=torch.uint8))
    with warnings.catch_warnings():  # torchvision 0.29 announces a move of its codecs to torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = decode_jpeg(encoded)
    if out is not None and out.device.type == "cpu":
        return torch.stack(decoded, out=out)
    stacked = torch.stack(decoded).to(x.device)
    return stacked if out is None else out.copy_(stacked)


def _jpeg(x, c, g, preset):
    u8 = torch.round(x.mul_(255)).to(torch.uint8)
    return _jpeg_u8(u8, c, g, preset).float().div_(255)


def _pixelate(x, c, g, preset):
    n, ch, h, w = x.shape
    sh, sw = max(1, int(h * c)), max(1, int(w * c))
    small = _box_resize_axis(_box_resize_axis(x, sw, -1), sh, -2)
    if _STYLE[preset]["pixelate_up"] == "nearest":
        return _nearest_resize(small, h, w)
    return _box_resize_axis(_box_resize_axis(small, w, -1), h, -2)


def _pixelate_u8(x, c, g, preset, out=None):
    """Pillow's BOX-down, NEAREST-up resize of 8-bit images in Pillow's integer arithmetic: uint8 -> uint8."""
    n, ch, h, w = x.shape
    sh, sw = max(1, int(h * c)), max(1, int(w * c))
    small = _box_resize_axis_u8(_box_resize_axis_u8(x, sw, -1), sh, -2)
    if _STYLE[preset]["pixelate_up"] == "nearest":
        return _nearest_resize(small, h, w, out=out)
    up = _box_resize_axis_u8(_box_resize_axis_u8(small, w, -1), h, -2)
    return up if out is None else out.copy_(up)


def _elastic_transform(x, c, g, preset):
    amp_f, sigma_f, affine_f = c
    n, ch, h, w = x.shape
    dev = x.device
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float32),
                            torch.arange(w, device=dev, dtype=torch.float32), indexing="ij")
    py, px = ys.expand(n, h, w), xs.expand(n, h, w)
    if amp_f > 0:
        field = 2 * _rand((n, 2, h, w), g, dev) - 1
        sig = (sigma_f * h, sigma_f * w) if preset == "imagenet" else (sigma_f * min(h, w),) * 2
        field = _gaussian_blur(field, sig, truncate=3.0, mode="symmetric") * (amp_f * h)
        py, px = py + field[:, 1], px + field[:, 0]
    if affine_f > 0:
        # A random affine map from three jittered points (the CIFAR-C script's), applied as its inverse
        # so that the output pixel p samples the source at A^-1 (p + displacement).
        centre = torch.tensor([w // 2, h // 2], dtype=torch.float32)
        sq = min(h, w) // 3
        pts1 = torch.stack([centre + sq, torch.stack([centre[0] + sq, centre[1] - sq]), centre - sq])
        jitter = (2 * _rand((n, 3, 2), g, dev).cpu() - 1) * (affine_f * min(h, w))
        pts2 = pts1[None] + jitter
        src = torch.cat([pts2, torch.ones(n, 3, 1)], 2)  # inverse map: from pts2 back to pts1
        inv = torch.linalg.solve(src, pts1[None].expand(n, 3, 2)).transpose(1, 2).to(dev)  # (n, 2, 3)
        qx = inv[:, 0, 0, None, None] * px + inv[:, 0, 1, None, None] * py + inv[:, 0, 2, None, None]
        qy = inv[:, 1, 0, None, None] * px + inv[:, 1, 1, None, None] * py + inv[:, 1, 2, None, None]
        px, py = qx, qy
    # Pixel centres at (2 p + 1) / size - 1: with align_corners=False, "reflection" mirrors about the
    # image's outer edges (the edge pixel repeated), as SciPy's map_coordinates(mode="reflect").
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# Spatter's water drops follow OpenCV step by step: Canny edges of the 8-bit liquid layer, the 5x5
# chamfer distance to them (truncated at 20), a 3x3 box blur, histogram equalisation, an emboss
# filter and another box blur, each with OpenCV's integer conversions.
_TAN_22_5 = 13573  # round(tan(22.5 deg) * 2^15), OpenCV's Canny constant
_CHAMFER_5X5 = (1.0, float(np.float32(1.4)), float(np.float32(2.1969)))  # OpenCV's DIST_L2 mask 5 weights


def _canny(image: Tensor, low: int, high: int) -> Tensor:
    """OpenCV Canny (3x3 Sobel with replicated borders, L1 gradient) of 8-bit images given as
    integer-valued float (N, 1, H, W) -> bool edges: non-maximum suppression in four directions with
    OpenCV's tie rules, then hysteresis (weak pixels 8-connected to strong ones, followed through a
    list of the weak pixels). All values are integers that float32 holds exactly."""
    n, _, h, w = image.shape
    p = F.pad(image, (1, 1, 1, 1), mode="replicate")
    rows = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]  # vertical [1, 2, 1]: (N, 1, H, W + 2)
    cols = p[..., :-2] + 2 * p[..., 1:-1] + p[..., 2:]  # horizontal [1, 2, 1]: (N, 1, H + 2, W)
    gx = rows[..., 2:] - rows[..., :-2]
    gy = cols[..., 2:, :] - cols[..., :-2, :]
    ax, ay = gx.abs(), gy.abs()
    mag = ax + ay
    padded = F.pad(mag, (1, 1, 1, 1))  # outside the image counts as no gradient

    def nb(dy: int, dx: int) -> Tensor:
        return padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    # OpenCV's direction tests in 15-bit fixed point: |gy| 2^15 < |gx| tan(22.5) 2^15 is "horizontal",
    # |gy| 2^15 > |gx| (tan(22.5) + 2) 2^15 "vertical" (written so that every product stays exact)
    # Indicators as floats 0 / 1: [a > b] = clamp(a - b, 0, 1) for whole numbers a, b, AND a product, and
    # exclusive cases chosen by lerp with weights 0 / 1 (exact): several times cheaper than boolean masks
    tg22 = ax * _TAN_22_5
    horizontal = (tg22 - ay * (1 << 15)).clamp_(0, 1)
    vertical = ((ay - 2 * ax).mul_(1 << 15).sub_(tg22)).clamp_(0, 1)
    diagonal = (1 - horizontal).sub_(vertical)  # the two are exclusive
    x_sign, y_sign = (gx + 1).clamp_(0, 1), (gy + 1).clamp_(0, 1)  # [g >= 0]
    same_sign = (x_sign - y_sign).abs_().neg_().add_(1)
    # the two neighbours along the gradient: (0, -1), (0, 1) horizontal; (-1, 0), (1, 0) vertical;
    # (-1, -1), (1, 1) diagonal with equal signs, else (-1, 1), (1, -1)
    axis_first = torch.lerp(nb(-1, 0), nb(0, -1), horizontal)
    axis_second = torch.lerp(nb(1, 0), nb(0, 1), horizontal)
    first = torch.lerp(axis_first, torch.lerp(nb(-1, 1), nb(-1, -1), same_sign), diagonal)
    second = torch.lerp(axis_second, torch.lerp(nb(1, -1), nb(1, 1), same_sign), diagonal)
    # mag > first and mag > second (mag >= second along the axes), mag > low
    peak = (mag - first).clamp_(0, 1).mul_(second.neg_().add_(mag).sub_(diagonal).add_(1).clamp_(0, 1))
    peak.mul_((mag - low).clamp_(0, 1))
    strong = (mag - high).clamp_(0, 1).mul_(peak)
    edges = strong > 0
    peak = peak > strong  # the weak ones
    weak = peak.flatten().nonzero().squeeze(1)
    if weak.numel():  # weak edges join when 8-connected to an edge, transitively
        wp = w + 2
        flat = F.pad(edges, (1, 1, 1, 1)).flatten()  # padded layout, so that neighbours never wrap
        img, rest = weak // (h * w), weak % (h * w)
        weak = img * ((h + 2) * wp) + (rest // w + 1) * wp + rest % w + 1
        neighbours = torch.tensor([-wp - 1, -wp, -wp + 1, -1, 1, wp - 1, wp, wp + 1], device=image.device)
        while weak.numel():
            joins = flat.index_select(0, (weak[:, None] + neighbours).flatten()).view(-1, 8).any(1)
            if not bool(joins.any()):
                break
            flat[weak[joins]] = True
            weak = weak[~joins]
        edges = flat.view(n, 1, h + 2, wp)[..., 1:-1, 1:-1]
    return edges


def _chamfer_distance(zero: Tensor, limit: float | None = None) -> Tensor:
    """OpenCV distanceTransform(DIST_L2, 5): the two raster passes of the 5x5 chamfer mask (weights 1,
    1.4, 2.1969; neighbours outside the image never relay), in exact arithmetic. zero: (N, 1, H, W) bool,
    the pixels to measure from -> (N, 1, H, W) float32 (inf where an image has no such pixel).

    With a `limit` (spatter truncates at 20), distances above it are only known to be above it, and the passes
    run on whole numbers in units of 2^-23 (the weights are float32 numbers) in int32, capped at 128 units:
    half the memory of float64. Otherwise in float64, which holds every sum of the weights exactly.

    Rows run in sequence (all images at once); inside a row the left (right) neighbour's term,
    d[x] = min(c[x], d[x - 1] + 1), is solved at once as x + cummin(c[x'] - x')."""
    n, _, h, w = zero.shape
    as_int = limit is not None and limit < 128 and w <= 256  # the ramp (w - 1) 2^23 must fit in int32
    if as_int:
        unit = 1 << 23
        a, b, c = (int(v * unit) for v in _CHAMFER_5X5)
        far, dtype = 1 << 30, torch.int32
    else:
        (a, b, c), far, dtype = _CHAMFER_5X5, float("inf"), torch.float64
    d = torch.full((h + 4, n, w + 4), far, dtype=dtype, device=zero.device)
    d[2:h + 2, :, 2:w + 2].masked_fill_(zero[:, 0].permute(1, 0, 2), 0)
    ramp = torch.arange(w, dtype=dtype, device=zero.device) * a
    # each row's five shifts by -2..2 columns, made once: shifted[y][k] is d[y, :, k:k + w]
    shifted = d.as_strided((h + 4, 5, n, w), (n * (w + 4), 1, w + 4, 1)).unbind(0)
    for rows, step in ((range(2, h + 2), -1), (range(h + 1, 1, -1), 1)):
        for y in rows:
            r1, r2, here = shifted[y + step].unbind(0), shifted[y + 2 * step].unbind(0), shifted[y][2]
            cand = torch.minimum(here, r1[2] + a)
            cand = torch.minimum(cand, torch.minimum(r1[1], r1[3]).add_(b))
            knight = torch.minimum(torch.minimum(r1[0], r1[4]), torch.minimum(r2[1], r2[3]))
            cand = torch.minimum(cand, knight.add_(c))
            if step < 0:  # forward pass: the left neighbour
                here.copy_(torch.cummin(cand.sub_(ramp), 1).values.add_(ramp))
            else:  # backward pass: the right neighbour
                here.copy_(torch.cummin(cand.flip(1).sub_(ramp), 1).values.add_(ramp).flip(1))
    out = d[2:h + 2, :, 2:w + 2].permute(1, 0, 2)[:, None].float()  # whole units: exact scaling
    return out.mul_(1.0 / unit) if as_int else out


def _box3(x: Tensor) -> Tensor:
    """OpenCV blur((3, 3)) before any conversion: sum of the 3x3 neighbourhood (border reflect101) times 1/9."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    rows = p[..., 0:h, :] + p[..., 1:h + 1, :] + p[..., 2:h + 2, :]
    return (rows[..., 0:w] + rows[..., 1:w + 1] + rows[..., 2:w + 2]) * (1.0 / 9.0)


def _equalize(v: Tensor) -> Tensor:
    """OpenCV equalizeHist of integer images (N, 1, H, W) with values in 0..255, per image."""
    n = v.shape[0]
    vals = v.long().clamp(0, 255).flatten(1)
    hist = torch.zeros(n, 256, dtype=torch.int64, device=v.device).scatter_add_(1, vals, torch.ones_like(vals))
    first = (hist > 0).long().argmax(1)
    total = vals.shape[1]
    first_count = hist.gather(1, first[:, None])
    scale = 255.0 / (total - first_count).clamp_min(1).float()  # float32, as OpenCV
    lut = torch.round((hist.cumsum(1) - first_count).float() * scale).clamp(0, 255)
    lut = torch.where(torch.arange(256, device=v.device)[None] <= first[:, None], torch.zeros_like(lut), lut)
    out = lut.gather(1, vals)
    flat_image = first_count[:, 0] == total  # one grey level: OpenCV returns it unchanged
    if bool(flat_image.any()):
        out = torch.where(flat_image[:, None], first[:, None].float().expand_as(out), out)
    return out.view(v.shape)


def _emboss(x: Tensor) -> Tensor:
    """OpenCV filter2D with [[-2, -1, 0], [-1, 1, 1], [0, 1, 2]] (border reflect101) on integer images."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")

    def s(dy: int, dx: int) -> Tensor:
        return p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    return s(0, 0) + s(0, 1) + s(1, 0) - s(-1, 0) - s(0, -1) + 2 * (s(1, 1) - s(-1, -1))


def _spatter_layers(normal: Tensor, c) -> Tensor:
    """Spatter's layer for images from standard-normal draws (N, 1, H, W): water drops, the strength of the
    sheen (N, 1, H, W); mud, its opacity. Float32.

    The liquid layer is computed in float64 like the reference's, so that its 8-bit version, and all
    that follows, equals the reference's given the same draws. On the CPU the work runs a few images
    at a time, except the distance transform (a sequence of row steps), which takes the whole batch.
    """
    dev = normal.device
    n = normal.shape[0]
    step = n if dev.type != "cpu" else max(1, _CHUNK_VALUES // max(1, 3 * normal[0].numel()))
    chunks = [slice(i, i + step) for i in range(0, n, step)]
    out = torch.empty(normal.shape, device=dev)

    def liquid_layer(part: slice) -> Tensor:
        liquid = _gaussian_blur(normal[part].to(torch.float64) * c[1] + c[0], float(c[2]))
        return liquid * (liquid >= c[3])

    if c[5] == 0:  # water drops: a pale turquoise sheen along embossed ridges inside the blobs
        layers = [torch.floor(liquid_layer(part).mul_(255)).clamp_(0, 255).float() for part in chunks]
        edges = torch.cat([_canny(layer, 50, 150) for layer in layers])
        dist = _chamfer_distance(edges, limit=20).clamp_(max=20)  # OpenCV's distances are float32
        del edges
        for part, layer8 in zip(chunks, layers):
            d = torch.floor(_box3(dist[part].double()).float())  # blur of the float32 distances, astype(uint8)
            d = _equalize(d)
            d = torch.round(_emboss(d)).clamp_(0, 255)
            d = torch.round(_box3(d))  # blur of an 8-bit image: rounded to 8 bits
            m = layer8.mul_(d)
            out[part] = m.div_(m.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)).mul_(c[4])
    else:  # mud
        radius = int(4 * c[4] + 0.5)
        taps = _gauss_kernel(float(c[4]), radius)
        for part in chunks:
            # SciPy filters each axis in float64 and stores float32 between and after (the mask is float32)
            m = (liquid_layer(part) > c[3]).double()
            m = _shift_sum(_pad_axis(m, -2, radius, radius, "replicate"), taps, -2).float().double()
            m = _shift_sum(_pad_axis(m, -1, radius, radius, "replicate"), taps, -1).float()
            out[part] = m * (m >= 0.8)
    return out


def _spatter_apply(x: Tensor, m: Tensor, c) -> Tensor:
    """Images x (N, C, H, W) with spatter's layer m (N, 1, H, W) laid over them."""
    if c[5] == 0:  # water: the sheen added
        colour = torch.tensor((175 / 255, 238 / 255, 238 / 255), device=x.device).view(1, 3, 1, 1)
        return _from_rgb((_to_rgb(x) + m * colour).clamp_(0, 1), x.shape[1])
    colour = torch.tensor((63 / 255, 42 / 255, 20 / 255), device=x.device).view(1, 3, 1, 1)  # mud: mixed in
    mixed = (_to_rgb(x) * (1 - m)).double() + colour.double() * m.double()
    return _from_rgb(mixed.clamp_(0, 1).float(), x.shape[1])


def _spatter_from_draws(x: Tensor, normal: Tensor, c) -> Tensor:
    """Spatter of images x (N, C, H, W) from standard-normal draws (N, 1, H, W) for the liquid layer."""
    return _spatter_apply(x, _spatter_layers(normal, c), c)


def _spatter(x, c, g, preset, layers: Tensor | None = None):
    n, ch, h, w = x.shape
    if layers is None:
        layers = _spatter_layers(_randn((n, 1, h, w), g, x.device), c)
    return _spatter_apply(x, layers, c)


# Corruptions whose random layers are made for the whole batch at once (their work includes sequences of many
# small steps, which chunking the batch would multiply) and laid over the images a chunk at a time:
# name -> fn(shape (N, C, H, W), params, generator, device) -> layers (N, ...), the `layers` argument.
_BATCH_LAYERS: dict[str, Callable] = {
    "fog": lambda shape, c, g, dev: _fog_layers(shape[0], shape[-2], shape[-1], c, g, dev),
    "spatter": lambda shape, c, g, dev: _spatter_layers(_randn((shape[0], 1, shape[-2], shape[-1]), g, dev), c),
}


_FUNCS: dict[str, Callable] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur_c,
    "zoom_blur": _zoom_blur, "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness,
    "contrast": _contrast, "elastic_transform": _elastic_transform, "pixelate": _pixelate,
    "jpeg_compression": _jpeg, "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur_c,
    "spatter": _spatter, "saturate": _saturate,
}
# uint8 -> uint8 versions that work in the reference's integer arithmetic (used for uint8 images).
_UINT8_FUNCS: dict[str, Callable] = {"pixelate": _pixelate_u8, "jpeg_compression": _jpeg_u8}


def corrupt(images: Tensor, name: str, severity: int, *, seed: int | None = None,
            generator: torch.Generator | None = None, preset: str = "auto", uint8_rounding: str = "round") -> Tensor:
    """Corrupt a batch: images (N, C, H, W) (or (C, H, W)), C in {1, 3}, float in [0, 1] or uint8.

    Returns the same shape, dtype and device, values in [0, 1] (or 0..255 for uint8). `seed`
    (or an explicit `generator` on the images' device) makes random corruptions reproducible;
    neither: torch's global random state. `uint8_rounding` says how float results become uint8:
    "round" (nearest, the default) or "truncate" (as `imagecorruptions`' np.uint8, for parity runs).
    """
    if name not in _FUNCS:
        raise UnknownChoiceError("corruption", name, CORRUPTIONS)
    if severity not in SEVERITIES:
        raise UsageError(f"severity must be one of 1..5, got {severity}")
    if uint8_rounding not in UINT8_ROUNDINGS:
        raise UnknownChoiceError("uint8 rounding", uint8_rounding, UINT8_ROUNDINGS)
    single = images.dim() == 3
    x = images[None] if single else images
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UsageError(f"images must be (N, C, H, W) with C = 1 or 3, got {tuple(images.shape)}")
    if x.shape[-1] < 8 or x.shape[-2] < 8:
        raise UsageError(f"images must be at least 8x8 pixels, got {tuple(x.shape[-2:])}")
    dtype = x.dtype
    if dtype != torch.uint8 and not x.is_floating_point():
        raise UsageError(f"images must be float in [0, 1] or uint8, got {dtype}")
    if generator is None and seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(int(seed))
    p = resolve_preset(preset, x.shape[-2], x.shape[-1])
    params = PRESETS[p][name][severity - 1]
    out = torch.empty_like(x)
    step = x.shape[0] if x.device.type != "cpu" else max(1, _CHUNK_VALUES // max(1, x[0].numel()))
    chunks = [slice(i, i + step) for i in range(0, x.shape[0], step)]

    def to_float(part: Tensor) -> Tensor:
        return part.float().div_(255) if dtype == torch.uint8 else part.float().clamp(0, 1)

    def store(part: slice, y: Tensor) -> None:
        if dtype == torch.uint8:
            y = y.mul_(255).clamp_(0, 255)
            y = y.round_() if uint8_rounding == "round" else y.floor_()
            y = y.to(torch.int32)  # whole numbers: float -> int32 -> uint8 is several times faster than float -> uint8
        else:
            y = y.clamp_(0, 1)
        out[part].copy_(y)

    if dtype == torch.uint8 and name in _UINT8_FUNCS:
        for part in chunks:
            _UINT8_FUNCS[name](x[part], params, generator, p, out=out[part])
    elif name in _BATCH_LAYERS:  # the random layers of the whole batch at once, laid over a chunk at a time
        layers = _BATCH_LAYERS[name](x.shape, params, generator, x.device)
        for part in chunks:
            store(part, _FUNCS[name](to_float(x[part]), params, generator, p, layers[part]))
    else:
        for part in chunks:
            store(part, _FUNCS[name](to_float(x[part]), params, generator, p))
    return out[0] if single else out


def occlude(images: Tensor, kind: str, fraction: float, fill: float = 0.0) -> Tensor:
    """Centre or boundary occlusion (as in the CutMix paper): images (N, C, H, W) -> same.

    "center" fills a centred square of side fraction * min(H, W); "boundary" fills everything
    outside that square (keeping only the centre).
    """
    if kind not in ("center", "boundary"):
        raise UnknownChoiceError("occlusion", kind, ("center", "boundary"))
    if not 0.0 <= fraction <= 1.0:
        raise UsageError(f"occlusion fraction must be in [0, 1], got {fraction}")
    h, w = images.shape[-2:]
    side = int(round(fraction * min(h, w)))
    top, left = (h - side) // 2, (w - side) // 2
    inside = torch.zeros(h, w, dtype=torch.bool, device=images.device)
    inside[top:top + side, left:left + side] = True
    region = inside if kind == "center" else ~inside
    return torch.where(region, torch.as_tensor(fill, dtype=images.dtype, device=images.device), images)


def psnr(clean: Tensor, other: Tensor, peak: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image (dB): (N, C, H, W) x2 -> (N,); inf where equal."""
    mse = (clean.float() - other.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(peak ** 2 / mse)

