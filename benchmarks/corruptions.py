"""Speed of cuekit's batched corruptions against the `imagecorruptions` package (CPU).

Times the 15 common corruptions at one severity on a batch of procedural 224x224 RGB images:
cuekit corrupts the whole batch in one call; `imagecorruptions` takes one uint8 image at a time
(its only interface). Prints per-corruption times, the ratio reference / cuekit, their geometric
mean and the ratio of the totals, plus the mean PSNR of both outputs to the clean images (a check
that the two distort alike) and, for deterministic corruptions, the largest per-pixel difference.

The reference is not a dependency: install it into a throwaway folder and pass that folder, e.g.
    python -m pip install --no-deps --target /tmp/imgcorr imagecorruptions scikit-image scipy \
        "setuptools<81" imageio networkx lazy_loader tifffile
    python benchmarks/corruptions.py --reference-path /tmp/imgcorr
It needs two shims on today's stack (see ../shared/specs/reference_packages.md): scikit-image's
gaussian lost `multichannel=` (mapped to channel_axis=-1) and NumPy 2 lost np.float_ (fog uses it;
aliased to np.float64 here so fog can be compared too). Without the package only cuekit is timed.

Each repeat runs every corruption once for both (interleaved); the median over repeats is shown.
By default torch uses one thread, so both sides get one core (the reference is single-threaded
NumPy / SciPy / Pillow code); --threads 0 keeps torch's default.
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

from cuekit.robustness.corruptions import COMMON_CORRUPTIONS, DETERMINISTIC_CORRUPTIONS, corrupt, psnr


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


def load_reference(path: str | None):
    """The imagecorruptions module with the two shims, or None (with a message) when unavailable."""
    if path:
        if not Path(path).is_dir():
            print(f"reference path {path} does not exist: timing cuekit only")
            return None
        sys.path.append(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import imagecorruptions
            import imagecorruptions.corruptions as icc
        except Exception as e:  # noqa: BLE001 - any failure means no reference
            print(f"imagecorruptions is not importable ({type(e).__name__}: {e}); timing cuekit only.\n"
                  "Install it with: python -m pip install --no-deps --target /tmp/imgcorr imagecorruptions "
                  "scikit-image scipy 'setuptools<81' imageio networkx lazy_loader tifffile\n"
                  "and pass --reference-path /tmp/imgcorr")
            return None
    original = icc.gaussian

    def gaussian(*args, multichannel=None, **kw):
        if multichannel:
            kw["channel_axis"] = -1
        return original(*args, **kw)

    icc.gaussian = gaussian
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # fog's plasma_fractal uses the NumPy 1 alias
    return imagecorruptions


def run_reference(ic, images_hwc: list[np.ndarray], name: str, severity: int) -> tuple[float, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out = [ic.corrupt(im, severity=severity, corruption_name=name) for im in images_hwc]
        return time.perf_counter() - t0, np.stack(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--severity", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ref-images", type=int, default=16, help="images the reference corrupts per repeat")
    p.add_argument("--reference-path", default=None, help="folder holding a --target install of imagecorruptions")
    p.add_argument("--corruptions", default=",".join(COMMON_CORRUPTIONS))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: one core each, like the single-threaded reference; "
                   "0 keeps torch's default)")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    names = [c.strip() for c in args.corruptions.split(",") if c.strip()]
    images = procedural_images(args.images, args.size)
    x = images.float() / 255
    ic = load_reference(args.reference_path)
    ref_n = min(args.ref_images, args.images)
    ref_inputs = [im.permute(1, 2, 0).numpy().copy() for im in images[:ref_n]]
    print(f"{args.images} images {args.size}x{args.size}, severity {args.severity}, preset imagenet, "
          f"torch threads {torch.get_num_threads()}, repeats {args.repeats}"
          + (f", reference on {ref_n} images scaled to {args.images}" if ic else ", no reference"))

    ours = {n: [] for n in names}
    ref = {n: [] for n in names}
    ref_out: dict[str, np.ndarray] = {}
    ours_out: dict[str, torch.Tensor] = {}
    for name in names:  # warm-up (kernels, caches)
        corrupt(x[:2], name, args.severity, seed=0, preset="imagenet")
    for r in range(args.repeats):
        for name in names:
            t0 = time.perf_counter()
            out = corrupt(x, name, args.severity, seed=r, preset="imagenet")
            ours[name].append(time.perf_counter() - t0)
            ours_out[name] = out
            if ic is not None:
                try:
                    dt, ro = run_reference(ic, ref_inputs, name, args.severity)
                    ref[name].append(dt * args.images / ref_n)
                    ref_out[name] = ro
                except Exception as e:  # noqa: BLE001 - report and go on
                    print(f"reference {name} failed: {type(e).__name__}: {e}")
        print(f"repeat {r + 1}/{args.repeats} done", flush=True)

    header = f"{'corruption':18s} {'cuekit ms':>10s} {'ref ms':>10s} {'ratio':>7s} {'PSNR ours':>9s} {'PSNR ref':>9s}"
    print("\n" + header + "   max|diff| (deterministic, grey levels)")
    print("-" * len(header))
    ratios, tot_ours, tot_ref = [], 0.0, 0.0
    for name in names:
        t_ours = statistics.median(ours[name]) * 1000
        line = f"{name:18s} {t_ours:10.1f}"
        p_ours = float(psnr(x[:ref_n], ours_out[name][:ref_n]).mean())
        if ref[name]:
            t_ref = statistics.median(ref[name]) * 1000
            ratio = t_ref / t_ours
            ratios.append(ratio)
            tot_ours += t_ours
            tot_ref += t_ref
            ro = torch.from_numpy(ref_out[name]).permute(0, 3, 1, 2).float() / 255
            p_ref = float(psnr(x[:ref_n], ro).mean())
            line += f" {t_ref:10.1f} {ratio:7.1f} {p_ours:9.2f} {p_ref:9.2f}"
            if name in DETERMINISTIC_CORRUPTIONS:
                diff = (ours_out[name][:ref_n] - ro).abs().max().item() * 255
                line += f"   {diff:.2f}"
        else:
            line += f" {'-':>10s} {'-':>7s} {p_ours:9.2f} {'-':>9s}"
        print(line)
    if ratios:
        geo = math.exp(statistics.fmean(math.log(r) for r in ratios))
        print(f"\ngeometric mean of the ratios: {geo:.1f}x over {len(ratios)} corruptions")
        print(f"total: cuekit {tot_ours / 1000:.2f} s, imagecorruptions {tot_ref / 1000:.2f} s "
              f"-> {tot_ref / tot_ours:.1f}x (target >= 5x)")
        print("PSNR columns: mean over the reference's images; random corruptions differ in their draws, "
              "frost in its texture (procedural here, photographs there).")
    else:
        print(f"\ncuekit total {sum(statistics.median(v) for v in ours.values()):.2f} s; "
              "reference missing: no ratios")
    return 0


if __name__ == "__main__":
    sys.exit(main())
