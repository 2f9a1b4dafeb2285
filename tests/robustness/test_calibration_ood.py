"""ECE, NLL, Brier and the OOD metrics against torchmetrics (dev extra) and hand-checkable cases."""
from __future__ import annotations

import math

import pytest
import torch

from cuekit.errors import UsageError
from cuekit.robustness.calibration import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    plot_reliability,
    reliability_bins,
)
from cuekit.robustness.ood import average_precision, ood_images, ood_metrics, roc_curve

tm = pytest.importorskip("torchmetrics.functional.classification")


def random_predictions(n: int, k: int, seed: int, temperature: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * 3 / temperature
    labels = torch.randint(0, k, (n,), generator=g)
    return logits.softmax(1), labels


@pytest.mark.parametrize("n_bins", [15, 10, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ece_equals_torchmetrics(seed, n_bins):
    probs, labels = random_predictions(2000, 7, seed)
    ours = expected_calibration_error(probs, labels, n_bins=n_bins)
    ref = tm.multiclass_calibration_error(probs, labels, num_classes=7, n_bins=n_bins, norm="l1")
    assert ours == pytest.approx(float(ref), abs=1e-6)
    mce = reliability_bins(probs, labels, n_bins).mce
    ref_max = tm.multiclass_calibration_error(probs, labels, num_classes=7, n_bins=n_bins, norm="max")
    assert mce == pytest.approx(float(ref_max), abs=1e-6)


def test_ece_of_a_perfectly_calibrated_and_an_overconfident_model():
    # 10 samples at confidence 0.8 with 8 correct: calibrated, ECE 0.
    probs = torch.tensor([[0.8, 0.2]] * 10)
    labels = torch.tensor([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-6)
    # Always confident (0.99) and right half the time: ECE 0.49.
    probs = torch.tensor([[0.99, 0.01]] * 10)
    labels = torch.tensor([0, 1] * 5)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.49)


def test_nll_and_brier_by_hand():
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    labels = torch.tensor([0, 1])
    assert negative_log_likelihood(probs, labels) == pytest.approx((math.log(2) - math.log(0.1)) / 2)
    assert brier_score(probs, labels) == pytest.approx((0.25 + 0.25 + 0.81 + 0.81) / 2)
    with pytest.raises(UsageError):
        brier_score(probs, torch.tensor([0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_aupr_equal_torchmetrics(seed):
    g = torch.Generator().manual_seed(seed)
    s_in = torch.rand(700, generator=g) * 0.6 + 0.3
    s_out = torch.rand(500, generator=g) * 0.7
    s_in[:50] = s_out[:50]  # ties across the two sets
    m = ood_metrics(s_in, s_out)
    preds = torch.cat([s_in, s_out])
    target = torch.cat([torch.ones(700), torch.zeros(500)]).long()
    assert m["auroc"] == pytest.approx(float(tm.binary_auroc(preds, target)), abs=1e-6)
    assert m["aupr_in"] == pytest.approx(float(tm.binary_average_precision(preds, target)), abs=1e-6)
    assert m["aupr_out"] == pytest.approx(float(tm.binary_average_precision(-preds, 1 - target)), abs=1e-6)
    # AUROC is the probability that an in-distribution sample outscores an OOD one (ties count half).
    diff = s_in[:, None] - s_out[None, :]
    mann_whitney = float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
    assert m["auroc"] == pytest.approx(mann_whitney, abs=1e-9)


def test_tnr_at_95_tpr_and_detection_accuracy_by_hand():
    s_in = torch.arange(100, dtype=torch.float32) + 100  # 100..199
    s_out = torch.arange(100, dtype=torch.float32) + 50  # 50..149: overlaps the lowest 50 in-scores
    m = ood_metrics(s_in, s_out)
    # 95% TPR: threshold 105 keeps in-scores 105..199; OOD scores >= 105 are 105..149 (45) -> TNR 0.55.
    assert m["tnr_at_tpr95"] == pytest.approx(0.55)
    # thresholds 100, 125, 150 give (TPR, TNR) = (1, .5), (.75, .75), (.5, 1): 0.75 at best.
    assert m["detection_acc"] == pytest.approx(0.75, abs=1e-9)
    fpr, tpr, thr = roc_curve(s_in, s_out)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert bool((thr[1:] <= thr[:-1]).all())
    perfect = ood_metrics(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2]))
    assert perfect == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "tnr_at_tpr95": 1.0, "detection_acc": 1.0}
    assert average_precision(torch.tensor([1.0]), torch.tensor([1.0])) == pytest.approx(0.5)


def test_builtin_ood_sets(tmp_path):
    gauss = ood_images("gaussian", 16, 24, 3, seed=0)
    assert gauss.shape == (16, 3, 24, 24) and float(gauss.min()) >= 0 and float(gauss.max()) <= 1
    assert float((gauss == 0).float().mean()) > 0.2  # N(0.5, 1) clipped: many saturated pixels
    uni = ood_images("uniform", 4, 24, 1, seed=0)
    assert uni.shape == (4, 1, 24, 24)
    torch.testing.assert_close(ood_images("uniform", 4, 24, 1, seed=0), uni)
    shapes = ood_images("shapes-loc", 5, 32, 3, seed=0)
    assert shapes.shape == (5, 3, 32, 32) and float(shapes.std()) > 0.05
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("RGB", (30, 50), (0, 0, 255)).save(tmp_path / "sub" / "b.jpg")
    folder = ood_images(f"folder:{tmp_path}", 10, 16, 3)
    assert folder.shape == (2, 3, 16, 16)
    assert float(folder[0, 0].mean()) > 0.95 and float(folder[1, 2].mean()) > 0.9
    from cuekit.errors import DataError

    with pytest.raises(DataError):
        ood_images(f"folder:{tmp_path / 'missing'}", 4, 16)


def test_reliability_plot_is_written(tmp_path):
    probs, labels = random_predictions(300, 4, 0)
    bins = reliability_bins(probs, labels, 10)
    assert sum(bins.count) == 300 and len(bins.edges) == 11
    path = plot_reliability({"a": bins, "b": bins}, tmp_path / "rel.png")
    assert path.stat().st_size > 1000
