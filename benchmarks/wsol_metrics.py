"""MaxBoxAccV2 + PxAP over 500 CAM-like maps of 224x224 at 1,000 thresholds: cuekit vs the
contour-based reference protocol (OpenCV findContours per threshold, tests/wsol/wsol_reference.py).

The maps are split into chunks; each chunk is timed with both implementations back to back
(interleaved), and the ratio is the median over chunks. Results must be identical.
Usage: python benchmarks/wsol_metrics.py [--maps 500] [--size 224] [--chunks 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "wsol"))


def cam_like_maps(n: int, size: int, seed: int = 0):
    """Realistic score maps (bicubic-upsampled 14x14 activations with 1-3 peaks, min-max
    normalized), GT boxes around the peaks and GT masks with an ignore band."""
    import cv2

    rng = np.random.default_rng(seed)
    low = 14
    yy, xx = np.mgrid[:low, :low]
    maps, boxes, masks = [], [], []
    for _ in range(n):
        act = 0.6 * rng.normal(size=(low, low))
        peaks = []
        for _ in range(rng.integers(1, 4)):
            cy, cx, s = rng.uniform(2, low - 2), rng.uniform(2, low - 2), rng.uniform(1.5, 8)
            act += rng.uniform(1.5, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / s)
            peaks.append((cy, cx, np.sqrt(s)))
        m = cv2.resize(act, (size, size), interpolation=cv2.INTER_CUBIC)
        m -= m.min()
        m /= m.max()
        maps.append(m)
        scale = size / low
        b = []
        for cy, cx, r in peaks:
            half = r * scale * rng.uniform(0.8, 1.6)
            b.append([max(0, int(cx * scale - half)), max(0, int(cy * scale - half)),
                      min(size - 1, int(cx * scale + half)), min(size - 1, int(cy * scale + half))])
        boxes.append(np.asarray(b))
        mask = (m > rng.uniform(0.4, 0.6)).astype(np.uint8)
        edge = (m > 0.3) & (mask == 0)
        mask[edge & (rng.random(m.shape) < 0.5)] = 255
        masks.append(mask)
    return np.stack(maps), boxes, np.stack(masks)


def ours(maps, boxes, masks, threads):
    from cuekit.wsol import BoxEvaluator, MaskEvaluator

    box = BoxEvaluator((30, 50, 70), multi_contour=True)
    from cuekit.wsol.metrics import box_ious

    box.add_ious(box_ious(maps, boxes, num_threads=threads)["multi"])
    mask = MaskEvaluator()
    mask.accumulate(maps, masks)
    return box.num_correct, mask.hist_true, mask.hist_false


def reference(maps, boxes, masks):
    from wsol_reference import reference_box_ious

    thresholds = list(np.arange(0, 1, 0.001))
    edges = np.append(thresholds, [1.0, 2.0, 3.0])
    num_correct = {d: np.zeros(len(thresholds), np.int64) for d in (30, 50, 70)}
    hist_true = np.zeros(len(edges) - 1, np.int64)
    hist_false = np.zeros(len(edges) - 1, np.int64)
    for m, b, g in zip(maps, boxes, masks):
        best = reference_box_ious(m, b, thresholds, multi_contour=True)
        for d in num_correct:
            num_correct[d][np.where(best >= d / 100)[0]] += 1
        hist_true += np.histogram(m[g == 1], bins=edges)[0]
        hist_false += np.histogram(m[g == 0], bins=edges)[0]
    return num_correct, hist_true, hist_false


def summarize(num_correct, hist_true, hist_false, n):
    """MaxBoxAccV2 and PxAP from the accumulated counts (one code path for both sides)."""
    from cuekit.wsol import MaskEvaluator

    v2 = float(np.mean([(num_correct[d] * 100.0 / n).max() for d in (30, 50, 70)]))
    ev = MaskEvaluator()
    ev.hist_true, ev.hist_false = hist_true, hist_false
    return v2, ev.compute()["pxap"]


def cold_compile_seconds() -> float:
    """First call in a fresh process with an empty numba cache (the one-time JIT cost)."""
    code = ("import time, numpy as np; t = time.perf_counter(); from cuekit.wsol.metrics import box_ious; "
            "box_ious(np.random.rand(1, 16, 16), [np.array([[1, 1, 8, 8]])], largest_contour=True, num_threads=1); "
            "print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=tmp)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", type=int, default=500)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--chunks", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="numba threads for cuekit (1: single core, like the reference)")
    ap.add_argument("--cold", action="store_true", help="also measure the one-time compile cost (fresh cache)")
    args = ap.parse_args()

    maps, boxes, masks = cam_like_maps(args.maps, args.size)
    ours(maps[:2], boxes[:2], masks[:2], args.threads)  # load the compiled kernels (cached on disk)
    chunks = np.array_split(np.arange(args.maps), args.chunks)
    t_ours, t_ref, c_ours, c_ref = [], [], [], []
    acc_ours = acc_ref = None
    for idx in chunks:
        sub = (maps[idx], [boxes[i] for i in idx], masks[idx])
        t0, c0 = time.perf_counter(), time.process_time()
        r_ours = ours(*sub, args.threads)
        t1, c1 = time.perf_counter(), time.process_time()
        r_ref = reference(*sub)
        t2, c2 = time.perf_counter(), time.process_time()
        t_ours.append(t1 - t0)
        t_ref.append(t2 - t1)
        c_ours.append(c1 - c0)
        c_ref.append(c2 - c1)
        acc_ours = r_ours if acc_ours is None else (
            {d: acc_ours[0][d] + r_ours[0][d] for d in r_ours[0]}, acc_ours[1] + r_ours[1], acc_ours[2] + r_ours[2])
        acc_ref = r_ref if acc_ref is None else (
            {d: acc_ref[0][d] + r_ref[0][d] for d in r_ref[0]}, acc_ref[1] + r_ref[1], acc_ref[2] + r_ref[2])
    identical = (all(np.array_equal(acc_ours[0][d], acc_ref[0][d]) for d in (30, 50, 70))
                 and np.array_equal(acc_ours[1], acc_ref[1]) and np.array_equal(acc_ours[2], acc_ref[2]))
    v2_o, px_o = summarize(*acc_ours, args.maps)
    v2_r, px_r = summarize(*acc_ref, args.maps)
    ratios = [r / o for r, o in zip(t_ref, t_ours)]
    print(f"{args.maps} maps of {args.size}x{args.size}, 1,000 thresholds, MaxBoxAccV2 (IoU 30/50/70) + PxAP")
    print(f"  reference (cv2.findContours per threshold): {sum(t_ref):8.2f} s  "
          f"({1000 * sum(t_ref) / args.maps:.1f} ms/map)")
    print(f"  cuekit ({args.threads} thread{'s' if args.threads > 1 else ''}):"
          f"{'':20s}{sum(t_ours):8.2f} s  ({1000 * sum(t_ours) / args.maps:.2f} ms/map)")
    cpu_ratios = [r / o for r, o in zip(c_ref, c_ours)]
    print(f"  speed-up (wall clock): median {statistics.median(ratios):.1f}x over {len(ratios)} interleaved chunks "
          f"(min {min(ratios):.1f}x, max {max(ratios):.1f}x)")
    print(f"  speed-up (CPU time of this process): median {statistics.median(cpu_ratios):.1f}x "
          f"(min {min(cpu_ratios):.1f}x, max {max(cpu_ratios):.1f}x)")
    print(f"  MaxBoxAccV2 ours {v2_o:.4f} / reference {v2_r:.4f};  PxAP ours {px_o:.4f} / reference {px_r:.4f}")
    print(f"  identical per-threshold counts and histograms: {identical}")
    if args.cold:
        print(f"  one-time JIT compile (fresh numba cache): {cold_compile_seconds():.1f} s")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
