"""ECE / MCE bin conventions at the edges (confidence exactly 1.0, a hair above an edge) against
torchmetrics and Guo et al.'s binning, and NLL computed from logits."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cuekit.robustness.calibration import (
    bin_edges,
    negative_log_likelihood,
    nll_from_logits,
    reliability_bins,
)

tm = pytest.importorskip("torchmetrics.functional.classification")


def guo_ece_mce(conf: torch.Tensor, correct: torch.Tensor, n_bins: int) -> tuple[float, float]:
    """ECE and MCE with Guo et al.'s bins (lower, upper] over linspace edges, written as their loop."""
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    ece, mce = 0.0, 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            gap = abs(float(correct[in_bin].double().mean()) - float(conf[in_bin].mean()))
            ece += gap * float(in_bin.double().mean())
            mce = max(mce, gap)
    return ece, mce


def probs_with_top(conf: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) float64 rows whose top probability (class 0) is exactly conf, the rest shared equally."""
    rest = ((1 - conf) / (k - 1))[:, None].expand(-1, k - 1)
    return torch.cat([conf[:, None], rest], 1)


def float32_next_to(values: torch.Tensor, up: bool) -> torch.Tensor:
    """The float32 closest to each float64 value strictly above it (up) or strictly below it."""
    v32 = values.float()
    step = torch.full_like(v32, 2.0 if up else -1.0)
    wrong_side = v32.double() <= values if up else v32.double() >= values
    return torch.where(wrong_side, torch.nextafter(v32, step), v32)


def labels_for(conf: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Labels (N,): class 0 (the top class) with probability conf, else another class."""
    g = torch.Generator().manual_seed(seed)
    other = 1 + torch.randint(0, k - 1, (len(conf),), generator=g)
    return torch.where(torch.rand(len(conf), generator=g, dtype=torch.float64) < conf.double(), 0, other)


@pytest.mark.parametrize("n_bins", [10, 15, 20, 7])
def test_a_hair_above_a_bin_edge_equals_torchmetrics(n_bins):
    # torchmetrics bins float32 confidences against float32 edges from torch.linspace, which can sit a float32
    # step off b/B: a hair above an edge is the nearest float32 above both b/B and that float32 edge
    exact = torch.arange(1, n_bins, dtype=torch.float64) / n_bins
    edges32 = torch.linspace(0, 1, n_bins + 1, dtype=torch.float32)[1:-1].double()
    conf = float32_next_to(torch.maximum(exact, edges32), up=True)
    conf = conf[conf > 1 / (4 * n_bins)].repeat(4)  # class 0 must stay the top class
    k = 4 * n_bins
    probs = probs_with_top(conf.double(), k).float()
    assert torch.equal(probs.max(1).values, conf)
    labels = labels_for(conf, k, n_bins)
    bins = reliability_bins(probs, labels, n_bins)
    ref_ece = tm.multiclass_calibration_error(probs, labels, num_classes=k, n_bins=n_bins, norm="l1")
    ref_mce = tm.multiclass_calibration_error(probs, labels, num_classes=k, n_bins=n_bins, norm="max")
    assert bins.ece == pytest.approx(float(ref_ece), abs=1e-6)
    assert bins.mce == pytest.approx(float(ref_mce), abs=1e-6)
    expect = torch.floor(conf.double() * n_bins).long()  # exact here: b/B < c < (b+1)/B
    assert bins.count == torch.bincount(expect, minlength=n_bins).tolist()


@pytest.mark.parametrize("n_bins", [10, 15, 20, 7, 3])
def test_float64_confidences_at_and_beside_each_edge_follow_the_documented_bins(n_bins):
    edges = bin_edges(n_bins)
    assert torch.equal(edges, torch.linspace(0, 1, n_bins + 1, dtype=torch.float64))
    inner = edges[1:-1]
    conf = torch.cat([inner, torch.nextafter(inner, torch.ones(1, dtype=torch.float64)),
                      torch.nextafter(inner, torch.zeros(1, dtype=torch.float64))])
    conf = conf[conf > 1 / (4 * n_bins)].repeat(3)
    k = 4 * n_bins
    probs = probs_with_top(conf, k)
    labels = labels_for(conf, k, n_bins)
    bins = reliability_bins(probs, labels, n_bins)
    ece, mce = guo_ece_mce(conf, labels == 0, n_bins)
    assert bins.ece == pytest.approx(ece, abs=1e-12) and bins.mce == pytest.approx(mce, abs=1e-12)
    lower = torch.stack([(conf > lo) & (conf <= hi) for lo, hi in zip(edges[:-1], edges[1:])]).sum(1)
    assert bins.count == lower.tolist()


def test_confidence_one_is_in_the_top_bin_as_in_guo():
    # a saturated float32 softmax: confidence exactly 1.0, half of them wrong; and 0.95 always right
    logits = torch.tensor([[60.0, 0.0]] * 4 + [[2.944439, 0.0]] * 4)
    probs = logits.softmax(1)
    assert bool((probs[:4, 0] == 1.0).all())
    labels = torch.tensor([0, 1, 0, 1, 0, 0, 0, 0])
    conf, pred = probs.double().max(1)
    correct = pred == labels
    bins = reliability_bins(probs, labels, 15)
    assert bins.count[-1] == 8 and sum(bins.count) == 8  # 1.0 and 0.95 share the top bin (14/15, 1]
    ece, mce = guo_ece_mce(conf, correct, 15)
    assert bins.ece == pytest.approx(ece, abs=1e-12) and bins.mce == pytest.approx(mce, abs=1e-12)
    # torchmetrics gives exactly 1.0 a bin of its own; one float32 step below 1.0 it agrees with the top bin
    below = probs.clone()
    below[:4, 0] = torch.nextafter(torch.tensor(1.0), torch.tensor(0.0))
    ref = tm.multiclass_calibration_error(below, labels, num_classes=2, n_bins=15, norm="l1")
    assert bins.ece == pytest.approx(float(ref), abs=1e-6)
    separate = tm.multiclass_calibration_error(probs.double(), labels, num_classes=2, n_bins=15, norm="max")
    assert float(separate) == pytest.approx(0.5) and bins.mce < 0.3  # the documented difference


def test_nll_of_a_saturated_wrong_prediction_comes_from_logits():
    logits = torch.tensor([[200.0, 0.0, -5.0], [1.0, 3.0, 0.5], [0.0, 90.0, 0.0]])
    labels = torch.tensor([1, 1, 0])
    ref = float(F.cross_entropy(logits.double(), labels))
    assert nll_from_logits(logits, labels) == pytest.approx(ref, rel=1e-12)
    assert ref > 90  # far above the 27.6-nat cap of probabilities clamped at 1e-12
    assert negative_log_likelihood(logits.softmax(1), labels) < 27.7  # the clamped probability API


def test_suite_reports_nll_from_logits():
    from cuekit.robustness.benchmark import RobustnessSuite, SuiteSettings

    class Saturated(torch.nn.Module):
        """Logits 300 * (mean of channel c) - a wrong, saturated answer for half the images."""

        def forward(self, x):
            return 300 * x.mean((2, 3))

    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 3, 8, 8, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    settings = SuiteSettings(corruptions=[], severities=[1], ood=[], epsilons=[0.0], occlusion=[])
    suite = RobustnessSuite(images, labels, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), settings)
    res = suite.evaluate(Saturated())
    logits = 300 * images.mean((2, 3))
    assert res["clean"]["nll"] == pytest.approx(float(F.cross_entropy(logits.double(), labels)), rel=1e-6)
