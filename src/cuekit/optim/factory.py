"""Optimizers by name: `create_optimizer("sgd", model, lr=0.1)`; areas register more by name.

Each optimizer has its own default learning rate (`default_lr`), used when none is given: 0.1 for the
SGD family (SGD, SGDP: the AdamP README's SGDP(lr=0.1)), 1e-3 for the Adam family (Adam, AdamW: torch's
default; AdamP: the AdamP README's AdamP(lr=0.001)). SGD's 0.1 would make an Adam-family optimizer diverge.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

from cuekit.errors import UnknownChoiceError, UsageError

OptimizerBuilder = Callable[..., torch.optim.Optimizer]
_OPTIMIZERS: dict[str, OptimizerBuilder] = {}
# Default learning rates; an optimizer registered elsewhere may give its own to `register_optimizer`.
_DEFAULT_LR: dict[str, float] = {"sgd": 0.1, "sgdp": 0.1, "adam": 1e-3, "adamw": 1e-3, "adamp": 1e-3}


def register_optimizer(name: str, default_lr: float | None = None) -> Callable[[OptimizerBuilder], OptimizerBuilder]:
    """Decorator: register `fn(param_groups, lr, weight_decay, momentum, betas, eps, nesterov, **kw)`."""

    def deco(fn: OptimizerBuilder) -> OptimizerBuilder:
        if name in _OPTIMIZERS:
            raise ValueError(f"optimizer {name!r} registered twice")
        _OPTIMIZERS[name] = fn
        if default_lr is not None:
            _DEFAULT_LR[name] = float(default_lr)
        return fn

    return deco


def default_lr(name: str) -> float:
    """The learning rate `create_optimizer(name, ...)` and `cuekit train --opt NAME` use when none is given."""
    _ensure_builtin()
    if name not in _OPTIMIZERS:
        raise UnknownChoiceError("optimizer", name, _OPTIMIZERS)
    if name not in _DEFAULT_LR:
        raise UsageError(f"optimizer {name!r} has no default learning rate: give one (--lr)")
    return _DEFAULT_LR[name]


def list_optimizers() -> list[str]:
    """Names accepted by `create_optimizer` and `cuekit train --opt`."""
    _ensure_builtin()
    return sorted(_OPTIMIZERS)


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Parameter names a model excludes from weight decay (timm convention: `model.no_weight_decay()`)."""
    fn = getattr(model, "no_weight_decay", None)
    names = set(fn()) if callable(fn) else set()
    return names


def param_groups(model: nn.Module, weight_decay: float, skip_1d: bool = True) -> list[dict]:
    """Split parameters into a decayed group and a group without weight decay.

    No decay on 1-D tensors (biases, norm scales) when `skip_1d`, and on the names the model
    marks (position embeddings, class tokens) through `no_weight_decay()`.
    """
    skip = no_weight_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.split(".")[-1]
        if (skip_1d and p.ndim <= 1) or name in skip or leaf in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def create_optimizer(
    name: str,
    model_or_params: nn.Module | Iterable,
    lr: float | None = None,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    nesterov: bool = False,
    skip_1d_decay: bool = True,
    **kwargs,
) -> torch.optim.Optimizer:
    """Build an optimizer by name; a model gets the decay / no-decay parameter split; lr None: `default_lr(name)`."""
    _ensure_builtin()
    if name not in _OPTIMIZERS:
        raise UnknownChoiceError("optimizer", name, _OPTIMIZERS)
    if lr is None:
        lr = default_lr(name)
    if lr <= 0:
        raise UsageError(f"learning rate must be positive, got {lr}")
    if isinstance(model_or_params, nn.Module):
        groups = param_groups(model_or_params, weight_decay, skip_1d_decay)
    else:
        groups = list(model_or_params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups, "weight_decay": weight_decay}]
    return _OPTIMIZERS[name](
        groups, lr=lr, weight_decay=weight_decay, momentum=momentum, betas=betas, eps=eps,
        nesterov=nesterov, **kwargs,
    )


@register_optimizer("sgd")
def _sgd(groups, lr, weight_decay, momentum, betas, eps, nesterov, **kw):
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov and momentum > 0, **kw)


@register_optimizer("adamw")
def _adamw(groups, lr, weight_decay, momentum, betas, eps, nesterov, **kw):
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kw)


@register_optimizer("adam")
def _adam(groups, lr, weight_decay, momentum, betas, eps, nesterov, **kw):
    return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **kw)


def _ensure_builtin() -> None:
    # Modules that register further optimizers (AdamP, SGDP) on import.
    import cuekit.optim  # noqa: F401
