"""Sequential sampling and the NARA loop: propose K, one parallel mother pass, keep a prefix, repeat.

Modes of `nara_sample`:
- "exact": the noise of every position is drawn up front (Gumbel-max); a proposal is kept only where it
  equals the mother's own sample under that noise, so the output is identical to `sample_sequential`
  with the same noise (predictive sampling, Wiggers & Hoogeboom 2020).
- "speculative": drafts are sampled from the prior and kept with probability min(1, q/r), the first
  rejected position is redrawn from the residual max(0, q - r); the output has the mother's distribution.
- "approx": the paper's confidence-gated mode: a proposal is kept where the confidence predictor's score
  is >= tau, or where it equals the mother's sample under the pre-drawn noise; the first position that is
  neither takes the mother's sample. tau > 1 gives the exact mode, tau = 0 keeps every proposal. The
  predictor is not run in a round where every proposal equals the mother's sample (same output).

Every round commits at least one token, so a sequence of T tokens takes at most T mother calls (as many
as sequential sampling) and the loop always ends.

Both samplers enter `torch.inference_mode()` once per sequence and keep per-round bookkeeping to a few
tensor ops and Python lists (a round of a small mother is overhead-bound); the sequential baseline runs
the same mother code, KV cache on.
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
    with torch.inference_mode():
        res = _sample_sequential(mother, length, noise)
    return SampleResult(res.tokens.clone(), res.calls, res.rounds, res.kept_proposals)


def _sample_sequential(mother, length: int, noise: Tensor) -> SampleResult:
    state = mother.start()
    empty = torch.empty(0, dtype=torch.long)
    calls0 = mother.calls
    pieces = []
    for t in range(length):
        x = torch.argmax(mother.verify(state, empty) + noise[t:t + 1], dim=-1)
        mother.commit(state, x)
        pieces.append(x)
    return SampleResult(torch.cat(pieces) if pieces else empty, mother.calls - calls0, length, 0)


def _first_false(flags: list) -> int:
    """Index of the first False in a list of bools (its length if none)."""
    return flags.index(False) if False in flags else len(flags)


def _matching_prefix(a: list, b: list) -> int:
    """Length of the common prefix of two lists."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def nara_sample(mother, prior, length: int, horizon: int, mode: str = "exact", noise: Tensor | None = None,
                tau: float = 0.9, confidence=None, generator: torch.Generator | None = None) -> SampleResult:
    """Sample `length` tokens with the NARA loop (see the module docstring for the modes).

    prior: has `propose(context (t,), position, k) -> logits (k, V)` (proposals independent given the past),
    or, when its `reads_mother_state` is true (`HiddenStatePrior`), `draft(state (D,) | None, last (1,) long,
    k, noise, generator, need_logits) -> (drafts (k,), logits (k, V))` fed by the mother's `last_hidden(state)`
    and `last_token(state)`; confidence: has
    `score(mother_logits (k, V), prior_logits (k, V), drafts (k,)) -> (k,)` (mode "approx" only);
    noise: (length, V) pre-drawn Gumbel noise (modes "exact" and "approx"; drawn from `generator` if None).

    A round of horizon k feeds the last known token and k-1 proposals to the mother, which returns the
    distributions of k positions. In "exact" mode the prior proposes only those k-1 tokens: the k-th
    committed token is always the mother's own sample at the last verified position.
    """
    if mode not in MODES:
        raise UnknownChoiceError("NARA mode", mode, MODES)
    if horizon < 1:
        raise UsageError(f"horizon K must be >= 1, got {horizon}")
    if length > mother.max_len:
        raise UsageError(f"length {length} exceeds the mother model's maximum {mother.max_len}")
    if mode == "approx" and confidence is None:
        raise UsageError("mode 'approx' needs a confidence predictor")
    if horizon > getattr(prior, "horizon", horizon):
        raise UsageError(f"horizon {horizon} exceeds the prior's {prior.horizon} heads")
    draft = _drafter(mother, prior)
    if mode != "speculative" and noise is None:
        noise = gumbel_noise(length, mother.vocab_size, generator)
    calls0 = mother.calls
    with torch.inference_mode():
        if mode == "exact":
            tokens, rounds, kept = _exact_loop(mother, draft, length, horizon, noise)
        elif mode == "approx":
            tokens, rounds, kept = _approx_loop(mother, draft, length, horizon, noise, tau, confidence)
        else:
            tokens, rounds, kept = _speculative_loop(mother, draft, length, horizon, generator)
    return SampleResult(tokens.clone(), mother.calls - calls0, rounds, kept)


def _drafter(mother, prior):
    """draft(state, t, m, noise (m, V) | None, generator, need_logits) -> (drafts (m,), prior logits (m, V))."""
    if getattr(prior, "reads_mother_state", False):
        if not hasattr(mother, "last_hidden"):
            raise UsageError(f"this prior reads the mother's hidden state, which {type(mother).__name__} "
                             "does not expose")

        def draft(state, t: int, m: int, noise: Tensor | None, generator, need_logits: bool = True):
            return prior.draft(mother.last_hidden(state), mother.last_token(state), m, noise, generator, need_logits)
        return draft

    def draft(state, t: int, m: int, noise: Tensor | None, generator, need_logits: bool = True):
        logits = prior.propose(mother.context(state), t, m).float()
        if noise is None:
            return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0], logits
        return torch.argmax(logits + noise, dim=-1), logits
    return draft


def _run_rounds(mother, length: int, horizon: int, round_fn) -> tuple[Tensor, int, int]:
    """The loop shared by the modes: round_fn(state, t, k) -> (tokens to commit (>= 1,), proposals kept);
    -> all tokens, rounds, proposals kept."""
    state = mother.start()
    pieces = []
    rounds = kept = t = 0
    while t < length:
        new, n = round_fn(state, t, min(horizon, length - t))
        mother.commit(state, new)
        pieces.append(new)
        t += new.shape[0]
        kept += n
        rounds += 1
    return torch.cat(pieces), rounds, kept


def _exact_loop(mother, draft, length: int, horizon: int, noise: Tensor) -> tuple[Tensor, int, int]:
    """Keep the proposals that equal the mother's own samples under the noise; -> tokens, rounds, kept."""
    empty = torch.empty(0, dtype=torch.long)

    def round_fn(state, t: int, k: int) -> tuple[Tensor, int]:
        g = noise[t:t + k]
        if k == 1:
            return torch.argmax(mother.verify(state, empty) + g, dim=-1), 0
        drafts = draft(state, t, k - 1, g[:k - 1], None, False)[0]
        own = torch.argmax(mother.verify(state, drafts) + g, dim=-1)
        n = _matching_prefix(drafts.tolist(), own.tolist())
        return (own if n == k - 1 else own[:n + 1]), n  # own[:n] equals the kept proposals

    return _run_rounds(mother, length, horizon, round_fn)


def _approx_loop(mother, draft, length: int, horizon: int, noise: Tensor, tau: float, confidence
                 ) -> tuple[Tensor, int, int]:
    """Keep proposals the confidence predictor scores >= tau or that equal the mother's own samples."""
    def round_fn(state, t: int, k: int) -> tuple[Tensor, int]:
        g = noise[t:t + k]
        drafts, prior_logits = draft(state, t, k, g, None)
        logits = mother.verify(state, drafts[:k - 1])
        own = torch.argmax(logits + g, dim=-1)
        keep = own == drafts
        if _first_false(keep.tolist()) == k:  # every proposal is the mother's own sample: nothing to score
            return drafts, k
        keep |= confidence.score(logits, prior_logits, drafts) >= tau
        n = _first_false(keep.tolist())
        return (drafts if n == k else torch.where(keep, drafts, own)[:n + 1]), n

    return _run_rounds(mother, length, horizon, round_fn)


def _speculative_loop(mother, draft, length: int, horizon: int, generator: torch.Generator | None
                      ) -> tuple[Tensor, int, int]:
    """Speculative rule: keep a proposal with probability min(1, q/r), redraw the first rejection from
    max(0, q - r); the output has the mother's distribution."""
    def round_fn(state, t: int, k: int) -> tuple[Tensor, int]:
        drafts, prior_logits = draft(state, t, k, None, generator)
        r = prior_logits.float().softmax(-1)
        q = mother.verify(state, drafts[:k - 1]).float().softmax(-1)
        idx = torch.arange(k)
        ratio = q[idx, drafts] / r[idx, drafts].clamp_min(1e-30)
        u = torch.rand(k, generator=generator)
        n = _first_false((u < ratio).tolist())
        if n == k:
            return drafts, n
        residual = (q[n] - r[n]).clamp_min(0)
        if float(residual.sum()) <= 0:  # q == r at this position: rejection has probability 0
            residual = q[n]
        fix = torch.multinomial(residual / residual.sum(), 1, generator=generator)
        return torch.cat([drafts[:n], fix]), n

    return _run_rounds(mother, length, horizon, round_fn)
