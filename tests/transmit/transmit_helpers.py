"""Helpers shared by the transmission tests (a small network, its state dict, a timeout runner)."""
from __future__ import annotations

import asyncio

import torch
from torch import nn


class SmallNet(nn.Module):
    """Conv -> BN -> ReLU -> pool -> Linear: weights, biases, BN statistics and an int64 counter."""

    def __init__(self, num_classes: int = 3, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def small_state(seed: int = 0, width: int = 8) -> dict[str, torch.Tensor]:
    """A SmallNet state dict with non-trivial BN statistics (so no tensor is constant by accident)."""
    torch.manual_seed(seed)
    net = SmallNet(width=width)
    with torch.no_grad():
        net.bn.running_mean.normal_()
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.normal_()
        net.bn.num_batches_tracked.fill_(123)
    return {k: v.clone() for k, v in net.state_dict().items()}


def run_async(coro, timeout: float = 60.0):
    """Run a coroutine with a hard timeout so a test can never hang."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
