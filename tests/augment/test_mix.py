"""Mixup / CutMix: targets sum to 1 and equal the mixing weights / the pasted fraction; the shared box sampler."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cuekit.augment.mix import (
    CutMix,
    Mixup,
    MixupOrCutMix,
    box_sides,
    boxes_to_mask,
    sample_box,
    sample_boxes,
)
from cuekit.errors import UnknownChoiceError, UsageError


def constant_batch(n: int, shape=(3, 16, 20)) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample i is the constant i + 1 with label i: every pixel tells which image it came from."""
    x = (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1).expand(n, *shape).clone()
    return x, torch.arange(n)


@pytest.mark.parametrize("sizes", [(16, 20), (7,), (4, 9, 11)])
def test_sample_boxes_volume_matches_corrected_lambda(sizes):
    rng = np.random.default_rng(0)
    lam = rng.beta(1.0, 1.0, size=500)
    lo, hi, lam_c = sample_boxes(sizes, lam, rng)
    assert lo.shape == hi.shape == (500, len(sizes))
    assert (lo >= 0).all() and (hi <= np.array(sizes)).all() and (hi >= lo).all()
    mask = boxes_to_mask(lo, hi, sizes)
    frac = mask.flatten(1).double().mean(1).numpy()
    np.testing.assert_allclose(1 - frac, lam_c, atol=1e-12)
    # A box never exceeds the uncut one, and clipping only ever makes it smaller (lam_c >= lam - rounding).
    sides = box_sides(sizes, lam)
    assert ((hi - lo) <= 2 * (sides // 2)).all()
    # Uncut boxes have the CutMix extent 2 * (floor(size * (1 - lam)^(1/d)) // 2).
    uncut = ((hi - lo) == 2 * (sides // 2)).all(1)
    assert uncut.sum() > 50


def test_box_sides_follow_the_cutmix_formula():
    sides = box_sides((32, 40), np.array([0.75, 0.0, 1.0]))
    assert sides.tolist() == [[16, 20], [32, 40], [0, 0]]  # r = sqrt(1 - lam) per side
    assert box_sides((16,), 0.25).tolist() == [[12]]  # temporal: (1 - lam) of the frames
    assert box_sides((8, 8, 8), 0.875).tolist() == [[4, 4, 4]]  # cuboid: cube root


def test_sample_box_slices_match_sample_boxes():
    (sl_h, sl_w), lam_c = sample_box((16, 20), 0.5, np.random.default_rng(3))
    lo, hi, lam2 = sample_boxes((16, 20), 0.5, np.random.default_rng(3))
    assert (sl_h.start, sl_h.stop, sl_w.start, sl_w.stop) == (lo[0, 0], hi[0, 0], lo[0, 1], hi[0, 1])
    assert lam_c == pytest.approx(lam2[0])


def test_mixup_targets_sum_to_one_and_equal_the_image_weights():
    x, y = constant_batch(8)
    for mode in ("batch", "pair", "elem"):
        mix = Mixup(num_classes=8, alpha=0.4, mode=mode, seed=1)
        out, t = mix(x, y)
        assert t.shape == (8, 8)
        torch.testing.assert_close(t.sum(1), torch.ones(8))
        lam = torch.as_tensor(mix.last_lam, dtype=torch.float32)
        partner = torch.arange(8).flip(0)
        # out_i = lam_i * (i + 1) + (1 - lam_i) * (partner + 1) and the target says the same.
        torch.testing.assert_close(out[:, 0, 0, 0], lam * (y + 1) + (1 - lam) * (partner + 1).float())
        own = t[torch.arange(8), y]
        other = t[torch.arange(8), partner]
        torch.testing.assert_close(own[:4], lam[:4])
        torch.testing.assert_close(other[:4], 1 - lam[:4])
        if mode == "batch":
            assert len(set(mix.last_lam.tolist())) == 1
        if mode == "pair":
            np.testing.assert_array_equal(mix.last_lam, mix.last_lam[::-1])
        if mode == "elem":
            assert len(set(mix.last_lam.tolist())) == 8


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_cutmix_targets_match_the_pasted_fraction(mode):
    n = 10
    x, y = constant_batch(n)
    mix = CutMix(num_classes=n, alpha=1.0, mode=mode, seed=2)
    for _ in range(5):
        out, t = mix(x, y)
        torch.testing.assert_close(t.sum(1), torch.ones(n))
        partner = y.flip(0)
        from_partner = (out == (partner + 1).float().view(n, 1, 1, 1)).flatten(1).float().mean(1)
        from_self = (out == (y + 1).float().view(n, 1, 1, 1)).flatten(1).float().mean(1)
        torch.testing.assert_close(from_self + from_partner, torch.ones(n))
        own = t[torch.arange(n), y]
        # the middle of an odd batch is its own partner; n is even here so every pair is distinct
        torch.testing.assert_close(own, from_self)
        torch.testing.assert_close(t[torch.arange(n), partner], from_partner)
        torch.testing.assert_close(own, torch.as_tensor(mix.last_lam, dtype=torch.float32))
        # The box spans H, W only: every channel carries the same box.
        assert bool((out == out[:, :1]).all())


def test_cutmix_pair_mode_swaps_the_same_box():
    x, y = constant_batch(6)
    mix = CutMix(num_classes=6, mode="pair", seed=5)
    out, t = mix(x, y)
    lo, hi = mix.last_boxes
    np.testing.assert_array_equal(lo, lo[::-1])
    np.testing.assert_array_equal(hi, hi[::-1])
    torch.testing.assert_close(t[torch.arange(6), y], t[torch.arange(6), y].flip(0))


def test_cutmix_uncorrected_lambda_keeps_the_draw():
    x, y = constant_batch(4, shape=(1, 8, 8))
    corrected = CutMix(num_classes=4, seed=7)
    raw = CutMix(num_classes=4, seed=7, correct_lam=False)
    _, tc = corrected(x, y)
    _, tr = raw(x, y)
    lam_draw = np.random.default_rng(7).beta(1.0, 1.0)
    assert raw.last_lam[0] == pytest.approx(lam_draw)
    assert tr[0, 0].item() == pytest.approx(lam_draw)
    assert tc[0, 0].item() == pytest.approx(corrected.last_lam[0])


def test_cutmix_on_video_cuboids_reuses_the_sampler():
    n, t_len = 4, 8
    x = (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1, 1).expand(n, 3, t_len, 6, 6).clone()
    y = torch.arange(n)
    temporal = CutMix(num_classes=n, dims=(-3,), mode="elem", seed=0)
    out, tgt = temporal(x, y)
    # temporal: whole frames come from the partner
    per_frame = out[:, 0, :, :, :].flatten(2)
    assert bool((per_frame == per_frame[..., :1]).all())
    frac = (out != x).flatten(1).float().mean(1)
    torch.testing.assert_close(tgt[torch.arange(n), y], 1 - frac)
    st = CutMix(num_classes=n, dims=(-3, -2, -1), mode="elem", seed=1)
    out, tgt = st(x, y)
    frac = (out != x).flatten(1).float().mean(1)
    torch.testing.assert_close(tgt[torch.arange(n), y], 1 - frac)


def test_prob_zero_is_identity_and_targets_become_one_hot():
    x, y = constant_batch(4)
    for mixer in (Mixup(4, prob=0.0, mode="elem"), CutMix(4, prob=0.0, mode="batch")):
        out, t = mixer(x, y)
        torch.testing.assert_close(out, x)
        torch.testing.assert_close(t, torch.eye(4))


def test_soft_targets_are_mixed_too():
    x, _ = constant_batch(4)
    soft = torch.softmax(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), 1)
    mix = Mixup(5, mode="elem", seed=0)
    _, t = mix(x, soft)
    lam = torch.as_tensor(mix.last_lam, dtype=torch.float32)[:, None]
    torch.testing.assert_close(t, lam * soft + (1 - lam) * soft.flip(0))


def test_seeded_mixing_is_reproducible_and_switch_uses_both():
    x, y = constant_batch(8)
    a = CutMix(8, mode="elem", seed=11)(x, y)
    b = CutMix(8, mode="elem", seed=11)(x, y)
    torch.testing.assert_close(a[0], b[0])
    both = MixupOrCutMix(Mixup(8, seed=0), CutMix(8, seed=0), switch_prob=0.5, seed=0)
    kinds = set()
    for _ in range(20):
        out, _ = both(x, y)
        kinds.add("cutmix" if bool(((out == x) | (out == x.flip(0))).all()) else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_bad_settings_raise_usage_errors():
    with pytest.raises(UnknownChoiceError):
        Mixup(4, mode="half")
    with pytest.raises(UsageError):
        CutMix(4, alpha=0.0)
    with pytest.raises(UsageError):
        CutMix(4, dims=(2, 3))
    with pytest.raises(UsageError):
        Mixup(4)(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long))
    assert math.isclose(float(box_sides((10,), 0.0)[0, 0]), 10)


def test_whole_axes_draw_every_frame_count_at_six_frames():
    """VideoMix's time axis: round(6 (1 - lam)) whole frames, lam ~ Beta(1, 1): 0 and 6 with 1/12, 1..5 with 1/6."""
    rng = np.random.default_rng(0)
    n = 60_000
    lam = rng.beta(1.0, 1.0, size=n)
    lo, hi, lam_c = sample_boxes((6,), lam, rng, whole_axes=[0])
    width = (hi - lo)[:, 0]
    assert (lo >= 0).all() and (hi <= 6).all()
    np.testing.assert_array_equal(width, np.floor(6 * (1 - lam) + 0.5))  # placed uncut: the drawn width exactly
    freq = np.bincount(width, minlength=7) / n
    np.testing.assert_allclose(freq, [1 / 12] + [1 / 6] * 5 + [1 / 12], atol=0.01)
    np.testing.assert_allclose(lam_c, 1 - width / 6)
    assert abs(np.mean(width / 6) - np.mean(1 - lam)) < 0.005  # unbiased: the pasted share follows 1 - lam
    # every start of a run of 3 frames is equally likely
    starts = np.bincount(lo[width == 3, 0], minlength=4) / (width == 3).sum()
    np.testing.assert_allclose(starts, [0.25] * 4, atol=0.02)
    # CutMix's own rule (kept for images): even extents, cut at the border, so only 0, 2, 4 or 6 frames uncut
    lo_c, hi_c, _ = sample_boxes((6,), lam, np.random.default_rng(1))
    assert set(np.unique(2 * (box_sides((6,), lam)[:, 0] // 2))) <= {0, 2, 4, 6}
    assert (hi_c - lo_c <= 2 * (box_sides((6,), lam) // 2)).all()


def test_whole_axes_only_change_their_own_axis():
    lam = np.random.default_rng(2).beta(1.0, 1.0, size=2000)
    lo, hi, _ = sample_boxes((6, 10, 12), lam, np.random.default_rng(3), whole_axes=[0])
    lo_c, hi_c, _ = sample_boxes((6, 10, 12), lam, np.random.default_rng(3))
    np.testing.assert_array_equal(lo[:, 1:], lo_c[:, 1:])  # the (h, w) box is CutMix's, same random numbers
    np.testing.assert_array_equal(hi[:, 1:], hi_c[:, 1:])
    assert set(np.unique(hi[:, 0] - lo[:, 0])) == set(range(7))


@pytest.mark.parametrize("seed", range(6))
def test_batch_mode_boxes_equal_the_vectorised_sampler_with_whole_axes(seed):
    x = torch.zeros(4, 3, 6, 10, 12)
    mix = CutMix(4, dims=(-3, -2, -1), whole_dims=(-3,), seed=seed)
    mix(x, torch.arange(4))
    rng = np.random.default_rng(seed)
    lam = rng.beta(1.0, 1.0)
    rng.random()  # the draw that decides `prob`
    lo, hi, lam_c = sample_boxes((6, 10, 12), lam, rng, whole_axes=[0])
    np.testing.assert_array_equal(mix.last_boxes[0][0], lo[0])
    np.testing.assert_array_equal(mix.last_boxes[1][0], hi[0])
    assert mix.last_lam[0] == pytest.approx(lam_c[0])


def test_whole_dims_must_be_box_dims():
    with pytest.raises(UsageError, match="whole_dims"):
        CutMix(4, dims=(-2, -1), whole_dims=(-3,))
