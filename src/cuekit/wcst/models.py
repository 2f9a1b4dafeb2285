"""Models for the audit: any registry model by name (`mlp`, `resnet20`, `vit_*`, ...) or the audit's own `convnet`."""
from __future__ import annotations

from torch import Tensor, nn

from cuekit.errors import UnknownChoiceError


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvNet(nn.Module):
    """A small CNN for 64 px cue audits on a CPU: x (N, C, H, W) -> logits (N, num_classes).

    A 5x5 stride-2 stem keeps the detail of a 64 px image at the cost of a 32 px network; then
    3x3 conv (width), max-pool, 3x3 conv (2 width), max-pool, 3x3 conv (4 width), global average
    pool, linear. BatchNorm after every conv.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 16):
        super().__init__()
        w = int(width)
        self.features = nn.Sequential(
            *_conv_bn_relu(in_chans, w, 5, 2), *_conv_bn_relu(w, w), nn.MaxPool2d(2),
            *_conv_bn_relu(w, 2 * w), nn.MaxPool2d(2), *_conv_bn_relu(2 * w, 4 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def convnet(num_classes: int = 10, in_chans: int = 3, img_size: int | None = None, width: int = 16) -> ConvNet:
    """The audit's small CNN (any input size >= 8 px)."""
    return ConvNet(num_classes, in_chans, width)


# Models defined by the audit itself (not in the registry), by name.
LOCAL_MODELS = {"convnet": convnet}


def model_names() -> list[str]:
    """Every name `build_model` accepts: the audit's own models and the registry's."""
    from cuekit.models import list_models

    return sorted(LOCAL_MODELS) + list_models()


def build_model(name: str, num_classes: int, in_chans: int, img_size: int, **kwargs) -> nn.Module:
    """A freshly initialised model `name` for (in_chans, img_size, img_size) inputs; kwargs go to its factory
    (e.g. width=16)."""
    check_model_name(name)
    if name in LOCAL_MODELS:
        return LOCAL_MODELS[name](num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    from cuekit.models import create_model

    return create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)


def check_model_name(name: str) -> None:
    """Raise UnknownChoiceError unless `name` is the audit's own model or a registered one."""
    names = model_names()
    if name not in names:
        raise UnknownChoiceError("model", name, names)
