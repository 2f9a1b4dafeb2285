"""CAM normalizations against their formulas (the official per-map numpy code, written out here)
and bicubic upsampling against cv2.resize(INTER_CUBIC)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cuekit.errors import UnknownChoiceError
from cuekit.wsol import NORMALIZATIONS, normalize_cams, upsample_cams


def formula(cam: np.ndarray, method: str, q: float = 0.45) -> np.ndarray:
    """One map, numpy, in the order of operations of GenDisc/IVR `normalize_scoremap`."""
    cam = cam.copy()
    if np.isnan(cam).any() or cam.min() == cam.max():
        return np.zeros_like(cam)
    if method == "minmax":
        cam -= cam.min()
        return cam / cam.max()
    if method == "max":
        cam = np.maximum(0, cam)
        return cam / cam.max()
    if method == "pas":
        cam -= cam.min()
        p90 = np.sort(cam.flatten())[int(cam.size * 0.9)]
        return np.minimum(1, cam / p90)
    srt = np.sort(cam.flatten())
    cam = np.maximum(0, cam - srt[int(cam.size * q)])
    return cam / cam.max()


@pytest.mark.parametrize("method", NORMALIZATIONS)
def test_each_normalization_equals_its_formula(method):
    rng = np.random.default_rng(0)
    cams = rng.normal(size=(6, 17, 23)) + rng.normal(size=(6, 1, 1))
    cams[2] = np.abs(cams[2])  # all positive
    cams[3] += 5.0             # large offset: max and minmax differ a lot
    ours = normalize_cams(torch.from_numpy(cams), method).numpy()
    for i in range(len(cams)):
        np.testing.assert_array_equal(ours[i], formula(cams[i], method), err_msg=f"{method} map {i}")
    assert ours.min() >= 0 and ours.max() <= 1


def test_formulas_by_hand():
    cam = torch.tensor([[[-1.0, 0.0], [1.0, 3.0]]], dtype=torch.float64)
    np.testing.assert_allclose(normalize_cams(cam, "minmax")[0], [[0, 0.25], [0.5, 1]])
    np.testing.assert_allclose(normalize_cams(cam, "max")[0], [[0, 0], [1 / 3, 1]])
    # pas: shifted [0, 1, 2, 4], P_90 = sorted[int(4 * 0.9)] = sorted[3] = 4
    np.testing.assert_allclose(normalize_cams(cam, "pas")[0], [[0, 0.25], [0.5, 1]])
    # ivr q=0.45: P = sorted[int(1.8)] = sorted[1] = 0 -> [0, 0, 1, 3] / 3
    np.testing.assert_allclose(normalize_cams(cam, "ivr")[0], [[0, 0], [1 / 3, 1]])
    # ivr q=0.6: P = sorted[2] = 1 -> [0, 0, 0, 2] / 2
    np.testing.assert_allclose(normalize_cams(cam, "ivr", percentile=0.6)[0], [[0, 0], [0, 1]])


def test_ivr_percentile_matters_and_max_differs_from_minmax():
    rng = np.random.default_rng(1)
    cams = torch.from_numpy(rng.normal(size=(3, 14, 14)))
    ivr = normalize_cams(cams, "ivr")
    assert (ivr == 0).double().mean() >= 0.45  # at least the inferior 45% removed
    assert not torch.equal(normalize_cams(cams, "ivr", percentile=0.2), ivr)
    assert not torch.equal(normalize_cams(cams, "max"), normalize_cams(cams, "minmax"))


@pytest.mark.parametrize("method", NORMALIZATIONS)
def test_constant_and_nan_maps_give_zeros(method):
    cams = torch.randn(3, 8, 8)
    cams[0] = 2.5
    cams[1, 3, 3] = float("nan")
    out = normalize_cams(cams, method)
    assert torch.equal(out[0], torch.zeros(8, 8)) and torch.equal(out[1], torch.zeros(8, 8))
    assert out[2].max() == 1.0
    assert not torch.isnan(out).any()


def test_degenerate_denominators_give_valid_maps():
    neg = -torch.rand(1, 6, 6) - 0.1
    assert torch.equal(normalize_cams(neg, "max"), torch.zeros(1, 6, 6))  # no positive value
    spiky = torch.zeros(1, 10, 10)
    spiky[0, 0, :3] = torch.tensor([1.0, 2.0, 3.0])  # P_90 of the shifted map is 0
    pas = normalize_cams(spiky, "pas")
    assert torch.equal(pas, (spiky > 0).float())
    flat_top = torch.zeros(1, 10, 10)
    flat_top[0, :6] = 1.0  # P_45 equals the maximum
    assert torch.equal(normalize_cams(flat_top, "ivr"), torch.zeros(1, 10, 10))


def test_unknown_normalization():
    with pytest.raises(UnknownChoiceError):
        normalize_cams(torch.rand(1, 4, 4), "softmax")


def test_float32_batch_and_single_map():
    cams = torch.randn(4, 7, 7)
    for m in NORMALIZATIONS:
        batch = normalize_cams(cams, m)
        assert batch.dtype == torch.float32
        torch.testing.assert_close(normalize_cams(cams[1], m), batch[1], rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cams = torch.randn(5, 14, 14, dtype=torch.float64)
    for m in NORMALIZATIONS:
        torch.testing.assert_close(normalize_cams(cams.cuda(), m).cpu(), normalize_cams(cams, m))


@pytest.mark.parametrize("low,size", [(14, 224), (7, 224), (28, 224), (8, 32), (7, 50)])
def test_upsampling_matches_cv2_inter_cubic(low, size):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(low)
    cam = rng.normal(size=(low, low))
    ref = cv2.resize(cam, (size, size), interpolation=cv2.INTER_CUBIC)
    ours = upsample_cams(torch.from_numpy(cam)[None], size)[0].numpy()
    # integer scale factors agree to rounding; otherwise cv2's single-precision weights show (~1e-6)
    atol = 1e-9 if size % low == 0 else 1e-5
    np.testing.assert_allclose(ours, ref, rtol=0, atol=atol)


# ---------------------------------------------------------------- numpy in, numpy out


def test_every_map_function_takes_numpy_and_returns_numpy():
    from cuekit.wsol import ivr_norm, max_norm, minmax_norm, pas_norm

    rng = np.random.default_rng(3)
    cams = rng.normal(size=(3, 9, 11))
    t = torch.from_numpy(cams)
    for method in NORMALIZATIONS:
        out = normalize_cams(cams, method)
        assert isinstance(out, np.ndarray) and out.dtype == np.float64
        np.testing.assert_array_equal(out, normalize_cams(t, method).numpy())
        np.testing.assert_array_equal(normalize_cams(cams[1], method), out[1])  # one (H, W) map
    for fn in (minmax_norm, max_norm, pas_norm, ivr_norm):
        out = fn(cams)
        assert isinstance(out, np.ndarray)
        np.testing.assert_array_equal(out, fn(t).numpy())
        np.testing.assert_array_equal(fn(cams[0]), out[0])
    up = upsample_cams(cams, (22, 33))
    assert isinstance(up, np.ndarray) and up.shape == (3, 22, 33)
    np.testing.assert_array_equal(up, upsample_cams(t, (22, 33)).numpy())
    np.testing.assert_array_equal(upsample_cams(cams[2], 22), upsample_cams(t, 22)[2].numpy())
    ints = normalize_cams(np.arange(16).reshape(4, 4), "minmax")  # integers become float32
    assert ints.dtype == np.float32 and ints.max() == 1.0
    readonly = cams.copy()
    readonly.flags.writeable = False
    np.testing.assert_array_equal(normalize_cams(readonly, "ivr"), normalize_cams(cams, "ivr"))


def test_cam_helpers_take_numpy():
    from cuekit.models import create_model
    from cuekit.wsol import cams_from_features, compute_cams, compute_score_maps

    rng = np.random.default_rng(4)
    feats, weight, classes = rng.normal(size=(2, 5, 3, 4)), rng.normal(size=(7, 5)), np.array([6, 1])
    out = cams_from_features(feats, weight, classes)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 4)
    expect = cams_from_features(torch.from_numpy(feats), torch.from_numpy(weight), torch.from_numpy(classes))
    np.testing.assert_array_equal(out, expect.numpy())
    torch.manual_seed(0)
    model = create_model("cam_small", num_classes=3, width=4).eval()
    images = rng.random((2, 3, 16, 16)).astype(np.float32)
    logits, cams = compute_cams(model, images, np.array([0, 2]))
    ref_logits, ref_cams = compute_cams(model, torch.from_numpy(images), torch.tensor([0, 2]))
    assert isinstance(logits, np.ndarray) and isinstance(cams, np.ndarray)
    np.testing.assert_array_equal(cams, ref_cams.numpy())
    np.testing.assert_array_equal(logits, ref_logits.numpy())
    _, maps = compute_score_maps(model, images.astype(np.float64), np.array([0, 2]), norm="ivr")
    _, ref_maps = compute_score_maps(model, torch.from_numpy(images), torch.tensor([0, 2]), norm="ivr")
    assert isinstance(maps, np.ndarray) and maps.shape == (2, 16, 16)
    np.testing.assert_array_equal(maps, ref_maps.numpy())
