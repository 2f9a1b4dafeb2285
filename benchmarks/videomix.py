"""Time VideoMix adds to a training step of the small 3D CNN, as a fraction of the plain step.

One model (`video_cnn_small`), a pool of random clip batches (B, 3, T, H, W) on the device; a plain
step (forward, soft-target CE, backward, SGD) is timed against the same step preceded by each video
mixer (VideoMix spatial / temporal / spatio-temporal, video Mixup, frame-wise CutMix), in interleaved
rounds (order shuffled each round). Printed per transform: median step time, the end-to-end overhead
(mixed step / plain step - 1, noisy on a shared CPU) and the mixer's own time measured inside the
step as a fraction of the plain step (the precise number; target <= 0.02 for VideoMix).
Run: python benchmarks/videomix.py [--batch 16 --frames 8 --size 32 --mode elem --copy --threads 1]
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from cuekit.augment import FrameCutMix, VideoMix, VideoMixup, soft_target_cross_entropy
from cuekit.models import create_model


def time_steps(model, opt, batches, num_classes, mixer, steps: int, device: torch.device) -> tuple[float, float]:
    """-> (seconds per training step, seconds of it spent in `mixer`); None: no mixing."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    sync()
    t0 = time.perf_counter()
    in_mixer = 0.0
    for i in range(steps):
        x, y = batches[i % len(batches)]
        if mixer is None:
            xb, target = x, torch.nn.functional.one_hot(y, num_classes).float()
        else:
            sync()
            t1 = time.perf_counter()
            xb, target = mixer(x, y)
            sync()
            in_mixer += time.perf_counter() - t1
        loss = soft_target_cross_entropy(model(xb), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync()
    return (time.perf_counter() - t0) / steps, in_mixer / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="steps per timing")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    ap.add_argument("--mode", default="batch", choices=["batch", "pair", "elem"],
                    help="mixing mode: batch (one cuboid per batch, what --reg uses) or per pair / clip")
    ap.add_argument("--copy", action="store_true",
                    help="mixers copy the batch (the library default); without it they paste in place, as "
                    "`cuekit train --reg` does (the engine owns each batch)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    k = 10
    torch.manual_seed(0)
    model = create_model("video_cnn_small", num_classes=k).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = [(torch.rand(args.batch, 3, args.frames, args.size, args.size, device=device),
                torch.randint(0, k, (args.batch,), device=device)) for _ in range(4)]
    x = batches[0][0]
    mixers = {"plain": None}
    for v in ("spatial", "temporal", "spatiotemporal"):
        mixers[f"videomix-{v}"] = VideoMix(k, variant=v, mode=args.mode, seed=0, inplace=not args.copy)
    mixers["video-mixup"] = VideoMixup(k, mode=args.mode, seed=0)
    mixers["frame-cutmix"] = FrameCutMix(k, mode=args.mode, seed=0)
    for mixer in mixers.values():  # warm-up
        time_steps(model, opt, batches, k, mixer, 2, device)
    times: dict[str, list[float]] = {name: [] for name in mixers}
    mix_times: dict[str, list[float]] = {name: [] for name in mixers}
    order = list(mixers)
    shuffle = random.Random(0)
    for _ in range(args.rounds):
        shuffle.shuffle(order)
        for name in order:
            step, mixing = time_steps(model, opt, batches, k, mixers[name], args.steps, device)
            times[name].append(step)
            mix_times[name].append(mixing)
    plain = statistics.median(times["plain"])
    print(f"device {device}, batch {tuple(x.shape)}, mode {args.mode}, {args.rounds} rounds x {args.steps} steps, "
          f"{'copying' if args.copy else 'in-place'} VideoMix, {torch.get_num_threads()} threads")
    print(f"{'transform':<24}{'ms/step':>10}{'end-to-end':>12}{'mixer ms':>10}{'mixer/step':>12}")
    for name, ts in times.items():
        med, mix = statistics.median(ts), statistics.median(mix_times[name])
        print(f"{name:<24}{med * 1e3:>10.2f}{med / plain - 1:>+12.2%}{mix * 1e3:>10.3f}{mix / plain:>12.2%}")
    worst = max(statistics.median(mix_times[n]) / plain for n in times if n.startswith("videomix"))
    print(f"VideoMix time (worst variant): {worst:.2%} of a plain training step (target <= 2%)")


if __name__ == "__main__":
    main()
