"""The scale-invariance test and projection shared by AdamP and SGDP (Heo et al., ICLR 2021).

A weight w is treated as scale-invariant (followed by a normalization) when its raw gradient is
almost perpendicular to it: |cos(grad, w)| < delta / sqrt(row length). The test runs on the
channel view first (one row per output channel, e.g. Conv -> BatchNorm), then on the layer view
(the whole tensor as one row, e.g. Linear -> LayerNorm); the first view that passes wins. A
projected tensor has the radial part removed from its *update*, u <- u - (w_hat . u) w_hat per
row, and gets its decoupled weight decay scaled by `wd_ratio`.

Two implementations of the same rule live here:
- the reference, one tensor at a time (`scale_invariance_kind`, `project_update_`), readable and
  mirroring the official code except that it uses `reshape` (channels_last weights work);
- the fast path (`RowLayout`, `gradient_row_stats_`, `update_row_dots_`, `projection_terms`): row
  statistics of many tensors are written into one (4, R + T) buffer and the decisions are taken
  with a handful of batched operations where the tensors live, so on a GPU no value travels to
  the host. On the CPU, when numba is installed, one compiled pass per tensor replaces the torch
  operations (`fused_cpu`).
Row statistics of half-precision weights are formed in float32 on every path (`statistics_dtype`).
And `ProjectedOptimizer`, the base class of both optimizers (checks, buckets, chunks, caches).
"""
from __future__ import annotations

import dataclasses
import math
import operator
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from cuekit.errors import UsageError

__all__ = [
    "KIND_NAMES", "InvalidOptimizerArgument", "ProjectedOptimizer", "ProjectionTerms", "RowLayout",
    "channel_view", "check_argument", "gradient_row_stats_", "layer_view", "make_row_layout",
    "new_row_stats", "project_update_", "projection_terms", "rows_view", "scale_invariance_kind",
    "statistics_dtype", "update_row_dots_",
]

# Codes of the fast path's per-tensor decision, in the order the official code tries the views.
KIND_NAMES = ("none", "channel", "layer")

_GRAD, _IS_SPARSE = operator.attrgetter("grad"), operator.attrgetter("is_sparse")
_DEVICE, _DTYPE = operator.attrgetter("device"), operator.attrgetter("dtype")


class InvalidOptimizerArgument(UsageError, ValueError):
    """A bad optimizer argument: a ValueError for library users, a one-line error in the CLI."""


def check_argument(ok: bool, name: str, value: object, why: str) -> None:
    """Raise InvalidOptimizerArgument naming the argument, its value and the rule it broke."""
    if not ok:
        raise InvalidOptimizerArgument(f"invalid {name}={value!r}: {why}")


# ----------------------------------------------------------------------------------------------
# Reference: one tensor at a time.


def channel_view(x: Tensor) -> Tensor:
    """(C, ...) -> (C, K): one row per output channel (reshape, so channels_last works)."""
    return x.reshape(x.size(0), -1)


def layer_view(x: Tensor) -> Tensor:
    """(C, ...) -> (1, C*K): the whole tensor as a single row."""
    return x.reshape(1, -1)


def statistics_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which the row statistics of weights of `dtype` are formed: float32 for half types
    (where eps^2 = 1e-16 and delta^2 / numel underflow to zero), the weights' own dtype otherwise."""
    return torch.promote_types(dtype, torch.float32)


def _abs_cosine(x: Tensor, y: Tensor, eps: float, view) -> Tensor:
    """|cos| between matching rows of view(x) and view(y): (rows,)."""
    return torch.nn.functional.cosine_similarity(view(x), view(y), dim=1, eps=eps).abs_()


def scale_invariance_kind(weight: Tensor, grad: Tensor, delta: float, eps: float) -> str:
    """Which view passes the test for this tensor: "channel", "layer" or "none" (1-D: "none").

    weight, grad: same shape (C, ...); half types are tested in float32 (statistics_dtype), others
    as they are. Reads values on the host (one sync per view tried).
    """
    if weight.dim() <= 1:
        return "none"
    dtype = statistics_dtype(weight.dtype)
    weight, grad = weight.to(dtype), grad.to(dtype)  # no copy unless half
    for name, view in (("channel", channel_view), ("layer", layer_view)):
        cos = _abs_cosine(grad, weight, eps, view)
        if cos.max() < delta / math.sqrt(view(weight).size(1)):
            return name
    return "none"


def project_update_(weight: Tensor, grad: Tensor, update: Tensor, delta: float, wd_ratio: float,
                    eps: float) -> tuple[Tensor, float, str]:
    """Remove the radial part of `update` (in place) when `weight` passes the scale-invariance test.

    weight, grad, update: same shape (C, ...); half types are projected in float32. Returns (update,
    weight-decay multiplier, kind): the multiplier is `wd_ratio` for a projected tensor and 1 otherwise.
    """
    kind = scale_invariance_kind(weight, grad, delta, eps)
    if kind == "none":
        return update, 1.0, kind
    view = channel_view if kind == "channel" else layer_view
    expand = [-1] + [1] * (weight.dim() - 1)
    dtype = statistics_dtype(weight.dtype)
    w, u = weight.to(dtype), update.to(dtype)  # the tensors themselves unless half
    w_unit = w / view(w).norm(dim=1).view(expand).add_(eps)
    u -= w_unit * view(w_unit * u).sum(dim=1).view(expand)
    if u is not update:
        update.copy_(u)
    return update, wd_ratio, kind


# ----------------------------------------------------------------------------------------------
# Fast path: many tensors at once, decisions on the device.


def memory_order(x: Tensor) -> tuple[int, ...]:
    """A permutation keeping dim 0 first and the other dims outermost-to-innermost in memory."""
    rest = sorted(range(1, x.dim()), key=lambda d: -x.stride(d))
    return (0, *rest)


def rows_view(x: Tensor, order: tuple[int, ...]) -> Tensor:
    """(C, ...) -> (C, K) with the elements of each row in `order`; a view when memory allows.

    Row sums and dot products do not depend on the order inside a row, so a channels_last
    weight read in its own memory order needs no copy.
    """
    return x.permute(order).reshape(x.size(0), -1)


@dataclasses.dataclass
class RowLayout:
    """Where each tensor's rows sit in the fused statistics buffer of a group of T tensors.

    The buffer has R channel rows (one per output channel of every tensor) followed by T layer
    rows (one per tensor, the sums of its channel rows), so both views are tested at once.
    """

    offsets: list[int]             # first channel row of each tensor
    rows: list[int]                # C of each tensor
    orders: list[tuple[int, ...]]  # memory order of each tensor (see rows_view)
    segment: Tensor                # (R,) long: tensor index of each channel row
    lengths: Tensor                # (T,) long: channel rows of each tensor, for segment sums
    threshold_sq: Tensor           # (R + T,): delta^2 / row length, channel rows then layer rows (statistics_dtype)
    total_rows: int                # R


def make_row_layout(weights: Sequence[Tensor], delta: float) -> RowLayout:
    """The row layout of tensors of 2 or more dims (all on one device, one dtype, none empty)."""
    device, dtype = weights[0].device, weights[0].dtype
    rows = [w.size(0) for w in weights]
    offsets = [0]
    for c in rows[:-1]:
        offsets.append(offsets[-1] + c)
    lengths = torch.tensor(rows, dtype=torch.long)
    row_len = torch.tensor([w.numel() // w.size(0) for w in weights], dtype=torch.float64)
    numel = torch.tensor([w.numel() for w in weights], dtype=torch.float64)
    threshold_sq = torch.cat([(delta ** 2 / row_len).repeat_interleave(lengths), delta ** 2 / numel])
    return RowLayout(
        offsets=offsets, rows=rows, orders=[memory_order(w) for w in weights],
        segment=_to_device(torch.repeat_interleave(torch.arange(len(weights)), lengths), device),
        lengths=_to_device(lengths, device), threshold_sq=_to_device(threshold_sq.to(statistics_dtype(dtype)), device),
        total_rows=int(lengths.sum()),
    )


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    """Copy a small CPU tensor to `device` without blocking the host (pinned memory on CUDA)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def new_row_stats(layout: RowLayout, like: Tensor) -> Tensor:
    """An empty statistics buffer: (4, R + T), rows g.w, |g|^2, |w|^2, u.w, in statistics_dtype(like)."""
    return torch.empty(4, layout.total_rows + len(layout.rows), device=like.device,
                       dtype=statistics_dtype(like.dtype))


def _row_dots(a: Tensor, b: Tensor, out: Tensor, scratch: Tensor) -> None:
    """out (C,) = row-wise dot products of a, b (C, K) in out's dtype, through `scratch` (>= C*K
    elements of out's dtype) without allocating."""
    prod = scratch[:a.numel()].view(a.shape)
    if a.dtype == out.dtype:
        torch.mul(a, b, out=prod)
    else:  # half inputs: the products are formed in float32, where they do not underflow
        prod.copy_(a).mul_(b)
    torch.sum(prod, dim=1, out=out)


def _row_norms(x: Tensor, out: Tensor) -> None:
    """out (C,) = the norms of the rows of x (C, K), accumulated in out's dtype."""
    dtype = None if x.dtype == out.dtype else out.dtype
    torch.linalg.vector_norm(x, dim=1, dtype=dtype, out=out)


def gradient_row_stats_(stats: Tensor, weights: Sequence[Tensor], grads: Sequence[Tensor], layout: RowLayout,
                        scratch: Tensor) -> None:
    """Fill the channel rows of stats[0:3] with g.w, |g|^2, |w|^2 (before the step); scratch: flat,
    of stats' dtype, at least as long as the largest weight."""
    for w, g, off, c, order in zip(weights, grads, layout.offsets, layout.rows, layout.orders):
        w2, g2 = rows_view(w, order), rows_view(g, order)
        _row_dots(g2, w2, stats[0, off:off + c], scratch)
        _row_norms(g2, stats[1, off:off + c])
        _row_norms(w2, stats[2, off:off + c])
    stats[1:3, :layout.total_rows].square_()


def update_row_dots_(stats: Tensor, weights: Sequence[Tensor], updates: Sequence[Tensor], layout: RowLayout,
                     scratch: Tensor) -> None:
    """Fill the channel rows of stats[3] with u.w, the (unprojected) update against the weight; scratch
    as for gradient_row_stats_."""
    for w, u, off, c, order in zip(weights, updates, layout.offsets, layout.rows, layout.orders):
        _row_dots(rows_view(u, order), rows_view(w, order), stats[3, off:off + c], scratch)


@dataclasses.dataclass
class ProjectionTerms:
    """The decision and projection of every tensor of a layout, on the parameters' device.

    With R channel rows and T tensors: the projected update is u - radial * w row-wise, the
    weight decays by a factor (1 - decay_rows) row-wise, and a step p <- p * (1 - decay) -
    step_size * (projected u) equals p + p * change - step_size * u.
    """

    radial: Tensor        # (R,): 0 where the tensor is not projected
    decay_rows: Tensor    # (R,): decay * (wd_ratio where projected, else 1)
    change: Tensor        # (R,): step_size * radial - decay_rows
    channel: Tensor       # (T,) bool: projected with the channel view
    layer: Tensor         # (T,) bool: projected with the layer view

    def kinds(self) -> list[str]:
        """KIND_NAMES entry of each tensor (reads the device: diagnostics only)."""
        return [KIND_NAMES[int(c) + 2 * int(la)] for c, la in zip(self.channel.tolist(), self.layer.tolist())]


def projection_terms(stats: Tensor, layout: RowLayout, eps: float, wd_ratio: float, step_size: float,
                     decay: float) -> ProjectionTerms:
    """The official rule for every tensor of a layout in a few batched operations, no host sync.

    stats: (4, R + T) whose channel rows hold g.w, |g|^2, |w|^2, u.w (gradient_row_stats_ and
    update_row_dots_, or a fused kernel); its layer rows are filled here. decay: lr * weight_decay
    (SGDP: divided by 1 - momentum). On the CPU the same arithmetic runs in NumPy, whose calls on
    small arrays cost a fraction of torch's (the host is the device there, so nothing waits).
    """
    if uses_kept_memory(stats.device) and stats.dtype in (torch.float32, torch.float64):
        return _projection_terms_numpy(stats, layout, eps, wd_ratio, step_size, decay)
    n_rows = layout.total_rows
    stats[:, n_rows:] = torch.segment_reduce(stats[:, :n_rows].t(), "sum", lengths=layout.lengths,
                                             unsafe=True).t()
    gw, gg, ww, uw = stats
    # |cos| < delta/sqrt(len) as in torch's cosine_similarity (each norm clamped at eps), squared.
    # A NaN compares False: not passed, as in the official `max() < threshold`.
    bound = gg.clamp_min(eps * eps).mul_(ww.clamp_min(eps * eps)).mul_(layout.threshold_sq)
    passed = gw.square() < bound
    channel = torch.segment_reduce(passed[:n_rows].to(stats.dtype), "min", lengths=layout.lengths,
                                   unsafe=True) > 0
    layer = passed[n_rows:] & ~channel
    # official: u -= w_hat * sum(w_hat * u), w_hat = w / (|w| + eps)  =>  radial = (u.w) / (|w| + eps)^2
    radial = uw / (ww.sqrt() + eps).square()
    zero = torch.zeros((), device=stats.device, dtype=stats.dtype)
    seg = layout.segment
    radial_rows = torch.where(channel[seg], radial[:n_rows], torch.where(layer, radial[n_rows:], zero)[seg])
    one = torch.ones((), device=stats.device, dtype=stats.dtype)
    decay_rows = torch.where(channel | layer, one * (decay * wd_ratio), one * decay)[seg]
    change = torch.sub(radial_rows * step_size, decay_rows)
    return ProjectionTerms(radial=radial_rows, decay_rows=decay_rows, change=change, channel=channel, layer=layer)


def _projection_terms_numpy(stats: Tensor, layout: RowLayout, eps: float, wd_ratio: float, step_size: float,
                            decay: float) -> ProjectionTerms:
    """projection_terms for CPU float32 / float64 statistics, the same arithmetic in NumPy."""
    st = stats.numpy()
    n_rows = layout.total_rows
    starts = np.asarray(layout.offsets)
    st[:, n_rows:] = np.add.reduceat(st[:, :n_rows], starts, axis=1)
    gw, gg, ww, uw = st
    bound = np.maximum(gg, eps * eps) * np.maximum(ww, eps * eps) * layout.threshold_sq.numpy()
    passed = gw * gw < bound
    channel = np.logical_and.reduceat(passed[:n_rows], starts)
    layer = passed[n_rows:] & ~channel
    radial = uw / np.square(np.sqrt(ww) + st.dtype.type(eps))
    seg = layout.segment.numpy()
    radial_rows = np.where(channel[seg], radial[:n_rows], np.where(layer, radial[n_rows:], 0)[seg]).astype(st.dtype)
    decay_rows = np.where(channel | layer, decay * wd_ratio, decay).astype(st.dtype)[seg]
    change = radial_rows * st.dtype.type(step_size) - decay_rows
    return ProjectionTerms(radial=torch.from_numpy(radial_rows), decay_rows=torch.from_numpy(decay_rows),
                           change=torch.from_numpy(change), channel=torch.from_numpy(channel),
                           layer=torch.from_numpy(layer))


def expand_rows(values: Tensor, like: Tensor) -> Tensor:
    """(C,) -> (C, 1, ..., 1) broadcastable against `like` of shape (C, ...)."""
    return values.view([-1] + [1] * (like.dim() - 1))


def uses_kept_memory(device: torch.device) -> bool:
    """Whether the fast path writes its temporaries, tensor by tensor, into kept scratch memory
    (the CPU) or lets grouped foreach operations allocate them (a GPU's caching allocator)."""
    return device.type == "cpu"


def is_dense(x: Tensor) -> bool:
    """True when x covers exactly numel consecutive elements in some dim order (any permutation)."""
    expected = 1
    for size, stride in sorted(zip(x.shape, x.stride()), key=lambda t: t[1]):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def like_views(flat: Tensor, tensors: Sequence[Tensor]) -> list[Tensor]:
    """Consecutive pieces of a flat buffer shaped and strided like `tensors` (dense ones keep their
    memory format, e.g. channels_last; others get contiguous pieces)."""
    views, offset = [], flat.storage_offset()
    for t in tensors:
        if is_dense(t):
            views.append(flat.as_strided(t.shape, t.stride(), offset))
        else:
            start = offset - flat.storage_offset()
            views.append(flat[start:start + t.numel()].view(t.shape))
        offset += t.numel()
    return views


def chunk_indices(tensors: Sequence[Tensor], max_bytes: int | None) -> list[list[int]]:
    """Split indices into consecutive chunks of at most `max_bytes` each (a bigger tensor goes alone).

    On the CPU a chunk small enough to stay in cache while all passes run over it is much faster
    than one pass at a time over all parameters; on a GPU one chunk (None) means fewest launches.
    """
    if max_bytes is None:
        return [list(range(len(tensors)))] if tensors else []
    chunks: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i, t in enumerate(tensors):
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > max_bytes:
            chunks.append(current)
            current, size = [], 0
        current.append(i)
        size += nbytes
    if current:
        chunks.append(current)
    return chunks


# ----------------------------------------------------------------------------------------------
# What AdamP and SGDP share: argument checks, bucketing, chunking, layouts and diagnostics.

# Parameter bytes per chunk on the CPU: with the optimizer's 5-6 arrays a chunk stays in cache.
CPU_CHUNK_BYTES = 1 << 22


class ProjectedOptimizer(torch.optim.Optimizer):
    """Base of AdamP and SGDP: the step skeleton, the fast path's buckets and chunks, diagnostics.

    `foreach=False` runs the readable per-parameter reference; `None` or `True` the fast path
    (projection decided on the device, no host synchronisation). On a GPU the fast path is
    grouped foreach operations; on the CPU, with `fused` None (numba installed) or True, one
    compiled pass per tensor (fused_cpu), else grouped torch operations in cache-sized chunks
    (fused=False). All follow the official rule and are tested equal.
    """

    def _fused_kernels(self, like: Tensor) -> dict | None:
        """The compiled kernels when this step may use them for tensors like `like`."""
        if self.fused is False or not uses_kept_memory(like.device) or like.dtype not in (torch.float32,
                                                                                           torch.float64):
            return None
        from cuekit.optim.fused_cpu import cpu_kernels

        return cpu_kernels()

    def __init__(self, params, defaults: dict, foreach: bool | None, fused: bool | None):
        check_argument(foreach in (None, True, False), "foreach", foreach, "must be None, True or False")
        check_argument(fused in (None, True, False), "fused", fused, "must be None, True or False")
        check_argument(not (fused and foreach is False), "fused", fused,
                       "must not be True with foreach=False (the fused kernels belong to the fast path)")
        from cuekit.optim.fused_cpu import cpu_kernels

        if fused and cpu_kernels() is None:
            raise InvalidOptimizerArgument("invalid fused=True: the fused CPU kernels need numba "
                                           "(pip install numba, or the cuekit[all] extra)")
        # Kept out of `defaults` so that param_groups and state_dict keys equal the official ones.
        self.foreach = foreach
        self.fused = fused
        # Caches of the fast path, never part of the state dict.
        self._layouts: dict[tuple, RowLayout] = {}
        self._work: dict[tuple, Tensor] = {}
        self._plans: dict[tuple, list] = {}
        self._last_kinds: list[tuple[list[Tensor], ProjectionTerms | list[str]]] = []
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group and check its hyper-parameters (the defaults fill what it leaves out)."""
        super().add_param_group(param_group)
        self._check_group(self.param_groups[-1])

    def _check_group(self, group: dict) -> None:
        raise NotImplementedError

    @staticmethod
    def _check_common(group: dict) -> None:
        lr = group["lr"]
        check_argument(isinstance(lr, (int, float)) and not isinstance(lr, bool), "lr", lr, "must be a number")
        check_argument(lr >= 0, "lr", lr, "the learning rate must be >= 0")
        check_argument(group["eps"] >= 0, "eps", group["eps"], "must be >= 0 (it guards divisions by zero)")
        check_argument(group["weight_decay"] >= 0, "weight_decay", group["weight_decay"], "must be >= 0")
        check_argument(group["delta"] >= 0, "delta", group["delta"],
                       "the cosine threshold of the scale-invariance test must be >= 0")
        check_argument(group["wd_ratio"] >= 0, "wd_ratio", group["wd_ratio"],
                       "the weight-decay multiplier of projected weights must be >= 0")

    def _params_with_grad(self, group: dict) -> list[Tensor]:
        grads = list(map(_GRAD, group["params"]))
        params = [p for p, g in zip(group["params"], grads) if g is not None]
        if any(map(_IS_SPARSE, (g for g in grads if g is not None))):
            p = next(p for p in params if p.grad.is_sparse)
            raise RuntimeError(f"{type(self).__name__} does not support sparse gradients: parameter of shape "
                               f"{tuple(p.shape)} got one (use torch.optim.SparseAdam, or dense gradients)")
        return params

    @torch.no_grad()
    def step(self, closure=None):
        """One optimizer step; `closure` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._last_kinds = []
        for group in self.param_groups:
            params = self._params_with_grad(group)
            if not params:
                continue
            if self.foreach is False:
                kinds = self._reference_group(group, params)
                self._last_kinds.append((params, kinds))
            else:
                self._fast_group(group, params)
        return loss

    def _reference_group(self, group: dict, params: list[Tensor]) -> list[str]:
        raise NotImplementedError

    def _fast_group(self, group: dict, params: list[Tensor]) -> None:
        raise NotImplementedError

    @staticmethod
    def _buckets(params: list[Tensor], states: list[dict], key_fn=None) -> list[tuple[tuple, list, list]]:
        """Parameters and their state dicts grouped by (device, dtype, key_fn(state)), so that a bucket
        shares its scalars: [(key, params, states)]; one bucket, without a loop in Python, when all agree."""
        devices, dtypes = set(map(_DEVICE, params)), set(map(_DTYPE, params))
        keys = list(map(key_fn, states)) if key_fn is not None else [None] * len(params)
        if len(devices) == 1 and len(dtypes) == 1 and len(set(keys)) == 1:
            return [((devices.pop(), dtypes.pop(), keys[0]), params, states)]
        buckets: dict[tuple, tuple[list, list]] = {}
        for p, state, key in zip(params, states, keys):
            bucket = buckets.setdefault((p.device, p.dtype, key), ([], []))
            bucket[0].append(p)
            bucket[1].append(state)
        return [(key, ps, ss) for key, (ps, ss) in buckets.items()]

    def _chunks(self, params: list[Tensor]) -> list[list[Tensor]]:
        max_bytes = CPU_CHUNK_BYTES if uses_kept_memory(params[0].device) else None
        return [[params[i] for i in idx] for idx in chunk_indices(params, max_bytes)]

    def _layout(self, weights: list[Tensor], delta: float) -> RowLayout:
        """The cached RowLayout of these tensors (their identity, shape and strides)."""
        key = (delta, tuple((id(w), tuple(w.shape), w.stride()) for w in weights))
        layout = self._layouts.get(key)
        if layout is None:
            if len(self._layouts) > 4096:
                self._layouts.clear()
            layout = self._layouts[key] = make_row_layout(weights, delta)
        return layout

    def _fused_plan(self, params: list[Tensor], states: list[dict], state_keys: tuple[str, ...], delta: float):
        """The cached fused_cpu.FusedPlan of these parameters (rebuilt when a tensor moved), or None
        when some tensor cannot be viewed in place by the compiled kernels."""
        from cuekit.optim.fused_cpu import make_fused_plan

        key = (delta, state_keys, tuple(map(id, params)))
        plan = self._plans.get(key)
        if plan is None or not plan.is_current(params, states):
            plan = make_fused_plan(params, states, state_keys, delta)
            if plan is None:
                return None
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def projection_kinds(self) -> list[str]:
        """What the last step did to each parameter, in param_groups order (reads the device).

        "channel" / "layer": projected with that view; "none": not projected (1-D tensors always);
        "no grad": skipped because its gradient was None.
        """
        done: dict[int, str] = {}
        for params, kinds in self._last_kinds:
            names = kinds if isinstance(kinds, list) else kinds.kinds()
            for p, name in zip(params, names):
                done[id(p)] = name
        return [done.get(id(p), "no grad") for g in self.param_groups for p in g["params"]]

    def _split_2d(self, params: list[Tensor]) -> tuple[list[int], list[int]]:
        """Indices of projection candidates (>= 2 dims, not empty) and of the others."""
        two = [i for i, p in enumerate(params) if p.dim() > 1 and p.numel() > 0]
        two_set = set(two)
        return two, [i for i in range(len(params)) if i not in two_set]

    def _record_kinds(self, params: list[Tensor], two: list[int], others: list[int], terms) -> None:
        """Keep the decisions (ProjectionTerms, or the fused path's StepRecord: anything with kinds())
        of the tensors `two`; read only by projection_kinds, never by the step."""
        if terms is not None:
            self._last_kinds.append(([params[i] for i in two], terms))
        if others:
            self._last_kinds.append(([params[i] for i in others], ["none"] * len(others)))

    def _workspace(self, like: Tensor, numel: int, dtype: torch.dtype | None = None) -> Tensor:
        """Flat scratch memory of at least `numel` elements on like's device (of like's dtype unless
        `dtype` is given), kept between steps.

        On the CPU, fresh large allocations are paid in page faults on every step (the C allocator
        returns them to the system), so the fast path writes its temporaries here instead.
        """
        dtype = like.dtype if dtype is None else dtype
        key = (like.device, dtype)
        buf = self._work.get(key)
        if buf is None or buf.numel() < numel:
            buf = self._work[key] = torch.empty(numel, device=like.device, dtype=dtype)
        return buf

    def _statistics_scratch(self, weights: list[Tensor], spare: Tensor) -> Tensor:
        """Scratch for the row statistics of `weights`: `spare` itself unless the weights are half
        (their statistics are float32), else kept (CPU) or fresh (GPU) float32 memory."""
        dtype = statistics_dtype(spare.dtype)
        if dtype == spare.dtype or not weights:
            return spare
        numel = max(w.numel() for w in weights)
        if uses_kept_memory(spare.device):
            return self._workspace(spare, numel, dtype)
        return torch.empty(numel, device=spare.device, dtype=dtype)

    def _clear_caches(self) -> None:
        self._layouts, self._work, self._plans, self._last_kinds = {}, {}, {}, []

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state dict (cuekit's or the official package's: the keys are the same)."""
        super().load_state_dict(state_dict)
        self._clear_caches()

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "foreach": self.foreach, "fused": self.fused}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("foreach", None)
        self.__dict__.setdefault("fused", None)
        self._clear_caches()
