"""ReXNet: equal to timm's ReXNet (the reference) for the same weights at every width, the paper's
sizes, the official checkpoint key layout (v1 and lite), timm key names, the partial residual,
and the tiny CPU variants."""
from __future__ import annotations

import math

import pytest
import torch

from cuekit.models import create_model, list_models, model_info
from cuekit.models.complexity import count_macs, count_params
from cuekit.models.rexnet import LinearBottleneck, make_divisible, rexnet_config, rexnet_key_remap

timm = pytest.importorskip("timm")

WIDTHS = ["100", "130", "150", "200", "300"]
# Parameters (M) and GMACs at 224: the paper / README (4.8M 0.40B, 7.6M 0.66B, 9.7M 0.88B, 16M 1.5B, 34M 3.4B),
# to the precision of the spec's verified numbers.
PAPER_PARAMS_M = {"100": 4.80, "130": 7.56, "150": 9.73, "200": 16.37, "300": 34.71}
PAPER_GMACS = {"100": 0.40, "130": 0.66, "150": 0.88, "200": 1.53, "300": 3.40}
LITE_PARAMS_M = {"100": 4.74, "130": 6.75, "150": 8.33, "200": 12.97}
LITE_GMACS = {"100": 0.41, "130": 0.65, "150": 0.84, "200": 1.50}
# Block output channels per width (spec table, verified against the official and timm code).
SPEC_CHANNELS = {
    "100": (32, [16, 27, 38, 50, 61, 72, 84, 95, 106, 117, 128, 140, 151, 162, 174, 185], 1280),
    "130": (42, [21, 35, 50, 65, 79, 94, 109, 123, 138, 152, 167, 182, 196, 211, 226, 240], 1664),
    "150": (48, [24, 41, 58, 75, 92, 108, 125, 142, 159, 176, 193, 210, 226, 243, 260, 277], 1920),
    "200": (64, [32, 54, 77, 100, 122, 144, 167, 190, 212, 234, 257, 280, 302, 324, 347, 370], 2560),
    "300": (96, [48, 82, 116, 149, 183, 217, 250, 284, 318, 352, 386, 419, 453, 487, 520, 554], 3840),
}
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _random_state(reference_state: dict) -> dict:
    """Random weights for every tensor of a state dict, with randomised BatchNorm statistics."""
    state = {}
    for key, t in reference_state.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros((), dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.empty(t.shape).uniform_(0.5, 1.5)
        elif key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(t.shape)
        elif t.ndim == 1 and key.endswith("weight"):  # BN scale
            state[key] = 1 + 0.1 * torch.randn(t.shape)
        elif t.ndim == 1:  # biases
            state[key] = 0.1 * torch.randn(t.shape)
        else:
            fan_in = math.prod(t.shape[1:])
            state[key] = torch.randn(t.shape) / math.sqrt(fan_in)
    return state


def _timm_pair(width: str, num_classes: int = 1000):
    """timm's ReXNet and ours holding the same random weights (loaded through the key remap), eval mode."""
    torch.manual_seed(0)
    with torch.device("meta"):
        reference = timm.create_model(f"rexnet_{width}", num_classes=num_classes)
        ours = create_model(f"rexnet_{width}", num_classes=num_classes)
    state = _random_state(reference.state_dict())
    reference.load_state_dict(state, strict=True, assign=True)
    ours.load_state_dict(rexnet_key_remap(state), strict=True, assign=True)
    return reference.eval(), ours.eval()


@pytest.mark.parametrize("width", WIDTHS)
def test_logits_equal_timm_for_same_weights(width):
    reference, ours = _timm_pair(width, num_classes=10)
    x = torch.randn(2, 3, 48, 48)  # 2x2 final map; one width is checked at 224 below
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert got.shape == (2, 10)
    assert expected.abs().max() > 1e-3  # the comparison is not between two near-zero outputs
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_logits_equal_timm_at_224():
    reference, ours = _timm_pair("100")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("width", WIDTHS)
def test_params_and_macs_match_paper(width):
    with torch.device("meta"):  # shapes are all that counting needs
        reference = timm.create_model(f"rexnet_{width}")
        model = create_model(f"rexnet_{width}")
    params = count_params(model)
    assert params == sum(p.numel() for p in reference.parameters())
    assert round(params / 1e6, 2) == PAPER_PARAMS_M[width]
    assert round(count_macs(model, 224) / 1e9, 2) == PAPER_GMACS[width]


@pytest.mark.parametrize("width", WIDTHS)
def test_channel_schedule_matches_spec(width):
    stem, blocks, pen = SPEC_CHANNELS[width]
    cfg = rexnet_config(int(width) / 100)
    assert (cfg["stem_channels"], cfg["block_channels"], cfg["pen_channels"]) == (stem, blocks, pen)
    assert cfg["strides"] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert cfg["expansions"] == [1] + [6] * 15 and cfg["se"] == [False] * 3 + [True] * 13


def test_se_hidden_widths_at_1x():
    model = create_model("rexnet_100")
    hidden = [m.fc[0].out_channels for m in model.modules() if type(m).__name__ == "SqueezeExcite"]
    assert hidden == [19, 25, 30, 36, 42, 47, 53, 58, 64, 70, 75, 81, 87]


def _official_v1_keys(blocks: list[int], stem: int, pen: int) -> set[str]:
    """The official ReXNetV1 state-dict keys, from the spec's layout table (not from our code)."""
    keys = {"features.0.weight", "features.19.weight", "output.1.weight", "output.1.bias"}
    keys |= {f"features.1.{k}" for k in BN_KEYS} | {f"features.20.{k}" for k in BN_KEYS}
    for i in range(16):
        p = f"features.{i + 3}.out"
        if i == 0:  # t = 1: dw conv, BN, ReLU6, pwl conv, BN
            convs, bns = [0, 3], [1, 4]
        elif i < 3:  # expand conv, BN, SiLU, dw, BN, ReLU6, pwl, BN
            convs, bns = [0, 3, 6], [1, 4, 7]
        else:  # ... dw, BN, SE (index 5), ReLU6, pwl, BN
            convs, bns = [0, 3, 7], [1, 4, 8]
            keys |= {f"{p}.5.fc.0.weight", f"{p}.5.fc.0.bias", f"{p}.5.fc.3.weight", f"{p}.5.fc.3.bias"}
            keys |= {f"{p}.5.fc.1.{k}" for k in BN_KEYS}
        keys |= {f"{p}.{j}.weight" for j in convs}
        keys |= {f"{p}.{j}.{k}" for j in bns for k in BN_KEYS}
    return keys


def test_official_key_layout_v1():
    stem, blocks, pen = SPEC_CHANNELS["100"]
    state = create_model("rexnet_100").state_dict()
    assert set(state) == _official_v1_keys(blocks, stem, pen)
    assert state["output.1.weight"].shape == (1000, 1280, 1, 1)
    assert state["features.0.weight"].shape == (32, 3, 3, 3)
    assert state["features.3.out.3.weight"].shape == (16, 32, 1, 1)  # block 0: 32 -> 16, no expansion
    assert state["features.18.out.7.weight"].shape == (185, 174 * 6, 1, 1)


@pytest.mark.parametrize("width", ["100", "130", "150", "200"])
def test_lite_keys_params_and_macs(width):
    with torch.device("meta"):
        model = create_model(f"rexnet_lite_{width}")
    state = model.state_dict()
    # Official lite layout (spec): stem features.0/1, blocks features.3..18.out.*, pen features.19/20,
    # head output.0 (conv to 1024), output.1 (BN), output.4 (classifier); no SE, ReLU6 everywhere.
    expected = {"features.0.weight", "features.19.weight", "output.0.weight", "output.0.bias",
                "output.4.weight", "output.4.bias"}
    expected |= {f"{p}.{k}" for p in ("features.1", "features.20", "output.1") for k in BN_KEYS}
    for i in range(16):
        convs, bns = ([0, 3], [1, 4]) if i == 0 else ([0, 3, 6], [1, 4, 7])
        expected |= {f"features.{i + 3}.out.{j}.weight" for j in convs}
        expected |= {f"features.{i + 3}.out.{j}.{k}" for j in bns for k in BN_KEYS}
    assert set(state) == expected
    assert state["output.0.weight"].shape[0] == 1024 and state["output.4.weight"].shape[1] == 1024
    assert all(c % 8 == 0 for c in model.block_channels)
    assert not any(isinstance(m, torch.nn.SiLU) for m in model.modules())
    assert round(count_params(model) / 1e6, 2) == LITE_PARAMS_M[width]
    assert round(count_macs(model, 224) / 1e9, 2) == LITE_GMACS[width]


def test_timm_names_load_through_checkpoint(tmp_path):
    from safetensors.torch import save_file

    reference, _ = _timm_pair("100", num_classes=7)
    path = tmp_path / "timm_rexnet.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    ours = create_model("rexnet_100", num_classes=7, checkpoint=path).eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=1e-5)


def test_key_remap_leaves_official_names_alone():
    state = create_model("rexnet_100").state_dict()
    assert rexnet_key_remap(state).keys() == state.keys()


def test_partial_residual_adds_input_to_first_channels():
    block = LinearBottleneck(8, 12, expansion=6, stride=1, use_se=True).eval()
    last_bn = block.out[-1]
    torch.nn.init.zeros_(last_bn.weight)
    torch.nn.init.zeros_(last_bn.bias)
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        y = block(x)
    assert torch.equal(y[:, :8], x) and torch.equal(y[:, 8:], torch.zeros_like(y[:, 8:]))
    assert not LinearBottleneck(8, 12, stride=2).use_shortcut and not LinearBottleneck(12, 8).use_shortcut


def test_train_step_gives_every_parameter_a_gradient():
    model = create_model("rexnet_tiny", num_classes=5, drop_path_rate=0.1)
    model.train()
    out = model(torch.randn(4, 3, 16, 16))
    assert out.shape == (4, 5)
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_batch_of_one_keeps_the_batch_dimension():
    model = create_model("rexnet_lite_tiny", num_classes=3).eval()
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 3)


def test_tiny_variants_registered_and_stagewise_has_equal_params():
    names = list_models("rexnet*")
    for name in ["rexnet_100", "rexnet_300", "rexnet_lite_200", "rexnet_tiny", "rexnet_stagewise_tiny"]:
        assert name in names
    assert model_info("rexnet_tiny")["family"] == "rexnet"
    with torch.device("meta"):
        linear, stagewise = create_model("rexnet_tiny"), create_model("rexnet_stagewise_tiny")
    assert abs(count_params(linear) - count_params(stagewise)) / count_params(linear) < 0.01
    # linear: every block wider than the last; stage-wise: constant within a stage
    assert all(b > a for a, b in zip(linear.block_channels, linear.block_channels[1:]))
    assert len(set(stagewise.block_channels)) <= 6


def test_make_divisible_follows_the_tf_rule():
    assert make_divisible(16) == 16 and make_divisible(27.25) == 32 and make_divisible(19) == 24
    assert make_divisible(3, 8) == 8  # min value is the divisor
    assert make_divisible(10, 8) == 16  # 8 would be more than 10% below 10


@pytest.mark.parametrize("name", ["rexnet_130", "rexnet_lite_150", "rexnet_tiny", "rexnet_stagewise_tiny"])
def test_config_params_counts_what_the_model_holds(name):
    from cuekit.models.rexnet import config_params, rexnet_config, rexnet_lite_config

    with torch.device("meta"):
        model = create_model(name, num_classes=11)
    cfg = {"rexnet_130": lambda: rexnet_config(1.3), "rexnet_lite_150": lambda: rexnet_lite_config(1.5)}.get(name)
    if cfg is None:
        from cuekit.models import rexnet

        cfg = {"rexnet_tiny": lambda: rexnet.TINY_CONFIG, "rexnet_stagewise_tiny": rexnet._tiny_stagewise_config}[name]
    assert config_params(cfg(), num_classes=11) == count_params(model)
