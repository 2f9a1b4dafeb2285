"""Models for the audit: any registry model by name (`mlp`, `resnet20`, `vit_*`, ...)."""
from __future__ import annotations

from torch import nn

from cuekit.errors import UnknownChoiceError


def build_model(name: str, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """A freshly initialised registry model `name` for (in_chans, img_size, img_size) inputs."""
    from cuekit.models import create_model

    check_model_name(name)
    return create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size)


def check_model_name(name: str) -> None:
    """Raise UnknownChoiceError unless `name` is a registered model."""
    from cuekit.models import list_models

    if name not in list_models():
        raise UnknownChoiceError("model", name, list_models())
