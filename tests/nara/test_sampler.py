"""NARA sampler: exact mode == sequential sampling, speculative rule keeps the distribution, call counts."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cuekit.errors import UnknownChoiceError, UsageError
from cuekit.nara import (
    CausalTransformerLM,
    MarkovMother,
    OraclePrior,
    PixelCNN,
    PixelCNNMother,
    PriorPredictor,
    TransformerMother,
    gumbel_noise,
    nara_sample,
    sample_sequential,
)


class TablePrior:
    """A prior with fixed random logits per (position, vocabulary entry), independent of the past."""

    def __init__(self, length: int, vocab_size: int, seed: int = 0, scale: float = 1.0):
        g = torch.Generator().manual_seed(seed)
        self.logits = torch.randn(length, vocab_size, generator=g) * scale

    def propose(self, context, position, k):
        return self.logits[position:position + k]


class WorstPrior:
    """Proposes, at every position, the token the mother likes least at the first position (adversarial)."""

    def __init__(self, mother):
        self.mother = mother

    def propose(self, context, position, k):
        v = self.mother.vocab_size
        logits = torch.full((k, v), -1e4)
        logits[:, 0] = 1e4
        return logits


class ConstantConfidence:
    def __init__(self, value: float):
        self.value = value

    def score(self, mother_logits, prior_logits, drafts):
        return torch.full((drafts.numel(),), self.value)


def _tiny_lm(seed: int = 0, vocab: int = 16) -> TransformerMother:
    torch.manual_seed(seed)
    return TransformerMother(CausalTransformerLM(vocab_size=vocab, dim=32, depth=2, heads=4, max_len=80))


def _corrupted_oracle(future: torch.Tensor, vocab: int, horizon: int, seed: int, frac: float = 0.3) -> OraclePrior:
    g = torch.Generator().manual_seed(seed)
    wrong = torch.rand(future.shape, generator=g) < frac
    noisy = torch.where(wrong, (future + 1) % vocab, future)
    return OraclePrior(noisy, vocab, horizon)


def test_kv_cache_verify_matches_full_forward():
    mother = _tiny_lm()
    seq = torch.randint(1, 16, (1, 20), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        full, _ = mother.model(torch.cat([torch.zeros(1, 1, dtype=torch.long), seq], 1))
    state = mother.start()
    # feed 7 tokens sequentially, then verify a block of 5 after them
    empty = torch.empty(0, dtype=torch.long)
    for i in range(7):
        mother.verify(state, empty)
        mother.commit(state, seq[0, i:i + 1])
    block = mother.verify(state, seq[0, 7:11])
    torch.testing.assert_close(block, full[0, 7:12], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("horizon", [1, 3, 5])
def test_exact_mode_equals_sequential_transformer(horizon):
    mother = _tiny_lm()
    length = 40
    for seed in range(2):
        noise = gumbel_noise(length, 16, torch.Generator().manual_seed(seed))
        seq = sample_sequential(mother, length, noise)
        assert seq.calls == length
        for prior in (_corrupted_oracle(seq.tokens, 16, horizon, seed), PriorPredictor(16, horizon=horizon)):
            res = nara_sample(mother, prior, length, horizon, "exact", noise=noise)
            assert torch.equal(res.tokens, seq.tokens)
            assert res.calls <= length


def test_exact_mode_equals_sequential_pixelcnn():
    torch.manual_seed(0)
    mother = PixelCNNMother(PixelCNN(size=6, channels=8, layers=2))
    length = 36
    for seed in range(2):
        noise = gumbel_noise(length, 2, torch.Generator().manual_seed(seed))
        seq = sample_sequential(mother, length, noise)
        res = nara_sample(mother, _corrupted_oracle(seq.tokens, 2, 6, seed), length, 6, "exact", noise=noise)
        assert torch.equal(res.tokens, seq.tokens)
        assert res.calls < length


def test_exact_mode_equals_sequential_markov():
    mother = MarkovMother(vocab_size=5, seed=1)
    for seed in range(5):
        noise = gumbel_noise(30, 5, torch.Generator().manual_seed(seed))
        seq = sample_sequential(mother, 30, noise)
        res = nara_sample(mother, TablePrior(30, 5, seed), 30, 4, "exact", noise=noise)
        assert torch.equal(res.tokens, seq.tokens)


@pytest.mark.parametrize("length,horizon", [(48, 4), (47, 5), (10, 10), (9, 1)])
def test_oracle_prior_takes_ceil_t_over_k_calls(length, horizon):
    mother = _tiny_lm(1)
    noise = gumbel_noise(length, 16, torch.Generator().manual_seed(7))
    seq = sample_sequential(mother, length, noise)
    res = nara_sample(mother, OraclePrior(seq.tokens, 16, horizon), length, horizon, "exact", noise=noise)
    assert torch.equal(res.tokens, seq.tokens)
    assert res.calls == math.ceil(length / horizon)


def _chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    n = counts.sum()
    expected = probs * n
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = counts.numel() - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def _joint_counts(sampler, n: int, length: int, vocab: int) -> torch.Tensor:
    counts = torch.zeros(vocab ** length, dtype=torch.float64)
    for _ in range(n):
        tokens = sampler().tolist()
        counts[sum(x * vocab ** i for i, x in enumerate(tokens))] += 1
    return counts


def test_speculative_rule_matches_sequential_distribution():
    vocab, length, horizon, n = 3, 3, 2, 2000
    mother = MarkovMother(vocab_size=vocab, seed=2)
    prior = TablePrior(length, vocab, seed=5, scale=1.5)  # deliberately unlike the mother
    probs = torch.zeros(vocab ** length, dtype=torch.float64)
    for seq in itertools.product(range(vocab), repeat=length):
        probs[sum(x * vocab ** i for i, x in enumerate(seq))] = mother.sequence_probability(list(seq))
    assert abs(float(probs.sum()) - 1) < 1e-6
    g = torch.Generator().manual_seed(0)
    spec = _joint_counts(lambda: nara_sample(mother, prior, length, horizon, "speculative", generator=g).tokens,
                         n, length, vocab)
    assert _chi_square_p_value(spec, probs) > 1e-3
    # the same test rejects a sampler that keeps every proposal (it has the power to fail)
    naive = _joint_counts(lambda: nara_sample(mother, prior, length, horizon, "approx", tau=0.0, generator=g,
                                              confidence=ConstantConfidence(1.0)).tokens, n, length, vocab)
    assert _chi_square_p_value(naive, probs) < 1e-6


@settings(max_examples=25, deadline=None)
@given(mode=st.sampled_from(["exact", "speculative", "approx"]), horizon=st.integers(1, 6),
       length=st.integers(1, 25), tau=st.sampled_from([0.0, 0.5, 1.0, 2.0]), conf=st.sampled_from([0.0, 0.7, 1.0]),
       worst=st.booleans(), seed=st.integers(0, 1000))
def test_loop_always_ends_within_sequential_calls(mode, horizon, length, tau, conf, worst, seed):
    mother = MarkovMother(vocab_size=4, seed=seed % 7)
    prior = WorstPrior(mother) if worst else TablePrior(length, 4, seed)
    res = nara_sample(mother, prior, length, horizon, mode, tau=tau, confidence=ConstantConfidence(conf),
                      generator=torch.Generator().manual_seed(seed))
    assert res.tokens.shape == (length,)
    assert math.ceil(length / horizon) <= res.calls == res.rounds <= length
    assert ((res.tokens >= 0) & (res.tokens < 4)).all()


def test_approx_mode_extremes():
    mother = MarkovMother(vocab_size=6, seed=3)
    prior = TablePrior(40, 6, seed=1)
    noise = gumbel_noise(40, 6, torch.Generator().manual_seed(0))
    exact = nara_sample(mother, prior, 40, 4, "exact", noise=noise)
    above_one = nara_sample(mother, prior, 40, 4, "approx", noise=noise, tau=1.01, confidence=ConstantConfidence(1.0))
    assert torch.equal(above_one.tokens, exact.tokens) and above_one.calls == exact.calls
    keep_all = nara_sample(mother, prior, 40, 4, "approx", noise=noise, tau=0.0, confidence=ConstantConfidence(0.0))
    assert keep_all.calls == 10
    assert torch.equal(keep_all.tokens, torch.argmax(prior.logits + noise, dim=-1))


def test_bad_arguments():
    mother = MarkovMother(vocab_size=3, max_len=10)
    prior = TablePrior(20, 3)
    with pytest.raises(UnknownChoiceError):
        nara_sample(mother, prior, 5, 2, "greedy")
    with pytest.raises(UsageError):
        nara_sample(mother, prior, 5, 2, "approx")
    with pytest.raises(UsageError):
        nara_sample(mother, prior, 11, 2, "exact")
    with pytest.raises(UsageError):
        nara_sample(mother, prior, 5, 0, "exact")
