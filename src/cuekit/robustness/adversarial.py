"""FGSM accuracy: top-1 accuracy under a one-step L-inf attack, for a list of epsilons (pixel units)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cuekit.augment.adversarial import apply_step, fgsm_direction

__all__ = ["DEFAULT_EPSILONS", "fgsm_accuracy"]

DEFAULT_EPSILONS = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)


def fgsm_accuracy(model: nn.Module, images: Tensor, labels: Tensor, epsilons: Sequence[float] = DEFAULT_EPSILONS,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None, batch_size: int = 256,
                  device: str | torch.device = "cpu") -> dict[float, float]:
    """images (N, C, H, W) as the model takes them (normalised by mean/std), labels (N,) int -> {eps: accuracy}.

    The gradient sign is computed once per batch (model in eval mode, cross-entropy on the true
    label) and every epsilon steps along it, clipped to valid pixels.
    """
    was_training = model.training
    model.eval()
    correct = {float(e): 0 for e in epsilons}
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        direction, logits = fgsm_direction(model, x, y, F.cross_entropy)
        with torch.no_grad():
            for eps in correct:
                out = logits if eps == 0 else model(apply_step(x, direction, eps, mean, std))
                correct[eps] += int((out.argmax(-1) == y).sum())
    model.train(was_training)
    return {eps: c / max(1, len(images)) for eps, c in correct.items()}
