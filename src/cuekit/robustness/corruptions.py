"""The common corruptions (Hendrycks & Dietterich 2019), batched on tensors, seeded, 5 severities.

`corrupt(images, name, severity, seed=...)` takes images (N, C, H, W) with C = 1 or 3, float in
[0, 1] (any float dtype) or uint8, on any device, and returns the same shape, dtype and range.
The 15 benchmark corruptions are in COMMON_CORRUPTIONS; speckle noise, gaussian blur, spatter
and saturate (the held-out ones) in EXTRA_CORRUPTIONS.

Two parameter presets hold the published severities: "imagenet" (224 px; the numbers of the
`imagecorruptions` package 1.1.2) and "cifar" (32 px; those of Hendrycks' CIFAR-10-C script).
preset="auto" picks "cifar" for images whose shorter side is under 112 px, else "imagenet".

What differs from the reference code (all documented in docs/robustness.md):
- deterministic corruptions (brightness, contrast, saturate, defocus/gaussian/zoom blur,
  pixelate, JPEG) compute the same functions in float32 (tests bound the per-pixel difference);
- glass blur runs the reference's sequential pixel loop exactly (including that its "swap" is
  a copy on NumPy rows), resolved for all pixels at once by pointer doubling;
- frost uses a procedural ice texture instead of six photographs (no files, no downloads);
- spatter approximates OpenCV's Canny edges and distance transform by the blob boundary and 20
  dilation steps; elastic samples once (affine and elastic maps composed) where the CIFAR
  script resamples twice.
Random corruptions draw from a torch.Generator on the images' device, so a seed gives the same
result on the same device (different devices have different random streams).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cuekit.errors import UnknownChoiceError, UsageError

__all__ = ["COMMON_CORRUPTIONS", "CORRUPTIONS", "DETERMINISTIC_CORRUPTIONS", "EXTRA_CORRUPTIONS", "PRESETS",
           "SEVERITIES", "corrupt", "frost_texture", "glass_shuffle", "hsv_to_rgb", "occlude", "plasma_fractal",
           "psnr", "resolve_preset", "rgb_to_hsv"]

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
    """x.index_select(dim, index) for dim -2 or -1 of a 4-D tensor (index_select is many times slower
    on CPU than advanced indexing / gather here)."""
    if dim == -2:
        return x[:, :, index]
    return x.gather(-1, index.view(1, 1, 1, -1).expand(*x.shape[:-1], index.numel()))


def _pad(x: Tensor, ph: tuple[int, int], pw: tuple[int, int], mode: str) -> Tensor:
    if ph != (0, 0):
        x = _take(x, -2, _border_index(x.shape[-2], ph[0], ph[1], mode, x.device))
    if pw != (0, 0):
        x = _take(x, -1, _border_index(x.shape[-1], pw[0], pw[1], mode, x.device))
    return x


def _gauss_kernel(sigma: float, radius: int, device) -> Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


_FFT_TAPS = 25  # kernels with more taps than this (per axis, or in all for 2-D) go through the FFT


def _shift_sum(x: Tensor, kernel: Tensor, dim: int) -> Tensor:
    """Correlate along dim -2 or -1 with a centred odd 1-D kernel, as a sum of shifted slices
    (on CPU this is far faster than conv2d with one channel)."""
    r = kernel.numel() // 2
    n = x.shape[dim] - 2 * r
    weights = kernel.tolist()
    out = None
    for t, wt in enumerate(weights):
        if wt == 0:
            continue
        part = x.narrow(dim, t, n)
        out = part * wt if out is None else out.add_(part, alpha=wt)
    return out if out is not None else torch.zeros_like(x.narrow(dim, r, n))


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


def _fft_filter(xp: Tensor, kernel: Tensor, out_h: int, out_w: int, convolve: bool = False) -> Tensor:
    """Correlate (or convolve) padded images xp (N, C, H + kh - 1, W + kw - 1) with kernels (kh, kw)
    or per-image (N, 1, kh, kw) through the FFT; returns the valid (N, C, out_h, out_w) part."""
    size = (_fft_size(xp.shape[-2]), _fft_size(xp.shape[-1]))  # zero padding beyond xp changes no valid output
    kh, kw = kernel.shape[-2:]
    k = kernel if convolve else kernel.flip(-1, -2)
    spec = torch.fft.rfft2(xp.float(), s=size) * torch.fft.rfft2(k.float(), s=size)
    full = torch.fft.irfft2(spec, s=size)
    return full[..., kh - 1:kh - 1 + out_h, kw - 1:kw - 1 + out_w]


def _filter_separable(x: Tensor, kh: Tensor | None, kw: Tensor | None, mode: str) -> Tensor:
    """Correlate every channel with kh along H and kw along W (odd, centred), border `mode`."""
    h, w = x.shape[-2:]
    rh = 0 if kh is None else kh.numel() // 2
    rw = 0 if kw is None else kw.numel() // 2
    if max(2 * rh + 1, 2 * rw + 1) > _FFT_TAPS and kh is not None and kw is not None:
        xp = _pad(x, (rh, rh), (rw, rw), mode)
        return _fft_filter(xp, kh[:, None] * kw[None, :], h, w)
    if rh:
        x = _shift_sum(_pad(x, (rh, rh), (0, 0), mode), kh, -2)
    if rw:
        x = _shift_sum(_pad(x, (0, 0), (rw, rw), mode), kw, -1)
    return x


def _gaussian_blur(x: Tensor, sigma: float | tuple[float, float], truncate: float = 4.0,
                   mode: str = "replicate") -> Tensor:
    """SciPy/scikit-image Gaussian filter: radius int(truncate * sigma + 0.5) per axis."""
    sh, sw = (sigma, sigma) if not isinstance(sigma, tuple) else sigma
    ks = []
    for s in (sh, sw):
        ks.append(None if s <= 0 else _gauss_kernel(s, int(truncate * s + 0.5), x.device))
    return _filter_separable(x, ks[0], ks[1], mode)


def _filter2d(x: Tensor, kernel: Tensor, mode: str = "reflect101") -> Tensor:
    """OpenCV filter2D: correlate every channel with a (kh, kw) kernel, centred, border reflect101."""
    h, w = x.shape[-2:]
    kh, kw = kernel.shape
    xp = _pad(x, (kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), mode)
    if kernel.numel() > _FFT_TAPS:
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
    """(N, 3, H, W) RGB in [0, 1] -> HSV in [0, 1], with scikit-image's conventions (ties: blue > green > red)."""
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = v - x.amin(1)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    s = torch.where(delta > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    h = (g - b) / safe
    h = torch.where(g == v, 2.0 + (b - r) / safe, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe, h)
    h = torch.where(delta > 0, (h / 6.0).remainder(1.0), torch.zeros_like(h))
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
    """Diamond-square height maps (n, size, size) in [0, 1], size a power of two (used by fog)."""
    if size & (size - 1):
        raise ValueError(f"plasma size must be a power of two, got {size}")
    m = torch.zeros(n, size, size, device=device)
    step, wibble = size, 100.0

    def noisy_mean(total: Tensor) -> Tensor:
        return total / 4 + wibble * (2 * _rand(total.shape, generator, device) - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        sq = corners + corners.roll(-1, 1)
        sq = sq + sq.roll(-1, 2)
        m[:, half::step, half::step] = noisy_mean(sq)
        centres = m[:, half::step, half::step]
        corners = m[:, 0::step, 0::step]
        m[:, 0::step, half::step] = noisy_mean(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        m[:, half::step, 0::step] = noisy_mean(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step //= 2
        wibble /= decay
    flat = m.flatten(1)
    lo, hi = flat.amin(1).view(-1, 1, 1), flat.amax(1).view(-1, 1, 1)
    return (m - lo) / (hi - lo).clamp_min(1e-12)


def _value_noise(n: int, h: int, w: int, cells: float, g, device) -> Tensor:
    """Smooth random field (n, 1, h, w) in [0, 1]: uniform noise on a coarse grid, bicubic upsampling."""
    gh, gw = max(2, math.ceil(h / cells) + 2), max(2, math.ceil(w / cells) + 2)
    coarse = _rand((n, 1, gh, gw), g, device)
    up = F.interpolate(coarse, size=(int(cells * gh), int(cells * gw)), mode="bicubic", align_corners=False)
    oy = int(_rand((1,), g, device).item() * max(1, up.shape[-2] - h))
    ox = int(_rand((1,), g, device).item() * max(1, up.shape[-1] - w))
    return up[..., oy:oy + h, ox:ox + w].clamp(0, 1)


def frost_texture(n: int, height: int, width: int, cell: float = 1 / 16, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> Tensor:
    """Procedural ice: (n, 3, H, W) in [0, 1], pale blue, with bright crystal ridges.

    Ridged multi-octave noise (1 - |2v - 1|, sharpened) gives thin branching veins over a
    smooth haze; brightness and tint are set near the statistics of the ImageNet-C frost photos
    (mean about 0.3-0.8, blue > green > red). `cell` is the coarsest feature size as a fraction
    of the shorter side.
    """
    side = min(height, width)
    veins = torch.zeros(n, 1, height, width, device=device)
    amp, total = 1.0, 0.0
    for octave in range(3):
        cells = max(2.0, side * cell / 2 ** octave)
        v = _value_noise(n, height, width, cells, generator, device)
        veins += amp * (1 - (2 * v - 1).abs()) ** 6
        total += amp
        amp *= 0.6
    veins = veins / total
    haze = _value_noise(n, height, width, max(2.0, side * cell * 4), generator, device)
    level = 0.35 + 0.35 * _rand((n, 1, 1, 1), generator, device)
    grain = 0.04 * _randn((n, 1, height, width), generator, device)
    ice = (level + 0.9 * veins + 0.25 * (haze - 0.5) + grain).clamp(0, 1)
    tint = torch.tensor((0.80, 0.92, 1.0), device=device).view(1, 3, 1, 1)
    return (ice * tint).clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Geometric helpers


def _zoom_axis(n: int, factor: float, trim: str, device) -> tuple[Tensor, Tensor, Tensor]:
    """SciPy `zoom(order=1)` of the centre crop ceil(n / factor), cut back to n samples.

    -> lower index, upper index, weight of the upper one (each (n,)).
    """
    crop = int(math.ceil(n / factor))
    top = (n - crop) // 2
    out_len = int(round(crop * factor))
    start = 0 if trim == "topleft" else (out_len - n) // 2
    i = torch.arange(start, start + n, dtype=torch.float64, device=device)
    pos = i * (crop - 1) / (out_len - 1) if out_len > 1 else torch.zeros_like(i)
    lo = torch.floor(pos).clamp(0, crop - 1)
    frac = (pos - lo).float()
    hi = (lo + 1).clamp(max=crop - 1)
    return (lo.long() + top), (hi.long() + top), frac


def _clipped_zoom(x: Tensor, factor: float, trim: str) -> Tensor:
    """Zoom into the centre by `factor` with bilinear interpolation: (N, C, H, W) -> same."""
    lo, hi, f = _zoom_axis(x.shape[-2], factor, trim, x.device)
    y = torch.lerp(_take(x, -2, lo), _take(x, -2, hi), f.view(-1, 1))
    lo, hi, f = _zoom_axis(x.shape[-1], factor, trim, x.device)
    return torch.lerp(_take(y, -1, lo), _take(y, -1, hi), f)


def _motion_blur(x: Tensor, radius: int, sigma: float, angles_deg: Tensor) -> Tensor:
    """Directional blur: the sum of Gaussian-weighted shifts along each image's angle (edges replicated).

    The kernel is ImageMagick's, as `imagecorruptions` reimplements it: width 2r + 1, weights
    exp(-i^2 / 2 sigma^2) normalised, shift i by (-ceil(i sin a - 0.5), -ceil(i cos a - 0.5));
    shifts stop once one leaves the image. Applied as one FFT convolution per image.
    """
    n, c, h, w = x.shape
    width = 2 * int(radius) + 1
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-i ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    rad = torch.deg2rad(angles_deg.double().cpu())
    dy = -torch.ceil(i[None, :] * torch.sin(rad)[:, None] - 0.5).long()  # (n, width)
    dx = -torch.ceil(i[None, :] * torch.cos(rad)[:, None] - 0.5).long()
    inside = (dy.abs() < h) & (dx.abs() < w)
    active = torch.cumprod(inside.long(), 1).bool()  # the reference breaks at the first shift outside
    reach = int(torch.maximum(dy.abs(), dx.abs())[active].max()) if bool(active.any()) else 0
    side = 2 * reach + 1
    kernel = torch.zeros(n, side * side, dtype=torch.float64)
    flat_index = (dy + reach) * side + (dx + reach)
    kernel.scatter_add_(1, flat_index, k[None, :] * active)
    kernel = kernel.view(n, 1, side, side).to(x.device)
    if reach == 0:
        return x * kernel[:, :, 0, 0, None, None].to(x.dtype)
    xp = _pad(x, (reach, reach), (reach, reach), "replicate")
    return _fft_filter(xp, kernel, h, w, convolve=True).to(x.dtype)


def _box_ranges(n_in: int, n_out: int) -> tuple[Tensor, Tensor]:
    """Pillow's BOX resampling: output pixel o averages input pixels [lo_o, hi_o), those whose
    centres fall in its span (support 0.5 * scale, at least half a pixel)."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    los, his = [], []
    for o in range(n_out):
        centre = (o + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), n_in)
        taps = [s for s in range(lo, hi) if -0.5 < (s - centre + 0.5) / fscale <= 0.5]
        los.append(taps[0] if taps else lo)
        his.append(taps[-1] + 1 if taps else lo + 1)
    return torch.tensor(los), torch.tensor(his)


def _box_resize_axis(x: Tensor, n_out: int, dim: int) -> Tensor:
    """Pillow BOX resize along dim -2 or -1 with running sums (each output is a mean of a run of inputs)."""
    n_in = x.shape[dim]
    lo, hi = _box_ranges(n_in, n_out)
    lo, hi = lo.to(x.device), hi.to(x.device)
    x64 = x.double()  # float32 running sums drift by ~1e-5 over a row: enough to tip a grey level
    csum = torch.cat([torch.zeros_like(x64.narrow(dim, 0, 1)), x64.cumsum(dim)], dim)
    total = _take(csum, dim, hi) - _take(csum, dim, lo)
    count = (hi - lo).to(total.dtype)
    count = count.view(-1, 1) if dim == -2 else count
    return (total / count).to(x.dtype)


def _nearest_index(n_in: int, n_out: int, device) -> Tensor:
    """Pillow's NEAREST resize: source pixel floor((i + 0.5) * n_in / n_out)."""
    i = torch.arange(n_out, dtype=torch.float64)
    return torch.floor((i + 0.5) * n_in / n_out).long().clamp(max=n_in - 1).to(device)


# ---------------------------------------------------------------------------------------------
# The corruptions: fn(x (N, C, H, W) float32 in [0, 1], params, generator, preset) -> same


def _gaussian_noise(x, c, g, preset):
    return x + _randn(x.shape, g, x.device) * c


def _shot_noise(x, c, g, preset):
    return torch.poisson(x * c, generator=g) / c


def _impulse_noise(x, c, g, preset):
    # Salt-and-pepper as scikit-image: each value flips with probability c, to 0 or 1 with equal odds.
    u = _rand(x.shape, g, x.device)
    return torch.where(u <= c, (u <= c / 2).to(x.dtype), x)


def _speckle_noise(x, c, g, preset):
    return x + x * _randn(x.shape, g, x.device) * c


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
    link[:, pos] = torch.where(follows, src, pos[None, :].expand(n, -1))
    origin[:, pos] = src
    for _ in range(max(1, (h * w).bit_length())):
        link = link.gather(1, link)
    source = origin.gather(1, link)
    return images.reshape(n, ch, h * w).gather(2, source[:, None, :].expand(n, ch, h * w)).view(n, ch, h, w)


def _glass_blur(x, c, g, preset):
    sigma, delta, iterations = c
    n, ch, h, w = x.shape
    y = torch.floor(_gaussian_blur(x, sigma).clamp(0, 1) * 255) / 255  # the reference rounds down to uint8
    shape = (n, max(0, h - 2 * delta), max(0, w - 2 * delta), 2)
    for _ in range(iterations):
        y = glass_shuffle(y, torch.randint(-delta, delta, shape, generator=g, device=x.device), delta)
    return _gaussian_blur(y, sigma)


def _disk_kernel(radius: float, alias_blur: float, device) -> Tensor:
    """The reference's anti-aliased disk: a binary disk on a (2*max(8, r) + 1)^2 grid, normalised,
    then an OpenCV Gaussian blur (3x3 below radius 8, else 5x5, border reflect101)."""
    r_grid = 8 if radius <= 8 else int(radius)
    ksize = 3 if radius <= 8 else 5
    t = torch.arange(-r_grid, r_grid + 1, dtype=torch.float64)
    disk = ((t[None, :] ** 2 + t[:, None] ** 2) <= radius ** 2).double()
    disk /= disk.sum()
    g1 = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g1 = torch.exp(-g1 ** 2 / (2 * alias_blur ** 2))
    g1 /= g1.sum()
    k = _filter_separable(disk[None, None].float(), g1.float(), g1.float(), "reflect101")[0, 0]
    return k.to(device)


def _defocus_blur(x, c, g, preset):
    return _filter2d(x, _disk_kernel(c[0], c[1], x.device))


def _motion_blur_c(x, c, g, preset):
    angles = _rand((x.shape[0],), g, x.device).cpu() * 90 - 45
    return _motion_blur(x, c[0], c[1], angles)


def _zoom_factors(c) -> np.ndarray:
    return np.arange(c[0], c[1], c[2])  # the reference's np.arange, float quirks included


def _zoom_blur(x, c, g, preset):
    trim = _STYLE[preset]["zoom_trim"]
    factors = _zoom_factors(c)
    out = torch.zeros_like(x)
    for z in factors:
        out += _clipped_zoom(x, float(z), trim)
    return (x + out) / (len(factors) + 1)


def _snow(x, c, g, preset):
    n, ch, h, w = x.shape
    layer = _randn((n, 1, h, w), g, x.device) * c[1] + c[0]
    layer = _clipped_zoom(layer, float(c[2]), _STYLE[preset]["zoom_trim"])
    layer = torch.where(layer < c[3], torch.zeros_like(layer), layer).clamp(0, 1)
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


def _fog(x, c, g, preset):
    n, ch, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()  # next power of two
    fog = plasma_fractal(n, size, c[1], g, x.device)[:, None, :h, :w]
    max_val = x.flatten(1).amax(1).view(-1, 1, 1, 1)
    return (x + c[0] * fog) * max_val / (max_val + c[0])


def _brightness(x, c, g, preset):
    if x.shape[1] == 1:
        return x + c
    # Raising V in HSV with H and S fixed scales the pixel by v'/v (black becomes grey v').
    v = x.amax(1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    return torch.where(v > 0, x * (v_new / v.clamp_min(1e-12)), v_new.expand_as(x))


def _saturate(x, c, g, preset):
    hsv = rgb_to_hsv(_to_rgb(x))
    hsv[:, 1] = (hsv[:, 1] * c[0] + c[1]).clamp(0, 1)
    return _from_rgb(hsv_to_rgb(hsv), x.shape[1])


def _contrast(x, c, g, preset):
    mean = x.mean((2, 3), keepdim=True)
    return (x - mean) * c + mean


def _jpeg(x, c, g, preset):
    import warnings

    from torchvision.io import decode_jpeg, encode_jpeg

    device = x.device
    u8 = torch.round(x.clamp(0, 1) * 255).to(torch.uint8).cpu()
    with warnings.catch_warnings():  # torchvision 0.29 announces a move of its codecs to torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = decode_jpeg(encode_jpeg(list(u8), quality=int(c)))
    return torch.stack(decoded).to(device=device, dtype=torch.float32) / 255


def _pixelate(x, c, g, preset):
    n, ch, h, w = x.shape
    sh, sw = max(1, int(h * c)), max(1, int(w * c))
    small = _box_resize_axis(_box_resize_axis(x, sh, -2), sw, -1)
    if _STYLE[preset]["pixelate_up"] == "nearest":
        return _take(_take(small, -2, _nearest_index(sh, h, x.device)), -1, _nearest_index(sw, w, x.device))
    return _box_resize_axis(_box_resize_axis(small, h, -2), w, -1)


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
    grid = torch.stack([2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _spatter(x, c, g, preset):
    n, ch, h, w = x.shape
    dev = x.device
    liquid = _randn((n, 1, h, w), g, dev) * c[1] + c[0]
    liquid = _gaussian_blur(liquid, float(c[2]))
    liquid = torch.where(liquid < c[3], torch.zeros_like(liquid), liquid)
    rgb = _to_rgb(x)
    if c[5] == 0:  # water drops: a pale turquoise sheen along embossed ridges inside the blobs
        lq8 = torch.floor(liquid.clamp(0, 1) * 255)
        wet = lq8 > 0
        edge = wet & (F.max_pool2d((~wet).float(), 3, 1, 1) > 0) | \
            (~wet & (F.max_pool2d(wet.float(), 3, 1, 1) > 0))
        dist = torch.full_like(liquid, 20.0)
        reached = edge.clone()
        dist[reached] = 0
        for d in range(1, 20):  # alternate square and cross steps: an octagonal distance up to 20
            if d % 2:
                grown = F.max_pool2d(reached.float(), 3, 1, 1) > 0
            else:
                r = reached.float()
                grown = (r + F.pad(r, (1, 0, 0, 0))[..., :-1] + F.pad(r, (0, 1, 0, 0))[..., 1:] +
                         F.pad(r, (0, 0, 1, 0))[..., :-1, :] + F.pad(r, (0, 0, 0, 1))[..., 1:, :]) > 0
            dist[grown & ~reached] = d
            reached = grown
        dist = torch.floor(_filter2d(dist, torch.full((3, 3), 1 / 9, device=dev)))
        dist = _equalize(dist)
        emboss = torch.tensor([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=torch.float32, device=dev)
        dist = torch.round(_filter2d(dist, emboss)).clamp(0, 255)
        dist = _filter2d(dist, torch.full((3, 3), 1 / 9, device=dev))
        m = lq8 * dist
        m = m / m.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1) * c[4]
        colour = torch.tensor((175 / 255, 238 / 255, 238 / 255), device=dev).view(1, 3, 1, 1)
        out = rgb + m * colour
    else:  # mud
        m = _gaussian_blur((liquid > c[3]).float(), float(c[4]))
        m = torch.where(m < 0.8, torch.zeros_like(m), m)
        colour = torch.tensor((63 / 255, 42 / 255, 20 / 255), device=dev).view(1, 3, 1, 1)
        out = rgb * (1 - m) + colour * m
    return _from_rgb(out.clamp(0, 1), ch)


def _equalize(v: Tensor) -> Tensor:
    """OpenCV equalizeHist of integer images (N, 1, H, W) with values in 0..255, per image."""
    n = v.shape[0]
    vals = v.long().clamp(0, 255).flatten(1)
    hist = torch.zeros(n, 256, device=v.device).scatter_add_(1, vals, torch.ones_like(vals, dtype=torch.float32))
    first = (hist > 0).float().argmax(1)
    total = float(vals.shape[1])
    cdf = hist.cumsum(1)
    first_count = hist.gather(1, first[:, None])
    scale = 255.0 / (total - first_count).clamp_min(1)
    lut = torch.round((cdf - first_count) * scale).clamp(0, 255)
    lut = torch.where(torch.arange(256, device=v.device)[None] <= first[:, None], torch.zeros_like(lut), lut)
    flat_image = (first_count[:, 0] == total)
    out = lut.gather(1, vals)
    out = torch.where(flat_image[:, None], first[:, None].float().expand_as(out), out)
    return out.view_as(v)


_FUNCS: dict[str, Callable] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion_blur_c,
    "zoom_blur": _zoom_blur, "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness,
    "contrast": _contrast, "elastic_transform": _elastic_transform, "pixelate": _pixelate,
    "jpeg_compression": _jpeg, "speckle_noise": _speckle_noise, "gaussian_blur": _gaussian_blur_c,
    "spatter": _spatter, "saturate": _saturate,
}


def corrupt(images: Tensor, name: str, severity: int, *, seed: int | None = None,
            generator: torch.Generator | None = None, preset: str = "auto") -> Tensor:
    """Corrupt a batch: images (N, C, H, W) (or (C, H, W)), C in {1, 3}, float in [0, 1] or uint8.

    Returns the same shape, dtype and device, values in [0, 1] (or 0..255 for uint8). `seed`
    (or an explicit `generator` on the images' device) makes random corruptions reproducible;
    neither: torch's global random state.
    """
    if name not in _FUNCS:
        raise UnknownChoiceError("corruption", name, CORRUPTIONS)
    if severity not in SEVERITIES:
        raise UsageError(f"severity must be one of 1..5, got {severity}")
    single = images.dim() == 3
    x = images[None] if single else images
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UsageError(f"images must be (N, C, H, W) with C = 1 or 3, got {tuple(images.shape)}")
    if x.shape[-1] < 8 or x.shape[-2] < 8:
        raise UsageError(f"images must be at least 8x8 pixels, got {tuple(x.shape[-2:])}")
    dtype = x.dtype
    if dtype == torch.uint8:
        xf = x.float() / 255
    elif x.is_floating_point():
        xf = x.float()
    else:
        raise UsageError(f"images must be float in [0, 1] or uint8, got {dtype}")
    if generator is None and seed is not None:
        generator = torch.Generator(device=xf.device).manual_seed(int(seed))
    p = resolve_preset(preset, xf.shape[-2], xf.shape[-1])
    params = PRESETS[p][name][severity - 1]
    out = _FUNCS[name](xf.clamp(0, 1), params, generator, p).clamp_(0, 1)
    out = torch.round(out * 255).to(torch.uint8) if dtype == torch.uint8 else out.to(dtype)
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

