"""torchvision classification models passed through by name, with num_classes and in_chans."""
from __future__ import annotations

from torch import nn

from cuekit.models.registry import register_model

# The ImageNet classifiers most used in the ten papers' experiments.
TORCHVISION_CLASSIFIERS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "wide_resnet50_2", "resnext50_32x4d",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "vgg19_bn",
    "efficientnet_b0", "densenet121", "shufflenet_v2_x1_0",
    "regnet_y_400mf", "convnext_tiny",
]


def replace_first_conv(model: nn.Module, in_chans: int, conv_type: type = nn.Conv2d) -> None:
    """Swap the first `conv_type` layer (Conv2d, Conv3d) for one taking `in_chans` channels (same kernel,
    stride, padding)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, conv_type):
                setattr(parent, name, conv_type(in_chans, child.out_channels, child.kernel_size, child.stride,
                                                child.padding, child.dilation, child.groups, child.bias is not None))
                return
    raise ValueError(f"model has no {conv_type.__name__} to adapt to in_chans")


def torchvision_factory(arch: str, module: str = "torchvision.models", num_classes: int = 1000,
                        conv_type: type = nn.Conv2d, doc: str = "random init; load weights with --ckpt"):
    """A registry factory for torchvision's `module.arch` (no weights), with num_classes and in_chans."""
    def factory(num_classes: int = num_classes, in_chans: int = 3, img_size: int | None = None, **kw) -> nn.Module:
        import importlib

        model = getattr(importlib.import_module(module), arch)(weights=None, num_classes=num_classes, **kw)
        if in_chans != 3:
            replace_first_conv(model, in_chans, conv_type)
        return model

    factory.__doc__ = f"torchvision {arch} ({doc})."
    return factory


for _arch in TORCHVISION_CLASSIFIERS:
    register_model(_arch, kwargs_to=f"torchvision.models:{_arch}", family="torchvision",
                   default_img_size=224)(torchvision_factory(_arch))
