"""Calibration of a classifier's probabilities: ECE (and MCE), NLL, Brier score, reliability diagrams.

ECE, MCE and Brier take probabilities (N, K) (rows sum to 1) and int labels (N,); NLL is computed
from logits (N, K) (`nll_from_logits`, a log-softmax: a saturated wrong prediction costs its full
logit margin); `negative_log_likelihood` is the same for probabilities, clamped at eps.

ECE follows Guo et al. (2017) and their code: confidence = the top probability, B equal-width bins
with edges = torch.linspace(0, 1, B + 1) in float64, bin b holds confidences c with
edges[b] < c <= edges[b + 1] (right-closed; the first bin also holds 0), and ECE = sum_b n_b/N *
|accuracy_b - confidence_b|; MCE = max over non-empty bins of |accuracy_b - confidence_b|.
A confidence of exactly 1.0 (a saturated float32 softmax) is in the top bin, with 0.99.
torchmetrics differs at the edges only: it puts exactly 1.0 in an extra bin of its own (B + 1
bins), and its bins are left-closed and compared in float32 against float32 edges (which can sit a
float32 step off b/B), so a confidence on an edge or within a float32 step or two of it can land in
the neighbouring bin there. Confidences inside a bin, e.g. a hair above an edge, agree.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from cuekit.errors import UsageError
from cuekit.io import save_figure

__all__ = ["ReliabilityBins", "bin_edges", "brier_score", "expected_calibration_error", "negative_log_likelihood",
           "nll_from_logits", "plot_reliability", "reliability_bins"]


@dataclasses.dataclass
class ReliabilityBins:
    """Per-bin statistics of a reliability diagram (each a list of n_bins floats)."""

    edges: list[float]      # n_bins + 1 bin edges
    accuracy: list[float]   # fraction correct in the bin (0 for an empty bin)
    confidence: list[float]  # mean top probability in the bin (0 for an empty bin)
    count: list[int]        # samples in the bin

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean |accuracy - confidence|."""
        total = sum(self.count)
        if not total:
            return 0.0
        return sum(c / total * abs(a - p) for a, p, c in zip(self.accuracy, self.confidence, self.count))

    @property
    def mce(self) -> float:
        """Maximum calibration error over non-empty bins."""
        gaps = [abs(a - p) for a, p, c in zip(self.accuracy, self.confidence, self.count) if c]
        return max(gaps) if gaps else 0.0


def _check(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    probs, labels = torch.as_tensor(probs), torch.as_tensor(labels)
    if probs.dim() != 2 or labels.dim() != 1 or probs.shape[0] != labels.shape[0]:
        raise UsageError(f"need (N, K) probabilities or logits and labels (N,), got {tuple(probs.shape)} and "
                         f"{tuple(labels.shape)}")
    if probs.shape[0] == 0:
        raise UsageError("no samples")
    return probs.double(), labels.long()


def bin_edges(n_bins: int) -> Tensor:
    """The n_bins + 1 float64 edges of the equal-width confidence bins: torch.linspace(0, 1, n_bins + 1)."""
    if n_bins < 1:
        raise UsageError(f"n_bins must be >= 1, got {n_bins}")
    return torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)


def reliability_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> ReliabilityBins:
    """Bin the top-1 confidence: probs (N, K), labels (N,) -> ReliabilityBins (bins right-closed, see the module)."""
    edges = bin_edges(n_bins)
    probs, labels = _check(probs, labels)
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    # bucketize(right=False) gives i with edges[i - 1] < c <= edges[i]: bin i - 1; 0 joins the first bin
    idx = (torch.bucketize(conf.cpu(), edges) - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, idx.cpu(), torch.ones_like(conf).cpu())
    acc = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, idx.cpu(), correct.cpu())
    cs = torch.zeros(n_bins, dtype=torch.float64).scatter_add_(0, idx.cpu(), conf.cpu())
    safe = count.clamp_min(1)
    return ReliabilityBins(edges=edges.tolist(),
                           accuracy=(acc / safe).tolist(), confidence=(cs / safe).tolist(),
                           count=[int(c) for c in count.tolist()])


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE with `n_bins` equal-width bins: probs (N, K), labels (N,) -> float in [0, 1]."""
    return reliability_bins(probs, labels, n_bins).ece


def nll_from_logits(logits: Tensor, labels: Tensor) -> float:
    """Mean -log softmax(logits)[true class] in nats, in float64: logits (N, K), labels (N,)."""
    logits, labels = _check(logits, labels)
    return float(F.cross_entropy(logits, labels.to(logits.device)))


def negative_log_likelihood(probs: Tensor, labels: Tensor, eps: float = 1e-12) -> float:
    """Mean -log p(true class): probs (N, K), labels (N,), probabilities clamped at eps, so one sample
    costs at most -log(eps) (27.6 nats): use `nll_from_logits` where the logits are at hand."""
    probs, labels = _check(probs, labels)
    return float(-probs.gather(1, labels[:, None]).clamp_min(eps).log().mean())


def brier_score(probs: Tensor, labels: Tensor) -> float:
    """Multi-class Brier score (Brier 1950): mean over samples of sum_k (p_k - [k = y])^2, in [0, 2]."""
    probs, labels = _check(probs, labels)
    target = torch.zeros_like(probs).scatter_(1, labels[:, None], 1.0)
    return float((probs - target).pow(2).sum(1).mean())


def plot_reliability(bins: dict[str, ReliabilityBins] | ReliabilityBins, path: str | Path,
                     title: str = "Reliability diagram") -> Path:
    """Write a PNG: one panel per model, bars of accuracy per confidence bin, the gap to the diagonal shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = bins if isinstance(bins, dict) else {"": bins}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, b) in zip(axes[0], panels.items()):
        lefts = b.edges[:-1]
        width = b.edges[1] - b.edges[0]
        centres = [lo + width / 2 for lo in lefts]
        ax.bar(lefts, b.accuracy, width=width, align="edge", color="#4c72b0", edgecolor="black", lw=0.5,
               label="accuracy")
        gap_lo = [min(a, c) if n else 0 for a, c, n in zip(b.accuracy, centres, b.count)]
        gap_h = [abs(c - a) if n else 0 for a, c, n in zip(b.accuracy, centres, b.count)]
        ax.bar(lefts, gap_h, bottom=gap_lo, width=width, align="edge", color="#dd8452", alpha=0.45,
               edgecolor="#dd8452", lw=0.5, label="gap")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence")
        ax.set_title(f"{name}  ECE {b.ece:.3f}".strip(), fontsize=9)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(loc="upper left", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=110)
    return path
