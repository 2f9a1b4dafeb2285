"""Optimizers: the factory used by `cuekit train --opt NAME`, plus AdamP and SGDP."""
from __future__ import annotations

import importlib

from cuekit.optim.factory import (
    create_optimizer,
    list_optimizers,
    no_weight_decay_names,
    param_groups,
    register_optimizer,
)

__all__ = ["create_optimizer", "list_optimizers", "no_weight_decay_names", "param_groups",
           "register_optimizer"]

# Modules that register optimizers on import; one not written yet is skipped.
for _mod in ("adamp", "sgdp"):
    _full = f"{__name__}.{_mod}"
    try:
        _m = importlib.import_module(_full)
    except ModuleNotFoundError as _e:
        if _e.name != _full:
            raise
    else:
        for _name in getattr(_m, "__all__", []):
            globals()[_name] = getattr(_m, _name)
            __all__.append(_name)
