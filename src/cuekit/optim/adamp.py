"""AdamP (Heo et al., "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant
Weights", ICLR 2021): AdamW whose update loses its radial part on scale-invariant weights.

The rule is the official one (clovaai/AdamP v0.3.0): the scale-invariance test on the raw
gradient, channel view then layer view, only the update projected (never the moments), decoupled
weight decay scaled by `wd_ratio` where projected, 1-D tensors never projected. Unlike the
official code it works on channels_last weights, and its default path takes no host sync.
"""
from __future__ import annotations

import math
import operator

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

__all__ = ["AdamP"]

_STEP = operator.itemgetter("step")


class AdamP(ProjectedOptimizer):
    """AdamP with the official arguments and defaults.

    params: iterable of tensors or of param-group dicts; lr: step size (>= 0); betas: moment
    decay rates in [0, 1); eps: added to the denominator and used in the cosine test;
    weight_decay: decoupled (AdamW-style) decay; delta: the threshold of the scale-invariance
    test is delta / sqrt(row length); wd_ratio: decay multiplier of projected weights; nesterov:
    Nesterov momentum in the update; foreach: False runs the per-parameter reference, None/True
    the fast path; fused: on the CPU, the fast path's compiled kernels (None: where numba is
    installed; False: grouped torch operations instead). The state per parameter (step, exp_avg,
    exp_avg_sq) is the official one, so state dicts load either way.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, delta: float = 0.1, wd_ratio: float = 0.1, nesterov: bool = False,
                 *, foreach: bool | None = None, fused: bool | None = None):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, delta=delta,
                        wd_ratio=wd_ratio, nesterov=nesterov)
        self._check_group(defaults)
        super().__init__(params, defaults, foreach, fused)

    def _check_group(self, group: dict) -> None:
        self._check_common(group)
        betas = group["betas"]
        check_argument(isinstance(betas, (tuple, list)) and len(betas) == 2, "betas", betas,
                       "must be a pair (beta1, beta2)")
        for i, b in enumerate(betas):
            check_argument(0.0 <= b < 1.0, f"betas[{i}]", b, "must be in [0, 1)")

    def _init_state(self, p: Tensor) -> dict:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _reference_group(self, group: dict, params: list[Tensor]) -> list[str]:
        """The readable rule, one parameter at a time (the official loop, with reshape)."""
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        kinds = []
        for p in params:
            grad = p.grad
            state = self._init_state(p)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            state["step"] += 1
            bias_correction1 = 1 - beta1 ** state["step"]
            bias_correction2 = 1 - beta2 ** state["step"]
            exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
            step_size = lr / bias_correction1
            if group["nesterov"]:
                perturb = (beta1 * exp_avg + (1 - beta1) * grad) / denom
            else:
                perturb = exp_avg / denom
            decay_ratio, kind = 1.0, "none"
            if p.dim() > 1:
                perturb, decay_ratio, kind = project_update_(p, grad, perturb, group["delta"], group["wd_ratio"], eps)
            if wd > 0:
                p.mul_(1 - lr * wd * decay_ratio)
            p.add_(perturb, alpha=-step_size)
            kinds.append(kind)
        return kinds

    def _fast_group(self, group: dict, params: list[Tensor]) -> None:
        """The same rule over buckets of equal (device, dtype, step): on the CPU one compiled pass
        per tensor (numba), else grouped torch operations in cache-sized chunks."""
        states = [self.state[p] for p in params]
        for p, state in zip(params, states):
            if not state:
                self._init_state(p)
            state["step"] += 1
        for (_, _, step), bucket, bucket_states in self._buckets(params, states, _STEP):
            kernels = self._fused_kernels(bucket[0])
            if kernels and self._fused_bucket(group, bucket, bucket_states, step, kernels):
                continue
            for chunk in self._chunks(bucket):
                self._eager_chunk(group, chunk, step)

    def _fused_bucket(self, group: dict, params: list[Tensor], states: list[dict], step: int, kernels: dict) -> bool:
        """One compiled pass per tensor, a second only where the decision was not the predicted one
        (fused_cpu); False, doing nothing, if a tensor cannot be viewed in place."""
        plan = self._fused_plan(params, states, ("exp_avg", "exp_avg_sq"), group["delta"])
        if plan is None:
            return False
        beta1, beta2 = group["betas"]
        lr, eps, wd, nesterov = group["lr"], group["eps"], group["weight_decay"], group["nesterov"]
        bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
        eps_scaled, step_size = eps * math.sqrt(bc2), lr * math.sqrt(bc2) / bc1  # as in _eager_chunk
        decay = lr * wd
        decay_projected = decay * group["wd_ratio"]
        record = StepRecord.new(plan)
        keep = plan.gradient_addresses()  # the gradients' memory, alive until the kernel ran
        kernels["adamp_bucket"](*record.arguments(plan), beta1, beta2, eps_scaled, nesterov, step_size, decay,
                                decay_projected, eps)
        del keep
        for entry in record.entries_to_redo(plan):
            w, m, v = plan.views[entry]
            kernels["adamp_finish"](plan.gradient_rows(entry), w, m, v, record.applied, record.change,
                                    plan.offsets[entry], beta1, eps_scaled, nesterov, step_size)
        self._record_kinds(plan.params, plan.two, plan.others, record if plan.two else None)
        return True

    def _eager_chunk(self, group: dict, params: list[Tensor], step: int) -> None:
        """Grouped torch operations: kept scratch memory on the CPU, foreach temporaries on a GPU."""
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        nesterov = group["nesterov"]
        grads = [p.grad for p in params]
        exp_avgs = [self.state[p]["exp_avg"] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
        bc1, bc2 = 1 - beta1 ** step, 1 - beta2 ** step
        # official: u = m / (sqrt(v) / sqrt(bc2) + eps). Here u' = m / (sqrt(v) + eps * sqrt(bc2))
        # = u / sqrt(bc2), and the step size takes the sqrt(bc2) back: one pass fewer.
        eps_scaled = eps * math.sqrt(bc2)
        step_size = lr * math.sqrt(bc2) / bc1
        two, others = self._split_2d(params)
        w2 = [params[i] for i in two]
        on_cpu = projection.uses_kept_memory(params[0].device)
        n = sum(p.numel() for p in params)
        if on_cpu:  # temporaries in kept memory: [0, n) updates, [n, 2n) denominators / products
            work = self._workspace(params[0], 2 * n)
            updates, spare = like_views(work[:n], params), work[n:2 * n]
        else:
            spare = torch.empty(max((p.numel() for p in w2), default=0), device=params[0].device,
                                dtype=params[0].dtype)
        if two:
            layout = self._layout(w2, group["delta"])
            stats = new_row_stats(layout, w2[0])
            stats_scratch = self._statistics_scratch(w2, spare)
            gradient_row_stats_(stats, w2, [grads[i] for i in two], layout, stats_scratch)

        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        if on_cpu:  # one tensor at a time, written into the kept memory
            for u, d, m, v, g in zip(updates, like_views(spare, params), exp_avgs, exp_avg_sqs, grads):
                torch.sqrt(v, out=d).add_(eps_scaled)
                if nesterov:
                    torch.lerp(m, g, 1 - beta1, out=u).div_(d)
                else:
                    torch.div(m, d, out=u)
        else:  # grouped operations; the caching allocator makes the temporaries cheap
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_add_(denom, eps_scaled)
            numer = torch._foreach_lerp(exp_avgs, grads, 1 - beta1) if nesterov else exp_avgs
            updates = torch._foreach_div(numer, denom)
            del denom, numer

        terms = None
        if two:
            update_row_dots_(stats, w2, [updates[i] for i in two], layout, stats_scratch)
            terms = projection_terms(stats, layout, eps, group["wd_ratio"], step_size, lr * wd)
            # p <- p * (1 - lr*wd*ratio) - s * (u - radial * p)  =  p + p * change - s * u
            for p, off, c in zip(w2, layout.offsets, layout.rows):
                p.addcmul_(p, expand_rows(terms.change[off:off + c], p))
        if wd > 0 and others:
            torch._foreach_mul_([params[i] for i in others], 1 - lr * wd)
        torch._foreach_add_(params, updates, alpha=-step_size)
        self._record_kinds(params, two, others, terms)


@register_optimizer("adamp")
def _build_adamp(groups, lr, weight_decay, momentum, betas, eps, nesterov, **kw) -> AdamP:
    """`cuekit train --opt adamp`: AdamP with the factory's lr, betas, eps, weight decay and nesterov."""
    return AdamP(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, nesterov=nesterov, **kw)
