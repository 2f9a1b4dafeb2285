"""ReXNet's eval-mode inference program (BatchNorm folded into the convolutions, activations and SE
gating in place, channels_last on the CPU): the same logits as the modules, used only where it may be,
and rebuilt when the weights change."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from cuekit.models import create_model


def _randomised(name: str, seed: int = 0, **kw) -> nn.Module:
    """A model in eval mode with random BatchNorm statistics and affine parameters (so folding matters)."""
    torch.manual_seed(seed)
    model = create_model(name, **kw)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            nn.init.normal_(m.weight, 1, 0.1)
            nn.init.normal_(m.bias, 0, 0.1)
    return model.eval()


def _module_path(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits through the modules themselves (grad enabled: the inference program is not used)."""
    with torch.enable_grad():
        return model(x).detach()


@pytest.fixture
def batch_norm_calls(monkeypatch) -> list:
    """Count calls of torch.nn.functional.batch_norm (what every BatchNorm2d module runs)."""
    calls = []
    original = torch.nn.functional.batch_norm

    def counting(*args, **kw):
        calls.append(1)
        return original(*args, **kw)

    monkeypatch.setattr(torch.nn.functional, "batch_norm", counting)
    return calls


@pytest.mark.parametrize("name,size", [("rexnet_100", 64), ("rexnet_lite_100", 64), ("rexnet_tiny", 32)])
def test_eval_inference_folds_batchnorm_and_keeps_logits(name, size, batch_norm_calls):
    """Under no_grad in eval mode no BatchNorm runs (they are folded into the convolutions) and the
    logits and features equal the modules' ones."""
    model = _randomised(name, num_classes=10)
    x = torch.randn(3, 3, size, size)
    expected = _module_path(model, x)
    assert batch_norm_calls, "the module path runs the BatchNorm layers"
    batch_norm_calls.clear()
    with torch.no_grad():
        got = model(x)
        features = model.forward_features(x)
    assert not batch_norm_calls
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    with torch.enable_grad():
        expected_features = model.features(x).detach()
    assert features.is_contiguous()
    torch.testing.assert_close(features, expected_features, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(model.forward_head(features), expected, rtol=0, atol=1e-5)


def test_program_is_used_only_where_it_may(batch_norm_calls):
    """Training mode, autograd, and forward hooks (which would miss the folded modules) run the modules."""
    model = _randomised("rexnet_tiny", num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    with torch.no_grad():
        model(x)
    assert batch_norm_calls  # training mode: batch statistics
    model.eval()
    batch_norm_calls.clear()
    out = model(x)
    assert batch_norm_calls and out.requires_grad  # eval mode with autograd: gradients flow
    seen = []
    handle = model.features[4].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    batch_norm_calls.clear()
    with torch.no_grad():
        model(x)
    assert seen and batch_norm_calls
    handle.remove()
    batch_norm_calls.clear()
    with torch.no_grad():
        model(x)
    assert not batch_norm_calls


def test_program_follows_changes_of_the_weights():
    """An optimizer step, load_state_dict, a replaced parameter and a `.data` change followed by
    eval() are all seen by the next no_grad forward."""
    model = _randomised("rexnet_tiny", num_classes=5)
    x = torch.randn(2, 3, 32, 32)

    def check() -> None:
        with torch.no_grad():
            got = model(x)
        torch.testing.assert_close(got, _module_path(model, x), rtol=0, atol=1e-5)

    check()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(x).square().sum().backward()
    opt.step()
    check()
    model.load_state_dict(_randomised("rexnet_tiny", seed=1, num_classes=5).state_dict())
    check()
    bn = model.features[1]
    bn.weight = nn.Parameter(bn.weight.detach() * 3)
    check()
    model.features[0].weight.data.mul_(-1)  # bypasses the version counter ...
    model.eval()  # ... and eval() rebuilds
    check()


def test_state_dict_keys_and_copies_unchanged():
    """The program is not state: no new state-dict keys, and copies / pickles leave it behind."""
    model = _randomised("rexnet_100")
    keys = list(model.state_dict())
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert "_inference_cache" in model.__dict__
    assert list(model.state_dict()) == keys
    assert "_inference_cache" not in copy.deepcopy(model).__dict__
    assert "_inference_cache" not in pickle.loads(pickle.dumps(model)).__dict__


def test_program_built_under_inference_mode_works_under_no_grad():
    """Folded weights made under inference_mode are inference tensors: usable later under no_grad."""
    model = _randomised("rexnet_tiny", num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        first = model(x).clone()
    with torch.no_grad():
        second = model(x)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
