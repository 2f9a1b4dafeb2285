"""Cutout: square patches of the requested size, clipped at the border, filled, per sample."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cuekit.augment.cutout import Cutout, cutout
from cuekit.errors import UsageError


def test_cutout_erases_one_clipped_square_per_sample():
    x = torch.ones(200, 3, 32, 32)
    out = cutout(x, size=16, rng=np.random.default_rng(0))
    erased = out[:, 0] == 0
    assert bool((erased[:, None] == (out == 0)).all())  # same patch on every channel
    rows = erased.any(2).sum(1)
    cols = erased.any(1).sum(1)
    area = erased.flatten(1).sum(1)
    assert bool((area == rows * cols).all())  # a rectangle
    assert int(rows.max()) == 16 and int(cols.max()) == 16
    assert bool(((rows >= 8) & (cols >= 8)).all())  # the centre is inside, so at least half a side survives
    assert float((area == 256).float().mean()) > 0.3  # many patches are not clipped at all
    assert bool((out[~erased[:, None].expand_as(out)] == 1).all())


def test_cutout_fraction_size_fill_holes_and_prob():
    x = torch.ones(64, 1, 20, 40)
    out = cutout(x, size=0.5, rng=1, fill=-2.0)
    erased = out[:, 0] == -2.0
    assert int(erased.any(2).sum(1).max()) == 10  # half of the shorter side
    two = cutout(x, size=4, holes=2, rng=2)
    assert int((two == 0).flatten(1).sum(1).max()) > 16
    none = cutout(x, size=4, prob=0.0, rng=3)
    torch.testing.assert_close(none, x)


def test_cutout_transform_is_seeded_and_returns_soft_targets():
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 4
    a, ta = Cutout(num_classes=4, size=6, seed=5)(x, y)
    b, _ = Cutout(num_classes=4, size=6, seed=5)(x, y)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ta, torch.eye(4)[y])
    _, hard = Cutout(size=6, seed=5)(x, y)
    assert torch.equal(hard, y)
    with pytest.raises(UsageError):
        Cutout(size=0)
    with pytest.raises(UsageError):
        cutout(x, holes=0)
