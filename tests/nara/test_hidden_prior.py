"""The Medusa-style prior on the mother's hidden state: positions, exactness, distillation, chaining, save/load."""
from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from cuekit.errors import UsageError
from cuekit.nara import (
    CausalTransformerLM,
    HiddenStatePrior,
    MarkovMother,
    TransformerMother,
    gumbel_noise,
    nara_sample,
    sample_sequential,
)
from cuekit.nara.training import (
    hidden_prior_examples,
    mother_outputs,
    sample_text_mother,
    train_hidden_prior,
    train_text_mother,
)


def _tiny_lm(seed: int = 0, vocab: int = 16, dim: int = 32, max_len: int = 80) -> TransformerMother:
    torch.manual_seed(seed)
    return TransformerMother(CausalTransformerLM(vocab_size=vocab, dim=dim, depth=2, heads=4, max_len=max_len))


def _random_prior(dim: int, vocab: int, horizon: int, chain: bool, seed: int = 0, scale: float = 1.0
                  ) -> HiddenStatePrior:
    """An untrained prior with random weights everywhere (the chain tables too, so that chaining matters)."""
    torch.manual_seed(seed)
    prior = HiddenStatePrior(dim, vocab, horizon=horizon, hidden=24, chain=chain)
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0, scale)
    return prior.eval()


def test_last_hidden_is_the_state_that_predicted_the_last_token():
    mother = _tiny_lm()
    seq = torch.randint(1, 16, (1, 24), generator=torch.Generator().manual_seed(1))
    inp = torch.cat([torch.zeros(1, 1, dtype=torch.long), seq], 1)
    with torch.inference_mode():
        full_logits, full_hidden = mother.model(inp)
    state = mother.start()
    assert mother.last_hidden(state) is None and int(mother.last_token(state)) == 0
    t = 0
    for n in (1, 3, 1, 4, 2, 5):  # blocks of n drafts, all kept (commits of n tokens)
        logits = mother.verify(state, seq[0, t:t + n - 1])
        torch.testing.assert_close(logits, full_logits[0, t:t + n], atol=1e-5, rtol=1e-5)
        mother.commit(state, seq[0, t:t + n])
        t += n
        # the state at input position t - 1 predicted token t (seq[t - 1]); the prefix view agrees
        torch.testing.assert_close(mother.last_hidden(state), full_hidden[0, t - 1], atol=1e-5, rtol=1e-5)
        assert int(mother.last_token(state)) == int(seq[0, t - 1])
        torch.testing.assert_close(mother.prefix_states(inp[:, :t + 1])[0], full_hidden[0, t - 1], atol=1e-5,
                                   rtol=1e-5)
    assert torch.equal(mother.prefix_states(inp[:, :1]), torch.zeros(1, 32))


def test_training_examples_are_aligned_with_the_mother():
    mother = _tiny_lm(2)
    rows = torch.cat([torch.zeros(5, 1, dtype=torch.long),
                      torch.randint(1, 16, (5, 12), generator=torch.Generator().manual_seed(0))], 1)
    states, probs = mother_outputs(mother.model, rows)
    r, c = torch.tensor([0, 1, 2, 3, 4, 4]), torch.tensor([0, 3, 7, 10, 11, 5])
    horizon = 4
    state, last, target, previous, valid = hidden_prior_examples(states, probs, rows, horizon, r, c)
    for i in range(len(r)):
        ri, ci = int(r[i]), int(c[i])
        prefix = rows[ri:ri + 1, :ci + 1]
        torch.testing.assert_close(state[i], mother.prefix_states(prefix)[0], atol=1e-5, rtol=1e-5)
        assert int(last[i]) == int(rows[ri, ci])
        for j in range(horizon):
            assert bool(valid[i, j]) == (ci + j + 1 < rows.shape[1])
            if valid[i, j]:
                assert int(previous[i, j]) == int(rows[ri, ci + j])
                # head j's target: the mother's distribution of rows[c + j + 1] given rows[:c + j + 1]
                expected = mother.block_logits(rows[ri:ri + 1, :ci + j + 1], rows[ri:ri + 1, :0])[0, 0].softmax(-1)
                torch.testing.assert_close(target[i, j], expected, atol=2e-3, rtol=1e-2)  # stored in bfloat16


@pytest.mark.parametrize("chain", [False, True])
@pytest.mark.parametrize("horizon", [1, 3, 6])
def test_exact_mode_equals_sequential_with_hidden_prior(chain, horizon):
    mother = _tiny_lm()
    prior = _random_prior(32, 16, 6, chain, seed=horizon)
    length = 40
    for seed in range(2):
        noise = gumbel_noise(length, 16, torch.Generator().manual_seed(seed))
        seq = sample_sequential(mother, length, noise)
        res = nara_sample(mother, prior, length, horizon, "exact", noise=noise)
        assert torch.equal(res.tokens, seq.tokens)
        assert math.ceil(length / horizon) <= res.calls <= length
        above_one = nara_sample(mother, prior, length, horizon, "approx", noise=noise, tau=1.01,
                                confidence=_ConstantConfidence(1.0))
        assert torch.equal(above_one.tokens, seq.tokens) and above_one.calls == res.calls


class _ConstantConfidence:
    def __init__(self, value: float):
        self.value = value

    def score(self, mother_logits, prior_logits, drafts):
        return torch.full((drafts.numel(),), self.value)


def test_chain_walks_the_previous_draft():
    """A chain table that says "previous token + 1" drafts last+1, last+2, ... whatever the noise."""
    vocab, horizon = 10, 5
    prior = HiddenStatePrior(8, vocab, horizon=horizon, hidden=4, chain=True).eval()
    with torch.no_grad():
        for p in prior.parameters():
            p.zero_()
        for a in range(vocab):
            prior.chain[:, a, (a + 1) % vocab] = 100.0
    noise = gumbel_noise(horizon, vocab, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        drafts, logits = prior.draft(torch.randn(8), torch.tensor([7]), horizon, noise)
    assert drafts.tolist() == [8, 9, 0, 1, 2]
    assert torch.equal(logits.argmax(-1), drafts)
    # the batched path (training, confidence data) walks the same chain
    batch, batch_logits = prior.batch_draft(torch.randn(2, 8), torch.tensor([7, 3]), noise.expand(2, -1, -1))
    assert batch.tolist() == [[8, 9, 0, 1, 2], [4, 5, 6, 7, 8]]
    torch.testing.assert_close(batch_logits[0], logits)
    with pytest.raises(UsageError):
        prior.propose_from_state(None, torch.tensor([0]), 2)


def test_draft_matches_batch_draft_and_forward():
    """The sampler's single-sequence drafting, the batched drafting and the training forward agree."""
    for chain in (False, True):
        prior = _random_prior(12, 9, 4, chain, seed=3, scale=0.5)
        states, last = torch.randn(3, 12), torch.tensor([1, 4, 8])
        noise = gumbel_noise(12, 9, torch.Generator().manual_seed(1)).view(3, 4, 9)
        drafts, logits = prior.batch_draft(states, last, noise)
        previous = torch.cat([last[:, None], drafts[:, :-1]], 1)
        with torch.no_grad():
            torch.testing.assert_close(prior(states, last, previous if chain else None), logits)
        for i in range(3):
            with torch.inference_mode():
                d, lg = prior.draft(states[i], last[i:i + 1], 4, noise[i])
            assert torch.equal(d, drafts[i])
            torch.testing.assert_close(lg, logits[i], atol=1e-5, rtol=1e-5)


def _periodic_tokens(n: int, period: int = 7) -> torch.Tensor:
    return torch.arange(n) % period + 1


def test_distilled_priors_propose_a_predictable_mother_almost_like_an_oracle():
    """On a nearly deterministic mother (periodic text), distilled heads make exact sampling take about
    ceil(T/K) mother calls, where an untrained prior needs many more."""
    torch.manual_seed(0)
    model, losses = train_text_mother(_periodic_tokens(4000), dim=32, depth=1, heads=2, seq_len=24, steps=150,
                                      batch_size=16, lr=1e-2)
    mother = TransformerMother(model)
    rows = sample_text_mother(model, 256, 24, generator=torch.Generator().manual_seed(0))
    length, horizon = 40, 5
    noise = gumbel_noise(length, 128, torch.Generator().manual_seed(5))
    seq = sample_sequential(mother, length, noise)
    assert (seq.tokens[1:] - seq.tokens[:-1]).remainder(7).eq(1).float().mean() > 0.9  # the mother learnt it
    untrained = HiddenStatePrior(32, 128, horizon=horizon, hidden=32)
    base_calls = nara_sample(mother, untrained.eval(), length, horizon, "exact", noise=noise).calls
    for chain in (False, True):
        prior = HiddenStatePrior(32, 128, horizon=horizon, hidden=32, chain=chain)
        p_losses = train_hidden_prior(prior, model, rows, steps=150, batch_size=128, lr=1e-2)
        assert sum(p_losses[-10:]) < sum(p_losses[:10])
        res = nara_sample(mother, prior, length, horizon, "exact", noise=noise)
        assert torch.equal(res.tokens, seq.tokens)
        assert res.calls <= math.ceil(length / horizon) + 3 < base_calls


def _sequence_probs(mother: TransformerMother, vocab: int, length: int) -> torch.Tensor:
    seqs = torch.tensor(list(itertools.product(range(vocab), repeat=length)))
    probs = mother.token_logprobs(seqs).sum(1).double().exp()
    index = (seqs * vocab ** torch.arange(length)).sum(1)
    return torch.zeros(vocab ** length, dtype=torch.float64).index_add_(0, index, probs)


def _chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    stat = float(((counts - expected) ** 2 / expected).sum())
    return float(torch.special.gammaincc(torch.tensor((counts.numel() - 1) / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def test_speculative_rule_keeps_the_distribution_with_a_chained_prior():
    vocab, length, horizon, n = 3, 3, 3, 2000
    mother = _tiny_lm(4, vocab=vocab, dim=16)
    with torch.no_grad():
        mother.model.head.weight.mul_(8.0)  # a mother with some structure, not near uniform
    probs = _sequence_probs(mother, vocab, length)
    assert abs(float(probs.sum()) - 1) < 1e-5
    prior = _random_prior(16, vocab, horizon, chain=True, seed=7, scale=1.5)  # deliberately unlike the mother
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(vocab ** length, dtype=torch.float64)
    for _ in range(n):
        tokens = nara_sample(mother, prior, length, horizon, "speculative", generator=g).tokens
        counts[int((tokens * vocab ** torch.arange(length)).sum())] += 1
    assert _chi_square_p_value(counts, probs) > 1e-3
    # the same test rejects keeping every proposal (it has the power to fail)
    naive = torch.zeros_like(counts)
    for _ in range(n):
        tokens = nara_sample(mother, prior, length, horizon, "approx", tau=0.0, generator=g,
                             confidence=_ConstantConfidence(1.0)).tokens
        naive[int((tokens * vocab ** torch.arange(length)).sum())] += 1
    assert _chi_square_p_value(naive, probs) < 1e-6


def test_bad_uses_of_the_hidden_prior():
    from cuekit.nara.domains import build_domain

    prior = HiddenStatePrior(8, 4, horizon=3)
    with pytest.raises(UsageError):
        nara_sample(MarkovMother(vocab_size=4), prior, 5, 2, "exact")  # no hidden state to read
    with pytest.raises(UsageError):
        nara_sample(_tiny_lm(vocab=4, dim=8), prior, 5, 4, "exact")  # horizon beyond the prior's heads
    with pytest.raises(UsageError):
        build_domain("image", prior="hidden")


@pytest.fixture(scope="module")
def tiny_text_domain(tmp_path_factory):
    from cuekit.nara.domains import build_domain, save_domain

    d = build_domain("text", quick=True, seed=0, prior="hidden-chain", corpus_bytes=20_000, dim=32, depth=1,
                     heads=2, seq_len=32, mother_steps=10, prior_rows=64, hidden_prior_steps=10, conf_batches=2,
                     length=24, chain_horizon=4, prior_hidden=16)
    out = tmp_path_factory.mktemp("nara") / "text"
    save_domain(d, out)
    return out, d


def test_text_domain_with_hidden_prior_round_trip(tiny_text_domain):
    from cuekit.nara.domains import load_domain

    out, d = tiny_text_domain
    meta = json.loads((out / "domain.json").read_text())
    assert meta["prior_kind"] == "hidden-chain" and meta["settings"]["prior"] == "hidden-chain"
    loaded = load_domain(out)
    assert loaded.prior_kind == "hidden-chain" and loaded.horizon == 4 and loaded.prior.chain is not None
    for name, tensor in d.prior.state_dict().items():
        assert torch.equal(loaded.prior.state_dict()[name], tensor)
    noise = gumbel_noise(24, 128, torch.Generator().manual_seed(0))
    a = nara_sample(d.mother, d.prior, 24, 4, "exact", noise=noise)
    b = nara_sample(loaded.mother, loaded.prior, 24, 4, "exact", noise=noise)
    assert torch.equal(a.tokens, b.tokens) and a.calls == b.calls
    assert torch.equal(b.tokens, sample_sequential(loaded.mother, 24, noise).tokens)


def test_sample_command_records_the_prior(tiny_text_domain, tmp_path):
    from cuekit.cli import main

    out, _ = tiny_text_domain
    assert main(["nara", "sample", "--ckpt", str(out), "--mode", "exact", "--num", "1", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["prior"] == "hidden-chain" and len(res["samples"][0]) == 24
