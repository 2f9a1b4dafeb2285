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


def _replace_first_conv(model: nn.Module, in_chans: int) -> None:
    """Swap the first Conv2d for one taking `in_chans` channels (same kernel, stride, padding)."""
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                conv = nn.Conv2d(
                    in_chans, child.out_channels, child.kernel_size, child.stride,
                    child.padding, child.dilation, child.groups, child.bias is not None,
                )
                setattr(parent, name, conv)
                return
    raise ValueError("model has no Conv2d to adapt to in_chans")


def _make(arch: str):
    def factory(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None, **kw):
        import torchvision.models as tvm

        model = getattr(tvm, arch)(weights=None, num_classes=num_classes, **kw)
        if in_chans != 3:
            _replace_first_conv(model, in_chans)
        return model

    factory.__doc__ = f"torchvision {arch} (random init; load weights with --ckpt)."
    return factory


for _arch in TORCHVISION_CLASSIFIERS:
    register_model(_arch, family="torchvision", default_img_size=224)(_make(_arch))
