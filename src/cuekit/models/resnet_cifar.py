"""CIFAR-style ResNet (He et al. 2016, section 4.2): depth 6n+2, widths 16/32/64, option-A-free."""
from __future__ import annotations

from torch import Tensor, nn

from cuekit.models.registry import register_model


class BasicBlock(nn.Module):
    """Two 3x3 convs with BatchNorm; a 1x1 projection shortcut when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images: x (N, in_chans, H, W) -> logits (N, num_classes); any H, W >= 8."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_chans: int = 3, width: int = 16):
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        widths = [width, 2 * width, 4 * width]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers, in_planes = [], widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, w, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_planes
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        """Last feature map: (N, 4*width, H/4, W/4)."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.forward_features(x)).flatten(1))


def _make(depth: int):
    def factory(num_classes: int = 10, in_chans: int = 3, img_size: int | None = None, **kw):
        return CifarResNet(depth=depth, num_classes=num_classes, in_chans=in_chans, **kw)

    factory.__doc__ = f"CIFAR ResNet-{depth} (6n+2 with n={(depth - 2) // 6})."
    return factory


for _d in (8, 14, 20, 32, 44, 56, 110):
    register_model(f"resnet{_d}", kwargs_to=CifarResNet, family="resnet_cifar", default_img_size=32)(_make(_d))
