"""NARA training: mothers learn, the prior learns, the confidence predictor separates kept from resampled."""
from __future__ import annotations

import math

import torch

from cuekit.nara import MarkovMother, PriorPredictor, gumbel_noise, sample_sequential
from cuekit.nara.data import TEXT_BOS, TEXT_VOCAB, binary_shapes, decode_text, stdlib_text, text_windows
from cuekit.nara.training import (
    confidence_dataset,
    mean_nll,
    train_confidence,
    train_image_mother,
    train_prior,
    train_text_mother,
)


def _markov_data(mother: MarkovMother, n: int, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return torch.stack([sample_sequential(mother, length, gumbel_noise(length, mother.vocab_size, g)).tokens
                        for _ in range(n)])


def test_stdlib_text_is_bounded_ascii():
    tokens = stdlib_text(5000)
    assert tokens.numel() == 5000
    assert int(tokens.min()) > TEXT_BOS and int(tokens.max()) < TEXT_VOCAB
    assert "def " in decode_text(tokens) or "import" in decode_text(tokens)
    rows = text_windows(tokens, 16, 4, torch.Generator().manual_seed(0))
    assert rows.shape == (4, 17) and (rows[:, 0] == TEXT_BOS).all()


def test_binary_shapes():
    imgs = binary_shapes(20, size=10, seed=0)
    assert imgs.shape == (20, 10, 10)
    assert set(imgs.unique().tolist()) <= {0, 1}
    assert (imgs.flatten(1).sum(1) > 0).all() and (imgs.flatten(1).float().mean(1) < 0.9).all()
    assert torch.equal(imgs, binary_shapes(20, size=10, seed=0))


def test_text_mother_loss_falls():
    tokens = stdlib_text(20_000)
    model, losses = train_text_mother(tokens, dim=32, depth=1, heads=2, seq_len=32, steps=25, batch_size=8)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert model.max_len >= 33


def test_image_mother_loss_falls():
    imgs = binary_shapes(64, size=8, seed=0)
    _, losses = train_image_mother(imgs, channels=8, layers=1, steps=40, batch_size=16)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_prior_and_confidence_training_on_markov_chain():
    mother = MarkovMother(vocab_size=4, seed=0, sharpness=2.5)
    seqs = _markov_data(mother, 150, 16)
    prior = PriorPredictor(4, horizon=3, window=4, dim=8, hidden=32, num_positions=16)
    losses = train_prior(prior, seqs, offset=0, steps=150, batch_size=64, lr=1e-2)
    assert sum(losses[-10:]) / 10 < min(sum(losses[:10]) / 10, math.log(4))
    conf, final = train_confidence(mother, prior, seqs, offset=0, batches=6, epochs=4, progress=False)
    feats, labels = confidence_dataset(mother, prior, seqs, offset=0, batches=4, seed=99)
    with torch.no_grad():
        score = conf(feats).softmax(-1)[:, 1]
    assert 0 < int(labels.sum()) < labels.numel()
    assert float(score[labels == 1].mean()) > float(score[labels == 0].mean()) + 0.1
    # samples of the chain have a lower NLL than uniform tokens under the chain
    assert mean_nll(mother, seqs[:20]) < math.log(4)
