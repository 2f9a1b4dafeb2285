"""VideoMix and its video baselines: targets are voxel fractions, cuboids have the variant's shape,
pasted voxels are the partner's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cuekit.augment import FrameCutMix, VideoMix, VideoMixup, build_batch_transform
from cuekit.errors import UnknownChoiceError, UsageError

VARIANTS = ("spatial", "temporal", "spatiotemporal")
MODES = ("batch", "pair", "elem")


def id_video_batch(n: int, shape=(2, 6, 10, 12)) -> tuple[torch.Tensor, torch.Tensor]:
    """Video i is the constant i + 1 with label i: every voxel tells which video it came from."""
    x = (torch.arange(n, dtype=torch.float32) + 1).view(n, 1, 1, 1, 1).expand(n, *shape).clone()
    return x, torch.arange(n)


def source_masks(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W) bool: True where out's voxel came from the partner video B-1-i (checked on all channels)."""
    own = out == x
    partner = out == x.flip(0)
    assert (own | partner).all(), "every voxel comes from the video itself or its partner"
    from_partner = partner & ~own
    assert (from_partner == from_partner[:, :1]).all(), "the same region on every channel"
    return from_partner[:, 0]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_target_equals_voxel_fraction(variant, mode):
    n, k = 6, 9
    x, y = id_video_batch(n)
    mixer = VideoMix(k, variant=variant, alpha=1.0, mode=mode, seed=0)
    mixed_some = False
    for _ in range(20):
        out, target = mixer(x, y)
        mask = source_masks(x, out)
        frac_partner = mask.flatten(1).double().mean(1)
        expected = torch.zeros(n, k, dtype=torch.float64)
        expected[torch.arange(n), y] += 1 - frac_partner
        expected[torch.arange(n), y.flip(0)] += frac_partner
        torch.testing.assert_close(target.double(), expected, atol=1e-6, rtol=0)
        np.testing.assert_allclose(mixer.last_lam, 1 - frac_partner.numpy(), atol=1e-12)
        mixed_some |= bool(frac_partner.max() > 0)
    assert mixed_some


@pytest.mark.parametrize("mode", MODES)
def test_spatial_cuboids_span_all_frames(mode):
    x, y = id_video_batch(5)
    mixer = VideoMix(5, variant="spatial", mode=mode, seed=1)
    for _ in range(20):
        mask = source_masks(x, mixer(x, y)[0])  # (B, T, H, W)
        assert (mask == mask[:, :1]).all(), "same (h, w) box on every frame"
        lo, hi = mixer.last_boxes
        assert lo.shape[1] == 2  # boxes are over (H, W) only


@pytest.mark.parametrize("mode", MODES)
def test_temporal_cuboids_span_whole_frames(mode):
    x, y = id_video_batch(5)
    mixer = VideoMix(5, variant="temporal", mode=mode, seed=2)
    saw_partial = False
    for _ in range(20):
        mask = source_masks(x, mixer(x, y)[0])
        per_frame = mask.flatten(2)
        assert (per_frame.all(2) | ~per_frame.any(2)).all(), "a frame is pasted whole or not at all"
        pasted_frames = per_frame.any(2)
        saw_partial |= bool((pasted_frames.any(1) & ~pasted_frames.all(1)).any())
        for row in pasted_frames:  # one contiguous run of frames
            idx = torch.nonzero(row).flatten()
            if len(idx):
                assert idx[-1] - idx[0] + 1 == len(idx)
    assert saw_partial


def test_spatiotemporal_cuboids_are_boxes_in_all_three_axes():
    x, y = id_video_batch(4, shape=(1, 8, 12, 12))
    mixer = VideoMix(4, variant="spatiotemporal", mode="elem", seed=3)
    saw_partial_time = False
    for _ in range(30):
        mask = source_masks(x, mixer(x, y)[0])
        lo, hi = mixer.last_boxes
        for i in range(4):
            box = torch.zeros_like(mask[i])
            box[lo[i, 0]:hi[i, 0], lo[i, 1]:hi[i, 1], lo[i, 2]:hi[i, 2]] = True
            assert torch.equal(mask[i], box)
            saw_partial_time |= bool(0 < hi[i, 0] - lo[i, 0] < 8)
    assert saw_partial_time


@pytest.mark.parametrize("variant", VARIANTS)
def test_pasted_region_is_exactly_the_other_video(variant):
    torch.manual_seed(0)
    x = torch.rand(4, 3, 6, 10, 10)
    y = torch.arange(4)
    mixer = VideoMix(4, variant=variant, mode="elem", seed=4)
    for _ in range(10):
        out, _ = mixer(x, y)
        lo, hi = mixer.last_boxes
        for i in range(4):
            region = [slice(None), slice(None)] + [slice(None)] * 3
            dims = {"spatial": (3, 4), "temporal": (2,), "spatiotemporal": (2, 3, 4)}[variant]
            for d, a, b in zip(dims, lo[i], hi[i]):
                region[d] = slice(int(a), int(b))
            region[0] = i
            partner = list(region)
            partner[0] = 3 - i
            assert torch.equal(out[tuple(region)], x[tuple(partner)])
            inside = torch.zeros_like(x[i], dtype=torch.bool)
            inside[tuple(region[1:])] = True
            assert torch.equal(out[i][~inside], x[i][~inside])


@pytest.mark.parametrize("make", [lambda: VideoMix(3, variant="spatiotemporal"),
                                  lambda: VideoMix(3, variant="temporal"),
                                  lambda: VideoMixup(3), lambda: FrameCutMix(3)])
def test_batch_of_one_is_returned_unchanged(make):
    x = torch.rand(1, 3, 4, 8, 8)
    out, target = make()(x, torch.tensor([2]))
    assert torch.equal(out, x)
    assert torch.equal(target, torch.tensor([[0.0, 0.0, 1.0]]))


def test_bad_input_gives_clear_errors():
    with pytest.raises(UsageError, match="video batches"):
        VideoMix(3)(torch.rand(2, 3, 8, 8), torch.arange(2))
    with pytest.raises(UsageError, match="video batches"):
        VideoMixup(3)(torch.rand(2, 3, 8, 8), torch.arange(2))
    with pytest.raises(UsageError, match="video batches"):
        FrameCutMix(3)(torch.rand(2, 3, 8, 8), torch.arange(2))
    with pytest.raises(UsageError, match="float"):
        VideoMix(3)(torch.zeros(2, 3, 2, 8, 8, dtype=torch.uint8), torch.arange(2))
    for alpha in (0.0, -1.0):
        with pytest.raises(UsageError, match="alpha"):
            VideoMix(3, alpha=alpha)
        with pytest.raises(UsageError, match="alpha"):
            FrameCutMix(3, alpha=alpha)
    with pytest.raises(UnknownChoiceError, match="spatiotemporal"):
        VideoMix(3, variant="spatio-temporal")
    with pytest.raises(UsageError, match="prob"):
        VideoMix(3, prob=1.5)


def test_prob_zero_leaves_videos_alone():
    x, y = id_video_batch(4)
    out, target = VideoMix(4, prob=0.0, mode="elem", seed=0)(x, y)
    assert torch.equal(out, x)
    assert torch.equal(target, torch.eye(4))


@pytest.mark.parametrize("mode", MODES)
def test_frame_cutmix_boxes_per_frame_and_voxel_fraction_target(mode):
    n, k = 4, 5
    x, y = id_video_batch(n, shape=(2, 6, 16, 16))
    mixer = FrameCutMix(k, mode=mode, seed=5)
    frames_differ = False
    for _ in range(10):
        out, target = mixer(x, y)
        mask = source_masks(x, out)
        lo, hi = mixer.last_boxes
        for i in range(n):
            for f in range(6):
                box = torch.zeros(16, 16, dtype=torch.bool)
                box[lo[i, f, 0]:hi[i, f, 0], lo[i, f, 1]:hi[i, f, 1]] = True
                assert torch.equal(mask[i, f], box)
            frames_differ |= bool((mask[i] != mask[i, :1]).any())
        frac = mask.flatten(1).double().mean(1)
        torch.testing.assert_close(target[torch.arange(n), y].double(), 1 - frac, atol=1e-6, rtol=0)
        torch.testing.assert_close(target[torch.arange(n), y.flip(0)].double(), frac, atol=1e-6, rtol=0)
    assert frames_differ


def test_video_mixup_blends_whole_videos():
    x, y = id_video_batch(4)
    mixer = VideoMixup(4, mode="elem", seed=0)
    out, target = mixer(x, y)
    lam = torch.as_tensor(mixer.last_lam, dtype=torch.float32)
    expected = lam.view(-1, 1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1, 1)) * x.flip(0)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(target[torch.arange(4), y], lam)


@pytest.mark.parametrize("name,kind", [("videomix-s", VideoMix), ("videomix-t", VideoMix), ("videomix-st", VideoMix),
                                       ("video-mixup", VideoMixup), ("frame-cutmix", FrameCutMix)])
def test_regularizer_names_build_the_video_mixers(name, kind):
    transform, smoothing = build_batch_transform(name, num_classes=3, seed=0)
    assert smoothing == 0.0
    assert len(transform.steps) == 1 and isinstance(transform.steps[0], kind)
    x = torch.rand(4, 3, 4, 8, 8)
    out, target = transform(x, torch.tensor([0, 1, 2, 0]))
    assert out.shape == x.shape and target.shape == (4, 3)
    torch.testing.assert_close(target.sum(1), torch.ones(4))
    expected_variant = {"videomix-s": "spatial", "videomix-t": "temporal", "videomix-st": "spatiotemporal"}
    if name in expected_variant:
        assert transform.steps[0].variant == expected_variant[name]


def test_video_regularizer_on_images_is_a_usage_error():
    transform, _ = build_batch_transform("videomix-st", num_classes=3, seed=0)
    with pytest.raises(UsageError, match="video batches"):
        transform(torch.rand(2, 3, 8, 8), torch.arange(2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("make", [lambda: VideoMix(3, mode="elem", seed=0), lambda: VideoMix(3, seed=0),
                                  lambda: FrameCutMix(3, mode="elem", seed=0), lambda: VideoMixup(3, seed=0)])
def test_runs_on_gpu_like_on_cpu(make):
    x = torch.rand(4, 3, 4, 8, 8)
    y = torch.tensor([0, 1, 2, 0])
    out_cpu, t_cpu = make()(x, y)
    out_gpu, t_gpu = make()(x.cuda(), y.cuda())
    assert out_gpu.is_cuda and t_gpu.is_cuda
    torch.testing.assert_close(out_gpu.cpu(), out_cpu)
    torch.testing.assert_close(t_gpu.cpu(), t_cpu)


def test_video_names_parse_and_at_most_two_mixers():
    from cuekit.augment.regularizers import VIDEO_REGULARIZER_NAMES, parse_regularizers

    assert parse_regularizers("videomix-st, LS") == ["videomix-st", "ls"]
    assert set(VIDEO_REGULARIZER_NAMES) == {"videomix-s", "videomix-t", "videomix-st", "video-mixup", "frame-cutmix"}
    with pytest.raises(UnknownChoiceError, match="videomix-st"):
        parse_regularizers("videomix-ts")
    pair, _ = build_batch_transform("video-mixup,videomix-st", num_classes=3, seed=0)
    assert type(pair.steps[0]).__name__ == "MixupOrCutMix"
    with pytest.raises(UsageError, match="at most two"):
        build_batch_transform("videomix-s,videomix-t,video-mixup", num_classes=3)


@pytest.mark.parametrize("variant", ["spatial", "temporal", "spatiotemporal"])
def test_inplace_pastes_into_the_batch_and_gives_the_same_result(variant):
    x = torch.rand(6, 3, 5, 8, 8)
    y = torch.arange(6)
    kept = x.clone()
    out, target = VideoMix(6, variant=variant, seed=3)(x, y)
    assert torch.equal(x, kept)  # default: the caller's batch is left alone
    out_inplace, target_inplace = VideoMix(6, variant=variant, seed=3, inplace=True)(x, y)
    assert out_inplace.data_ptr() == x.data_ptr()  # no copy of the batch
    assert torch.equal(out_inplace, out) and torch.equal(target_inplace, target)


def test_inplace_is_passed_through_build_batch_transform():
    transform, _ = build_batch_transform("videomix-st", 4, inplace=True)
    assert transform.steps[0].inplace
    assert not build_batch_transform("videomix-st", 4)[0].steps[0].inplace


def test_spatial_is_the_default_variant():
    assert VideoMix(4).variant == "spatial"
    assert VideoMix(4).dims == (-2, -1) and VideoMix(4).whole_dims == ()


@pytest.mark.parametrize("variant", ["temporal", "spatiotemporal"])
@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_time_extent_takes_every_whole_frame_count_at_six_frames(variant, mode):
    """At T = 6 the pasted run of frames may be any of 1..6 frames long (odd ones too), never cut at the border."""
    x, y = id_video_batch(4, shape=(1, 6, 8, 8))
    mixer = VideoMix(4, variant=variant, mode=mode, seed=0)
    widths = set()
    for _ in range(300):
        mask = source_masks(x, mixer(x, y)[0])  # (B, T, H, W)
        lo, hi = mixer.last_boxes
        pasted_frames = mask.flatten(2).any(2)
        for i in range(4):
            width = int(hi[i, 0] - lo[i, 0])
            if width and (variant == "temporal" or (hi[i, 1:] > lo[i, 1:]).all()):
                assert int(pasted_frames[i].sum()) == width
            widths.add(width)
    assert set(range(1, 7)) <= widths


def test_temporal_frame_counts_follow_the_drawn_share():
    """Temporal, T = 6, lam ~ Beta(1, 1): round(6 (1 - lam)) frames, so 0 and 6 with 1/12 each and 1..5 with 1/6."""
    x = torch.zeros(8, 1, 6, 2, 2)
    mixer = VideoMix(8, variant="temporal", mode="elem", seed=1)
    widths = []
    for _ in range(400):
        mixer(x, torch.arange(8))
        lo, hi = mixer.last_boxes
        widths.extend((hi - lo)[:, 0].tolist())
    freq = np.bincount(widths, minlength=7) / len(widths)
    np.testing.assert_allclose(freq, [1 / 12] + [1 / 6] * 5 + [1 / 12], atol=0.03)
