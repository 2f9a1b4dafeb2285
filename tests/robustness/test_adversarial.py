"""FGSM: the step is epsilon in pixel units along the gradient sign; FGSM training and FGSM accuracy."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cuekit.augment.adversarial import FGSMTraining, fgsm_direction, fgsm_perturb
from cuekit.errors import UsageError
from cuekit.robustness.adversarial import fgsm_accuracy


class Linear(nn.Module):
    """logits = W x.flatten(): the input gradient of cross-entropy is known in closed form."""

    def __init__(self, d: int, k: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(k, d, generator=g))

    def forward(self, x):
        return x.flatten(1) @ self.w.T


def test_fgsm_step_matches_the_closed_form_gradient_sign():
    model = Linear(3 * 4 * 4, 5)
    x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    # d CE / d x = W^T (softmax - onehot)
    p = (x.flatten(1) @ model.w.T).softmax(1)
    grad = ((p - F.one_hot(y, 5).float()) @ model.w).view_as(x)
    adv = fgsm_perturb(model, x, y, 0.05)
    torch.testing.assert_close(adv, (x + 0.05 * grad.sign()).clamp(0, 1))
    assert model.w.grad is None  # only the input was differentiated


def test_fgsm_works_in_normalised_space_and_clips_to_valid_pixels():
    model = Linear(3 * 4 * 4, 3)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    pixels = torch.rand(4, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    x = (pixels - m) / s
    y = torch.tensor([0, 1, 2, 0])
    adv = fgsm_perturb(model, x, y, 8 / 255, mean, std)
    adv_pixels = adv * s + m
    assert float((adv_pixels - pixels).abs().max()) <= 8 / 255 + 1e-6
    assert float(adv_pixels.min()) >= -1e-6 and float(adv_pixels.max()) <= 1 + 1e-6
    direction, _ = fgsm_direction(model, x, y)
    moved = (adv_pixels - pixels).abs() > 1e-6
    torch.testing.assert_close(torch.sign(adv_pixels - pixels)[moved], direction[moved])
    with pytest.raises(UsageError):
        fgsm_perturb(model, x, y, -1.0)


def test_fgsm_training_replaces_half_the_batch_and_needs_a_model():
    model = Linear(3 * 4 * 4, 4)
    x = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 0.5 + 0.25
    y = torch.arange(8) % 4
    with pytest.raises(UsageError):
        FGSMTraining(4)(x, y)
    at = FGSMTraining(4, epsilon=4 / 255)
    at.bind(model=model)
    out, t = at(x, y)
    torch.testing.assert_close(t, F.one_hot(y, 4).float())
    diff = (out - x).abs().flatten(1).amax(1)
    assert bool((diff[:4] > 3.9 / 255).all()) and bool((diff[4:] == 0).all())


def test_fgsm_accuracy_falls_with_epsilon_on_a_trained_model():
    g = torch.Generator().manual_seed(0)
    n, d = 400, 3 * 4 * 4
    y = torch.randint(0, 2, (n,), generator=g)
    x = (torch.rand(n, 3, 4, 4, generator=g) * 0.4 + 0.3 + (y.float() * 0.2 - 0.1).view(-1, 1, 1, 1)).clamp(0, 1)
    model = Linear(d, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    acc = fgsm_accuracy(model, x, y, [0.0, 2 / 255, 8 / 255, 32 / 255], batch_size=128)
    clean = float((model(x).argmax(1) == y).float().mean())
    assert acc[0.0] == pytest.approx(clean)
    vals = [acc[e] for e in sorted(acc)]
    assert vals == sorted(vals, reverse=True) and vals[-1] < vals[0] - 0.2
