"""Learning-rate schedules as a factor of the base rate per optimizer step."""
from __future__ import annotations

import math


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, schedule: str = "cosine",
              min_factor: float = 0.0) -> float:
    """Linear warm-up from ~0 to 1 over `warmup_steps`, then cosine (or constant) down to `min_factor`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
