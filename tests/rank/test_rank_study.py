"""The feature-rank study: rank measures, the random blocks, network batching, the ordering checks."""
from __future__ import annotations

import pytest
import torch

from cuekit.errors import UnknownChoiceError, UsageError
from cuekit.rank.study import (
    NONLINEARITIES,
    RankStudyConfig,
    block_output_features,
    check_ordering,
    effective_rank,
    numerical_rank,
    random_block,
    random_block_vectors,
    run_rank_study,
    singular_values,
    tolerance_value,
)


@pytest.mark.parametrize("d_in,d_out", [(3, 20), (10, 20), (20, 20), (25, 12)])
@pytest.mark.parametrize("block", ["conv1x1"])
def test_linear_block_rank_equals_min_of_dims(block, d_in, d_out):
    gen = torch.Generator().manual_seed(d_in * 100 + d_out)
    feats = block_output_features(block, ["linear"], d_in, d_out, n_samples=4 * max(d_in, d_out), gen=gen)
    assert feats.shape == (1, 1, d_out, 4 * max(d_in, d_out))
    sv = singular_values(feats)[0, 0]
    rank = int(numerical_rank(sv, tolerance_value("fp32", d_out, feats.shape[-1])))
    assert rank == min(d_in, d_out)


def test_linear_curve_follows_the_dimension_ratio_and_nonlinearities_lift_it():
    cfg = RankStudyConfig(blocks=("conv1x1",), nonlinearities=("linear", "relu", "silu"), ratios=(0.25, 0.5, 1.0),
                          networks=4, networks_per_width=2, d_out_range=(16, 24), inputs=("gaussian",),
                          sample_factors=(4.0,), depths=(1,), tolerances=("fp32",))
    res = run_rank_study(cfg)
    cur = res.curves(input="gaussian", sample_factor=4.0, depth=1, block="conv1x1", measure="fp32")
    for ratio, value in zip(cfg.ratios, cur["linear"]):
        assert abs(value - ratio) <= 0.5 / 16 + 1e-6  # round(ratio * d_out) / d_out
    # a single ReLU / SiLU layer on Gaussian data is numerically full rank (the spec's CPU re-run)
    assert min(cur["relu"]) == 1.0 and min(cur["silu"]) > 0.95
    assert res.rank_std["fp32"].shape == res.rank_mean["fp32"].shape


def test_singular_values_match_svd():
    a = torch.randn(3, 12, 40)
    torch.testing.assert_close(singular_values(a), torch.linalg.svdvals(a.double()), rtol=1e-8, atol=1e-8)


def test_effective_rank_of_flat_and_rank_one_spectra():
    assert torch.isclose(effective_rank(torch.ones(7, dtype=torch.float64)), torch.tensor(7.0, dtype=torch.float64))
    assert effective_rank(torch.tensor([5.0, 0.0, 0.0])).item() == pytest.approx(1.0)
    assert 1.0 < effective_rank(torch.tensor([1.0, 0.5, 0.1])).item() < 3.0


def test_numerical_rank_counts_values_above_relative_tolerance():
    sv = torch.tensor([[10.0, 1.0, 0.05, 1e-7]])
    assert numerical_rank(sv, 1e-2).tolist() == [2]  # threshold 0.1
    assert numerical_rank(sv, 1e-3).tolist() == [3]
    assert numerical_rank(sv, 1e-1 + 1e-9).tolist() == [1]
    assert tolerance_value("fp32", 64, 256) == pytest.approx(256 * torch.finfo(torch.float32).eps)
    with pytest.raises(UsageError):
        tolerance_value("loose", 4, 4)


@pytest.mark.parametrize("block", ["conv1x1", "conv3x3", "ib_conv3x3", "ib_dw3x3"])
def test_batched_networks_do_not_interact(block):
    """Networks run side by side as one grouped conv: changing network 0's input leaves network 1's output alone."""
    fns = [NONLINEARITIES["relu"], NONLINEARITIES["silu"]]
    d_in, d_out = 3, 8
    x = torch.randn(4, 2, 2 * d_in, 6, 6)
    x[:, 1] = x[:, 0]  # same input under both nonlinearities
    y1 = random_block(block, x, d_out, fns, torch.Generator().manual_seed(0), networks=2)
    x2 = x.clone()
    x2[:, :, :d_in] += torch.randn(4, 1, d_in, 6, 6)
    y2 = random_block(block, x2, d_out, fns, torch.Generator().manual_seed(0), networks=2)
    assert y1.shape == (4, 2, 2 * d_out, 6, 6)
    torch.testing.assert_close(y1[:, :, d_out:], y2[:, :, d_out:])
    assert not torch.allclose(y1[:, :, :d_out], y2[:, :, :d_out])


def test_inverted_bottleneck_expansion_caps_the_rank():
    # hidden = t * d_in: the output can never exceed (t + 1) * d_in whatever the nonlinearity
    gen = torch.Generator().manual_seed(0)
    d_in, d_out, t = 2, 40, 3
    feats = block_output_features("ib_dw3x3", ["relu", "elu"], d_in, d_out, n_samples=160, expansion=t, gen=gen)
    sv = singular_values(feats)
    ranks = numerical_rank(sv, tolerance_value("fp32", d_out, 160))
    assert (ranks <= (t + 1) * d_in).all()


def test_check_ordering_reads_the_curves():
    ratios = (0.1, 0.5, 1.0)
    paper_like = {"linear": [0.1, 0.5, 1.0], "relu": [0.3, 0.7, 1.0], "relu6": [0.3, 0.7, 1.0],
                  "elu": [0.5, 0.9, 1.0], "silu": [0.5, 0.9, 1.0], "softplus": [0.5, 0.9, 1.0]}
    chk = check_ordering(paper_like, ratios)
    assert chk.paper_ordering and chk.nonlinear_expands and chk.expansion_harms
    assert chk.strong_minus_weak == pytest.approx(0.2)
    flat = {k: [1.0, 1.0, 1.0] for k in paper_like} | {"linear": [0.1, 0.5, 1.0]}
    chk = check_ordering(flat, ratios)
    assert not chk.paper_ordering and not chk.expansion_harms and chk.nonlinear_expands


def test_config_rejects_bad_values():
    with pytest.raises(UnknownChoiceError):
        RankStudyConfig(blocks=("conv5x5",)).validate()
    with pytest.raises(UsageError):
        RankStudyConfig(sample_factors=(0.5,)).validate()
    with pytest.raises(UsageError):
        RankStudyConfig(ratios=(0.0, 0.5)).validate()


def test_thread_setting_is_restored():
    before = torch.get_num_threads()
    run_rank_study(RankStudyConfig(blocks=("conv1x1",), nonlinearities=("linear",), ratios=(1.0,), networks=1,
                                   d_out_range=(4, 4), inputs=("gaussian",), sample_factors=(2.0,), depths=(1,)))
    assert torch.get_num_threads() == before


def test_vector_path_equals_the_conv_path_on_1x1_maps():
    """spatial = 1 runs the blocks as matrix products; a 1x1 conv on 1x1 maps gives the same numbers."""
    fns = [NONLINEARITIES["linear"], NONLINEARITIES["silu"]]
    g, d_in, d_out, n = 3, 4, 9, 30
    x = torch.randn(n, 1, g * d_in, 1, 1).expand(n, 2, g * d_in, 1, 1).contiguous()
    conv = random_block("conv1x1", x, d_out, fns, torch.Generator().manual_seed(5), networks=g)  # (n, K, G*d_out, 1, 1)
    xv = x.flatten(2).permute(1, 2, 0).unflatten(1, (g, d_in))  # (K, G, d_in, N)
    vec = random_block_vectors("conv1x1", xv, d_out, fns, torch.Generator().manual_seed(5))
    torch.testing.assert_close(vec, conv.flatten(2).permute(1, 2, 0).unflatten(1, (g, d_out)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block", ["conv1x1", "conv3x3", "ib_conv3x3", "ib_dw3x3"])
def test_vector_path_linear_rank_and_expansion_cap(block):
    gen = torch.Generator().manual_seed(1)
    feats = block_output_features(block, ["linear", "relu"], 3, 24, n_samples=96, spatial=1, expansion=2, gen=gen,
                                  networks=2)
    assert feats.shape == (2, 2, 24, 96)
    ranks = numerical_rank(singular_values(feats), tolerance_value("fp32", 24, 96))
    if block.startswith("ib"):
        # BatchNorm centres the branch and the shortcut adds the uncentred input: d_in + 1 directions
        assert (ranks[0] == 3 + 1).all()
    else:
        assert (ranks[0] == 3).all()  # Linear keeps rank d_in: at 1x1 maps a 3x3 conv sees only d_in inputs
    assert (ranks[1] > 4).all()
    if block.startswith("ib"):
        assert (ranks <= (2 + 1) * 3).all()  # hidden = 2 d_in, plus the shortcut
