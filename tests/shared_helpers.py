"""Helpers shared by the tests of the shared machinery: small datasets and a BatchNorm-free model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import TensorDataset

from cuekit.data import DataBundle


def make_blobs_bundle(n_train: int = 256, n_val: int = 64, size: int = 8, seed: int = 0) -> DataBundle:
    """Two classes of small images that differ in mean brightness: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_val
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 3, size, size, generator=g) * 0.5 + (y.float() * 2 - 1)[:, None, None, None] * 0.3
    return DataBundle(train=TensorDataset(x[:n_train], y[:n_train]), val=TensorDataset(x[n_train:], y[n_train:]),
                      num_classes=2, class_names=["dark", "bright"], in_chans=3, img_size=size)


class TinyNoBN(nn.Module):
    """Conv -> ReLU -> pool -> Linear, without BatchNorm (so sharded batches give equal gradients)."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def write_image_folder(root, classes=("circle", "square"), per_class=12, size=20, seed=0):
    """A tiny class-per-folder tree: bright disc vs dark square images."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = (rng.random((size, size, 3)) * 60).astype(np.uint8)
            yy, xx = np.mgrid[:size, :size]
            if c == 0:
                img[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2] = 230
            else:
                img[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 120
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One torch thread per test: tiny networks run fastest so, and steadily on a shared, busy machine.
    Autouse wherever a conftest imports it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
