"""Helpers for the robustness tests: natural-looking procedural images."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def natural_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) float in [0, 1]: a smooth colour field, a dozen flat rectangles at random
    places (sharp edges at every alignment) and fine grain."""
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(n, 3, max(2, size // 8), max(2, size // 8), generator=g), size=(size, size),
                      mode="bicubic", align_corners=False)
    x = 0.15 + 0.7 * x.clamp(0, 1)
    for i in range(n):
        for _ in range(12):
            y0, x0 = torch.randint(0, size - 2, (2,), generator=g).tolist()
            h, w = torch.randint(2, max(3, size // 3), (2,), generator=g).tolist()
            x[i, :, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=g)
    x = x + 0.04 * torch.rand(n, 3, size, size, generator=g)
    return x.clamp(0, 1)
