"""Model complexity shared by every model: parameters, multiply-accumulates (MACs), throughput.

    from cuekit.models.complexity import count_params, count_macs, measure_throughput
    count_params(model)                       # int, all parameters
    count_macs(model, 224)                    # int, MACs of one forward pass of one image
    measure_throughput(model, 224, 16).images_per_s

MACs are counted with torch's `FlopCounterMode` (which reports FLOPs = 2 x MACs for
convolutions and matrix products; element-wise ops, norms and softmax are not counted, as
in the papers). On the CPU torch counts nothing for `scaled_dot_product_attention`; a
formula for its CPU kernel is registered here, so attention matmuls are counted whichever
kernel runs.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Sequence

import torch
from torch import Tensor, nn

ImgSize = int | Sequence[int]


def _hw(img_size: ImgSize) -> tuple[int, int]:
    if isinstance(img_size, int):
        return img_size, img_size
    h, w = img_size
    return int(h), int(w)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once); `trainable_only` skips frozen ones."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of attention: (q @ k^T) and (attn @ v), 2 FLOPs per multiply-accumulate."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                            **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _extra_flop_formulas() -> dict:
    """Formulas torch's FlopCounterMode lacks: the CPU kernels of scaled_dot_product_attention."""
    aten = torch.ops.aten
    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flop
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_cpu_backward_flop
    return mapping


def count_flops(model: nn.Module, inputs: Tensor | tuple, by_module: bool = False) -> int | dict[str, int]:
    """FLOPs (2 x MACs) of `model(*inputs)` in eval mode, for the whole batch.

    by_module=True returns {module name: FLOPs} (the total under "Global") instead of the total.
    """
    from torch.utils.flop_counter import FlopCounterMode

    args = inputs if isinstance(inputs, tuple) else (inputs,)
    was_training = model.training
    # Parameters are frozen rather than run under no_grad: torch's module tracker rejects views of
    # parameters made under no_grad (they require grad but have no grad_fn).
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    try:
        for p in frozen:
            p.requires_grad_(False)
        with FlopCounterMode(display=False, custom_mapping=_extra_flop_formulas()) as counter:
            model(*args)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    if by_module:
        return {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}
    return int(counter.get_total_flops())


def count_macs(model: nn.Module, img_size: ImgSize, in_chans: int = 3, device: str | torch.device | None = None) -> int:
    """Multiply-accumulates of one forward pass of one (in_chans, H, W) image, eval mode."""
    h, w = _hw(img_size)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else "cpu"
    x = torch.zeros(1, in_chans, h, w, device=device)
    return count_flops(model, x) // 2


@dataclasses.dataclass
class Throughput:
    """Forward throughput of a model; `times_s` holds the seconds per batch of each timed repeat."""

    images_per_s: float      # median over repeats
    ms_per_batch: float      # median over repeats
    batch_size: int
    img_size: tuple[int, int]
    device: str
    times_s: list[float]

    def as_dict(self) -> dict:
        """JSON-able form."""
        return dataclasses.asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(model: nn.Module, x: Tensor, iters: int = 1) -> float:
    """Seconds per forward pass of `model(x)`, averaged over `iters` passes (no grad, synchronised)."""
    device = x.device
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        _sync(device)
    return (time.perf_counter() - start) / iters



def interleaved_ratio(model_a: nn.Module, model_b: nn.Module, x: Tensor, rounds: int,
                      iters: int = 1) -> tuple[float, list[float], list[float]]:
    """Median over rounds of (images/s of A) / (images/s of B), alternating which runs first.

    Returns (median ratio, seconds per pass of A per round, of B per round); for benchmarks that
    compare two models on a noisy machine.
    """
    for model in (model_a, model_b):  # warm-up
        time_forward(model, x, 1)
    ratios, times_a, times_b = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            ta, tb = time_forward(model_a, x, iters), time_forward(model_b, x, iters)
        else:
            tb, ta = time_forward(model_b, x, iters), time_forward(model_a, x, iters)
        ratios.append(tb / ta)
        times_a.append(ta)
        times_b.append(tb)
    return statistics.median(ratios), times_a, times_b

def measure_throughput(
    model: nn.Module,
    img_size: ImgSize,
    batch_size: int = 16,
    *,
    in_chans: int = 3,
    device: str | torch.device | None = None,
    warmup: int = 2,
    repeats: int = 5,
    iters: int = 1,
    dtype: torch.dtype | None = None,
    progress: bool = False,
) -> Throughput:
    """Forward images/s of `model` in eval mode on random (batch_size, in_chans, H, W) inputs.

    `warmup` untimed passes, then `repeats` timed groups of `iters` passes; the median is
    reported; `progress` shows a tqdm bar over the repeats. To compare models, interleave
    `time_forward` calls instead (see benchmarks/), so that both see the same machine load.
    """
    h, w = _hw(img_size)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    x = torch.randn(batch_size, in_chans, h, w, device=device, dtype=dtype or torch.float32)
    was_training = model.training
    model.eval()
    try:
        if warmup > 0:
            time_forward(model, x, warmup)
        steps = range(max(1, repeats))
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc=f"timing batches of {batch_size}", leave=False)
        times = [time_forward(model, x, iters) for _ in steps]
    finally:
        model.train(was_training)
    med = statistics.median(times)
    return Throughput(images_per_s=batch_size / med, ms_per_batch=med * 1e3, batch_size=batch_size,
                      img_size=(h, w), device=str(device), times_s=times)


def complexity_report(
    model: nn.Module,
    img_size: ImgSize,
    in_chans: int = 3,
    batch_size: int = 16,
    measure: bool = True,
    **throughput_kw,
) -> dict:
    """Parameters, MACs (and GMACs) at `img_size`, and optionally measured throughput, as one dict."""
    h, w = _hw(img_size)
    macs = count_macs(model, (h, w), in_chans)
    report = {"params": count_params(model), "macs": macs, "gmacs": macs / 1e9, "img_size": [h, w]}
    if measure:
        tp = measure_throughput(model, (h, w), batch_size, in_chans=in_chans, **throughput_kw)
        report.update(images_per_s=tp.images_per_s, ms_per_batch=tp.ms_per_batch, batch_size=batch_size,
                      device=tp.device)
    return report


__all__ = ["Throughput", "complexity_report", "count_flops", "count_macs", "count_params", "measure_throughput",
           "time_forward"]
