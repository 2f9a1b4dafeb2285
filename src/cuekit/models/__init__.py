"""Model registry and the models cuekit ships; `create_model("resnet20")`, `list_models()`."""
from __future__ import annotations

import importlib

from cuekit.models.registry import (
    check_model_arguments,
    checkpoint_metadata,
    create_model,
    list_models,
    load_checkpoint,
    model_arguments,
    model_info,
    read_state_dict,
    register_model,
)

# Each module registers its models on import. An area's module that is not written yet is
# skipped; any other import error propagates.
_MODEL_MODULES = [
    "resnet_cifar",
    "mlp",
    "torchvision_models",
    "vit",
    "pit",
    "rexnet",
    "cam",
    "video",
]
for _mod in _MODEL_MODULES:
    _full = f"{__name__}.{_mod}"
    try:
        importlib.import_module(_full)
    except ModuleNotFoundError as _e:
        if _e.name != _full:
            raise

__all__ = [
    "check_model_arguments",
    "checkpoint_metadata",
    "create_model",
    "list_models",
    "load_checkpoint",
    "model_arguments",
    "model_info",
    "read_state_dict",
    "register_model",
]
