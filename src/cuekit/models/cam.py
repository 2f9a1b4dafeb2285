"""Class activation mapping (CAM, Zhou et al. 2016) models: backbone -> GAP -> linear classifier.

`CAMNet.forward(x)` returns logits (so the shared training engine trains it like any
classifier); `CAMNet.forward_cam(x, classes)` also returns the class activation map of the
requested class per image: the classifier weights of that class applied to the last feature
map, averaged over channels as in wsolevaluation (the scale cancels after normalization).

Registered: `cam_small` (a small CNN for CPU work), `cam_resnet18`, `cam_resnet50`, `cam_vgg16`
(torchvision backbones, wsolevaluation layout: ResNet layer4 stride 1, VGG without its last
pool plus a 1024-channel conv6) and `cam_resnet20` (the CIFAR ResNet). `large_feature_map=True`
removes one more stride (ResNet layer3 stride 1, VGG without pool4, cam_small one pool less):
28x28 maps at 224 px. `adl_after=(i, ...)` inserts Attention-based Dropout Layers (ADL) after
those backbone stages (see `stage_names`); `adl_drop_rate`, `adl_gamma` set them.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import Tensor, nn

from cuekit.models.registry import create_model, register_model


class ADL(nn.Module):
    """Attention-based Dropout Layer (Choe & Shim, CVPR'19), active only in training.

    attention = channel mean of x (N, 1, h, w). With probability `drop_rate` (one draw per
    batch, as in wsolevaluation) x is multiplied by the drop mask (attention < gamma * max),
    which hides the most discriminative part; otherwise by sigmoid(attention).
    """

    def __init__(self, drop_rate: float = 0.75, gamma: float = 0.9):
        super().__init__()
        if not 0 <= drop_rate <= 1 or not 0 < gamma <= 1:
            raise ValueError(f"ADL needs drop_rate in [0, 1] and gamma in (0, 1], got {drop_rate}, {gamma}")
        self.drop_rate, self.gamma = drop_rate, gamma

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        attention = x.mean(dim=1, keepdim=True)
        if torch.rand(()) < self.drop_rate:
            peak = attention.amax(dim=(2, 3), keepdim=True)
            return x * (attention < self.gamma * peak).to(x.dtype)
        return x * torch.sigmoid(attention)

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, gamma={self.gamma}"


class CAMNet(nn.Module):
    """features (x -> (N, C, h, w)) -> GAP -> Linear; logits from `forward`, CAMs from `forward_cam`."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.features = features
        self.num_features = num_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(num_features, num_classes)

    def feature_map(self, x: Tensor) -> Tensor:
        """The last feature map (N, C, h, w) that the CAM is read from."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes)."""
        return self.fc(self.pool(self.feature_map(x)).flatten(1))

    def forward_cam(self, x: Tensor, classes: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Logits (N, K) and the CAM (N, h, w) of `classes` (N,) (default: the predicted class)."""
        feats = self.feature_map(x)
        logits = self.fc(self.pool(feats).flatten(1))
        if classes is None:
            classes = logits.argmax(dim=1)
        weights = self.fc.weight[classes.long()]  # (N, C)
        cams = torch.einsum("nc,nchw->nhw", weights.to(feats.dtype), feats) / feats.shape[1]
        return logits, cams


def _with_adl(stages: "OrderedDict[str, nn.Module]", adl_after: Sequence[int], drop_rate: float,
              gamma: float) -> nn.Sequential:
    names = list(stages)
    for i in adl_after:
        if not -len(names) <= i < len(names):
            raise ValueError(f"adl_after index {i} out of range for stages {names}")
    wanted = {i % len(names) for i in adl_after}
    out: "OrderedDict[str, nn.Module]" = OrderedDict()
    for i, (name, mod) in enumerate(stages.items()):
        out[name] = mod
        if i in wanted:
            out[f"adl_{name}"] = ADL(drop_rate, gamma)
    return nn.Sequential(out)


def stage_names(model: CAMNet) -> list[str]:
    """The named stages of a CAMNet backbone (ADL positions index into this list)."""
    return [n for n in model.features._modules if not n.startswith("adl_")]


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_model("cam_small", family="cam", default_img_size=32,
                description="small 6-conv CAM network for CPU work (feature map 1/4 of the input)")
def cam_small(num_classes: int = 10, in_chans: int = 3, img_size: int | None = None,
              large_feature_map: bool = False, width: int = 32, adl_after: Sequence[int] = (),
              adl_drop_rate: float = 0.75, adl_gamma: float = 0.9, **kw) -> CAMNet:
    """A 6-conv CNN for CPU work: feature map at 1/4 of the input (1/2 with large_feature_map)."""
    w = width
    stages: "OrderedDict[str, nn.Module]" = OrderedDict()
    stages["stage1"] = nn.Sequential(*_conv_bn(in_chans, w), *_conv_bn(w, w), nn.MaxPool2d(2))
    stages["stage2"] = nn.Sequential(*_conv_bn(w, 2 * w), *_conv_bn(2 * w, 2 * w),
                                     *([] if large_feature_map else [nn.MaxPool2d(2)]))
    stages["stage3"] = nn.Sequential(*_conv_bn(2 * w, 4 * w), *_conv_bn(4 * w, 4 * w))
    return CAMNet(_with_adl(stages, adl_after, adl_drop_rate, adl_gamma), 4 * w, num_classes)


def _unstride(block: nn.Module) -> None:
    """Set the stride of a torchvision ResNet block (conv and downsample) to 1."""
    for m in block.modules():
        if isinstance(m, nn.Conv2d) and m.stride != (1, 1):
            m.stride = (1, 1)


def _cam_resnet(arch: str, num_classes: int, in_chans: int, large_feature_map: bool,
                adl_after: Sequence[int], adl_drop_rate: float, adl_gamma: float) -> CAMNet:
    net = create_model(arch, num_classes=1000, in_chans=in_chans)
    _unstride(net.layer4[0])  # wsolevaluation: layer4 stride 1 -> 14x14 at 224 px
    if large_feature_map:
        _unstride(net.layer3[0])  # 28x28
    stages: "OrderedDict[str, nn.Module]" = OrderedDict(
        stem=nn.Sequential(OrderedDict(conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool)),
        layer1=net.layer1, layer2=net.layer2, layer3=net.layer3, layer4=net.layer4)
    return CAMNet(_with_adl(stages, adl_after, adl_drop_rate, adl_gamma), net.fc.in_features, num_classes)


@register_model("cam_resnet18", family="cam", default_img_size=224,
                description="CAM on ResNet-18, layer4 stride 1 (14x14 at 224; 28x28 with large_feature_map)")
def cam_resnet18(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None,
                 large_feature_map: bool = False, adl_after: Sequence[int] = (),
                 adl_drop_rate: float = 0.75, adl_gamma: float = 0.9, **kw) -> CAMNet:
    """torchvision ResNet-18 backbone with layer4 stride 1 (+ layer3 stride 1 if large_feature_map)."""
    return _cam_resnet("resnet18", num_classes, in_chans, large_feature_map, adl_after, adl_drop_rate, adl_gamma)


@register_model("cam_resnet50", family="cam", default_img_size=224,
                description="CAM on ResNet-50 as in wsolevaluation (14x14 at 224; 28x28 with large_feature_map)")
def cam_resnet50(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None,
                 large_feature_map: bool = False, adl_after: Sequence[int] = (),
                 adl_drop_rate: float = 0.75, adl_gamma: float = 0.9, **kw) -> CAMNet:
    """torchvision ResNet-50 backbone with layer4 stride 1 (+ layer3 stride 1 if large_feature_map)."""
    return _cam_resnet("resnet50", num_classes, in_chans, large_feature_map, adl_after, adl_drop_rate, adl_gamma)


@register_model("cam_vgg16", family="cam", default_img_size=224,
                description="CAM on VGG16 + conv6 as in wsolevaluation (14x14 at 224; 28x28 with large_feature_map)")
def cam_vgg16(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None,
              large_feature_map: bool = False, adl_after: Sequence[int] = (),
              adl_drop_rate: float = 0.75, adl_gamma: float = 0.9, **kw) -> CAMNet:
    """VGG16 convolutions without the last pool (and pool4 if large_feature_map) + conv6 (1024) + ReLU."""
    from torchvision.models.vgg import cfgs, make_layers

    layers = list(make_layers(cfgs["D"]).children())[:-1]  # convolutions only: no 100M-parameter classifier
    if in_chans != 3:
        layers[0] = nn.Conv2d(in_chans, 64, 3, padding=1)
    pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
    if large_feature_map:
        del layers[pools[-1]]
    stages: "OrderedDict[str, nn.Module]" = OrderedDict()
    start = 0
    for k, p in enumerate([i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)] + [len(layers) - 1]):
        stages[f"block{k + 1}"] = nn.Sequential(*layers[start:p + 1])
        start = p + 1
    stages["conv6"] = nn.Sequential(nn.Conv2d(512, 1024, 3, padding=1), nn.ReLU(inplace=True))
    return CAMNet(_with_adl(stages, adl_after, adl_drop_rate, adl_gamma), 1024, num_classes)


@register_model("cam_resnet20", family="cam", default_img_size=32,
                description="CAM on the CIFAR ResNet-20 (8x8 at 32 px)")
def cam_resnet20(num_classes: int = 10, in_chans: int = 3, img_size: int | None = None,
                 adl_after: Sequence[int] = (), adl_drop_rate: float = 0.75, adl_gamma: float = 0.9,
                 **kw) -> CAMNet:
    """The CIFAR ResNet-20 of the registry as a CAM backbone (feature map at 1/4 of the input)."""
    net = create_model("resnet20", num_classes=num_classes, in_chans=in_chans)
    stages: "OrderedDict[str, nn.Module]" = OrderedDict(
        stem=nn.Sequential(net.conv1, net.bn1, net.relu), layer1=net.layer1, layer2=net.layer2,
        layer3=net.layer3)
    return CAMNet(_with_adl(stages, adl_after, adl_drop_rate, adl_gamma), net.num_features, num_classes)


def load_backbone_weights(model: CAMNet, path: str, strict: bool = True, state: dict | None = None) -> list[str]:
    """Load a torchvision-layout classifier checkpoint (e.g. ImageNet ResNet-50 or VGG16 weights)
    into a CAMNet backbone; the classifier (and VGG's conv6) stay as they are. Returns the
    checkpoint keys that were not used. `state`: the file's tensors when the caller has read them already."""
    from cuekit.errors import CheckpointError
    from cuekit.models.registry import read_state_dict

    if state is None:
        state, _ = read_state_dict(path)
    targets: dict[str, str] = {}
    for name in model.state_dict():
        rest = name[len("features."):] if name.startswith("features.") else None
        if rest is None:
            continue
        if rest.startswith("stem."):
            targets[rest[len("stem."):]] = name
        elif rest.startswith("layer"):
            targets[rest] = name
    # VGG: torchvision's features.{i} convolutions, in order, onto our blocks' convolutions
    src = sorted({int(k.split(".")[1]) for k in state
                  if k.startswith("features.") and k.split(".")[1].isdigit() and state[k].dim() == 4})
    dst = [n for n, m in model.features.named_modules() if isinstance(m, nn.Conv2d) and not n.startswith("conv6")]
    if src and not targets:
        for i, n in zip(src, dst):
            for p in ("weight", "bias"):
                targets[f"features.{i}.{p}"] = f"features.{n}.{p}"
    mapped = {targets[k]: v for k, v in state.items() if k in targets}
    if not mapped:
        raise CheckpointError(f"{path}: no backbone weights recognised for this CAM model")
    missing = [t for t in targets.values() if t not in mapped]
    if strict and missing:
        raise CheckpointError(f"{path}: backbone weights missing for {missing[:3]}")
    try:
        model.load_state_dict(mapped, strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: backbone weights do not fit: {str(e).splitlines()[0]}") from None
    return [k for k in state if k not in targets]
