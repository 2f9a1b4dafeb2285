"""The fused CPU flavour of AdamP / SGDP's fast path: one compiled pass per tensor (numba).

The pass runs over a tensor's rows (one per output channel, in memory order): it updates the
optimizer state, forms each row's update u in a small buffer, accumulates the row's statistics
of the scale-invariance test (g.w, |g|^2, |w|^2, u.w) and, still on the same row, applies the
step, so each array is read and written once, as in torch's fused AdamW. Applying a row before
the tensor's decision is known takes a guess: the pass uses the decision this tensor got at the
previous step (its *prediction*), which is stable in practice (a weight followed by a
normalization stays scale-invariant). Of the three decisions, "none" and "channel" can be
applied row by row (the channel projection only needs the row's own u.w); "layer" needs the
whole tensor's u.w, so a tensor predicted "layer" is only measured by the pass.

The step's decisions are then taken from the statistics exactly as on the other paths. A tensor
whose decision differs from its prediction, that has no prediction yet (its first step) or that
was predicted "layer" gets a second pass, which recomputes u from the stored state and moves each
row from the step it got to the decided one. Undoing a row's step divides by its factor
(1 + change, or 1 - decay for SGDP without Nesterov); the first pass only applies a row where
that factor is in [1/2, 3/2], so undoing it costs at most an ulp or two, and leaves other rows
(marked NaN) to the second pass.

One compiled call makes the first pass over every tensor of a bucket (the tensors are handed to
it as addresses, which saves a Python call and a NumPy view of every gradient per tensor).

Numba is optional (the `all` extra): without it `cpu_kernels()` is None and the fast path runs
grouped torch operations instead. The kernels take float32 / float64 tensors (NumPy has no
bfloat16; half weights run the torch operations, with float32 statistics).
"""
from __future__ import annotations

import dataclasses
import operator
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from cuekit.optim.projection import KIND_NAMES, memory_order, rows_view

__all__ = ["FusedPlan", "StepRecord", "cpu_kernels", "fused_rows", "make_fused_plan", "rows_for_reading"]

# Decision codes: projection.KIND_NAMES order. UNKNOWN: no prediction (nothing is applied in the pass).
NONE, CHANNEL, LAYER, UNKNOWN = 0, 1, 2, -1

_GRAD = operator.attrgetter("grad")


# ----------------------------------------------------------------------------------------------
# Kernels, compiled by numba on first use. g, w and the state arrays are (C, K) rows of one tensor;
# stats (4, R + T) and applied (2, R) hold all tensors of a bucket, this one's rows from `off`.
# The element-wise arithmetic is compiled in IEEE order (no reassociation, no fused multiply-add),
# so that a row stepped by the first pass and one stepped by the second get the same bits; only
# the row sums, through `_accumulate`, may be reordered (and so vectorised) and fused.


def _accumulate(total, x, y):  # pragma: no cover - compiled
    """total + x * y: the one operation compiled with reassociation and contraction allowed (see cpu_kernels)."""
    return total + x * y


# Bound by cpu_kernels to numba.carray and to an intrinsic turning an address into a pointer to
# the element type of an array (like): numba resolves globals when it compiles.
_carray = _address_as_pointer = None


def _adamp_pass(g, w, m, v, row_u, stats, applied, off, mode, final, beta1, beta2, eps_scaled, nesterov,
                step_size, decay, decay_projected, eps):  # pragma: no cover - compiled
    """AdamP's moments, u = m / (sqrt(v) + eps_scaled) and the row statistics, and the step
    p <- p + p * change - step_size * u applied under `mode` (NONE: change = -decay; CHANNEL:
    change = step_size * radial - decay_projected, radial = u.w / (|w| + eps)^2; else not
    applied). applied[0, row] = the change applied, NaN where not. `final`: the decision is known
    (1-D tensors): apply whatever the factor. Returns whether every row was applied."""
    n_rows, n_cols = g.shape
    t = g.dtype.type
    # 1 - beta is formed in double precision, then rounded, as torch does with Python scalars.
    a1, b2, a2 = t(1.0 - beta1), t(beta2), t(1.0 - beta2)
    e, s = t(eps_scaled), t(step_size)
    every_row = True
    for i in range(n_rows):
        gw = gg = ww = uw = t(0)
        for j in range(n_cols):
            gj, wj, mj = g[i, j], w[i, j], m[i, j]
            mj = mj + a1 * (gj - mj)
            vj = v[i, j] * b2 + a2 * gj * gj
            m[i, j], v[i, j] = mj, vj
            numer = mj + a1 * (gj - mj) if nesterov else mj
            uj = numer / (np.sqrt(vj) + e)
            row_u[j] = uj
            gw = _accumulate(gw, gj, wj)
            gg = _accumulate(gg, gj, gj)
            ww = _accumulate(ww, wj, wj)
            uw = _accumulate(uw, uj, wj)
        stats[0, off + i], stats[1, off + i], stats[2, off + i], stats[3, off + i] = gw, gg, ww, uw
        if mode == 0:
            change = -t(decay)
        elif mode == 1:
            norm = np.sqrt(ww) + t(eps)
            change = s * (uw / (norm * norm)) - t(decay_projected)
        else:
            change = t(np.nan)
        if not (final or abs(change) <= 0.5):  # NaN: not applied
            applied[0, off + i] = np.nan
            every_row = False
            continue
        applied[0, off + i] = change
        for j in range(n_cols):
            wj = w[i, j]
            w[i, j] = wj + wj * change - s * row_u[j]
    return every_row


def _adamp_finish(g, w, m, v, applied, change, off, beta1, eps_scaled, nesterov,
                  step_size):  # pragma: no cover - compiled
    """Move each row from the step the pass applied (applied[0], NaN: none) to the decided one
    (change), recomputing u from the updated moments."""
    n_rows, n_cols = g.shape
    t = g.dtype.type
    a1, e, s = t(1.0 - beta1), t(eps_scaled), t(step_size)
    for i in range(n_rows):
        done, target = applied[0, off + i], change[off + i]
        if done == target:
            continue
        undo = t(1) + done
        for j in range(n_cols):
            mj = m[i, j]
            numer = mj + a1 * (g[i, j] - mj) if nesterov else mj
            uj = numer / (np.sqrt(v[i, j]) + e)
            wj = w[i, j]
            if done == done:  # applied: back to the weight before the step
                wj = (wj + s * uj) / undo
            w[i, j] = wj + wj * target - s * uj


def _sgdp_pass(g, w, buf, row_u, stats, applied, off, mode, final, momentum, dampening, nesterov, lr,
               decay, decay_projected, eps):  # pragma: no cover - compiled
    """SGDP's buffer, its update (g + momentum * buf with Nesterov, else the buffer) and the row
    statistics, and the step applied under `mode` (NONE: radial 0, decay; CHANNEL: the row's radial,
    decay_projected). With Nesterov p <- p + p * (lr * radial - decay) - lr * u (applied[0]: that
    change); without, the buffer is projected too, as in the official code: buf <- buf - radial * p,
    p <- p - decay * p - lr * buf (applied[0]: decay, applied[1]: radial). NaN: not applied."""
    n_rows, n_cols = g.shape
    t = g.dtype.type
    mu, keep, step = t(momentum), t(1.0 - dampening), t(lr)
    every_row = True
    for i in range(n_rows):
        gw = gg = ww = uw = t(0)
        for j in range(n_cols):
            gj, wj = g[i, j], w[i, j]
            bj = buf[i, j] * mu + keep * gj
            buf[i, j] = bj
            uj = gj + mu * bj if nesterov else bj
            if nesterov:
                row_u[j] = uj
            gw = _accumulate(gw, gj, wj)
            gg = _accumulate(gg, gj, gj)
            ww = _accumulate(ww, wj, wj)
            uw = _accumulate(uw, uj, wj)
        stats[0, off + i], stats[1, off + i], stats[2, off + i], stats[3, off + i] = gw, gg, ww, uw
        if mode == 0:
            radial, d = t(0), t(decay)
        elif mode == 1:
            norm = np.sqrt(ww) + t(eps)
            radial, d = uw / (norm * norm), t(decay_projected)
        else:
            radial, d = t(np.nan), t(np.nan)
        change = step * radial - d
        if not (final or abs(change if nesterov else d) <= 0.5):  # NaN: not applied
            applied[0, off + i] = np.nan
            every_row = False
            continue
        if nesterov:
            applied[0, off + i] = change
            for j in range(n_cols):
                wj = w[i, j]
                w[i, j] = wj + wj * change - step * row_u[j]
        else:
            applied[0, off + i], applied[1, off + i] = d, radial
            for j in range(n_cols):
                wj = w[i, j]
                bj = buf[i, j] - radial * wj
                buf[i, j] = bj
                w[i, j] = wj - d * wj - step * bj
    return every_row


def _sgdp_finish(g, w, buf, applied, change, radial, decay_rows, off, momentum, nesterov,
                 lr):  # pragma: no cover - compiled
    """Move each row from the step the pass applied to the decided one (change with Nesterov;
    radial and decay_rows without, where the buffer is projected too)."""
    n_rows, n_cols = g.shape
    t = g.dtype.type
    mu, step = t(momentum), t(lr)
    for i in range(n_rows):
        done = applied[0, off + i]
        if nesterov:
            target = change[off + i]
            if done == target:
                continue
            undo = t(1) + done
            for j in range(n_cols):
                uj = g[i, j] + mu * buf[i, j]
                wj = w[i, j]
                if done == done:
                    wj = (wj + step * uj) / undo
                w[i, j] = wj + wj * target - step * uj
        else:
            r, d = radial[off + i], decay_rows[off + i]
            r_done = applied[1, off + i]
            if done == d and r_done == r:
                continue
            undo = t(1) - done
            for j in range(n_cols):
                wj, bj = w[i, j], buf[i, j]
                if done == done:  # the weight and the unprojected buffer before the step
                    wj = (wj + step * bj) / undo
                    bj = bj + r_done * wj
                bj = bj - r * wj
                buf[i, j] = bj
                w[i, j] = wj - d * wj - step * bj


def _decide(stats, starts, lengths, threshold_sq, eps, step_size, decay, decay_projected, predicted, complete,
            kinds, redo, radial, decay_rows, change):  # pragma: no cover - compiled
    """The official rule for every 2-D tensor of a bucket (projection.projection_terms in one loop):
    fill the layer rows of stats with each tensor's sums and kinds (T,) with NONE / CHANNEL / LAYER;
    redo[k]: the tensor needs the second pass (its decision is not its prediction, or the first
    pass left rows); for those, radial, decay_rows and change (R,) per channel row (change =
    step_size * radial - decay_rows). predicted becomes kinds."""
    n_rows = radial.shape[0]
    t = stats.dtype.type
    eps_sq, e = t(eps * eps), t(eps)
    d_plain, d_projected, s = t(decay), t(decay_projected), t(step_size)
    for k in range(starts.shape[0]):
        first, last = starts[k], starts[k] + lengths[k]
        sgw = sgg = sww = suw = t(0)
        channel = True
        for r in range(first, last):
            gw, gg, ww = stats[0, r], stats[1, r], stats[2, r]
            sgw += gw
            sgg += gg
            sww += ww
            suw += stats[3, r]
            # |cos| < delta / sqrt(len), squared, each norm clamped at eps (a NaN stays NaN and fails)
            gg = eps_sq if gg < eps_sq else gg
            ww = eps_sq if ww < eps_sq else ww
            if not (gw * gw < gg * ww * threshold_sq[r]):
                channel = False
        row = n_rows + k
        stats[0, row], stats[1, row], stats[2, row], stats[3, row] = sgw, sgg, sww, suw
        cgg = eps_sq if sgg < eps_sq else sgg
        cww = eps_sq if sww < eps_sq else sww
        layer = not channel and sgw * sgw < cgg * cww * threshold_sq[row]
        kind = 1 if channel else (2 if layer else 0)
        kinds[k] = kind
        redo[k] = kind != predicted[k] or not complete[k]
        predicted[k] = kind
        if not redo[k]:
            continue
        norm = np.sqrt(sww) + e
        layer_radial = suw / (norm * norm)
        for r in range(first, last):
            if channel:
                norm = np.sqrt(stats[2, r]) + e
                rad = stats[3, r] / (norm * norm)
            elif layer:
                rad = layer_radial
            else:
                rad = t(0)
            d = d_projected if channel or layer else d_plain
            radial[r], decay_rows[r], change[r] = rad, d, s * rad - d


def _adamp_bucket(table, shapes, slots, offsets, predicted, row_u, spare_stats, spare_applied, starts, lengths,
                  threshold_sq, stats, applied, complete, kinds, redo, radial, decay_rows, change, beta1, beta2,
                  eps_scaled, nesterov, step_size, decay, decay_projected, eps):  # pragma: no cover - compiled
    """_adamp_pass over every tensor of a bucket, then _decide. table[i] = addresses of tensor i's
    (g, w, m, v), each (C, K) = shapes[i] in memory order; slots[i]: its index among the 2-D tensors
    (-1: never projected), offsets[i]: its first statistics row."""
    for i in range(table.shape[0]):
        shape = (shapes[i, 0], shapes[i, 1])
        g = _carray(_address_as_pointer(table[i, 0], row_u), shape)
        w = _carray(_address_as_pointer(table[i, 1], row_u), shape)
        m = _carray(_address_as_pointer(table[i, 2], row_u), shape)
        v = _carray(_address_as_pointer(table[i, 3], row_u), shape)
        slot = slots[i]
        if slot < 0:
            _adamp_pass(g, w, m, v, row_u, spare_stats, spare_applied, 0, 0, True, beta1, beta2, eps_scaled,
                        nesterov, step_size, decay, decay_projected, eps)
        else:
            complete[slot] = _adamp_pass(g, w, m, v, row_u, stats, applied, offsets[i], predicted[slot], False,
                                         beta1, beta2, eps_scaled, nesterov, step_size, decay, decay_projected, eps)
    _decide(stats, starts, lengths, threshold_sq, eps, step_size, decay, decay_projected, predicted, complete, kinds,
            redo, radial, decay_rows, change)


def _sgdp_bucket(table, shapes, slots, offsets, predicted, row_u, spare_stats, spare_applied, starts, lengths,
                 threshold_sq, stats, applied, complete, kinds, redo, radial, decay_rows, change, momentum,
                 dampening, nesterov, lr, decay, decay_projected, eps):  # pragma: no cover - compiled
    """_sgdp_pass over every tensor of a bucket (table[i] = addresses of tensor i's (g, w, buf)),
    then _decide; the rest as _adamp_bucket."""
    for i in range(table.shape[0]):
        shape = (shapes[i, 0], shapes[i, 1])
        g = _carray(_address_as_pointer(table[i, 0], row_u), shape)
        w = _carray(_address_as_pointer(table[i, 1], row_u), shape)
        buf = _carray(_address_as_pointer(table[i, 2], row_u), shape)
        slot = slots[i]
        if slot < 0:
            _sgdp_pass(g, w, buf, row_u, spare_stats, spare_applied, 0, 0, True, momentum, dampening, nesterov, lr,
                       decay, decay_projected, eps)
        else:
            complete[slot] = _sgdp_pass(g, w, buf, row_u, stats, applied, offsets[i], predicted[slot], False,
                                        momentum, dampening, nesterov, lr, decay, decay_projected, eps)
    _decide(stats, starts, lengths, threshold_sq, eps, lr, decay, decay_projected, predicted, complete, kinds, redo,
            radial, decay_rows, change)


_KERNELS: dict | None = None


def _pointer_intrinsic(numba):
    """An intrinsic (address: int, like: array) -> pointer to like's element type, at `address`."""
    from numba.core import types

    @numba.extending.intrinsic
    def address_as_pointer(typingctx, address, like):
        signature = types.CPointer(like.dtype)(address, like)

        def codegen(context, builder, sig, args):
            return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

        return signature, codegen

    return address_as_pointer


def cpu_kernels() -> dict | None:
    """The fused CPU kernels compiled by numba (cached on disk), or None where numba is missing.

    The kernels are compiled without fastmath (error_model="numpy": IEEE division, no Python
    zero-division check); `_accumulate`, which they call for the row sums, with reassociation and
    contraction allowed, so that the compiler may split each sum into vector lanes of fused
    multiply-adds. The module's kernel functions are replaced by their compiled versions, which
    call each other.
    """
    global _KERNELS, _carray, _address_as_pointer
    if _KERNELS is None:
        try:
            import numba
            import numba.extending
        except ImportError:
            _KERNELS = {}
        else:
            options = dict(cache=True, nogil=True, error_model="numpy")
            _carray, _address_as_pointer = numba.carray, _pointer_intrinsic(numba)
            names = ("_adamp_pass", "_adamp_finish", "_sgdp_pass", "_sgdp_finish", "_decide", "_adamp_bucket",
                     "_sgdp_bucket")  # callees first
            module = globals()
            accumulate = numba.njit(fastmath={"reassoc", "nsz", "contract"}, **options)
            module["_accumulate"] = accumulate(module["_accumulate"])
            for name in names:
                module[name] = numba.njit(**options)(module[name])
            _KERNELS = {name.strip("_"): module[name] for name in names}
    return _KERNELS or None


# ----------------------------------------------------------------------------------------------
# NumPy views of tensors, and the per-bucket plan.


def _rows_view(x: Tensor, order: tuple[int, ...]) -> Tensor:
    """projection.rows_view, with 1-D and 0-D tensors as one row."""
    return rows_view(x, order) if x.dim() >= 2 else x.reshape(1, -1)


def rows_for_reading(t: Tensor, order: tuple[int, ...]) -> np.ndarray:
    """A contiguous (C, K) NumPy array of `t` in memory order `order` (a copy only if needed)."""
    return _rows_view(t.detach(), order).contiguous().numpy()


def fused_rows(t: Tensor, order: tuple[int, ...]) -> np.ndarray | None:
    """A writable (C, K) NumPy view of `t` in memory order `order`; None if t cannot be viewed so."""
    rows = _rows_view(t.detach(), order)
    if rows.data_ptr() != t.data_ptr() or not rows.is_contiguous():
        return None
    return rows.numpy()


@dataclasses.dataclass
class FusedPlan:
    """A bucket's tensors as the kernels see them, and each 2-D tensor's prediction. Valid while
    no tensor moves (`is_current`, checked every step). Entries (one per non-empty parameter) are
    the rows of `table`, `shapes`, `slots`, `offsets` and the items of `grads`, `views`."""

    params: list[Tensor]
    pointers: list[int]                  # data_ptr of each parameter when planned
    state: list[tuple[Tensor, ...]]      # each parameter's state tensors (state_keys)
    state_keys: tuple[str, ...]
    grads: list[tuple]                   # per entry: (param, its stride, its memory order, its (C, K) shape)
    views: list[tuple[np.ndarray, ...]]  # per entry: (w, *state) as (C, K) views (they keep the memory alive)
    table: np.ndarray                    # (n, 2 + len(state_keys)) int64: addresses of (g, w, *state)
    shapes: np.ndarray                   # (n, 2) int64: C, K
    slots: np.ndarray                    # (n,) int64: index among the 2-D tensors, -1 for the others
    offsets: np.ndarray                  # (n,) int64: first statistics row (0 for the others)
    two_entries: list[int]               # entry of each 2-D tensor
    two: list[int]                       # indices in params of the 2-D tensors (projection candidates)
    others: list[int]
    starts: np.ndarray                   # (T,) first row of each 2-D tensor
    lengths: np.ndarray                  # (T,) rows of each 2-D tensor
    threshold_sq: np.ndarray             # (R + T,) delta^2 / row length
    total_rows: int                      # R
    predicted: np.ndarray                # (T,) int8: last step's decision, UNKNOWN before the first
    row_u: np.ndarray                    # (max K,) the update of one row
    spare_stats: np.ndarray              # (4, 1) and (2, 1): where the others' statistics go
    spare_applied: np.ndarray

    def __post_init__(self):
        self.entry_params = [entry[0] for entry in self.grads]
        self.strides = [entry[1] for entry in self.grads]

    def is_current(self, params: Sequence[Tensor], states: Sequence[dict]) -> bool:
        """Whether `params` (with their state dicts) are the planned tensors, none of them moved."""
        if len(params) != len(self.params) or not all(map(operator.is_, params, self.params)):
            return False
        if list(map(Tensor.data_ptr, params)) != self.pointers:
            return False
        return all(all(map(operator.is_, map(operator.itemgetter(key), states), tensors))
                   for key, tensors in zip(self.state_keys, zip(*self.state)))

    def gradient_addresses(self) -> list:
        """Write the gradients' addresses into table[:, 0]; returns what holds that memory (the
        gradients, and copies of those not laid out like their parameter): keep it until the kernels ran."""
        grads = list(map(_GRAD, self.entry_params))
        if list(map(Tensor.stride, grads)) == self.strides:  # same size and dtype as p (torch checks): p's layout
            self.table[:, 0] = list(map(Tensor.data_ptr, grads))
            return grads
        addresses, keep = [], list(grads)
        for g, stride, (_, _, order, _) in zip(grads, self.strides, self.grads):
            if g.stride() == stride:
                addresses.append(g.data_ptr())
            else:
                keep.append(rows_for_reading(g, order))
                addresses.append(keep[-1].ctypes.data)
        self.table[:, 0] = addresses
        return keep

    def gradient_rows(self, entry: int) -> np.ndarray:
        """The gradient of an entry as (C, K) rows in its parameter's memory order (a view if possible)."""
        p, stride, order, shape = self.grads[entry]
        g = p.grad.detach()
        if g.stride() == stride:
            return _rows_view(g, order).numpy().reshape(shape)
        return rows_for_reading(g, order)


def make_fused_plan(params: list[Tensor], states: list[dict], state_keys: tuple[str, ...],
                    delta: float) -> FusedPlan | None:
    """The plan of a bucket of float32 or float64 CPU tensors and their state (`states[i][key]` for
    key in state_keys); None if some tensor cannot be viewed as (C, K) rows in place (e.g. a strided view)."""
    two = [i for i, p in enumerate(params) if p.dim() > 1 and p.numel() > 0]
    others = [i for i, p in enumerate(params) if not (p.dim() > 1 and p.numel() > 0)]
    slot_of = {i: k for k, i in enumerate(two)}
    grads, views, rows_of, slots, offsets, two_entries = [], [], [], [], [], []
    rows = 0
    for i, (p, st) in enumerate(zip(params, states)):
        if p.numel() == 0:  # nothing to update
            continue
        order = memory_order(p)
        arrays = tuple(fused_rows(t, order) for t in (p, *(st[k] for k in state_keys)))
        if any(a is None for a in arrays):
            return None
        slot = slot_of.get(i, -1)
        if slot >= 0:
            two_entries.append(len(views))
        grads.append((p, p.stride(), order, arrays[0].shape))
        views.append(arrays)
        rows_of.append(arrays[0].shape)
        slots.append(slot)
        offsets.append(rows if slot >= 0 else 0)
        rows += arrays[0].shape[0] if slot >= 0 else 0
    dtype = np.float32 if params[0].dtype == torch.float32 else np.float64
    lengths = np.array([params[i].size(0) for i in two], dtype=np.int64)
    row_len = [params[i].numel() // params[i].size(0) for i in two]
    threshold_sq = np.array([delta ** 2 / n for n, c in zip(row_len, lengths) for _ in range(c)]
                            + [delta ** 2 / params[i].numel() for i in two], dtype=dtype)
    table = np.zeros((len(views), 2 + len(state_keys)), dtype=np.int64)
    for e, arrays in enumerate(views):
        table[e, 1:] = [a.ctypes.data for a in arrays]
    return FusedPlan(
        params=list(params), pointers=[p.data_ptr() for p in params],
        state=[tuple(st[k] for k in state_keys) for st in states], state_keys=state_keys, grads=grads, views=views,
        table=table, shapes=np.array(rows_of, dtype=np.int64).reshape(-1, 2), slots=np.array(slots, dtype=np.int64),
        offsets=np.array(offsets, dtype=np.int64), two_entries=two_entries, two=two, others=others,
        starts=np.array([offsets[e] for e in two_entries], dtype=np.int64), lengths=lengths,
        threshold_sq=threshold_sq, total_rows=rows, predicted=np.full(len(two), UNKNOWN, np.int8),
        row_u=np.empty(max([1] + [shape[1] for shape in rows_of]), dtype),
        spare_stats=np.empty((4, 1), dtype), spare_applied=np.empty((2, 1), dtype),
    )


@dataclasses.dataclass
class StepRecord:
    """One step's statistics and decisions for a plan (fresh arrays: the decisions are kept for
    projection_kinds after the step). Filled by the bucket kernels (see _decide)."""

    stats: np.ndarray        # (4, R + T)
    applied: np.ndarray      # (2, R)
    complete: np.ndarray     # (T,) bool: the first pass applied every row of the tensor
    decisions: np.ndarray    # (T,) int8
    redo: np.ndarray         # (T,) bool: the tensor needs the second pass
    radial: np.ndarray       # (R,), these three for the tensors to redo only
    decay_rows: np.ndarray   # (R,)
    change: np.ndarray       # (R,)

    @classmethod
    def new(cls, plan: FusedPlan) -> "StepRecord":
        dtype, rows, n = plan.row_u.dtype, plan.total_rows, len(plan.two)
        return cls(stats=np.empty((4, rows + n), dtype), applied=np.empty((2, max(rows, 1)), dtype),
                   complete=np.zeros(n, bool), decisions=np.empty(n, np.int8), redo=np.zeros(n, bool),
                   radial=np.empty(rows, dtype), decay_rows=np.empty(rows, dtype), change=np.empty(rows, dtype))

    def arguments(self, plan: FusedPlan) -> tuple:
        """The arguments of a bucket kernel up to its hyper-parameters."""
        return (plan.table, plan.shapes, plan.slots, plan.offsets, plan.predicted, plan.row_u, plan.spare_stats,
                plan.spare_applied, plan.starts, plan.lengths, plan.threshold_sq, self.stats, self.applied,
                self.complete, self.decisions, self.redo, self.radial, self.decay_rows, self.change)

    def entries_to_redo(self, plan: FusedPlan) -> list[int]:
        """The plan entries of the tensors that need the second pass."""
        return [plan.two_entries[k] for k in np.flatnonzero(self.redo).tolist()]

    def kinds(self) -> list[str]:
        """KIND_NAMES entry of each 2-D tensor (as ProjectionTerms.kinds)."""
        return [KIND_NAMES[k] for k in self.decisions.tolist()]
