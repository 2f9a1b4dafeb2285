"""PiT: equal to timm's PiT (the reference) for the same weights, the paper's sizes, distillation,
other input sizes, timm key names, the pooling-off ablation, export."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cuekit.models import create_model, list_models, load_checkpoint
from cuekit.models.complexity import count_macs, count_params
from cuekit.models.pit import pit_key_remap, to_timm_keys
from cuekit.models.vit import resize_pos_embed_2d

timm = pytest.importorskip("timm")

VARIANTS = ["ti", "xs", "s", "b"]
ALL_PIT = [f"pit_{v}{d}" for v in VARIANTS for d in ("", "_distilled")]
# Parameters (M) and MACs (G) at 224: the spec's verified numbers (= the paper's 4.9/10.6/23.5/73.8M,
# 0.71/1.4/2.9/12.5 G).
PAPER_PARAMS_M = {"ti": 4.85, "xs": 10.62, "s": 23.46, "b": 73.76}
PAPER_GMACS = {"ti": 0.70, "xs": 1.40, "s": 2.87, "b": 12.4}


def _timm_name(name: str) -> str:
    return name + "_224"  # pit_ti -> pit_ti_224, pit_ti_distilled -> pit_ti_distilled_224


def _timm_pair(name: str, img_size: int, num_classes: int = 1000):
    """timm's PiT with random weights, and ours holding the very same weights (loaded through the key map).

    Both are built on the meta device and get plain Gaussian weights (LayerNorm scales around 1):
    much faster than either library's initialisation for PiT-B.
    """
    torch.manual_seed(0)
    with torch.device("meta"):
        reference = timm.create_model(_timm_name(name), img_size=img_size, num_classes=num_classes)
        ours = create_model(name, img_size=img_size, num_classes=num_classes)
    state = {}
    for key, meta in reference.state_dict().items():
        is_norm_scale = "norm" in key and key.endswith(".weight")
        state[key] = 1 + 0.1 * torch.randn(meta.shape) if is_norm_scale else 0.05 * torch.randn(meta.shape)
    reference.load_state_dict(state, strict=True, assign=True)
    ours.load_state_dict(pit_key_remap(state), strict=True, assign=True)
    return reference.eval(), ours.eval()


@pytest.mark.parametrize("name", ALL_PIT)
def test_logits_equal_timm_for_same_weights(name):
    # Native size 64 px (timm builds PiT for any fixed size): 7x7 -> 4x4 -> 2x2 tokens (PiT-B 8 -> 4 -> 2).
    reference, ours = _timm_pair(name, img_size=64, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == (2, 10)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["pit_ti", "pit_s_distilled"])
def test_logits_equal_timm_at_224(name):
    reference, ours = _timm_pair(name, img_size=224)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


def test_distilled_training_returns_both_heads_and_eval_their_mean():
    reference, ours = _timm_pair("pit_xs_distilled", img_size=64, num_classes=7)
    x = torch.randn(3, 3, 64, 64)
    ours.train()
    reference.train()
    reference.set_distilled_training(True)
    with torch.no_grad():
        cls_logits, dist_logits = ours(x)  # dropout and drop-path are 0: train mode is deterministic
        ref_cls, ref_dist = reference(x)
        ours.eval()
        mean = ours(x)
    torch.testing.assert_close(cls_logits, ref_cls, rtol=0, atol=1e-5)
    torch.testing.assert_close(dist_logits, ref_dist, rtol=0, atol=1e-5)
    assert not torch.allclose(cls_logits, dist_logits)  # two different heads
    torch.testing.assert_close(mean, (cls_logits + dist_logits) / 2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_parameters_and_macs_at_224_are_the_papers(variant):
    model = _meta_model(f"pit_{variant}")
    assert round(count_params(model) / 1e6, 2) == PAPER_PARAMS_M[variant]
    gmacs = count_macs(model, 224) / 1e9
    assert gmacs == pytest.approx(PAPER_GMACS[variant], abs=0.006)


def test_macs_count_attention_like_timms_explicit_matmul_path():
    # timm with fused attention off computes q @ k^T and attn @ v as plain matmuls, which torch's
    # counter knows; ours goes through scaled_dot_product_attention and must count the same.
    reference = timm.create_model("pit_ti_224", img_size=64)
    for module in reference.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    ours = create_model("pit_ti", img_size=64)
    assert count_macs(ours, 64) == count_macs(reference, 64)


def _meta_model(name: str, **kw):
    with torch.device("meta"):  # shapes only: no memory, no init
        return create_model(name, **kw)


def test_official_state_dict_keys():
    shapes = {k: tuple(v.shape) for k, v in _meta_model("pit_s_distilled").state_dict().items()}
    assert {"pos_embed", "cls_token", "patch_embed.conv.weight", "pools.0.conv.weight", "pools.1.fc.bias",
            "transformers.2.blocks.3.mlp.fc2.weight", "norm.weight", "head.weight", "head_dist.bias"} <= set(shapes)
    assert not any(".pool." in k for k in shapes)
    assert len(shapes) == 162  # 160 + head_dist (spec 1.2)
    assert len(_meta_model("pit_b").state_dict()) == 172
    assert shapes["pos_embed"] == (1, 144, 27, 27)
    assert shapes["cls_token"] == (1, 2, 144)
    assert shapes["pools.0.conv.weight"] == (288, 1, 3, 3)


def test_key_maps_are_inverse_and_timm_names_load(tmp_path):
    reference, _ = _timm_pair("pit_ti", img_size=64)
    timm_state = reference.state_dict()
    official = pit_key_remap(timm_state)
    assert to_timm_keys(official).keys() == timm_state.keys()
    assert pit_key_remap(official).keys() == official.keys()  # official names pass unchanged
    path = tmp_path / "timm_pit_ti.pth"
    torch.save(timm_state, path)
    model = create_model("pit_ti", img_size=64, checkpoint=path).eval()  # the registry applies the key map
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)


def test_native_size_skips_the_interpolation():
    model = create_model("pit_ti")
    assert model.grid_size == (27, 27)
    assert model.pos_embed_for((27, 27)) is model.pos_embed  # not even a copy: 224 px is unchanged
    # (and at 224 our logits equal timm's, which has no interpolation: test_logits_equal_timm_at_224)


def test_other_input_size_interpolates_bicubically_like_timm():
    # Reference: timm's PiT built for 256 px, holding the 224 px weights with the position embedding
    # resampled by timm's own resample_abs_pos_embed (bicubic, antialiased).
    from timm.layers import resample_abs_pos_embed

    reference_224, ours = _timm_pair("pit_ti", img_size=224)
    state = reference_224.state_dict()
    pos = state["pos_embed"]
    channels, grid = pos.shape[1], (31, 31)  # (256 - 16) // 8 + 1
    flat = resample_abs_pos_embed(pos.flatten(2).transpose(1, 2), list(grid), [27, 27], num_prefix_tokens=0)
    state["pos_embed"] = flat.transpose(1, 2).reshape(1, channels, *grid)
    reference_256 = timm.create_model("pit_ti_224", img_size=256).eval()
    reference_256.load_state_dict(state)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        got = ours(x)
        torch.testing.assert_close(got, reference_256(x), rtol=0, atol=1e-5)
    assert got.shape == (1, 1000) and torch.isfinite(got).all()


def test_resize_keeps_a_constant_embedding_constant():
    pos = torch.full((1, 8, 5, 5), 0.25)
    torch.testing.assert_close(resize_pos_embed_2d(pos, (9, 7)), torch.full((1, 8, 9, 7), 0.25))
    with pytest.raises(Exception):
        create_model("pit_nano")(torch.randn(1, 3, 2, 2))  # smaller than one patch


def test_pooling_halves_the_grid_and_doubles_the_channels():
    model = create_model("pit_nano").eval()
    grids = []
    model.transformers[2].register_forward_hook(lambda m, inp, out: grids.append(tuple(out[0].shape)))
    model.transformers[0].register_forward_hook(lambda m, inp, out: grids.append(tuple(out[0].shape)))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    assert grids == [(2, 32, 15, 15), (2, 128, 4, 4)]
    pool = model.pools[0]
    assert pool.conv.groups == 32 and pool.conv.out_channels == 64 and pool.conv.stride == (2, 2)
    assert pool.fc.in_features == 32 and pool.fc.out_features == 64


def test_pooling_off_changes_only_the_spatial_reduction():
    pit, nopool = _meta_model("pit_ti"), _meta_model("pit_ti_nopool")
    assert {k: v.shape for k, v in pit.state_dict().items()} == {k: v.shape for k, v in nopool.state_dict().items()}
    assert all(p.conv.stride == (1, 1) for p in nopool.pools)
    assert count_macs(nopool, 224) > 5 * count_macs(pit, 224)  # 27x27 tokens in every stage
    create_model("pit_nano_nopool").load_state_dict(create_model("pit_nano").state_dict())  # the same weights fit
    grids = []
    small = create_model("pit_nano_nopool").eval()
    small.transformers[2].register_forward_hook(lambda m, inp, out: grids.append(tuple(out[0].shape)))
    with torch.no_grad():
        small(torch.randn(1, 3, 32, 32))
    assert grids == [(1, 128, 15, 15)]


def test_attention_runs_through_scaled_dot_product_attention(monkeypatch):
    calls = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model = create_model("pit_nano").eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert len(calls) == sum(model.depth)
    assert calls[0] == (1, 2, 1 + 15 * 15, 16)  # (N, heads, cls + tokens, head dim = base_dim)


def test_drop_path_rates_follow_the_official_rule():
    model = _meta_model("pit_ti", drop_path_rate=0.1)
    rates = [b.drop_path.drop_prob for s in model.transformers for b in s.blocks]
    assert rates == pytest.approx([0.1 * i / 12 for i in range(12)])


def test_no_weight_decay_and_registry():
    assert create_model("pit_nano").no_weight_decay() == {"pos_embed", "cls_token"}
    names = list_models("pit_*")
    for v in VARIANTS:
        assert {f"pit_{v}", f"pit_{v}_distilled", f"pit_{v}_nopool"} <= set(names)
    assert {"pit_nano", "pit_micro"} <= set(names)


@pytest.mark.parametrize("name,size", [("pit_nano", 32), ("pit_nano", 64), ("pit_micro", 64), ("pit_micro", 32)])
def test_tiny_variants_train_a_step_on_small_inputs(name, size):
    model = create_model(name, num_classes=5)
    x, y = torch.randn(4, 3, size, size), torch.randint(0, 5, (4,))
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


def test_torch_export_of_pit_ti_runs():
    model = create_model("pit_ti").eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, 3, 224, 224),), dynamic_shapes=({0: batch},))
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    model = create_model("pit_ti").eval()
    compiled = torch.compile(model)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_checkpoint_that_does_not_fit_is_a_checkpoint_error(tmp_path):
    from cuekit.errors import CheckpointError

    path = tmp_path / "xs.pth"
    torch.save(create_model("pit_nano").state_dict(), path)
    with pytest.raises(CheckpointError):
        load_checkpoint(create_model("pit_micro", num_classes=3), path)
