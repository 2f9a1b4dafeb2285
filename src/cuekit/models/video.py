"""Video classifiers on (B, C, T, H, W) clips: a small 3D CNN for CPU work; torchvision's r3d_18, mc3_18, r2plus1d_18.

All are created through the registry (`create_model("video_cnn_small", num_classes=8)`) and tagged
`input="video"` in their info, so tools can tell them from image models.
"""
from __future__ import annotations

from torch import Tensor, nn

from cuekit.models.registry import register_model
from cuekit.models.torchvision_models import torchvision_factory

__all__ = ["TORCHVISION_VIDEO_MODELS", "VideoCNN"]

TORCHVISION_VIDEO_MODELS = ("r3d_18", "mc3_18", "r2plus1d_18")


def _conv_bn_relu(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Sequential:
    """3x3x3 convolution, batch norm, ReLU."""
    return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class VideoCNN(nn.Module):
    """A small plain 3D CNN: four 3x3x3 conv-BN-ReLU stages, global average pool over (T, H, W), linear head.

    Stage widths `widths`; the first stage keeps the resolution, the second halves H and W only (early
    frames stay distinct), the later ones halve T, H and W. x: (B, C, T, H, W) -> logits (B, num_classes).
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, ...] = (16, 32, 64, 128),
                 drop_rate: float = 0.0):
        super().__init__()
        strides = [(1, 1, 1), (1, 2, 2)] + [(2, 2, 2)] * (len(widths) - 2)
        stages, cin = [], in_chans
        for cout, stride in zip(widths, strides):
            stages.append(_conv_bn_relu(cin, cout, stride))
            cin = cout
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(cin, num_classes)
        self.num_features = cin

    def forward_features(self, x: Tensor) -> Tensor:
        """x: (B, C, T, H, W) -> feature maps (B, F, T', H', W')."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, T, H, W) -> logits (B, num_classes)."""
        return self.head(self.drop(self.pool(self.forward_features(x)).flatten(1)))

    def no_weight_decay(self) -> set[str]:
        """Batch-norm parameters and biases get no weight decay."""
        return {n for n, p in self.named_parameters() if p.dim() <= 1}


@register_model("video_cnn_small", kwargs_to=VideoCNN, family="video_cnn", input="video", default_img_size=32,
                default_frames=8)
def video_cnn_small(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None, **kw) -> VideoCNN:
    """Small 3D CNN (widths 16-32-64-128, ~0.3M parameters) for CPU-scale video experiments."""
    return VideoCNN(num_classes=num_classes, in_chans=in_chans, **kw)


for _arch in TORCHVISION_VIDEO_MODELS:
    register_model(_arch, kwargs_to=f"torchvision.models.video:{_arch}", family="torchvision_video", input="video",
                   default_img_size=112,
                   default_frames=16)(torchvision_factory(_arch, "torchvision.models.video", num_classes=400,
                                                          conv_type=nn.Conv3d,
                                                          doc="video classifier, random init; load Kinetics "
                                                          "weights with --ckpt"))
