"""How fast this machine runs the kind of work the experiments do, against the machine the quick budget was set on.

`cuekit reproduce` times a fixed workload before the areas run (about a second): training steps of a
small BatchNorm CNN at 32 px on one torch thread, the shape of most quick-mode runs. The ratio to the
same workload on the reference machine tells a reader whether a long run means slow code or a slow
machine, and what the quick-mode time would be on the reference machine.
"""
from __future__ import annotations

import statistics
import time

# Median seconds per step of `calibration_workload` on the machine the quick-mode budget was set on
# (this project's 2-core development and CI machine class, AMD EPYC, torch 2.14.1 CPU, quiet), measured
# with `python -m cuekit.report.calibration` on 2026-12-07.
REFERENCE_STEP_S = 0.0236
REFERENCE_MACHINE = "2-core AMD EPYC development machine, torch 2.14.1, quiet (2026-12-07)"


def _network():
    from torch import nn

    layers, chans = [], [3, 16, 32, 64]
    for i in range(3):
        layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False), nn.BatchNorm2d(chans[i + 1]),
                   nn.ReLU(inplace=True)]
        if i < 2:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], 10))


def calibration_workload(steps: int = 10, rounds: int = 5) -> float:
    """Median seconds per training step (batch 64, 32 px, SGD) of a small CNN on one torch thread."""
    import torch

    from cuekit.parallel import torch_threads

    with torch_threads(1):
        gen = torch.Generator().manual_seed(0)
        model = _network()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(64, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (64,), generator=gen)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()

        step()  # warm-up
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def machine_speed() -> dict:
    """{"step_s", "reference_step_s", "relative_speed", "reference_machine"}: relative_speed > 1 is faster
    than the reference machine (None when no reference was recorded)."""
    step = calibration_workload()
    rel = REFERENCE_STEP_S / step if REFERENCE_STEP_S > 0 and step > 0 else None
    return {"step_s": step, "reference_step_s": REFERENCE_STEP_S or None, "relative_speed": rel,
            "reference_machine": REFERENCE_MACHINE}


if __name__ == "__main__":
    print(f"{calibration_workload():.5f} s per step")
