"""Small networks and a training loop shared by the AdamP / SGDP tests."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class MixedNet(nn.Module):
    """Conv->BN (channel-wise invariant), bias-free Linear->LayerNorm (layer-wise invariant),
    a Linear with bias (not invariant) and a classifier."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.proj = nn.Linear(8 * 4 * 4, 16, bias=False)
        self.ln = nn.LayerNorm(16)
        self.hidden = nn.Linear(16, 16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = F.adaptive_avg_pool2d(x, 4).flatten(1)
        x = F.relu(self.ln(self.proj(x)))
        return self.fc(F.relu(self.hidden(x)))


# What the official code decides for MixedNet's tensors (spec section 1.1, probe table).
EXPECTED_KINDS = {"conv.weight": "channel", "proj.weight": "layer", "hidden.weight": "none", "fc.weight": "none"}


def make_net(seed: int = 0, dtype: torch.dtype = torch.float32, channels_last: bool = False) -> MixedNet:
    """A MixedNet with seeded weights."""
    torch.manual_seed(seed)
    net = MixedNet().to(dtype)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net


def train_steps(net: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 1,
                channels_last: bool = False, after_step: Callable[[int], None] | None = None) -> list[float]:
    """`steps` optimizer steps on seeded random batches; returns the losses."""
    g = torch.Generator().manual_seed(seed)
    dtype = next(net.parameters()).dtype
    losses = []
    for i in range(steps):
        x = torch.randn(16, 3, 8, 8, generator=g).to(dtype)
        y = torch.randint(0, 5, (16,), generator=g)
        if channels_last:
            x = x.to(memory_format=torch.channels_last)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if after_step is not None:
            after_step(i)
    return losses


def max_relative_error(a: nn.Module, b: nn.Module) -> float:
    """Largest per-tensor ||a - b|| / ||b|| over the parameters of two equal networks."""
    errs = [((pa - pb).norm() / pb.norm().clamp_min(1e-30)).item()
            for pa, pb in zip(a.parameters(), b.parameters(), strict=True)]
    return max(errs)
