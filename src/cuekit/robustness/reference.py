"""The `imagecorruptions` package (1.1.2) as a reference for parity tests and benchmarks: never a dependency.

`make test` installs it pinned, with --no-deps, into `<venv>/references` (see the Makefile), so that its old
requirements never enter the project's environment. On today's stack it needs two shims, applied here:
scikit-image's `gaussian` lost `multichannel=` (mapped to `channel_axis=-1`) and NumPy 2 lost `np.float_`
(fog's plasma fractal uses it; aliased to `np.float64`). The photographs are the public-domain / CC0 ones
that the reference's scikit-image ships.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

DEFAULT_REFERENCE_DIR = Path(os.environ.get("CUEKIT_IMAGECORRUPTIONS", Path(sys.prefix) / "references"))
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")  # public domain / CC0 (scikit-image)


def load_imagecorruptions(folder: Path = DEFAULT_REFERENCE_DIR) -> ModuleType:
    """The imagecorruptions module (from `folder` when it holds a --target install) with the two shims.

    Raises ImportError (naming the cause) when it cannot be imported.
    """
    folder = Path(folder)
    if folder.is_dir() and str(folder) not in sys.path:
        sys.path.append(str(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import imagecorruptions
            import imagecorruptions.corruptions as icc
        except Exception as e:  # noqa: BLE001 - any failure to import means: no reference here
            raise ImportError(f"imagecorruptions is not importable from {folder} ({type(e).__name__}: {e}); "
                              "`make test` installs it there, or set CUEKIT_IMAGECORRUPTIONS to a "
                              "`pip install --no-deps --target` folder") from None
    if not getattr(icc, "_cuekit_wrapped", False):
        original = icc.gaussian

        def gaussian(*args, multichannel=None, **kw):
            if multichannel:
                kw["channel_axis"] = -1
            return original(*args, **kw)

        icc.gaussian, icc._cuekit_wrapped = gaussian, True
    if not hasattr(np, "float_"):
        np.float_ = np.float64
    return imagecorruptions


def photo_crops(n: int, size: int, seed: int = 0, folder: Path = DEFAULT_REFERENCE_DIR) -> torch.Tensor | None:
    """(n, 3, size, size) uint8 crops of the reference's scikit-image photographs at random scales and places,
    half of them mirrored; None when the photographs are not in `folder`/skimage/data."""
    from PIL import Image

    data = Path(folder) / "skimage" / "data"
    if not all((data / name).is_file() for name in PHOTOS):
        return None
    photos = [Image.open(data / name).convert("RGB") for name in PHOTOS]
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        im = photos[i % len(photos)]
        scale = rng.uniform(size / min(im.size), 1.0)
        w, h = max(size, round(im.size[0] * scale)), max(size, round(im.size[1] * scale))
        resized = im.resize((w, h), Image.BILINEAR)
        x0, y0 = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
        a = np.asarray(resized.crop((x0, y0, x0 + size, y0 + size)))
        crops.append(a[:, ::-1] if rng.random() < 0.5 else a)
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
