"""Parity with the `imagecorruptions` package 1.1.2: the deterministic corruptions give its output (to its
uint8 truncation), glass blur and spatter give its output given its random draws, and every random
corruption changes images as much as it does, at every severity.

`make test` installs the reference (pinned, --no-deps) into .venv/references; CUEKIT_IMAGECORRUPTIONS
may name another folder holding a `pip install --target` copy. The tests apply the two shims it needs on
today's stack: scikit-image's gaussian lost `multichannel=` (-> channel_axis=-1), NumPy 2 lost np.float_.
The images are crops of the public-domain / CC0 photographs that the reference's scikit-image ships.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from robustness_helpers import natural_images

from cuekit.robustness.corruptions import (
    CORRUPTIONS,
    DETERMINISTIC_CORRUPTIONS,
    PRESETS,
    _gaussian_blur,
    _spatter_from_draws,
    corrupt,
    glass_shuffle,
)
from cuekit.robustness.reference import DEFAULT_REFERENCE_DIR, load_imagecorruptions
from cuekit.robustness.reference import photo_crops as reference_photo_crops

RANDOM_CORRUPTIONS = [c for c in CORRUPTIONS if c not in DETERMINISTIC_CORRUPTIONS]


@pytest.fixture(scope="module")
def ic():
    """The imagecorruptions package with the two shims, or a skip naming how to install it."""
    try:
        return load_imagecorruptions()
    except ImportError as e:
        pytest.skip(str(e))


def photo_crops(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uint8 crops of the reference's photographs (see cuekit.robustness.reference)."""
    crops = reference_photo_crops(n, size, seed)
    if crops is None:
        pytest.skip(f"scikit-image's photographs are not in {DEFAULT_REFERENCE_DIR}/skimage/data")
    return crops


def run_reference(ic, images: torch.Tensor, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """The reference on uint8 images (N, 3, H, W) -> (N, H, W, 3) uint8, its global NumPy state seeded."""
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.stack([ic.corrupt(im.permute(1, 2, 0).numpy(), severity=severity, corruption_name=name)
                         for im in images])


@pytest.mark.parametrize("name", DETERMINISTIC_CORRUPTIONS)
def test_deterministic_corruptions_match_imagecorruptions(ic, name):
    x = photo_crops(2, 224, seed=1)
    for severity in range(1, 6):
        ref = run_reference(ic, x, name, severity).astype(np.int16)
        # float images: the same function, to the reference's truncation to uint8
        ours = corrupt(x.float() / 255, name, severity, preset="imagenet").permute(0, 2, 3, 1).double().numpy() * 255
        diff = np.abs(ours - ref)
        assert diff.max() <= 1.0 + 1e-3, f"{name} severity {severity}: max |diff| {diff.max():.3f} grey levels"
        assert diff.mean() < 0.6
        # uint8 images: truncated as the reference truncates, the same bytes but where both sides compute a
        # whole number up to float rounding (exactly for pixelate and JPEG, computed in integers as Pillow)
        rounded = corrupt(x, name, severity, preset="imagenet").permute(0, 2, 3, 1).numpy().astype(np.int16)
        truncated = corrupt(x, name, severity, preset="imagenet", uint8_rounding="truncate")
        off = np.abs(truncated.permute(0, 2, 3, 1).numpy().astype(np.int16) - ref)
        assert off.max() <= 1, f"{name} severity {severity}: truncated uint8 off by {off.max()}"
        if name in ("pixelate", "jpeg_compression", "contrast"):
            assert off.max() == 0, f"{name} severity {severity}: {(off > 0).mean():.2%} of values differ"
        else:  # closer than rounding; brightness and saturate leave the most (HSV in float32, not float64)
            assert off.mean() < np.abs(rounded - ref).mean(), f"{name} severity {severity}"
            assert (off > 0).mean() < 0.2, f"{name} severity {severity}: {(off > 0).mean():.2%} of values differ"


def test_glass_shuffle_equals_the_reference_loop_given_its_random_draws(ic):
    from PIL import Image

    size = 40
    x = (natural_images(1, size, seed=2) * 255).round().to(torch.uint8)
    for severity in (1, 3, 5):
        sigma, delta, iterations = PRESETS["imagenet"]["glass_blur"][severity - 1]
        np.random.seed(severity)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = np.asarray(ic.corruptions.glass_blur(Image.fromarray(x[0].permute(1, 2, 0).numpy()), severity))
        np.random.seed(severity)  # replay the reference's draws, one (dx, dy) per visited pixel
        inner = size - 2 * delta
        y = torch.floor(_gaussian_blur(x.float() / 255, sigma).clamp(0, 1) * 255) / 255
        for _ in range(iterations):
            offsets = np.array([np.random.randint(-delta, delta, size=(2,)) for _ in range(inner * inner)])
            y = glass_shuffle(y, torch.from_numpy(offsets).view(1, inner, inner, 2), delta)
        ours = _gaussian_blur(y, sigma).clamp(0, 1)[0].permute(1, 2, 0).double().numpy() * 255
        assert np.abs(ours - ref).max() < 0.01


def test_spatter_equals_the_reference_given_its_random_draws(ic):
    from PIL import Image

    x = photo_crops(2, 224, seed=3)
    for severity in range(1, 6):
        params = PRESETS["imagenet"]["spatter"][severity - 1]
        for i, image in enumerate(x):
            np.random.seed(10 * severity + i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = np.uint8(ic.corruptions.spatter(Image.fromarray(image.permute(1, 2, 0).numpy()), severity))
            np.random.seed(10 * severity + i)  # the same draws: normal(loc, scale) is loc + scale * standard normal
            draws = torch.from_numpy(np.random.standard_normal(size=image.shape[1:]))[None, None]
            ours = _spatter_from_draws(image[None].float() / 255, draws, params)
            ours = torch.floor(ours[0].permute(1, 2, 0) * 255).numpy().astype(np.int16)
            off = np.abs(ours - ref.astype(np.int16))
            if params[5] == 0:  # water drops: OpenCV's steps, each reproduced exactly
                assert off.max() == 0, f"severity {severity}: {(off > 0).mean():.3%} of values differ"
            else:  # mud: float32 rounding where the reference mixes float32 and float64
                assert off.max() <= 1 and (off > 0).mean() < 1e-3, f"severity {severity}"


# Image size and number of images per corruption: enough draws that the reference's mean change is stable
# (frost picks one of five photographs per image, spatter's drops are few at low severities); glass blur runs
# the reference's per-pixel Python loop, so it gets few, small images (its change varies little).
MEAN_CHANGE_DRAWS = {"glass_blur": (64, 4), "frost": (128, 96), "spatter": (224, 64), "fog": (128, 48)}


@pytest.mark.parametrize("name", RANDOM_CORRUPTIONS)
def test_random_corruptions_change_images_as_much_as_imagecorruptions(ic, name):
    size, n = MEAN_CHANGE_DRAWS.get(name, (128, 16))
    x = photo_crops(n, size, seed=4)
    ratios = []
    for severity in range(1, 6):
        ref = run_reference(ic, x, name, severity, seed=severity).astype(np.float64)
        ref_change = np.abs(ref - x.permute(0, 2, 3, 1).numpy()).mean()
        ours = corrupt(x, name, severity, seed=severity, preset="imagenet", uint8_rounding="truncate")
        ratios.append(float((ours.float() - x.float()).abs().mean()) / ref_change)
    assert all(abs(r - 1) <= 0.1 for r in ratios), f"{name}: mean change / reference's, severities 1-5: " + \
        ", ".join(f"{r:.3f}" for r in ratios)
