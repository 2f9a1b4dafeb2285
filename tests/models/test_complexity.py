"""Parameter, MAC and throughput counting (cuekit.models.complexity), checked against hand arithmetic."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cuekit.models.complexity import (
    complexity_report,
    count_flops,
    count_macs,
    count_params,
    measure_throughput,
    time_forward,
)


class _ConvLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=8)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.dw(self.conv(x)).mean((2, 3)))


class _Attention(nn.Module):
    def __init__(self, explicit: bool):
        super().__init__()
        self.explicit = explicit

    def forward(self, x):  # x: (N, heads, L, d) used as q, k and v
        if self.explicit:
            attn = (x @ x.transpose(-2, -1) * x.shape[-1] ** -0.5).softmax(-1)
            return attn @ x
        return F.scaled_dot_product_attention(x, x, x)


def test_count_params_counts_shared_tensors_once_and_can_skip_frozen():
    model = _ConvLinear()
    expected = (3 * 8 * 9 + 8) + (16 * 1 * 9 + 16) + (16 * 5 + 5)
    assert count_params(model) == expected
    model.fc.weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == expected - 80
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    assert count_params(tied) == 16 + 4 + 4


def test_count_macs_matches_hand_arithmetic():
    model = _ConvLinear()
    conv = 8 * 16 * 16 * (3 * 9)     # out channels x out pixels x (in channels x kernel)
    dw = 16 * 8 * 8 * (1 * 9)        # depthwise: one input channel per output channel
    fc = 16 * 5
    assert count_macs(model, 16) == conv + dw + fc
    assert count_macs(model, (16, 32)) == 2 * conv + 2 * dw + fc
    assert count_flops(model, torch.zeros(2, 3, 16, 16)) == 2 * 2 * (conv + dw + fc)  # FLOPs of the batch


def test_attention_through_sdpa_is_counted_like_explicit_matmuls():
    x = torch.randn(2, 3, 10, 8)
    fused, explicit = count_flops(_Attention(False), x), count_flops(_Attention(True), x)
    assert explicit == 2 * (2 * 3 * 10 * 10 * 8) * 2   # two matmuls, 2 FLOPs per MAC
    assert fused == explicit


def test_counting_leaves_the_model_as_it_was():
    model = _ConvLinear().train()
    model.fc.weight.requires_grad_(False)
    count_macs(model, 8)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, True, False, True]


def test_by_module_breakdown_sums_to_the_total():
    model = _ConvLinear()
    table = count_flops(model, torch.zeros(1, 3, 8, 8), by_module=True)
    assert table["Global"] == count_flops(model, torch.zeros(1, 3, 8, 8))
    assert table["Global"] == sum(v for k, v in table.items() if k.count(".") == 0 and k != "Global" and
                                  k.startswith("_ConvLinear"))


def test_measure_throughput_reports_the_median_and_restores_mode():
    model = _ConvLinear().train()
    tp = measure_throughput(model, 16, batch_size=4, warmup=1, repeats=3)
    assert model.training
    assert len(tp.times_s) == 3 and all(t > 0 for t in tp.times_s)
    assert tp.images_per_s == 4 / sorted(tp.times_s)[1]
    assert tp.img_size == (16, 16) and tp.device == "cpu"
    assert time_forward(model.eval(), torch.zeros(2, 3, 16, 16), iters=2) > 0


def test_complexity_report_combines_everything():
    report = complexity_report(_ConvLinear(), 16, batch_size=2, repeats=1, warmup=0)
    assert report["params"] == count_params(_ConvLinear())
    assert report["macs"] == count_macs(_ConvLinear(), 16)
    assert report["images_per_s"] > 0
    assert "images_per_s" not in complexity_report(_ConvLinear(), 16, measure=False)
