"""Flatness (sphere test, Hutchinson trace), BatchNorm recalibration and the complexity proxy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cuekit.errors import UsageError
from cuekit.wcst.complexity import conditional_cost, correlate, cue_complexity, kendall_tau, rank, spearman
from cuekit.wcst.datasets import DSpritesSource, build_cue_conflict
from cuekit.wcst.flatness import (
    filter_normalized_direction,
    hutchinson_trace,
    loss_increase,
    parameter_norm,
    sphere_test,
)
from cuekit.wcst.runs import recalibrate_batchnorm


def test_hutchinson_is_exact_for_a_diagonal_hessian():
    a = torch.tensor([3.0, -1.0, 0.5, 2.0])
    theta = torch.randn(4, requires_grad=True)
    res = hutchinson_trace(lambda: 0.5 * (a * theta ** 2).sum(), [theta], probes=5)
    # v^T diag(a) v = sum(a) for every Rademacher v
    assert res["samples"] == pytest.approx([float(a.sum())] * 5)
    assert res["stderr"] == pytest.approx(0.0, abs=1e-6)


def test_hutchinson_estimates_a_full_hessian_trace():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(6, 6, generator=g)
    h = m @ m.T + torch.eye(6)
    theta = torch.randn(6, requires_grad=True)
    w = torch.randn(3, requires_grad=True)   # a second parameter tensor with Hessian 2I
    res = hutchinson_trace(lambda: 0.5 * theta @ h @ theta + (w ** 2).sum(), [theta, w], probes=400, seed=1)
    exact = float(torch.trace(h)) + 6.0
    assert abs(res["trace"] - exact) < 4 * res["stderr"]


class _DistanceProbe(nn.Module):
    """A linear classifier that records how far its weights are from where they started."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.start = [p.detach().clone() for p in self.parameters()]
        self.distances: list[float] = []

    def forward(self, x):
        d = sum(((p - s) ** 2).sum() for p, s in zip(self.parameters(), self.start))
        self.distances.append(float(d.sqrt()))
        return self.lin(x)


def test_sphere_test_perturbs_at_the_exact_radius_and_restores_the_weights():
    torch.manual_seed(0)
    model = _DistanceProbe()
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    before = [p.detach().clone() for p in model.parameters()]
    res = sphere_test(model, x, y, radii=[0.0, 0.5, 2.0], samples=3, batch_size=64)
    # one evaluation at the centre, then 3 per radius
    assert model.distances == pytest.approx([0.0] + [0.0] * 3 + [0.5] * 3 + [2.0] * 3, abs=1e-5)
    assert res["delta_loss_mean"][0] == pytest.approx(0.0, abs=1e-7)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_sphere_test_keeps_batchnorm_buffers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    sphere_test(model, torch.randn(16, 3, 8, 8), torch.randint(0, 2, (16,)), [1.0], samples=2)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not model.training and model[1].momentum == 0.1


def _small_bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))


def test_filter_normalized_direction_matches_every_filter_norm_and_skips_1d():
    torch.manual_seed(0)
    model = _small_bn_net()
    with torch.no_grad():
        model[0].weight[1].mul_(10.0)               # one filter 10x larger: its direction follows
    d = filter_normalized_direction(model, seed=3)
    params = list(model.parameters())
    assert [t.shape for t in d] == [p.shape for p in params]
    for t, p in zip(d, params):
        if p.dim() <= 1:
            assert not t.any()                       # biases and BatchNorm parameters do not move
        else:
            assert torch.allclose(t.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1), rtol=1e-5)
    again = filter_normalized_direction(model, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(d, again))
    # the same raw draws for another solution of the architecture: directions differ only by filter scale
    other = _small_bn_net()
    d2 = filter_normalized_direction(other, seed=3)
    cos = torch.nn.functional.cosine_similarity(d[0][0].flatten(), d2[0][0].flatten(), dim=0)
    assert float(cos) == pytest.approx(1.0, abs=1e-5)


def test_loss_increase_is_invariant_to_rescaled_filters_before_batchnorm():
    """BatchNorm makes the scale of the filters before it arbitrary; filter-normalised radii see the same
    function, so the loss increase of a rescaled copy is the same (the isotropic probe's is not)."""
    torch.manual_seed(0)
    model = _small_bn_net()
    x, y = torch.randn(64, 3, 8, 8), torch.randint(0, 3, (64,))
    model.train()
    with torch.no_grad():
        model(x)                                     # BatchNorm statistics of this data
    model.eval()
    scaled = _small_bn_net()
    scaled.load_state_dict(model.state_dict())
    with torch.no_grad():
        scaled[0].weight.mul_(5.0)
        scaled[0].bias.mul_(5.0)
        scaled[1].running_mean.mul_(5.0)
        scaled[1].running_var.mul_(25.0)
    before = [p.detach().clone() for p in model.parameters()]
    a = loss_increase(model, x, y, [0.2, 0.5], directions=3, seed=1)
    b = loss_increase(scaled, x, y, [0.2, 0.5], directions=3, seed=1)
    assert a["base_loss"] == pytest.approx(b["base_loss"], rel=1e-4)
    assert a["delta_loss_mean"] == pytest.approx(b["delta_loss_mean"], rel=1e-3, abs=1e-6)
    assert a["delta_loss_mean"][1] != 0
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters()))   # weights restored
    assert not model.training
    iso_a = sphere_test(model, x, y, [0.5], samples=3, batchnorm="running")
    iso_b = sphere_test(scaled, x, y, [0.5], samples=3, batchnorm="running")
    assert iso_a["delta_loss_mean"][0] != pytest.approx(iso_b["delta_loss_mean"][0], rel=1e-2)


def test_loss_increase_rejects_radius_zero():
    with pytest.raises(UsageError, match="> 0"):
        loss_increase(_small_bn_net(), torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), [0.0, 0.5], 1)


def test_kendall_tau_b():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(4 / math.sqrt(6 * 4))
    assert kendall_tau([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(1 / 3)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_recalibrated_batchnorm_holds_the_exact_data_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    x = torch.randn(50, 3, 8, 8) * 2 + 1
    ds = torch.utils.data.TensorDataset(x, torch.zeros(50, dtype=torch.long))
    recalibrate_batchnorm(model, ds, batch_size=50)
    with torch.no_grad():
        feats = model[0](x)
    assert torch.allclose(model[1].running_mean, feats.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(model[1].running_var, feats.var((0, 2, 3), unbiased=True), atol=1e-4)
    assert model[1].momentum == 0.1


def test_parameter_norm():
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 0.0]]))
        lin.bias.fill_(4.0)
    assert parameter_norm(lin) == pytest.approx(5.0)


def test_spearman_and_ranks():
    assert rank([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_conditional_cost_is_small_for_repeats_and_large_for_new_content():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)
    others = [rng.integers(0, 256, (3, 16, 16), dtype=np.uint8) for _ in range(2)]
    for codec in ("zlib", "bz2", "lzma"):
        repeat = conditional_cost([base, base, base], codec)
        fresh = conditional_cost([base, *others], codec)
        assert repeat < fresh / 5
        assert fresh > 0.8 * base.size      # random bytes do not compress


def test_dsprites_rendering_complexity_runs_for_every_codec():
    data = build_cue_conflict(DSpritesSource(), ["color", "shape", "scale"], train_per_class=2, valid_per_class=2,
                              seed=0, img_size=16)
    res = cue_complexity(data, bases=3, seed=0)
    assert res["method"] == "renderings"
    assert set(res["cost"]) == {"zlib", "bz2", "lzma"}
    for codec, order in res["order"].items():
        assert sorted(order) == ["color", "scale", "shape"]
        assert all(v > 0 for v in res["cost"][codec].values())
    corr = correlate(res, {"color": 1.0, "shape": 0.3, "scale": 0.5})
    assert set(corr) == {"zlib", "bz2", "lzma"} and all(-1 <= v <= 1 for v in corr.values())
