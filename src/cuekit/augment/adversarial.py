"""FGSM (Goodfellow et al. 2015) and FGSM adversarial training as a batch transform.

Epsilon is in pixel units ([0, 1] images, e.g. 2/255). Datasets here hand out normalised
images ((x - mean) / std); `mean` and `std` translate epsilon and the valid pixel range into
that space, so the attack stays a pixel-space L-inf step of size epsilon, clipped to [0, 1].

Adversarial training follows Kurakin et al. (2017): the attack targets the model's own
prediction, not the true label (attacking the true label leaks it into the adversarial image,
"label leaking"), and the attack pass runs in eval mode, so BatchNorm uses and keeps its
running statistics; the training step that follows is the only one to update them.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cuekit.augment.mix import to_soft
from cuekit.augment.targets import soft_target_cross_entropy
from cuekit.errors import UsageError

__all__ = ["FGSMTraining", "apply_step", "fgsm_direction", "fgsm_perturb", "pixel_space"]


def pixel_space(mean: Sequence[float] | None, std: Sequence[float] | None, channels: int,
                device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """mean, std as (1, C, 1, 1) float tensors (defaults 0 and 1: images already in [0, 1])."""
    m = torch.zeros(channels) if mean is None else torch.as_tensor(list(mean)[:channels], dtype=torch.float32)
    s = torch.ones(channels) if std is None else torch.as_tensor(list(std)[:channels], dtype=torch.float32)
    if m.numel() == 1 and channels > 1:
        m, s = m.expand(channels), s.expand(channels)
    if m.numel() != channels or s.numel() != channels:
        raise UsageError(f"mean/std have {m.numel()}/{s.numel()} values for {channels} channels")
    if bool((s <= 0).any()):
        raise UsageError(f"std must be positive, got {s.tolist()}")
    return m.view(1, -1, 1, 1).to(device), s.view(1, -1, 1, 1).to(device)


def fgsm_direction(model: nn.Module, x: Tensor, target: Tensor | None,
                   loss_fn: Callable[[Tensor, Tensor], Tensor] = soft_target_cross_entropy) -> tuple[Tensor, Tensor]:
    """sign of d loss / d x and the logits of x: x (N, C, H, W), target (N,) int, (N, K) soft, or None.

    target=None attacks the model's own prediction (the argmax of the same forward pass, detached).
    Only the input gets a gradient (torch.autograd.grad): parameter .grad fields are untouched.
    """
    x_req = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_req)
        if isinstance(logits, (tuple, list)):  # two-head models in training mode
            logits = sum(logits) / len(logits)
        if target is None:
            target = logits.detach().argmax(-1)
        loss = loss_fn(logits.float(), target)
        (grad,) = torch.autograd.grad(loss, x_req)
    return grad.sign(), logits.detach()


def fgsm_perturb(model: nn.Module, x: Tensor, target: Tensor | None, epsilon: float,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] = soft_target_cross_entropy) -> Tensor:
    """x_adv = clip(x + epsilon * sign(grad)) in pixel space; x normalised by mean/std -> same space.

    target None: the model's predicted label (see `fgsm_direction`)."""
    if epsilon < 0:
        raise UsageError(f"epsilon must be >= 0, got {epsilon}")
    direction, _ = fgsm_direction(model, x, target, loss_fn)
    return apply_step(x, direction, epsilon, mean, std)


def apply_step(x: Tensor, direction: Tensor, epsilon: float, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None) -> Tensor:
    """x + epsilon * direction in pixel units, clipped to the image range: (N, C, H, W) -> same."""
    m, s = pixel_space(mean, std, x.shape[1], x.device)
    pixels = (x.detach() * s + m + epsilon * direction).clamp_(0.0, 1.0)
    return ((pixels - m) / s).to(x.dtype)


class FGSMTraining:
    """Batch transform for FGSM adversarial training: replace a fraction of each batch by FGSM images.

    Following Kurakin et al. (2017) a batch keeps clean and adversarial samples (default half
    each), and the attack maximises the loss of the model's *predicted* label (no label leaking).
    The attack pass runs in eval mode (BatchNorm running statistics are used, not updated) and the
    model's mode is restored afterwards. The training target of the adversarial images stays the
    batch's own (possibly mixed) soft target. The model comes from the constructor or from
    `bind(model=..., data=...)`, which also takes mean/std from a DataBundle.
    """

    def __init__(self, num_classes: int, epsilon: float = 2 / 255, fraction: float = 0.5,
                 model: nn.Module | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        if epsilon < 0:
            raise UsageError(f"FGSM epsilon must be >= 0, got {epsilon}")
        if not 0.0 < fraction <= 1.0:
            raise UsageError(f"FGSM fraction must be in (0, 1], got {fraction}")
        self.num_classes, self.epsilon, self.fraction = num_classes, float(epsilon), float(fraction)
        self.model, self.mean, self.std = model, mean, std

    def bind(self, model: nn.Module | None = None, data=None) -> None:
        """Attach the model to attack and, from a DataBundle, its normalisation."""
        if model is not None:
            self.model = model
        if data is not None and self.mean is None:
            self.mean, self.std = list(data.mean), list(data.std)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, C, H, W) float, y: (N,) int or (N, K) soft -> x with the first fraction*N adversarial."""
        if self.model is None:
            raise UsageError("fgsm-at needs the model: pass model= or call bind(model) before training")
        soft = to_soft(y, self.num_classes)
        k = max(1, round(self.fraction * x.shape[0]))
        was_training = self.model.training
        self.model.eval()
        try:
            adv = fgsm_perturb(self.model, x[:k], None, self.epsilon, self.mean, self.std, F.cross_entropy)
        finally:
            self.model.train(was_training)
        return torch.cat([adv, x[k:]]), soft
