"""ViT baselines: equal to timm's DeiT-sized ViTs for the same weights, at 224 and at other sizes."""
from __future__ import annotations

import pytest
import torch

from cuekit.models import create_model
from cuekit.models.complexity import count_macs, count_params

timm = pytest.importorskip("timm")


def _timm_pair(ours_name: str, timm_name: str, **timm_kw):
    torch.manual_seed(0)
    with torch.device("meta"):
        reference = timm.create_model(timm_name, **timm_kw)
        ours = create_model(ours_name)
    state = {}
    for key, meta in reference.state_dict().items():
        is_norm_scale = "norm" in key and key.endswith(".weight")
        state[key] = 1 + 0.1 * torch.randn(meta.shape) if is_norm_scale else 0.05 * torch.randn(meta.shape)
    reference.load_state_dict(state, strict=True, assign=True)
    ours.load_state_dict(state, strict=True, assign=True)  # identical key names: no map needed
    return reference.eval(), ours.eval()


@pytest.mark.parametrize("ours_name,timm_name", [("vit_ti", "vit_tiny_patch16_224"),
                                                 ("vit_s", "vit_small_patch16_224")])
def test_logits_equal_timm_at_224(ours_name, timm_name):
    reference, ours = _timm_pair(ours_name, timm_name)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [256, 160])
def test_other_sizes_equal_timms_dynamic_img_size(size):
    reference, ours = _timm_pair("vit_ti", "vit_tiny_patch16_224", dynamic_img_size=True)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


def test_native_size_uses_the_learned_embedding_itself():
    model = create_model("vit_nano")
    assert model._pos_embed_for((8, 8)) is model.pos_embed


@pytest.mark.parametrize("name,params_m,gmacs", [("vit_ti", 5.72, 1.25), ("vit_s", 22.05, 4.60)])
def test_deit_sizes(name, params_m, gmacs):
    # DeiT paper: 5.7M / 1.3 GFLOPs and 22.1M / 4.6 GFLOPs (its "FLOPs" are MACs, as in PiT's table).
    with torch.device("meta"):
        model = create_model(name)
    assert round(count_params(model) / 1e6, 2) == params_m
    assert count_macs(model, 224) / 1e9 == pytest.approx(gmacs, abs=0.01)


def test_tiny_vits_have_more_macs_than_their_pits():
    # The tiny pairs mirror PiT-Ti vs DeiT-Ti: fewer MACs and fewer parameters for PiT.
    for pit, vit, size in (("pit_nano", "vit_nano", 32), ("pit_micro", "vit_micro", 64)):
        p, v = create_model(pit, num_classes=10), create_model(vit, num_classes=10)
        assert count_macs(p, size) < 0.7 * count_macs(v, size)
        assert count_params(p) < count_params(v)


def test_vit_nano_trains_a_step_and_has_no_decay_names():
    model = create_model("vit_nano", num_classes=4, drop_path_rate=0.1)
    assert model.no_weight_decay() == {"pos_embed", "cls_token"}
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
