"""Step time of cuekit's AdamP / SGDP on the parameters of torchvision's resnet50.

Printed as ratios against torch's fastest baselines, `torch.optim.AdamW(fused=True)` and
`torch.optim.SGD(fused=True)`, against their foreach flavours and against the official `adamp`
package (dev extra), all timed in this process on the same parameters and gradients, as the median
of interleaved repeats. Targets (issue 21): on the CPU, AdamP <= 1.2x fused AdamW and SGDP <= 1.2x
fused SGD: the projection's statistics cost one extra read of each row at most. On a CUDA device
(used when present, or with --device cuda) the same table is printed, and one AdamP and one SGDP
step are run under torch.cuda.set_sync_debug_mode("error").

    python benchmarks/optim_step.py [--device cpu|cuda] [--repeats 15] [--threads N] [--clock wall|thread]

The issue's numbers are for one thread: `--threads 1 --clock thread` (the CPU time of the timing
thread, steadier than wall time on a busy machine). "fast" is the default path: on the CPU one
numba-compiled pass per tensor (numba is in the `all` extra); "fast, no numba" the same rule with
grouped torch operations (fused=False), the path of a CPU without numba. "faults/step" counts page
faults: torch's foreach AdamW/SGD allocate temporaries that the C allocator sometimes returns to
the system between steps, and then pays again in page faults, which makes their times vary.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torchvision

from cuekit.optim import SGDP, AdamP

TARGET = 1.2  # x torch's fused baseline, on the CPU


def _gradients(device: torch.device, batch: int, size: int) -> list[torch.nn.Parameter]:
    """resnet50's parameters with the gradients of one cross-entropy backward on random images."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50().to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    return list(model.parameters())


def _optimizers(params: list, official, device: torch.device) -> dict[str, torch.optim.Optimizer]:
    """Every optimizer timed, with the settings of the official README (decay on every tensor)."""
    adamw = dict(lr=1e-3, weight_decay=1e-2)
    sgd = dict(lr=0.1, momentum=0.9, weight_decay=1e-5, nesterov=True)
    # Each cuekit fast path right after its baselines, so that a pair sees the same machine load.
    opts = {
        "AdamW fused (torch)": torch.optim.AdamW(params, **adamw, fused=True),
        "AdamP fast (cuekit)": AdamP(params, **adamw),
        "AdamW foreach (torch)": torch.optim.AdamW(params, **adamw, foreach=True),
        "AdamP fast, no numba (cuekit)": AdamP(params, **adamw, fused=False),
        "AdamP reference (cuekit)": AdamP(params, **adamw, foreach=False),
        "SGD fused (torch)": torch.optim.SGD(params, **sgd, fused=True),
        "SGDP fast (cuekit)": SGDP(params, **sgd),
        "SGD foreach (torch)": torch.optim.SGD(params, **sgd, foreach=True),
        "SGDP fast, no numba (cuekit)": SGDP(params, **sgd, fused=False),
        "SGDP reference (cuekit)": SGDP(params, **sgd, foreach=False),
    }
    if device.type != "cpu":  # `fused` is cuekit's CPU choice only
        del opts["AdamP fast, no numba (cuekit)"], opts["SGDP fast, no numba (cuekit)"]
    if official is not None:
        opts["AdamP official (adamp 0.3.0)"] = official.AdamP(params, **adamw)
        opts["SGDP official (adamp 0.3.0)"] = official.SGDP(params, **sgd)
    return opts


def _minor_faults() -> int:
    try:
        import resource
    except ImportError:  # not on this platform
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _time_steps(opts: dict, repeats: int, device: torch.device, clock) -> tuple[dict, dict, dict]:
    """Seconds per step, the optimizers interleaved within each repeat: (median per optimizer, all
    repeats per optimizer, median number of page faults per step: fresh memory that the C
    allocator had given back)."""
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
    return ({k: statistics.median(v) for k, v in times.items()}, times,
            {k: statistics.median(v) for k, v in faults.items()})


def _paired_ratio(times: dict, a: str, b: str) -> tuple[float, float, float]:
    """Median and quartiles over repeats of time(a) / time(b) within the same repeat."""
    ratios = [ta / tb for ta, tb in zip(times[a], times[b])]
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return median, q1, q3


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
    med, times, faults = _time_steps(_optimizers(params, official, device), args.repeats, device, clock)

    def baselines(name: str) -> tuple[float, float, float | None]:
        family = "SGD" if name.startswith("SGD") else "Adam"
        fused, foreach = (("SGD fused (torch)", "SGD foreach (torch)") if family == "SGD" else
                          ("AdamW fused (torch)", "AdamW foreach (torch)"))
        official_name = "SGDP official (adamp 0.3.0)" if family == "SGD" else "AdamP official (adamp 0.3.0)"
        return med[fused], med[foreach], med.get(official_name)

    print(f"\n{'optimizer':32s} {'ms/step':>9s} {'x fused':>8s} {'x foreach':>10s} {'x official':>11s} "
          f"{'faults/step':>12s}")
    for name, t in med.items():
        fused, foreach, off = baselines(name)
        rel_off = f"{t / off:11.2f}" if off else f"{'-':>11s}"
        print(f"{name:32s} {t * 1e3:9.2f} {t / fused:8.2f} {t / foreach:10.2f} {rel_off} {faults[name]:12.0f}")

    print(f"\ntarget ({device.type}): the fast path <= {TARGET}x torch's fused optimizer"
          + ("" if device.type == "cpu" else " (set for the CPU; informative here)")
          + "; ratios: median over repeats of the per-repeat ratio [quartiles]")
    variants = ["fast", "fast, no numba"] if device.type == "cpu" else ["fast"]
    for opt, base_name in (("AdamP", "AdamW"), ("SGDP", "SGD")):
        for variant in variants:
            name = f"{opt} {variant} (cuekit)"
            fused, q1, q3 = _paired_ratio(times, name, f"{base_name} fused (torch)")
            foreach, f1, f3 = _paired_ratio(times, name, f"{base_name} foreach (torch)")
            verdict = "met" if fused <= TARGET else "NOT met"
            line = (f"  {opt} {variant}: {fused:.2f}x [{q1:.2f}, {q3:.2f}] {base_name} fused ({verdict}), "
                    f"{foreach:.2f}x [{f1:.2f}, {f3:.2f}] {base_name} foreach")
            off = baselines(name)[2]
            if off:
                line += f"; {off / med[name]:.2f}x faster than the official {opt}"
            print(line)
    if device.type == "cuda":
        print("\n" + _sync_check(params))


if __name__ == "__main__":
    main()
