"""The channel-configuration helpers: MACs from a config, linear widths solved to a parameter and MAC target."""
from __future__ import annotations

import math

import pytest

from cuekit.models.complexity import count_macs, count_params
from cuekit.models.rexnet import (
    STAGE_LAYERS,
    TINY_CONFIG,
    ReXNet,
    config_macs,
    config_params,
    linear_config,
    linear_match_cost,
    rexnet_config,
    rexnet_lite_config,
    stagewise_config,
)


@pytest.mark.parametrize("cfg,img", [
    (dict(TINY_CONFIG), 32),
    (dict(rexnet_config(0.5, depth_mult=0.5), stem_stride=2), 40),
    (dict(rexnet_lite_config(0.5), stem_stride=2), 33),
    (dict(stagewise_config(0.5, 16, 256, layers=[1, 1, 1, 2, 2, 3]), stem_stride=2), 32),
])
def test_config_macs_counts_what_the_flop_counter_counts(cfg, img):
    model = ReXNet(**cfg, num_classes=7)
    assert config_macs(cfg, img, num_classes=7) == count_macs(model, img)


def test_linear_config_widths_grow_linearly():
    cfg = linear_config(10.0, 4.0, 16, 128, layers=[1, 1, 1, 2, 2, 3])
    assert cfg["block_channels"] == [10 + 4 * i for i in range(10)]
    assert config_params(cfg, 5) == count_params(ReXNet(**cfg, num_classes=5))


@pytest.mark.parametrize("scale,depth,img", [(0.5, 0.5, 32), (0.4, 1.0, 64)])
def test_linear_match_cost_meets_both_targets(scale, depth, img):
    layers = [math.ceil(n * depth) for n in STAGE_LAYERS]
    target = dict(stagewise_config(scale, 16, 256, layers=layers), stem_stride=2)
    p, m = config_params(target, 6), config_macs(target, img, 6)
    solved = linear_match_cost(p, m, img, 16, 256, num_classes=6, layers=layers)
    assert abs(solved["params_error"]) < 0.02 and abs(solved["macs_error"]) < 0.02
    widths = solved["block_channels"]
    assert widths == sorted(widths)
    model = ReXNet(**{k: v for k, v in solved.items() if k not in
                      ("intercept", "slope", "params", "macs", "params_error", "macs_error")}, num_classes=6)
    assert count_params(model) == solved["params"] and count_macs(model, img) == solved["macs"]
