"""Speed of cuekit's batched corruptions against the `imagecorruptions` package (CPU, one thread).

Times all 19 corruptions at one severity on a batch of 224x224 RGB photos: cuekit corrupts the
whole batch in one call; `imagecorruptions` takes one uint8 image at a time (its only interface).
Both get the same uint8 images and return uint8 images (--dtype float32 times cuekit on floats in
[0, 1] instead). Prints per-corruption times per image, the ratio reference / cuekit and their
geometric mean, the mean absolute change from the clean images of both (ratio cuekit / reference;
random corruptions differ in their draws, so 16 images only show that the two distort alike) and,
for deterministic corruptions, the largest difference from the reference in grey levels with
uint8_rounding="truncate" (the reference's np.uint8).

The photos are 224 px crops of the public-domain / CC0 photographs that scikit-image ships
(astronaut, chelsea, coffee, rocket), read from the reference folder's copy of scikit-image;
without it, procedural images (smooth colour fields, sharp-edged rectangles, grain).

The reference is not a dependency: `make test` installs it into .venv/references (see the
Makefile), or install it by hand into a throwaway folder and pass that folder:
    python -m pip install --no-deps --target /tmp/imgcorr imagecorruptions==1.1.2 scikit-image==0.26.0 \
        scipy==1.17.1 lazy_loader==0.6 setuptools==80.9.0
    python benchmarks/corruptions.py --reference-path /tmp/imgcorr
It needs two shims on today's stack (see ../shared/specs/reference_packages.md): scikit-image's
gaussian lost `multichannel=` (mapped to channel_axis=-1) and NumPy 2 lost np.float_ (fog uses it;
aliased to np.float64 here). Without the package only cuekit is timed.

Each repeat runs every corruption once for both (interleaved); the median over repeats is shown.
torch and OpenCV use one thread, so both sides run on one core (the reference is otherwise
single-threaded NumPy / SciPy / Pillow code). Times are the process's CPU time by default (steady
on a loaded machine; with one thread it is the time the work takes); --clock wall for wall time.
The reference runs on --ref-images images per repeat and its time is scaled to the batch size
(it handles images one by one, so its time is linear in their number).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cuekit.robustness.corruptions import CORRUPTIONS, DETERMINISTIC_CORRUPTIONS, corrupt
from cuekit.robustness.reference import DEFAULT_REFERENCE_DIR, load_imagecorruptions, photo_crops


def procedural_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uint8: smooth colour fields, flat rectangles with sharp edges, fine grain."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, size // 16, size // 16, generator=g), size=(size, size), mode="bicubic",
                      align_corners=False).clamp(0, 1) * 0.7 + 0.15
    for i in range(n):
        for _ in range(20):
            y0, x0 = torch.randint(0, size - 4, (2,), generator=g).tolist()
            h, w = torch.randint(4, size // 3, (2,), generator=g).tolist()
            x[i, :, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=g)
    x = (x + 0.04 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8)


def load_reference(path: Path):
    """The imagecorruptions module with the two shims, or None (with a message) when unavailable."""
    try:
        ic = load_imagecorruptions(path)
    except ImportError as e:
        print(f"{e}; timing cuekit only")
        return None
    import cv2

    cv2.setNumThreads(1)
    return ic


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--severity", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ref-images", type=int, default=16, help="images the reference corrupts per repeat")
    p.add_argument("--reference-path", type=Path, default=DEFAULT_REFERENCE_DIR,
                   help="folder holding a --target install of imagecorruptions (default: %(default)s)")
    p.add_argument("--corruptions", default=",".join(CORRUPTIONS))
    p.add_argument("--dtype", choices=("uint8", "float32"), default="uint8", help="what cuekit is given and returns")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter

    names = [c.strip() for c in args.corruptions.split(",") if c.strip()]
    ic = load_reference(args.reference_path)
    images = photo_crops(args.images, args.size, folder=args.reference_path)
    source = "photo crops"
    if images is None:
        images, source = procedural_images(args.images, args.size), "procedural images"
    x = images if args.dtype == "uint8" else images.float() / 255
    ref_n = min(args.ref_images, args.images)
    ref_inputs = [im.permute(1, 2, 0).numpy().copy() for im in images[:ref_n]]
    print(f"{args.images} {source} {args.size}x{args.size} ({args.dtype}), severity {args.severity}, preset "
          f"imagenet, one thread, {args.clock} time, repeats {args.repeats}"
          + (f", reference on {ref_n} images per repeat" if ic else ", no reference"))

    ours = {n: [] for n in names}
    ref = {n: [] for n in names}
    ref_out: dict[str, np.ndarray] = {}
    ours_out: dict[str, torch.Tensor] = {}
    for name in names:  # warm-up (kernels, tables, caches)
        corrupt(x[:4], name, args.severity, seed=0, preset="imagenet")
    for r in range(args.repeats):
        for name in names:
            t0 = clock()
            out = corrupt(x, name, args.severity, seed=r, preset="imagenet")
            ours[name].append((clock() - t0) / args.images)
            ours_out[name] = out
            if ic is not None:
                np.random.seed(r)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        t0 = clock()
                        ro = [ic.corrupt(im, severity=args.severity, corruption_name=name) for im in ref_inputs]
                        ref[name].append((clock() - t0) / ref_n)
                        ref_out[name] = np.stack(ro)
                    except Exception as e:  # noqa: BLE001 - report and go on
                        print(f"reference {name} failed: {type(e).__name__}: {e}")
        print(f"repeat {r + 1}/{args.repeats} done", flush=True)

    clean = images[:ref_n].float()
    header = (f"{'corruption':18s} {'cuekit ms/img':>13s} {'ref ms/img':>11s} {'ratio':>7s} "
              f"{'change ours/ref':>15s} {'max|diff| trunc':>15s}")
    print("\n" + header)
    print("-" * len(header))
    ratios = []
    for name in names:
        t_ours = statistics.median(ours[name]) * 1000
        line = f"{name:18s} {t_ours:13.2f}"
        if ref[name]:
            t_ref = statistics.median(ref[name]) * 1000
            ratio = t_ref / t_ours
            ratios.append(ratio)
            ro = torch.from_numpy(ref_out[name]).permute(0, 3, 1, 2).float()
            o = ours_out[name][:ref_n].float() * (1 if args.dtype == "uint8" else 255)
            change = float((o - clean).abs().mean()) / max(float((ro - clean).abs().mean()), 1e-12)
            line += f" {t_ref:11.2f} {ratio:7.2f} {change:15.3f}"
            if name in DETERMINISTIC_CORRUPTIONS:
                parity = corrupt(images[:ref_n], name, args.severity, preset="imagenet", uint8_rounding="truncate")
                line += f" {(parity.float() - ro).abs().max().item():15.0f}"
        print(line)
    if ratios:
        geo = math.exp(statistics.fmean(math.log(r) for r in ratios))
        print(f"\ngeometric mean of the ratios: {geo:.2f}x over {len(ratios)} corruptions "
              f"(slowest {min(ratios):.2f}x; targets: every ratio >= 1, geometric mean >= 5)")
    else:
        print(f"\ncuekit total {sum(statistics.median(v) for v in ours.values()) * 1000:.1f} ms per image; "
              "reference missing: no ratios")
    return 0


if __name__ == "__main__":
    sys.exit(main())
