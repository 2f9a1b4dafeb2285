"""NARA's two small modules: the prior predictor (K future tokens at once, independently given the past)
and the confidence predictor (a score in [0, 1] per proposed token, from the mother's parallel pass)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_CONFIDENCE_FEATURES = 6


class PriorPredictor(nn.Module):
    """Proposes the next K tokens in one cheap pass from the last `window` known tokens (and, optionally,
    the absolute position), each independently of the others: the i.i.d. prior of the NARA paper."""

    def __init__(self, vocab_size: int, horizon: int = 4, window: int = 16, dim: int = 32, hidden: int = 256,
                 num_positions: int = 0):
        super().__init__()
        self.vocab_size, self.horizon, self.window, self.num_positions = vocab_size, horizon, window, num_positions
        self.config = dict(vocab_size=vocab_size, horizon=horizon, window=window, dim=dim, hidden=hidden,
                           num_positions=num_positions)
        self.emb = nn.Embedding(vocab_size + 1, dim)  # index vocab_size pads contexts shorter than the window
        self.pos = nn.Embedding(num_positions, hidden) if num_positions else None
        self.fc = nn.Linear(window * dim, hidden)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, horizon * vocab_size))

    def forward(self, windows: Tensor, positions: Tensor | None = None) -> Tensor:
        """windows (B, window) long (padded with vocab_size), positions (B,) long -> logits (B, horizon, V)."""
        h = self.fc(self.emb(windows).flatten(1))
        if self.pos is not None:
            h = h + self.pos(positions.clamp(max=self.num_positions - 1))
        return self.out(h).view(-1, self.horizon, self.vocab_size)

    def make_window(self, context: Tensor) -> Tensor:
        """The last `window` tokens of context (t,), left-padded: (window,) long."""
        w = context[-self.window:] if context.numel() else context
        if w.numel() < self.window:
            w = torch.cat([torch.full((self.window - w.numel(),), self.vocab_size, dtype=torch.long), w])
        return w

    @torch.inference_mode()
    def propose(self, context: Tensor, position: int, k: int) -> Tensor:
        """Logits of the next k <= horizon tokens given the known tokens context (t,): (k, V)."""
        pos = torch.tensor([position]) if self.pos is not None else None
        return self(self.make_window(context)[None], pos)[0, :k]


class OraclePrior:
    """A prior that proposes a known future (e.g. the mother's own samples): the best case for tests."""

    def __init__(self, future: Tensor, vocab_size: int, horizon: int):
        self.future, self.vocab_size, self.horizon = future, vocab_size, horizon

    def propose(self, context: Tensor, position: int, k: int) -> Tensor:
        """One-hot logits (k, V) of future[position:position+k]."""
        logits = torch.full((k, self.vocab_size), -1e4)
        logits[torch.arange(k), self.future[position:position + k]] = 1e4
        return logits


def confidence_features(mother_logits: Tensor, prior_logits: Tensor, drafts: Tensor) -> Tensor:
    """Per-position features for the confidence predictor.

    mother_logits, prior_logits (..., k, V); drafts (..., k) long -> (..., k, 6) float:
    mother prob of the draft, its log, mother max prob, mother entropy, prior prob of the draft, relative position.
    """
    q = mother_logits.float().softmax(-1)
    logq = mother_logits.float().log_softmax(-1)
    r = prior_logits.float().softmax(-1)
    qd = q.gather(-1, drafts[..., None])[..., 0]
    rd = r.gather(-1, drafts[..., None])[..., 0]
    ent = -(q * logq).sum(-1)
    k = drafts.shape[-1]
    pos = (torch.arange(k, dtype=torch.float) / max(k, 1)).expand_as(qd)
    return torch.stack([qd, qd.clamp_min(1e-6).log(), q.amax(-1), ent, rd, pos], dim=-1)


class ConfidencePredictor(nn.Module):
    """Scores each proposal: features (..., 6) -> probability (...) that the mother would have produced it.

    A two-class classifier (0: resample, 1: keep) so that the shared training engine trains it as is.
    """

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.config = dict(hidden=hidden)
        self.net = nn.Sequential(nn.Linear(NUM_CONFIDENCE_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, 2))

    def forward(self, features: Tensor) -> Tensor:
        """features (..., 6) -> logits (..., 2)."""
        return self.net(features)

    @torch.inference_mode()
    def score(self, mother_logits: Tensor, prior_logits: Tensor, drafts: Tensor) -> Tensor:
        """Confidence in [0, 1] per proposal: (k, V), (k, V), (k,) -> (k,)."""
        return self(confidence_features(mother_logits, prior_logits, drafts)).softmax(-1)[..., 1]


class MotherProbabilityConfidence:
    """The untrained reference gate: the mother's own probability of the proposal, q_j(draft_j)."""

    def score(self, mother_logits: Tensor, prior_logits: Tensor, drafts: Tensor) -> Tensor:
        """(k, V), (k, V), (k,) -> (k,) in [0, 1]."""
        return F.softmax(mother_logits.float(), -1).gather(-1, drafts[:, None])[:, 0]
