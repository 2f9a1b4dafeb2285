"""AdamP / SGDP with float16 and bfloat16 weights decide like float32: the row statistics of the
scale-invariance test are accumulated in float32, where eps^2 (1e-16) and delta^2 / numel (1e-8 for
a tensor of 1M values) do not underflow to zero, on every path."""
from __future__ import annotations

import pytest
import torch

from cuekit.optim import SGDP, AdamP
from cuekit.optim.projection import make_row_layout, new_row_stats

# AdamP's eps is 1e-6 here: the default 1e-8 is zero in float16, where Adam's own denominator
# sqrt(v) + eps is then zero for a zero gradient (NaN weights, as with torch's foreach AdamW).
OPTIMIZERS = {
    "adamp": lambda params, **kw: AdamP(params, lr=1e-2, eps=1e-6, weight_decay=1e-2, **kw),
    "sgdp": lambda params, **kw: SGDP(params, lr=0.03, momentum=0.9, weight_decay=1e-4, nesterov=True, **kw),
}
# Parameter name -> the decision float32 takes (checked in the test before it is used as the reference).
EXPECTED = {"layer": "layer", "channel": "channel", "plain": "none", "bias": "none"}


def _perpendicular(r: torch.Tensor, w: torch.Tensor, rows: bool) -> torch.Tensor:
    """r minus its projection on w, row by row (rows=True) or over the whole tensor."""
    r2, w2 = (r.reshape(r.size(0), -1), w.reshape(w.size(0), -1)) if rows else (r.reshape(1, -1), w.reshape(1, -1))
    radial = (r2 * w2).sum(1, keepdim=True) / (w2 * w2).sum(1, keepdim=True)
    return (r2 - radial * w2).reshape(r.shape)


def _weights() -> dict[str, torch.Tensor]:
    """float64 weights: a 1M-value tensor (layer view), a conv weight (channel view), a plain one, a 1-D one."""
    g = torch.Generator().manual_seed(0)
    return {"layer": torch.randn(256, 4096, generator=g, dtype=torch.float64) * 0.02,
            "channel": torch.randn(64, 32, 3, 3, generator=g, dtype=torch.float64) * 0.05,
            "plain": torch.randn(32, 64, generator=g, dtype=torch.float64) * 0.05,
            "bias": torch.randn(32, generator=g, dtype=torch.float64) * 0.05}


def _gradient(key: str, w: torch.Tensor, step: int) -> torch.Tensor:
    """A float64 gradient for the weight `w` (float64) of `key`: perpendicular to w as a whole for
    "layer", per output channel for "channel" (as behind a normalization; its last channel is dead:
    zero gradient, which passes the test only where eps^2 is not zero), not for the others.

    Its entries are 0.05 to 0.15 in size with random signs before the projection: none so small that
    Adam's (1 - beta2) g^2 underflows in float16 (leaving a denominator of eps alone, as in torch's
    AdamW), and not a few round values, whose rounding would not be random.
    """
    g = torch.Generator().manual_seed(100 + step)
    sign = torch.randint(0, 2, w.shape, generator=g).to(torch.float64).mul_(2).sub_(1)
    r = sign * (0.05 + 0.1 * torch.rand(w.shape, generator=g, dtype=torch.float64))
    if key == "channel":
        r[-1] = 0
    return _perpendicular(r, w, rows=key == "channel") if key in ("layer", "channel") else r


def _step(name: str, dtype: torch.dtype, steps: int = 3, start: torch.dtype | None = None, device: str = "cpu",
          **kw) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """`steps` steps in `dtype` from the weights rounded to `start` (default: dtype), each gradient made
    for the current weights -> (decisions at the last step per tensor, weights after, as float64 on the CPU)."""
    params = {key: torch.nn.Parameter(w.to(start or dtype).to(device, dtype)) for key, w in _weights().items()}
    opt = OPTIMIZERS[name](list(params.values()), **kw)
    for step in range(steps):
        for key, p in params.items():
            p.grad = _gradient(key, p.detach().cpu().double(), step).to(device, dtype)
        opt.step()
    return dict(zip(params, opt.projection_kinds())), {k: p.detach().cpu().double() for k, p in params.items()}


@pytest.fixture(params=["reference", "default", "eager", "gpu-flavour"])
def path(request, monkeypatch) -> dict:
    """Optimizer keyword arguments of each path; the GPU's (decisions in torch) is forced on the CPU.
    "default" is what a user gets: the compiled CPU kernels take float32/64 only, so half weights
    run the torch operations whether numba is installed or not."""
    import cuekit.optim.projection as projection

    if request.param == "reference":
        return {"foreach": False}
    if request.param == "default":
        return {}
    if request.param == "gpu-flavour":
        monkeypatch.setattr(projection, "uses_kept_memory", lambda device: False)
    return {"fused": False}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_half_weights_decide_like_float32(name, dtype, path):
    """Every path: the decision per tensor in half precision equals float32's (which is the expected
    one), and the projected weights land within half-precision rounding of float32's step."""
    kinds32, after32 = _step(name, torch.float32, start=dtype, foreach=False)
    assert kinds32 == EXPECTED
    kinds, after = _step(name, dtype, **path)
    assert kinds == kinds32
    _, before = _step(name, dtype, steps=0)
    for key in ("layer", "channel"):
        moved32, moved = after32[key] - before[key], after[key] - before[key]
        assert (moved - moved32).norm() < 0.05 * moved32.norm(), key


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_row_statistics_are_float32_for_half_weights(dtype):
    """The statistics buffer and the thresholds of half weights are float32; delta^2 / numel of a
    1M-value tensor (1e-8) is not zero there."""
    w = torch.zeros(256, 4096, dtype=dtype)
    layout = make_row_layout([w], delta=0.1)
    assert layout.threshold_sq.dtype == torch.float32 and bool((layout.threshold_sq > 0).all())
    assert new_row_stats(layout, w).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_half_weights_on_cuda_decide_like_float32(name, dtype):
    """The GPU's fast path (grouped foreach operations, decisions in torch) with half weights."""
    kinds32, after32 = _step(name, torch.float32, start=dtype, foreach=False)
    kinds, after = _step(name, dtype, device="cuda")
    assert kinds == kinds32 == EXPECTED
    _, before = _step(name, dtype, steps=0)
    for key in ("layer", "channel"):
        moved32, moved = after32[key] - before[key], after[key] - before[key]
        assert (moved - moved32).norm() < 0.05 * moved32.norm(), key
