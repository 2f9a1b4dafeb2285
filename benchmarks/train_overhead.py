"""Step time of cuekit's training engine against a bare PyTorch loop on the same model and data.

Both loops train resnet20 on the same in-memory 32 px tensors with SGD, batch 128, through a
DataLoader; the ratio engine/bare of the median step time over interleaved repeats is printed
(target <= 1.05). Run: python benchmarks/train_overhead.py [--steps 30] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cuekit.data import DataBundle
from cuekit.models import create_model
from cuekit.train import TrainConfig, train


def bare_loop(data: TensorDataset, steps: int, batch: int, device: torch.device) -> float:
    """Seconds per step of the plainest loop: shuffle, forward, CE, backward, SGD step."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(data, batch_size=batch, shuffle=True, drop_last=True)
    model.train()
    it = iter(loader)
    x, y = next(it)  # warm-up step, not timed
    F.cross_entropy(model(x.to(device)), y.to(device)).backward()
    opt.step()
    opt.zero_grad()
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def engine_loop(data: TensorDataset, steps: int, batch: int, device: torch.device) -> float:
    """Seconds per step of `cuekit.train.train` (one epoch of `steps + 1` steps; the first is warm-up)."""
    n = (steps + 1) * batch
    bundle = DataBundle(train=torch.utils.data.Subset(data, range(n)), val=torch.utils.data.Subset(data, range(2)),
                        num_classes=10, class_names=[str(i) for i in range(10)], img_size=32)
    marks: list[float] = []

    def on_step(step, model, opt, loss):
        marks.append(time.perf_counter())

    cfg = TrainConfig(model="resnet20", epochs=1, batch_size=batch, lr=0.1, opt="sgd", momentum=0.9,
                      weight_decay=5e-4, progress=False, device=str(device), amp="off")
    train(cfg, data=bundle, step_callback=on_step)
    times = [b - a for a, b in zip(marks[:-1], marks[1:])]  # excludes the first (warm-up) step
    return sum(times) / len(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    n = (args.steps + 2) * args.batch
    data = TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
    bare, eng = [], []
    for r in range(args.repeats):
        bare.append(bare_loop(data, args.steps, args.batch, device))
        eng.append(engine_loop(data, args.steps, args.batch, device))
        print(f"repeat {r + 1}: bare {bare[-1] * 1e3:.1f} ms/step, engine {eng[-1] * 1e3:.1f} ms/step")
    ratio = statistics.median(e / b for e, b in zip(eng, bare))
    print(f"device {device}, resnet20, batch {args.batch}, 32 px")
    bare_ms, eng_ms = statistics.median(bare) * 1e3, statistics.median(eng) * 1e3
    print(f"median step time: bare {bare_ms:.1f} ms, engine {eng_ms:.1f} ms")
    print(f"engine / bare ratio: {ratio:.3f}  (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")


if __name__ == "__main__":
    main()
