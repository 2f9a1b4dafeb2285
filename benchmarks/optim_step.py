"""Step time of cuekit's AdamP / SGDP on the parameters of torchvision's resnet50.

Printed as ratios against torch.optim.AdamW(foreach=True) / torch.optim.SGD(foreach=True) and
against the official `adamp` package (dev extra), all timed in this process on the same
parameters and gradients, as the median of interleaved repeats. Targets (issue 3): on the CPU
AdamP <= 1.5x AdamW and SGDP <= 1.5x SGD, i.e. about 2x faster than the official package. On a
CUDA device (used when present, or with --device cuda) the same table is printed, and one
AdamP and one SGDP step are run under torch.cuda.set_sync_debug_mode("error").

    python benchmarks/optim_step.py [--device cpu|cuda] [--repeats 15] [--threads N] [--clock wall|thread]

"fast" is the default path: on the CPU two numba-compiled passes per tensor (numba is in the
`all` extra), "fast, no numba" the same path with grouped torch operations (fused=False), the
one a CPU without numba runs. "faults/step" counts page faults: torch's foreach AdamW/SGD
allocate temporaries that the C allocator sometimes returns to the system between steps, and
then pays again in page faults, which makes their times vary from run to run.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision

from cuekit.optim import SGDP, AdamP

TARGET = 1.5


def _gradients(device: torch.device, batch: int, size: int) -> list[torch.nn.Parameter]:
    """resnet50's parameters with the gradients of one cross-entropy backward on random images."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return list(model.parameters())


def _optimizers(params: list, official) -> dict[str, torch.optim.Optimizer]:
    """Every optimizer timed, with the settings of the official README (decay on every tensor)."""
    opts = {
        "AdamW foreach (torch)": torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, foreach=True),
        "AdamW for-loop (torch)": torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2, foreach=False),
        "AdamP fast (cuekit)": AdamP(params, lr=1e-3, weight_decay=1e-2),
        "AdamP fast, no numba (cuekit)": AdamP(params, lr=1e-3, weight_decay=1e-2, fused=False),
        "AdamP reference (cuekit)": AdamP(params, lr=1e-3, weight_decay=1e-2, foreach=False),
        "SGD foreach (torch)": torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-5, nesterov=True,
                                              foreach=True),
        "SGD for-loop (torch)": torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-5, nesterov=True,
                                               foreach=False),
        "SGDP fast (cuekit)": SGDP(params, lr=0.1, momentum=0.9, weight_decay=1e-5, nesterov=True),
        "SGDP fast, no numba (cuekit)": SGDP(params, lr=0.1, momentum=0.9, weight_decay=1e-5, nesterov=True,
                                             fused=False),
        "SGDP reference (cuekit)": SGDP(params, lr=0.1, momentum=0.9, weight_decay=1e-5, nesterov=True,
                                        foreach=False),
    }
    if official is not None:
        opts["AdamP official (adamp 0.3.0)"] = official.AdamP(params, lr=1e-3, weight_decay=1e-2)
        opts["SGDP official (adamp 0.3.0)"] = official.SGDP(params, lr=0.1, momentum=0.9, weight_decay=1e-5,
                                                           nesterov=True)
    return opts


def _minor_faults() -> int:
    try:
        import resource
    except ImportError:  # not on this platform
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _time_steps(opts: dict, repeats: int, device: torch.device, clock) -> tuple[dict, dict]:
    """Median seconds per step, the optimizers interleaved within each repeat, and the median
    number of page faults per step (fresh memory that the C allocator had given back)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for opt in opts.values():  # warm-up: state allocation, layout caches, compiled kernels
        opt.step()
        opt.step()
    sync()
    times: dict[str, list[float]] = {k: [] for k in opts}
    faults: dict[str, list[int]] = {k: [] for k in opts}
    for _ in range(repeats):
        for name, opt in opts.items():
            sync()
            f0, t0 = _minor_faults(), clock()
            opt.step()
            sync()
            times[name].append(clock() - t0)
            faults[name].append(_minor_faults() - f0)
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: statistics.median(v) for k, v in faults.items()})


def _sync_check(params: list) -> str:
    """Run AdamP and SGDP steps (after a warm-up step) with host synchronisation made an error."""
    out = []
    for name, opt in (("AdamP", AdamP(params, lr=1e-3, weight_decay=1e-2)),
                      ("SGDP", SGDP(params, lr=0.1, momentum=0.9, weight_decay=1e-5, nesterov=True))):
        opt.step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
            out.append(f"{name}: a step ran under set_sync_debug_mode('error') without error")
        except RuntimeError as e:
            out.append(f"{name}: FAILED under set_sync_debug_mode('error'): {e}")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return "\n".join(out)


def main() -> None:
    """Parse flags, time every optimizer, print the table and whether the targets are met."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda when available)")
    ap.add_argument("--repeats", type=int, default=15, help="interleaved timed steps per optimizer")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="wall time, or the CPU time of this thread (steadier on a busy machine; "
                         "only fair with --threads 1)")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        import adamp as official
    except ImportError:
        official = None
        print("the official `adamp` package is not installed (pip install adamp==0.3.0): its rows are left out")

    size, batch = (224, 8) if device.type == "cuda" else (64, 2)
    params = _gradients(device, batch, size)
    n = sum(p.numel() for p in params)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"resnet50: {len(params)} tensors, {n / 1e6:.1f} M parameters; {where}; torch {torch.__version__}; "
          f"median of {args.repeats} interleaved steps, {args.clock} clock")
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        print(f"load average {load:.1f} on {cores} cores" + (
            ": the machine is busy, multi-threaded timings are unreliable (try --threads 1 --clock thread)"
            if load > cores - 0.5 else ""))
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    med, faults = _time_steps(_optimizers(params, official), args.repeats, device, clock)

    adamw, sgd = med["AdamW foreach (torch)"], med["SGD foreach (torch)"]
    off_a, off_s = med.get("AdamP official (adamp 0.3.0)"), med.get("SGDP official (adamp 0.3.0)")
    print(f"\n{'optimizer':32s} {'ms/step':>9s} {'x AdamW/SGD':>12s} {'x official':>11s} {'faults/step':>12s}")
    for name, t in med.items():
        base = sgd if name.startswith("SGD") else adamw
        off = off_s if name.startswith("SGD") else off_a
        rel_off = f"{t / off:11.2f}" if off else f"{'-':>11s}"
        print(f"{name:32s} {t * 1e3:9.2f} {t / base:12.2f} {rel_off} {faults[name]:12.0f}")

    print(f"\ntargets ({device.type}): fast path <= {TARGET}x the torch foreach baseline")
    variants = ["fast", "fast, no numba"] if device.type == "cpu" else ["fast"]
    for opt, base, base_name, off in (("AdamP", adamw, "AdamW", off_a), ("SGDP", sgd, "SGD", off_s)):
        for variant in variants:
            t = med[f"{opt} {variant} (cuekit)"]
            line = (f"  {opt} {variant} / {base_name} foreach = {t / base:.2f}x: "
                    f"{'met' if t / base <= TARGET else 'NOT met'}")
            if off:
                line += f"; {off / t:.2f}x faster than the official {opt}"
            print(line)
    if device.type == "cuda":
        print("\n" + _sync_check(params))


if __name__ == "__main__":
    main()
