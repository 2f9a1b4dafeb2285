"""SGDP (Heo et al., ICLR 2021): momentum SGD whose update loses its radial part on
scale-invariant weights, with decoupled weight decay rescaled by 1 / (1 - momentum).

The rule is the official one (clovaai/AdamP v0.3.0, `sgdp.py`), including two of its details:
the momentum buffer starts at zero (the first step uses (1 - dampening) * grad, unlike
torch.optim.SGD), and without Nesterov the update *is* the buffer, so the official in-place
projection also projects the buffer; with Nesterov only the update is projected.
"""
from __future__ import annotations

import torch
from torch import Tensor

from cuekit.optim import projection
from cuekit.optim.factory import register_optimizer
from cuekit.optim.fused_cpu import StepRecord
from cuekit.optim.projection import (
    ProjectedOptimizer,
    check_argument,
    expand_rows,
    gradient_row_stats_,
    like_views,
    new_row_stats,
    project_update_,
    projection_terms,
    update_row_dots_,
)

__all__ = ["SGDP"]


class SGDP(ProjectedOptimizer):
    """SGDP with the official arguments, order and defaults (lr is required, momentum 0).

    params: iterable of tensors or param-group dicts; lr: step size (>= 0); momentum in [0, 1);
    dampening: the buffer adds (1 - dampening) * grad; weight_decay: decoupled, multiplied by
    lr / (1 - momentum); nesterov: update grad + momentum * buffer; eps: guards divisions and the
    cosine; delta: threshold delta / sqrt(row length); wd_ratio: decay multiplier of projected
    weights; foreach: False runs the per-parameter reference, None/True the fast path; fused: on
    the CPU, the fast path's compiled kernels (None: where numba is installed). State per
    parameter: `momentum` (the buffer), as in the official code.
    """

    def __init__(self, params, lr: float, momentum: float = 0, dampening: float = 0, weight_decay: float = 0,
                 nesterov: bool = False, eps: float = 1e-8, delta: float = 0.1, wd_ratio: float = 0.1,
                 *, foreach: bool | None = None, fused: bool | None = None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, eps=eps, delta=delta, wd_ratio=wd_ratio)
        self._check_group(defaults)
        super().__init__(params, defaults, foreach, fused)

    def _check_group(self, group: dict) -> None:
        self._check_common(group)
        check_argument(0.0 <= group["momentum"] < 1.0, "momentum", group["momentum"],
                       "must be in [0, 1) (the decay is divided by 1 - momentum)")
        check_argument(0.0 <= group["dampening"] <= 1.0, "dampening", group["dampening"], "must be in [0, 1]")

    def _buffer(self, p: Tensor) -> Tensor:
        state = self.state[p]
        if len(state) == 0:
            state["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["momentum"]

    def _reference_group(self, group: dict, params: list[Tensor]) -> list[str]:
        """The readable rule, one parameter at a time (the official loop, with reshape)."""
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        kinds = []
        for p in params:
            grad = p.grad
            buf = self._buffer(p)
            buf.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
            d_p = grad + momentum * buf if group["nesterov"] else buf  # without nesterov: the buffer itself
            decay_ratio, kind = 1.0, "none"
            if p.dim() > 1:
                d_p, decay_ratio, kind = project_update_(p, grad, d_p, group["delta"], group["wd_ratio"], group["eps"])
            if wd > 0:
                p.mul_(1 - lr * wd * decay_ratio / (1 - momentum))
            p.add_(d_p, alpha=-lr)
            kinds.append(kind)
        return kinds

    def _fast_group(self, group: dict, params: list[Tensor]) -> None:
        """The same rule over buckets of equal (device, dtype): on the CPU one compiled pass per
        tensor (numba), else grouped torch operations in cache-sized chunks."""
        states = [self.state[p] for p in params]
        for p, state in zip(params, states):
            if not state:
                self._buffer(p)
        for _, bucket, bucket_states in self._buckets(params, states):
            kernels = self._fused_kernels(bucket[0])
            if kernels and self._fused_bucket(group, bucket, bucket_states, kernels):
                continue
            for chunk in self._chunks(bucket):
                self._eager_chunk(group, chunk)

    def _fused_bucket(self, group: dict, params: list[Tensor], states: list[dict], kernels: dict) -> bool:
        """One compiled pass per tensor, a second only where the decision was not the predicted one
        (fused_cpu); False, doing nothing, if a tensor cannot be viewed in place."""
        plan = self._fused_plan(params, states, ("momentum",), group["delta"])
        if plan is None:
            return False
        lr, momentum, dampening, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        nesterov, eps = group["nesterov"], group["eps"]
        decay = lr * wd / (1 - momentum)
        decay_projected = decay * group["wd_ratio"]
        record = StepRecord.new(plan)
        keep = plan.gradient_addresses()  # the gradients' memory, alive until the kernel ran
        kernels["sgdp_bucket"](*record.arguments(plan), momentum, dampening, nesterov, lr, decay, decay_projected, eps)
        del keep
        for entry in record.entries_to_redo(plan):
            w, buf = plan.views[entry]
            kernels["sgdp_finish"](plan.gradient_rows(entry), w, buf, record.applied, record.change, record.radial,
                                   record.decay_rows, plan.offsets[entry], momentum, nesterov, lr)
        self._record_kinds(plan.params, plan.two, plan.others, record if plan.two else None)
        return True

    def _eager_chunk(self, group: dict, params: list[Tensor]) -> None:
        """Grouped torch operations: kept scratch memory on the CPU, foreach temporaries on a GPU."""
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        nesterov = group["nesterov"]
        decay = lr * wd / (1 - momentum)
        grads = [p.grad for p in params]
        bufs = [self._buffer(p) for p in params]
        two, others = self._split_2d(params)
        w2 = [params[i] for i in two]
        on_cpu = projection.uses_kept_memory(params[0].device)
        n = sum(p.numel() for p in params)
        if on_cpu:  # temporaries in kept memory: [0, n) nesterov updates, [n, 2n) products
            work = self._workspace(params[0], 2 * n)
            scratch = work[n:2 * n]
        else:
            scratch = torch.empty(max((p.numel() for p in w2), default=0), device=params[0].device,
                                  dtype=params[0].dtype)
        if two:
            layout = self._layout(w2, group["delta"])
            stats = new_row_stats(layout, w2[0])
            scratch = self._statistics_scratch(w2, scratch)
            gradient_row_stats_(stats, w2, [grads[i] for i in two], layout, scratch)

        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads, alpha=1 - group["dampening"])
        if not nesterov:
            updates = bufs
        elif on_cpu:
            updates = like_views(work[:n], params)
            for u, g, b in zip(updates, grads, bufs):
                torch.add(g, b, alpha=momentum, out=u)
        else:
            updates = torch._foreach_add(grads, bufs, alpha=momentum)

        terms = None
        if two:
            u2 = [updates[i] for i in two]
            update_row_dots_(stats, w2, u2, layout, scratch)
            terms = projection_terms(stats, layout, group["eps"], group["wd_ratio"], lr, decay)
            for p, u, off, c in zip(w2, u2, layout.offsets, layout.rows):
                rows = slice(off, off + c)
                if nesterov:
                    # p <- p * (1 - decay*ratio) - lr * (u - radial * p)  =  p + p * change - lr * u
                    p.addcmul_(p, expand_rows(terms.change[rows], p))
                else:
                    u.addcmul_(p, expand_rows(terms.radial[rows], p), value=-1)  # projects the buffer, as the official
                    if wd > 0:
                        p.addcmul_(p, expand_rows(terms.decay_rows[rows], p), value=-1)
        if wd > 0 and others:
            torch._foreach_mul_([params[i] for i in others], 1 - decay)
        torch._foreach_add_(params, updates, alpha=-lr)
        self._record_kinds(params, two, others, terms)


@register_optimizer("sgdp")
def _build_sgdp(groups, lr, weight_decay, momentum, betas, eps, nesterov, **kw) -> SGDP:
    """`cuekit train --opt sgdp`: SGDP with the factory's lr, momentum (0.9), weight decay, nesterov and eps."""
    return SGDP(groups, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, eps=eps, **kw)
