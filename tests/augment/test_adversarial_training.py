"""FGSM adversarial training: the attack uses the model's predicted label and leaves BatchNorm statistics alone."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cuekit.augment.adversarial import FGSMTraining, fgsm_perturb
from shared_helpers import make_blobs_bundle


class LinearModel(nn.Module):
    """logits = W x.flatten(): the input gradient of cross-entropy is W^T (softmax - onehot(target))."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(weight.clone())

    def forward(self, x):
        return x.flatten(1) @ self.w.T


class BNNet(nn.Module):
    """Conv -> BatchNorm -> ReLU -> global mean -> Linear: has running statistics to protect."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _closed_form_step(model: LinearModel, x: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    p = (x.flatten(1) @ model.w.T).softmax(1)
    grad = ((p - F.one_hot(target, p.shape[1]).float()) @ model.w).view_as(x)
    return (x + eps * grad.sign()).clamp(0, 1)


def test_the_attack_targets_the_predicted_label_not_the_true_one():
    g = torch.Generator().manual_seed(0)
    model = LinearModel(torch.randn(3, 3 * 4 * 4, generator=g))
    x = torch.rand(8, 3, 4, 4, generator=g) * 0.6 + 0.2
    pred = model(x).argmax(1)
    y = (pred + 1) % 3  # every true label differs from the prediction
    eps = 4 / 255
    at = FGSMTraining(3, epsilon=eps, fraction=1.0, model=model)
    out, target = at(x, y)
    with torch.no_grad():
        torch.testing.assert_close(out, _closed_form_step(model, x, pred, eps))
        leaked = _closed_form_step(model, x, y, eps)
    assert not torch.allclose(out, leaked)  # the true-label attack would have given other images
    torch.testing.assert_close(target, F.one_hot(y, 3).float())  # training still uses the true target
    assert model.w.grad is None


def test_the_attack_pass_leaves_batchnorm_statistics_and_the_mode_alone():
    torch.manual_seed(0)
    model = BNNet().train()
    x = torch.randn(16, 3, 8, 8)
    y = torch.randint(0, 2, (16,))
    model(torch.randn(16, 3, 8, 8))  # running statistics away from their initial values
    before = {k: v.clone() for k, v in model.bn.state_dict().items()}
    at = FGSMTraining(2, epsilon=8 / 255, fraction=0.5)
    at.bind(model=model)
    out, _ = at(x, y)
    assert model.training
    for k, v in model.bn.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    # The attack ran in eval mode: the same images as an explicit eval-mode attack on the predicted label.
    model.eval()
    expected = fgsm_perturb(model, x[:8], None, 8 / 255, loss_fn=F.cross_entropy)
    model.train()
    torch.testing.assert_close(out[:8], expected)
    torch.testing.assert_close(out[8:], x[8:])
    # The training step that follows still updates them.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(out), y).backward()
    opt.step()
    assert not torch.allclose(model.bn.running_mean, before["running_mean"])
    assert int(model.bn.num_batches_tracked) == int(before["num_batches_tracked"]) + 1


def test_the_engine_binds_fgsm_training_and_trains_batchnorm():
    from cuekit.augment.regularizers import build_batch_transform
    from cuekit.train import TrainConfig, train

    data = make_blobs_bundle(n_train=128, n_val=32)
    torch.manual_seed(0)
    model = BNNet()
    transform, _ = build_batch_transform(["fgsm-at"], 2, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, opt="sgd", amp="off", progress=False)
    res = train(cfg, model=model, data=data, batch_transform=transform)
    assert transform.steps[0].model is model  # bound by the engine
    # 4 optimizer steps: 4 BatchNorm updates, from the training forwards only (a train-mode attack pass
    # would have added 4 more)
    assert int(res.model.bn.num_batches_tracked) == 4
