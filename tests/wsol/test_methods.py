"""WSOL training methods: HaS, CutMix, the method factory, training through the shared engine."""
from __future__ import annotations

import pytest
import torch

from cuekit.augment.mix import CutMix
from cuekit.errors import UnknownChoiceError
from cuekit.wsol.methods import HideAndSeek, cutmix_transform, make_batch_transform, model_kwargs_for


def test_hide_and_seek_hides_whole_grid_cells_at_the_drop_rate():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 24, 40) + 1.0  # never 0 before hiding; not square
    y = torch.arange(64)
    out, y2 = HideAndSeek(grid_size=8, drop_rate=0.3, generator=g)(x, y)
    assert torch.equal(y2, y)
    hidden = out == 0
    cells = hidden.reshape(64, 3, 3, 8, 5, 8)
    per_cell = cells.float().mean(dim=(1, 3, 5))  # (64, 3, 5): 0 or 1 for every cell
    assert torch.all((per_cell == 0) | (per_cell == 1))
    assert abs(per_cell.mean().item() - 0.3) < 0.05
    assert torch.equal(out[~hidden], x[~hidden])


def test_hide_and_seek_grid_not_dividing_the_image():
    x = torch.ones(4, 1, 10, 10)
    out, _ = HideAndSeek(grid_size=4, drop_rate=1.0)(x, torch.zeros(4))
    assert torch.all(out == 0)


def test_cutmix_targets_match_the_pasted_area():
    n = 8  # one class per image, so every image's own target weight is visible
    x = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, 16, 16).clone()
    y = torch.arange(n)
    for seed in range(5):
        out, soft = cutmix_transform(n, beta=1.0, prob=1.0, seed=seed)(x, y)
        assert torch.allclose(soft.sum(1), torch.ones(n))
        for i in range(n):
            own = (out[i] == i).float().mean().item()  # fraction of the image that is still its own
            assert soft[i, i].item() == pytest.approx(own, abs=1e-6)
            others = out[i][out[i] != i].unique()
            assert len(others) <= 1  # one partner pasted in one box
            if len(others):
                assert soft[i, int(others[0])].item() == pytest.approx(1 - own, abs=1e-6)


def test_cutmix_prob_zero_gives_one_hot():
    x = torch.rand(4, 3, 8, 8)
    out, soft = cutmix_transform(3, prob=0.0)(x, torch.tensor([0, 1, 2, 0]))
    assert torch.equal(out, x) and torch.equal(soft, torch.eye(3)[[0, 1, 2, 0]])


def test_method_factory():
    assert make_batch_transform("cam", 3) is None and make_batch_transform("adl", 3) is None
    assert isinstance(make_batch_transform("has", 3), HideAndSeek)
    assert isinstance(make_batch_transform("cutmix", 3), CutMix)  # the shared implementation
    assert model_kwargs_for("adl")["adl_after"] == (-2, -1) and model_kwargs_for("has") == {}
    with pytest.raises(UnknownChoiceError):
        make_batch_transform("spg", 3)


@pytest.mark.parametrize("method", ["has", "adl", "cutmix"])
def test_methods_train_through_the_engine(method):
    from cuekit.wsol.pipeline import WSOLTrainConfig, train_cam

    cfg = WSOLTrainConfig(method=method, epochs=1, batch_size=16, img_size=16, train_size=32, val_size=8,
                          device="cpu", progress=False, lr=0.05)
    result, data = train_cam(cfg)
    assert len(result.history) == 1 and result.history[0]["train_loss"] == result.history[0]["train_loss"]
    names = list(result.model.features._modules)
    assert any(n.startswith("adl_") for n in names) == (method == "adl")
