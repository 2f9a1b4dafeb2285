"""Occlusion fills with the dataset's per-channel mean: on a black background a zero fill would change nothing."""
from __future__ import annotations

import torch
from torch import nn

from cuekit.robustness.benchmark import RobustnessSuite, SuiteSettings, occlude_with_fill
from cuekit.robustness.corruptions import occlude


def _black_with_corner_sprites(n: int = 6, size: int = 16) -> torch.Tensor:
    """Black images with a small bright sprite in the top-left corner, away from the centre."""
    x = torch.zeros(n, 3, size, size)
    x[:, 0, 1:4, 1:4] = 1.0
    x[:, 2, 1:4, 1:4] = 0.5
    return x


def test_a_zero_fill_changes_nothing_on_black_but_the_mean_fill_does():
    x = _black_with_corner_sprites()
    assert torch.equal(occlude(x, "center", 0.5), x)  # the failure the mean fill fixes
    fill = x.mean((0, 2, 3))
    out = occlude_with_fill(x, "center", 0.5, fill)
    centre = out[:, :, 4:12, 4:12]
    torch.testing.assert_close(centre, fill.view(1, 3, 1, 1).expand_as(centre))
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[4:12, 4:12] = False
    torch.testing.assert_close(out[..., outside], x[..., outside])
    # boundary occlusion keeps the centre and replaces the sprite by the mean
    kept = occlude_with_fill(x, "boundary", 0.5, fill)
    torch.testing.assert_close(kept[:, :, 4:12, 4:12], x[:, :, 4:12, 4:12])
    torch.testing.assert_close(kept[:, :, 1:4, 1:4], fill.view(1, 3, 1, 1).expand(6, 3, 3, 3))


class CentreBrightness(nn.Module):
    """Class 1 when the centre is black, class 0 when anything lights it up."""

    def forward(self, x):
        c = x[:, :, 4:12, 4:12].mean((1, 2, 3)) - 1e-3
        return torch.stack([c, -c], 1) * 100


def test_the_suite_occludes_with_the_data_mean_by_default():
    x = _black_with_corner_sprites()
    y = torch.ones(6, dtype=torch.long)
    settings = SuiteSettings(corruptions=("contrast",), severities=(1,), ood=("uniform",), epsilons=(0.0,),
                             occlusion=(0.5,), batch_size=4)
    suite = RobustnessSuite(x, y, [0.0] * 3, [1.0] * 3, settings)
    torch.testing.assert_close(suite.occlusion_fill, x.mean((0, 2, 3)))
    res = suite.evaluate(CentreBrightness())
    assert res["clean"]["acc"] == 1.0
    assert res["occlusion"]["center"]["0.5"] == 0.0  # a zero fill would have left the accuracy at 1
    assert res["occlusion"]["boundary"]["0.5"] == 1.0
    explicit = RobustnessSuite(x, y, [0.0] * 3, [1.0] * 3, settings, occlusion_fill=[0.0, 0.0, 0.0])
    assert explicit.evaluate(CentreBrightness())["occlusion"]["center"]["0.5"] == 1.0
