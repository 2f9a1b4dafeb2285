"""Sequential sampling and the NARA loop: propose K, one parallel mother pass, keep a prefix, repeat.

Modes of `nara_sample`:
- "exact": the noise of every position is drawn up front (Gumbel-max); a proposal is kept only where it
  equals the mother's own sample under that noise, so the output is identical to `sample_sequential`
  with the same noise (predictive sampling, Wiggers & Hoogeboom 2020).
- "speculative": drafts are sampled from the prior and kept with probability min(1, q/r), the first
  rejected position is redrawn from the residual max(0, q - r); the output has the mother's distribution.
- "approx": the paper's confidence-gated mode: a proposal is kept where the confidence predictor's score
  is >= tau, or where it equals the mother's sample under the pre-drawn noise; the first position that is
  neither takes the mother's sample. tau > 1 gives the exact mode, tau = 0 keeps every proposal.

Every round commits at least one token, so a sequence of T tokens takes at most T mother calls (as many
as sequential sampling) and the loop always ends.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cuekit.errors import UnknownChoiceError, UsageError

MODES = ("exact", "speculative", "approx")


@dataclass
class SampleResult:
    """One sampled sequence: tokens (T,) long, mother calls, rounds, and proposals kept."""

    tokens: Tensor
    calls: int
    rounds: int
    kept_proposals: int


def gumbel_noise(length: int, vocab_size: int, generator: torch.Generator | None = None) -> Tensor:
    """Pre-drawn Gumbel noise for Gumbel-max sampling: (length, V) float."""
    u = torch.rand(length, vocab_size, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(u))


def sample_sequential(mother, length: int, noise: Tensor) -> SampleResult:
    """Plain AR sampling, one mother call per token: x_t = argmax(logits_t + noise_t); noise (length, V)."""
    state = mother.start()
    empty = torch.empty(0, dtype=torch.long)
    calls0 = mother.calls
    out = torch.empty(length, dtype=torch.long)
    for t in range(length):
        logits = mother.verify(state, empty)
        x = torch.argmax(logits[0] + noise[t]).view(1)
        mother.commit(state, x)
        out[t] = x
    return SampleResult(out, mother.calls - calls0, length, 0)


def nara_sample(mother, prior, length: int, horizon: int, mode: str = "exact", noise: Tensor | None = None,
                tau: float = 0.9, confidence=None, generator: torch.Generator | None = None) -> SampleResult:
    """Sample `length` tokens with the NARA loop (see the module docstring for the modes).

    prior: has `propose(context (t,), position, k) -> logits (k, V)`; confidence: has
    `score(mother_logits (k, V), prior_logits (k, V), drafts (k,)) -> (k,)` (mode "approx" only);
    noise: (length, V) pre-drawn Gumbel noise (modes "exact" and "approx"; drawn from `generator` if None).
    """
    if mode not in MODES:
        raise UnknownChoiceError("NARA mode", mode, MODES)
    if horizon < 1:
        raise UsageError(f"horizon K must be >= 1, got {horizon}")
    if length > mother.max_len:
        raise UsageError(f"length {length} exceeds the mother model's maximum {mother.max_len}")
    if mode == "approx" and confidence is None:
        raise UsageError("mode 'approx' needs a confidence predictor")
    v = mother.vocab_size
    if mode != "speculative" and noise is None:
        noise = gumbel_noise(length, v, generator)
    state = mother.start()
    out = torch.empty(length, dtype=torch.long)
    calls0, rounds, kept, t = mother.calls, 0, 0, 0
    while t < length:
        k = min(horizon, length - t)
        prior_logits = prior.propose(mother.context(state), t, k).float()
        if mode == "speculative":
            r = prior_logits.softmax(-1)
            drafts = torch.multinomial(r, 1, generator=generator)[:, 0]
        else:
            g = noise[t:t + k]
            drafts = torch.argmax(prior_logits + g, dim=-1)
        logits = mother.verify(state, drafts[:k - 1]).float()
        if mode == "speculative":
            q = logits.softmax(-1)
            idx = torch.arange(k)
            ratio = q[idx, drafts] / r[idx, drafts].clamp_min(1e-30)
            u = torch.rand(k, generator=generator)
            reject = u >= ratio
            n = int(torch.argmax(reject.int())) if bool(reject.any()) else k
            if n < k:
                residual = (q[n] - r[n]).clamp_min(0)
                if float(residual.sum()) <= 0:  # q == r at this position: rejection has probability 0
                    residual = q[n]
                fix = torch.multinomial(residual / residual.sum(), 1, generator=generator)
        else:
            own = torch.argmax(logits + g, dim=-1)
            keep = own == drafts
            if mode == "approx":
                keep = keep | (confidence.score(logits, prior_logits, drafts) >= tau)
            bad = ~keep
            n = int(torch.argmax(bad.int())) if bool(bad.any()) else k
            if n < k:
                fix = own[n:n + 1]
        new = drafts[:n] if n == k else torch.cat([drafts[:n], fix])
        mother.commit(state, new)
        out[t:t + new.numel()] = new
        t += new.numel()
        kept += n
        rounds += 1
    return SampleResult(out, mother.calls - calls0, rounds, kept)
