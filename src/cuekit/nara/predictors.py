"""NARA's two small modules: the prior predictor (K future tokens at once, independently given the past)
and the confidence predictor (a score in [0, 1] per proposed token, from the mother's parallel pass)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cuekit.errors import UsageError

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


class HiddenStatePrior(nn.Module):
    """Medusa-style prior: proposes the next K tokens from the mother's own final hidden state.

    Reads h (the mother's final state that predicted the last known token x_t; it summarises x_<t) and x_t,
    and returns K next-token distributions for x_{t+1..t+K} in one cheap pass: a shared trunk
    z = GELU(W h + E[x_t]) (plus `depth` residual GELU layers), then one linear head per future offset
    (stacked into one matrix). The mother is frozen; the state comes for free from the previous verify pass
    (`TransformerMother.last_hidden`).

    chain=False: the heads are independent given the past (NARA's i.i.d. prior, Medusa).
    chain=True: head j also adds a learned table row C_j[y_{j-1}] for the token proposed just before it
    (y_0 = x_t), so drafting walks the K heads one after the other (cheap table look-ups, Hydra-style
    sequentially dependent heads). Not NARA's i.i.d. prior: proposals depend on earlier proposals.
    """

    reads_mother_state = True

    def __init__(self, model_dim: int, vocab_size: int, horizon: int = 8, hidden: int = 128, depth: int = 0,
                 chain: bool = False):
        super().__init__()
        self.vocab_size, self.horizon, self.model_dim = vocab_size, horizon, model_dim
        self.config = dict(model_dim=model_dim, vocab_size=vocab_size, horizon=horizon, hidden=hidden, depth=depth,
                           chain=chain)
        self.inp = nn.Linear(model_dim, hidden, bias=False)  # the token embedding acts as its bias
        self.tok = nn.Embedding(vocab_size, hidden)
        self.mid = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, horizon * vocab_size)
        self.chain = nn.Parameter(torch.zeros(horizon, vocab_size, vocab_size)) if chain else None

    def forward(self, states: Tensor, last: Tensor, previous: Tensor | None = None) -> Tensor:
        """states (B, D) (zeros where no pass has run yet), last (B,) long -> logits (B, horizon, V).

        previous (B, horizon) long: for a chained prior, the token before each predicted one (previous[:, 0] is
        last; training feeds the true tokens, which is what drafting sees whenever all earlier drafts were kept).
        """
        logits = self._heads(states, last)
        if self.chain is not None:
            if previous is None:
                raise ValueError("a chained HiddenStatePrior needs the previous tokens")
            logits = logits + self.chain[torch.arange(self.horizon), previous]
        return logits

    def _heads(self, states: Tensor, last: Tensor) -> Tensor:
        """The heads without the chain tables: (B, D), (B,) -> (B, horizon, V)."""
        z = F.gelu(F.linear(states, self.inp.weight) + F.embedding(last, self.tok.weight), approximate="tanh")
        for layer in self.mid:
            z = z + F.gelu(F.linear(z, layer.weight, layer.bias), approximate="tanh")
        return F.linear(z, self.out.weight, self.out.bias).view(-1, self.horizon, self.vocab_size)

    @torch.inference_mode()
    def batch_draft(self, states: Tensor, last: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Gumbel-max drafts for a batch: states (B, D), last (B,), noise (B, horizon, V) -> drafts (B, horizon)
        long and the logits they were drawn from (B, horizon, V)."""
        base = self._heads(states, last)
        if self.chain is None:
            return torch.argmax(base + noise, dim=-1), base
        prev, drafts, logits = last, [], []
        for j in range(self.horizon):
            row = base[:, j] + self.chain[j, prev]
            prev = torch.argmax(row + noise[:, j], dim=-1)
            drafts.append(prev)
            logits.append(row)
        return torch.stack(drafts, 1), torch.stack(logits, 1)

    def draft(self, state: Tensor | None, last: Tensor, k: int, noise: Tensor | None = None,
              generator: torch.Generator | None = None, need_logits: bool = True) -> tuple[Tensor, Tensor | None]:
        """Proposals for the next k <= horizon tokens: drafts (k,) long and their logits (k, V) (None when not
        needed). state (D,) or None (start), last (1,) long; noise (k, V): Gumbel-max drafts; None: sampled.

        Computes only the k heads needed, with matrix-vector products (a round is overhead-bound). The
        samplers call it under `torch.inference_mode()`, entered once per sequence; elsewhere it enters it.
        """
        if not torch.is_inference_mode_enabled():
            with torch.inference_mode():
                return self.draft(state, last, k, noise, generator, need_logits)
        base = self._base_logits(state, last, k)
        chain_np = self._weights()[5]
        if chain_np is None:
            if noise is not None:
                return torch.argmax(base + noise, dim=-1), base
            return torch.multinomial(base.softmax(-1), 1, generator=generator)[:, 0], base
        prev = int(last)
        if noise is not None:  # the walk runs in numpy: a few hundred nanoseconds per head
            scores = (base + noise).numpy()
            out = np.empty(k, dtype=np.int64)
            for j in range(k):
                prev = out[j] = (scores[j] + chain_np[j, prev]).argmax()
            drafts = torch.from_numpy(out)
            if not need_logits:
                return drafts, None
        else:
            picks = []
            for j in range(k):
                row = base[j] + self.chain[j, prev]
                prev = int(torch.multinomial(row.softmax(-1), 1, generator=generator))
                picks.append(prev)
            drafts = torch.tensor(picks)
        previous = torch.cat([last.view(1), drafts[:-1]])
        return drafts, base + self.chain[torch.arange(k), previous]

    def propose_from_state(self, state: Tensor | None, last: Tensor, k: int) -> Tensor:
        """Logits (k, V) of the next k <= horizon tokens, each independently given the past (chain=False only)."""
        if self.chain is not None:
            raise UsageError("a chained prior's logits depend on its drafts: use draft()")
        with torch.inference_mode():
            return self._base_logits(state, last, k)

    def _base_logits(self, state: Tensor | None, last: Tensor, k: int) -> Tensor:
        """The heads without the chain tables: (k, V), by matrix-vector products."""
        tok_w, inp_w, mid, out_w, out_b, _ = self._weights()
        if state is None:
            state = torch.zeros(self.model_dim)
        z = F.gelu(torch.addmv(tok_w[int(last)], inp_w, state), approximate="tanh")
        for w, b in mid:
            z = z + F.gelu(torch.addmv(b, w, z), approximate="tanh")
        rows = k * self.vocab_size
        return torch.addmv(out_b[:rows], out_w[:rows], z).view(k, self.vocab_size)

    def _weights(self) -> tuple:
        """Parameters gathered once (the parameter objects never change; training updates them in place)."""
        cached = self.__dict__.get("_cached_weights")
        if cached is None:
            cached = (self.tok.weight, self.inp.weight, [(m.weight, m.bias) for m in self.mid], self.out.weight,
                      self.out.bias, None if self.chain is None else self.chain.detach().numpy())
            self.__dict__["_cached_weights"] = cached
        return cached


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
    `score` (called once per sampling round) computes the same features and network in numpy: a round is
    bound by per-op overhead, and a dozen torch calls on (k, V) tensors would cost as much as a mother step.
    """

    def __init__(self, hidden: int = 32):
        super().__init__()
        self.config = dict(hidden=hidden)
        self.net = nn.Sequential(nn.Linear(NUM_CONFIDENCE_FEATURES, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, 2))

    def forward(self, features: Tensor) -> Tensor:
        """features (..., 6) -> logits (..., 2)."""
        return self.net(features)

    def score(self, mother_logits: Tensor, prior_logits: Tensor, drafts: Tensor) -> Tensor:
        """Confidence in [0, 1] per proposal: (k, V), (k, V), (k,) -> (k,) float32 (equals
        `self(confidence_features(...)).softmax(-1)[..., 1]`)."""
        w1, b1, w2, b2 = self._numpy_weights()
        x = _numpy_features(mother_logits.float().numpy(), prior_logits.float().numpy(), drafts.numpy())
        h = x @ w1.T + b1
        h = 0.5 * h * (1.0 + np.tanh(0.7978845608028654 * (h + 0.044715 * h * h * h)))
        diff = h @ w2 + b2  # logit of "keep" minus logit of "resample"
        return torch.from_numpy(1.0 / (1.0 + np.exp(-diff)))

    def _numpy_weights(self) -> tuple:
        """(W1, b1, w2, b2) as numpy arrays, w2/b2 already the keep-minus-resample difference; rebuilt when a
        parameter changed in place (training)."""
        cached = self.__dict__.get("_np_weights")
        params = cached[0] if cached else (self.net[0].weight, self.net[0].bias, self.net[2].weight, self.net[2].bias)
        version = [p._version for p in params]
        if cached is None or cached[1] != version:
            w1, b1, w2, b2 = (p.detach().float().numpy().copy() for p in params)
            cached = (params, version, (w1, b1, w2[1] - w2[0], np.float32(b2[1] - b2[0])))
            self.__dict__["_np_weights"] = cached
        return cached[2]


def _numpy_features(mother_logits: np.ndarray, prior_logits: np.ndarray, drafts: np.ndarray) -> np.ndarray:
    """`confidence_features` for one round in numpy: (k, V), (k, V), (k,) -> (k, 6) float32 (few array ops:
    a round's arrays are tiny, so each op's overhead dominates)."""
    k = drafts.shape[0]
    rows = np.arange(k)
    z = mother_logits - mother_logits.max(-1, keepdims=True)
    ez = np.exp(z)
    total = ez.sum(-1)
    log_total = np.log(total)
    logqd = z[rows, drafts] - log_total
    ent = log_total - (ez * z).sum(-1) / total  # -sum q log q with log q = z - log(total)
    zp = prior_logits[rows, drafts] - prior_logits.max(-1)
    rd = np.exp(zp) / np.exp(prior_logits - prior_logits.max(-1, keepdims=True)).sum(-1)
    return np.stack([np.exp(logqd), np.maximum(logqd, np.float32(np.log(1e-6))), 1.0 / total, ent, rd,
                     (rows / max(k, 1)).astype(np.float32)], -1).astype(np.float32, copy=False)


class MotherProbabilityConfidence:
    """The untrained reference gate: the mother's own probability of the proposal, q_j(draft_j)."""

    def score(self, mother_logits: Tensor, prior_logits: Tensor, drafts: Tensor) -> Tensor:
        """(k, V), (k, V), (k,) -> (k,) in [0, 1]."""
        return F.softmax(mother_logits.float(), -1).gather(-1, drafts[:, None])[:, 0]
