"""WSOL metrics: hand-built maps with known answers, streaming = one-shot, and exact agreement
with the OpenCV reference protocol (tests/wsol/wsol_reference.py) on random and realistic maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cuekit.errors import DataError
from cuekit.wsol import (
    BoxEvaluator,
    LocalizationEvaluator,
    MaskEvaluator,
    box_accuracy,
    box_ious,
    maxboxacc,
    maxboxacc_v2,
    pxap,
)

cv2 = pytest.importorskip("cv2")
from wsol_reference import reference_box_ious, reference_maxboxacc, reference_pxap  # noqa: E402

THRESHOLDS = list(np.arange(0, 1, 0.001))


def iou_inclusive(a, b) -> float:
    """Hand IoU with +1 pixel areas (the protocol's convention), for writing expected values."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(iw, 0) * max(ih, 0)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


# ---------------------------------------------------------------- hand-built maps


def test_single_blob_box_is_bounding_rect_plus_one():
    m = np.zeros((32, 32))
    m[0:10, 0:10] = 1.0  # box from boundingRect: (0, 0, 10, 10)
    gt = np.array([[0, 0, 10, 16]])
    iou = iou_inclusive((0, 0, 10, 10), gt[0])  # 121 / 187 = 0.647
    assert 0.5 < iou < 0.7
    assert maxboxacc_v2(m, [gt]) == pytest.approx(200 / 3)  # correct at IoU 30 and 50, not 70
    assert maxboxacc(m, [gt]) == 100.0
    ious = box_ious(m, [gt], largest_contour=True)
    assert np.all(ious["multi"] == iou) and np.all(ious["largest"] == iou)


def test_box_clipped_to_last_pixel_like_the_reference():
    m = np.ones((20, 30))
    # the whole map: boundingRect gives (0, 0, 30, 20), clipped to (0, 0, 29, 19)
    assert box_ious(m, [np.array([[0, 0, 29, 19]])])["multi"].min() == 1.0


def test_two_blobs_largest_contour_misses_the_small_object():
    m = np.zeros((64, 64))
    m[2:40, 2:40] = 1.0      # large distractor
    m[50:60, 50:60] = 1.0    # small object
    gt = np.array([[50, 50, 59, 59]])
    assert iou_inclusive((50, 50, 60, 60), gt[0]) >= 0.7
    assert maxboxacc(m, [gt]) == 0.0       # v1 keeps only the largest contour
    assert maxboxacc_v2(m, [gt]) == 100.0  # v2: every contour's box competes


def test_two_blobs_threshold_separates_them():
    m = np.zeros((64, 64))
    m[2:40, 2:40] = 0.5
    m[50:60, 50:60] = 1.0
    gt = np.array([[50, 50, 59, 59]])
    curve = box_accuracy(m, [gt], iou_threshold=50, multi_contour=False)
    taus = np.arange(0, 1, 0.001)
    # uint8: distractor 127, object 255; the distractor vanishes once int(tau * 255) >= 127
    expect = np.where((taus * 255).astype(int) >= 127, 100.0, 0.0)
    np.testing.assert_array_equal(curve, expect)


def test_ring_hole_contour_box_counts():
    m = np.zeros((32, 32))
    m[8:22, 8:22] = 1.0
    m[10:20, 10:20] = 0.0   # hole rows/cols 10..19; ring outer box (8, 8, 22, 22)
    gt = np.array([[9, 9, 20, 20]])
    hole_box = (9, 9, 21, 21)   # hole bbox grown by one pixel, + 1 on the far side
    assert iou_inclusive(hole_box, gt[0]) >= 0.7 > iou_inclusive((8, 8, 22, 22), gt[0]) >= 0.5
    assert maxboxacc_v2(m, [gt]) == 100.0            # the hole contour's box wins at IoU 70
    assert maxboxacc_v2(m, [gt], iou_thresholds=(70,)) == 100.0
    assert maxboxacc(m, [gt], iou_threshold=70) == 0.0  # v1: only the outer contour


def test_nested_holes():
    m = np.zeros((40, 40))
    m[2:38, 2:38] = 1.0
    m[4:36, 4:36] = 0.0      # hole H1
    m[10:30, 10:30] = 1.0    # island ring R2 inside H1
    m[12:28, 12:28] = 0.0    # hole H2 (pixels 12..27)
    gt_h2 = np.array([[12, 12, 27, 27]])
    assert iou_inclusive((11, 11, 29, 29), gt_h2[0]) >= 0.7
    assert maxboxacc_v2(m, [gt_h2]) == 100.0
    assert maxboxacc(m, [gt_h2]) == 0.0   # largest contour = outer ring (2, 2, 38, 38)
    gt_r2 = np.array([[10, 10, 29, 29]])  # island's outer contour (10, 10, 30, 30)
    assert maxboxacc_v2(m, [gt_r2], iou_thresholds=(70,)) == 100.0
    gt_outer = np.array([[2, 2, 37, 37]])
    assert maxboxacc(m, [gt_outer], iou_threshold=70) == 100.0


def test_constant_maps():
    gt = np.array([[5, 5, 10, 10]])
    zeros = np.zeros((16, 16))
    # no contour at any threshold: the reference scores the box [0, 0, 0, 0]
    assert maxboxacc_v2(zeros, [gt]) == 0.0
    assert maxboxacc_v2(zeros, [np.array([[0, 0, 0, 0]])]) == 100.0
    ones = np.ones((16, 16))
    assert maxboxacc_v2(ones, [np.array([[0, 0, 15, 15]])]) == 100.0
    assert maxboxacc(ones, [gt]) == 0.0


def test_multiple_gt_boxes_take_the_best():
    m = np.zeros((32, 32))
    m[20:30, 20:30] = 1.0
    gts = np.array([[0, 0, 5, 5], [20, 20, 30, 30]])
    assert maxboxacc_v2(m, [gts]) == 100.0
    assert maxboxacc_v2(m, [gts[:1]]) == 0.0


def test_pxap_known_answers():
    mask = np.zeros((2, 16, 16), np.uint8)
    mask[:, 4:8, 4:8] = 1
    perfect = mask.astype(np.float64)
    assert pxap(perfect, mask) == pytest.approx(100.0)
    flat = np.full((2, 16, 16), 0.5)
    pos, neg = (mask == 1).sum(), (mask == 0).sum()
    assert pxap(flat, mask) == pytest.approx(100.0 * pos / (pos + neg))
    # high scores inside the ignore region (255) do not count
    noisy = perfect.copy()
    noisy[:, 10:14, 10:14] = 1.0
    ignore = mask.copy()
    ignore[:, 10:14, 10:14] = 255
    assert pxap(noisy, ignore) == pytest.approx(100.0)
    assert pxap(noisy, mask) < 100.0


def test_pxap_needs_foreground():
    with pytest.raises(DataError):
        pxap(np.zeros((1, 4, 4)), np.zeros((1, 4, 4), np.uint8))


def test_invalid_inputs():
    gt = [np.array([[0, 0, 1, 1]])]
    with pytest.raises(DataError):
        maxboxacc_v2(np.full((4, 4), 1.5), gt)
    with pytest.raises(DataError):
        maxboxacc_v2(np.full((4, 4), np.nan), gt)
    with pytest.raises(DataError):
        maxboxacc_v2(np.zeros((2, 4, 4)), gt)  # 2 maps, 1 box set
    with pytest.raises(DataError):
        maxboxacc_v2(np.zeros((4, 4)), [np.array([[3, 0, 1, 1]])])


def test_top1_localization_needs_the_right_class():
    maps = np.zeros((4, 16, 16))
    maps[:, 2:8, 2:8] = 1.0
    gt = [np.array([[2, 2, 8, 8]])] * 4
    ev = BoxEvaluator((50,), multi_contour=False)
    ev.accumulate(maps, gt, correct_class=[True, False, True, True])
    res = ev.compute()
    assert res["max_box_acc"][50] == 100.0
    assert res["top1_loc"][50] == 75.0


# ---------------------------------------------------------------- streaming = one-shot


def _cam_like(rng, n, size=64, low=8):
    maps = []
    for _ in range(n):
        small = rng.normal(size=(low, low))
        yy, xx = np.mgrid[:low, :low]
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, low, 2)
            small += rng.uniform(1, 3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(1, 6))
        m = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        m -= m.min()
        maps.append(m / m.max())
    return np.stack(maps)


def _random_boxes(rng, n, size, k_max=2):
    out = []
    for _ in range(n):
        k = rng.integers(1, k_max + 1)
        xy = np.sort(rng.integers(0, size, (k, 2, 2)), axis=1)  # (k, [min,max], [x,y])
        out.append(np.stack([xy[:, 0, 0], xy[:, 0, 1], xy[:, 1, 0], xy[:, 1, 1]], axis=1))
    return out


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    maps = _cam_like(rng, 12, size=48)
    gts = _random_boxes(rng, 12, 48)
    masks = (maps > 0.5).astype(np.uint8)
    masks[:, :4] = 255
    labels_ok = rng.random(12) < 0.7
    one = LocalizationEvaluator()
    one.accumulate(maps, gts, masks, labels_ok)
    stream = LocalizationEvaluator()
    for s in (slice(0, 5), slice(5, 6), slice(6, 12)):
        stream.accumulate(torch.from_numpy(maps[s]), gts[s], torch.from_numpy(masks[s]), labels_ok[s])
    assert one.compute() == stream.compute()


# ---------------------------------------------------------------- agreement with OpenCV


def _multi_blob(rng, size=48):
    """Several blobs, rings and holes at random levels: many contours of both kinds."""
    yy, xx = np.mgrid[:size, :size]
    m = np.zeros((size, size))
    for _ in range(rng.integers(2, 6)):
        cy, cx = rng.uniform(0, size, 2)
        r = np.hypot(yy - cy, xx - cx)
        r0, r1 = sorted(rng.uniform(1, size / 3, 2))
        m = np.maximum(m, np.where((r <= r1) & (r >= r0 * rng.integers(0, 2)), rng.uniform(0.2, 1), 0))
    m += 0.05 * rng.random((size, size))
    return m / m.max()


@pytest.mark.parametrize("kind", ["cam", "multiblob", "noise", "binary"])
def test_per_threshold_ious_equal_opencv_reference(kind):
    rng = np.random.default_rng({"cam": 1, "multiblob": 2, "noise": 3, "binary": 4}[kind])
    n = {"cam": 10, "multiblob": 10, "noise": 6, "binary": 10}[kind]
    for i in range(n):
        if kind == "cam":
            m = _cam_like(rng, 1, size=int(rng.integers(24, 64)))[0]
        elif kind == "multiblob":
            m = _multi_blob(rng)
        elif kind == "noise":
            h, w = rng.integers(2, 20, 2)
            m = rng.random((h, w))
        else:
            h, w = rng.integers(1, 24, 2)
            m = (rng.random((h, w)) < rng.uniform(0.3, 0.8)) * 1.0
        h, w = m.shape
        gt = _random_boxes(rng, 1, min(h, w), k_max=3)[0]
        ours = box_ious(m, [gt], largest_contour=True)
        for multi, key in ((True, "multi"), (False, "largest")):
            ref = reference_box_ious(m, gt, THRESHOLDS, multi)
            np.testing.assert_array_equal(ours[key][0], ref, err_msg=f"{kind} map {i} multi={multi}")


def test_largest_contour_ties_follow_opencv_order():
    # equal areas: OpenCV lists later-found contours first and max() keeps the first maximum
    for m in (np.pad(np.eye(2), 3), np.kron(np.eye(2), np.ones((4, 4)))):
        m = np.pad(m, 2)
        h, w = m.shape
        for gt in ([0, 0, w // 2, h // 2], [w // 2, h // 2, w - 1, h - 1]):
            gt = np.array([gt])
            ref = reference_box_ious(m, gt, THRESHOLDS, False)
            ours = box_ious(m, [gt], multi_contour=False, largest_contour=True)["largest"][0]
            np.testing.assert_array_equal(ours, ref)


def test_dataset_metrics_equal_reference():
    rng = np.random.default_rng(5)
    maps = np.concatenate([_cam_like(rng, 16, size=56), np.stack([_multi_blob(rng, 56) for _ in range(8)])])
    gts = _random_boxes(rng, len(maps), 56, k_max=2)
    ref_v2 = reference_maxboxacc(maps, gts, (30, 50, 70), True)
    ref_v1 = reference_maxboxacc(maps, gts, (50,), False)
    ev = BoxEvaluator((30, 50, 70), multi_contour=True)
    ev.accumulate(maps, gts)
    res = ev.compute()
    assert res["max_box_acc"] == {d: ref_v2[d] for d in (30, 50, 70)}
    assert res["mean"] == np.mean([ref_v2[d] for d in (30, 50, 70)])
    assert maxboxacc(maps, gts) == ref_v1[50]
    masks = (rng.random(maps.shape) < maps).astype(np.uint8)
    masks[:, :, :5] = 255
    assert pxap(maps, masks) == reference_pxap(maps, masks)
    assert pxap(maps.astype(np.float32), masks) == reference_pxap(maps.astype(np.float32), masks)


def test_float32_and_torch_inputs_match_float64_protocol_per_dtype():
    rng = np.random.default_rng(6)
    maps = _cam_like(rng, 4, size=40).astype(np.float32)
    gts = _random_boxes(rng, 4, 40)
    ref = reference_maxboxacc(maps, gts)
    assert maxboxacc_v2(torch.from_numpy(maps), gts) == np.mean([ref[d] for d in (30, 50, 70)])
    assert maxboxacc_v2(maps, np.stack([g[0] for g in gts])) == maxboxacc_v2(maps, [g[:1] for g in gts])


def test_mask_histogram_bins_match_numpy_histogram_at_edges():
    edges_hit = np.arange(0, 1, 0.001)[::37]
    scores = np.concatenate([edges_hit, np.nextafter(edges_hit, 0), [1.0, 0.0, 0.9995, 0.0005]])
    scores = np.clip(scores, 0, 1)[None, None, :]
    masks = np.ones_like(scores, dtype=np.uint8)
    masks[..., ::2] = 0
    ev = MaskEvaluator()
    ev.accumulate(scores, masks)
    edges = np.append(np.arange(0, 1, 0.001), [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(ev.hist_true, np.histogram(scores[masks == 1], bins=edges)[0])
    np.testing.assert_array_equal(ev.hist_false, np.histogram(scores[masks == 0], bins=edges)[0])


def test_predicted_boxes_equal_reference_boxes():
    from wsol_reference import reference_boxes

    from cuekit.wsol import predicted_boxes

    rng = np.random.default_rng(7)
    for i in range(12):
        m = _multi_blob(rng, 40) if i % 2 else _cam_like(rng, 1, size=40)[0]
        for tau in (0.0, 0.2, 0.5, 0.8):
            for multi in (True, False):
                ref = reference_boxes(m, [tau], multi)[0]
                ours = predicted_boxes(m, tau, multi)
                assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, ref.tolist())), (i, tau, multi)
    assert predicted_boxes(np.zeros((5, 5)), 0.5).tolist() == [[0, 0, 0, 0]]


def test_threaded_kernel_gives_identical_ious():
    rng = np.random.default_rng(8)
    maps = _cam_like(rng, 6, size=32)
    gts = _random_boxes(rng, 6, 32)
    serial = box_ious(maps, gts, largest_contour=True, num_threads=1)
    threaded = box_ious(maps, gts, largest_contour=True, num_threads=2)
    for k in serial:
        np.testing.assert_array_equal(serial[k], threaded[k])


def test_torch_histogram_path_equals_compiled_path():
    # the path CUDA tensors take (torch.bucketize), run on CPU tensors here
    rng = np.random.default_rng(9)
    maps = _cam_like(rng, 3, size=24)
    masks = (rng.random(maps.shape) < 0.4).astype(np.uint8)
    masks[:, 0] = 255
    compiled, via_torch = MaskEvaluator(), MaskEvaluator()
    compiled.accumulate(maps, masks)
    via_torch._accumulate_torch(torch.from_numpy(maps), torch.from_numpy(masks))
    np.testing.assert_array_equal(compiled.hist_true, via_torch.hist_true)
    np.testing.assert_array_equal(compiled.hist_false, via_torch.hist_false)


def test_full_size_cam_maps_equal_reference():
    rng = np.random.default_rng(10)
    maps = _cam_like(rng, 4, size=224, low=14)
    gts = _random_boxes(rng, 4, 224, k_max=2)
    ours = box_ious(maps, gts, largest_contour=True)
    for i, (m, g) in enumerate(zip(maps, gts)):
        np.testing.assert_array_equal(ours["multi"][i], reference_box_ious(m, g, THRESHOLDS, True))
        np.testing.assert_array_equal(ours["largest"][i], reference_box_ious(m, g, THRESHOLDS, False))


def test_random_small_maps_property():
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, 255)),
           st.lists(st.integers(0, 8), min_size=4, max_size=4))
    def check(values, corners):
        m = values / 255.0
        h, w = m.shape
        x0, x1 = sorted((min(corners[0], w - 1), min(corners[1], w - 1)))
        y0, y1 = sorted((min(corners[2], h - 1), min(corners[3], h - 1)))
        gt = np.array([[x0, y0, x1, y1]])
        ours = box_ious(m, [gt], largest_contour=True, cam_curve_interval=0.01)
        taus = list(np.arange(0, 1, 0.01))
        np.testing.assert_array_equal(ours["multi"][0], reference_box_ious(m, gt, taus, True))
        np.testing.assert_array_equal(ours["largest"][0], reference_box_ious(m, gt, taus, False))

    check()


def test_plain_python_kernels_without_numba_equal_the_compiled_ones(tmp_path):
    # NUMBA_DISABLE_JIT runs the kernels as plain Python, as when numba is not installed; uint8 arithmetic
    # then follows numpy's rules (255 + 1 wraps), which the kernels must not rely on
    import json
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(11)
    maps = np.stack([_multi_blob(rng, 9), _cam_like(rng, 1, size=9)[0], (rng.random((9, 9)) < 0.5) * 1.0])
    gts = _random_boxes(rng, 3, 9)
    np.save(tmp_path / "maps.npy", maps)
    np.save(tmp_path / "gts.npy", np.stack([g[:1] for g in gts]))
    code = ("import json, sys, numpy as np; from cuekit.wsol import box_ious, pxap; "
            f"m = np.load({str(tmp_path / 'maps.npy')!r}); g = np.load({str(tmp_path / 'gts.npy')!r}); "
            "r = box_ious(m, list(g), cam_curve_interval=0.01, largest_contour=True, num_threads=1); "
            "print(json.dumps({k: v.tolist() for k, v in r.items()} | {'pxap': pxap(m, (m > 0.5).astype(np.uint8))}))")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    plain = json.loads(out.stdout.strip().splitlines()[-1])
    compiled = box_ious(maps, [g[:1] for g in gts], cam_curve_interval=0.01, largest_contour=True)
    for key in ("multi", "largest"):
        np.testing.assert_array_equal(np.asarray(plain[key]), compiled[key])
    assert plain["pxap"] == pxap(maps, (maps > 0.5).astype(np.uint8))
