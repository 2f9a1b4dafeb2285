"""LabelPooling speed: the weighted sum over map cells vs the original dense-map RoIAlign, and storage size.

Batch of 256 crops, 1,000 classes, top-5 label maps of 15 x 15 (ReLabel's ImageNet setting), on the
CPU. The baseline is the original code's formulation: scatter the top-5 into a zero-filled dense
(B, 1000, 15, 15) map, torchvision roi_align to 1 x 1, softmax. Prints the median time of each
(interleaved repeats), the ratio, and the largest difference between the two targets; then the bytes
stored per image by cuekit's shards and by the original release's one-file-per-image format.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cuekit.relabel.pooling import label_pooling, label_pooling_dense
from cuekit.relabel.storage import LabelMapStore, LabelMapWriter


def make_batch(b: int, k: int, size: int, classes: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, k, size, size, generator=g).sort(dim=1, descending=True).values * 3
    indices = torch.argsort(torch.rand(b * size * size, classes, generator=g), dim=1)[:, :k]
    indices = indices.view(b, size, size, k).permute(0, 3, 1, 2).contiguous()
    x1, y1 = torch.rand(b, generator=g) * 0.7, torch.rand(b, generator=g) * 0.7
    side = 0.08 + torch.rand(b, generator=g) * 0.6
    boxes = torch.stack([x1, y1, (x1 + side).clamp(max=1), (y1 + side).clamp(max=1)], 1)
    flips = torch.rand(b, generator=g) < 0.5
    return scores, indices, boxes, flips


def timed(fn, *args, **kw) -> float:
    t0 = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--map-size", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for both methods (default 1: stable timings on a shared machine; "
                    "0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    b, c, k, s = args.batch, args.classes, args.topk, args.map_size
    scores, indices, boxes, flips = make_batch(b, k, s, c)

    for mode in ("original", "topk"):
        fast = label_pooling(scores, indices, boxes, c, flips, mode=mode)
        dense = label_pooling_dense(scores, indices, boxes, c, flips, mode=mode)
        print(f"mode {mode:8s}: max |weighted sum - dense RoIAlign| = {(fast - dense).abs().max().item():.2e}")

    t_fast, t_dense, t_topk = [], [], []
    for _ in range(2):  # warm-up
        label_pooling(scores, indices, boxes, c, flips, mode="original")
        label_pooling_dense(scores, indices, boxes, c, flips, mode="original")
    for _ in range(args.repeats):
        t_dense.append(timed(label_pooling_dense, scores, indices, boxes, c, flips, mode="original"))
        t_fast.append(timed(label_pooling, scores, indices, boxes, c, flips, mode="original"))
        t_topk.append(timed(label_pooling, scores, indices, boxes, c, flips, mode="topk"))
    md, mf, mt = (statistics.median(t) * 1e3 for t in (t_dense, t_fast, t_topk))
    print(f"batch {b}, {c} classes, top-{k} of {s}x{s}, {torch.get_num_threads()} threads, median of {args.repeats}:")
    print(f"  dense map + roi_align (original): {md:9.2f} ms")
    print(f"  weighted sum, original softmax  : {mf:9.2f} ms   speed-up {md / mf:6.1f}x")
    print(f"  weighted sum, top-k softmax     : {mt:9.2f} ms   speed-up {md / mt:6.1f}x")

    with tempfile.TemporaryDirectory() as tmp:
        n = 256
        sc, ids, _, _ = make_batch(n, k, s, c, seed=1)
        writer = LabelMapWriter(tmp, [f"img{i}" for i in range(n)], num_classes=c, topk=k, map_size=(s, s),
                                shard_size=n)
        writer.write_shard(0, sc, ids)
        ours = LabelMapStore(tmp).bytes_per_image()
        orig_path = Path(tmp) / "one.pt"
        torch.save(torch.stack([sc[0], ids[0].float()]), orig_path)
        orig = orig_path.stat().st_size
    print(f"bytes per image: cuekit shard {ours:.0f} (fp16 + int16), original release format {orig} "
          f"(one fp32 .pt file, before file-system overhead); ratio {orig / ours:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
