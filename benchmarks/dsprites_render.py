"""Is procedural Color-dSprites fast enough to feed training? Rendering vs ResNet-20 training, images/s.

Same process, same device, same resolution (32 and 64 px): (a) `render()` of a batch of random latents,
(b) a DataLoader batch through `ColorDSprites.__getitems__` (index -> latents -> render -> collate),
(c) a bare forward + backward + SGD step of resnet20 on batches of 128. Repeats are interleaved and
the median is reported. Target: the loader path renders >= 10x as many images per second as training
consumes, so data is never the bottleneck.

    python benchmarks/dsprites_render.py [--repeats 5] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader

from cuekit.data import dsprites as D
from cuekit.io import format_table
from cuekit.models import create_model

TARGET = 10.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, n_images: int, device: torch.device) -> float:
    """Images per second of one call of fn."""
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return n_images / (time.perf_counter() - t)


def bench_resolution(res: int, batch: int, repeats: int, train_steps: int, device: torch.device) -> dict:
    """Median images/s of rendering, loader fetching and resnet20 training at one resolution."""
    g = torch.Generator().manual_seed(res)
    latents = D.index_to_latents(torch.randint(0, D.NUM_IMAGES, (batch * 4,), generator=g))
    latents_dev = latents.to(device)
    dataset = D.ColorDSprites("shape", torch.randint(0, D.NUM_IMAGES, (batch * 4,), generator=g), img_size=res)
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)

    model = create_model("resnet20", num_classes=3).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    x = D.render(latents[:batch], res).to(device)
    y = latents[:batch, 1].to(device)

    def render_batches():
        for i in range(4):
            D.render(latents_dev[i * batch:(i + 1) * batch], res)

    def loader_batches():
        for xb, yb in loader:
            xb.to(device), yb.to(device)

    def train_steps_():
        for _ in range(train_steps):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

    render_batches(), loader_batches(), train_steps_()  # warm-up
    rates = {"render": [], "loader": [], "train": []}
    jobs = [("render", render_batches, 4 * batch), ("loader", loader_batches, 4 * batch),
            ("train", train_steps_, train_steps * batch)]
    for rep in range(repeats):
        for name, fn, n in jobs if rep % 2 == 0 else jobs[::-1]:  # alternate the order: no fixed position bias
            rates[name].append(_timed(fn, n, device))
    return {k: statistics.median(v) for k, v in rates.items()}


def main() -> int:
    """Run the benchmark and print a table of images/s and the rendering-to-training ratios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    rows, met = [], True
    for res in (32, 64):
        steps = 3 if device.type == "cuda" else (2 if res == 32 else 1)
        r = bench_resolution(res, args.batch, args.repeats, steps, device)
        ratio_render, ratio_loader = r["render"] / r["train"], r["loader"] / r["train"]
        met &= ratio_loader >= TARGET
        rows.append([f"{res} px", round(r["render"]), round(r["loader"]), round(r["train"]),
                     f"{ratio_render:.1f}x", f"{ratio_loader:.1f}x"])
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"median of {args.repeats} interleaved repeats")
    print(format_table(["resolution", "render img/s", "loader img/s", "resnet20 train img/s",
                        "render / train", "loader / train"], rows))
    print(f"target: loader >= {TARGET:.0f}x training speed at both resolutions: {'met' if met else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
