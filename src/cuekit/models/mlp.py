"""A small fully connected classifier (flattened image -> ReLU hidden layers -> classes).

Used by the WCST-ML audit as its MLP (a scaled-down version of the public code's FFNet).
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from cuekit.models.registry import register_model


class MLP(nn.Module):
    """x (N, C, H, W) -> logits (N, num_classes) through ReLU hidden layers."""

    def __init__(self, num_classes: int, in_features: int, hidden: Sequence[int] = (512, 256)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@register_model("mlp", family="mlp", default_img_size=32)
def mlp(num_classes: int = 10, in_chans: int = 3, img_size: int | None = None,
        hidden: Sequence[int] = (512, 256)) -> MLP:
    """MLP on img_size x img_size inputs (img_size is required: it fixes the input width)."""
    return MLP(num_classes, in_chans * (img_size or 32) ** 2, hidden)
