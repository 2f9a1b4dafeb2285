"""Color-dSprites: the index <-> latents mapping, the renderer's geometry and distinctness, the dataset."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cuekit.data import create_dataset
from cuekit.data import dsprites as D
from cuekit.errors import UnknownChoiceError, UsageError


def _lat(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def _uint8(imgs: torch.Tensor) -> torch.Tensor:
    """Images as they would be saved: (N, C, H, W) -> (N, C*H*W) uint8."""
    return (imgs * 255).round().to(torch.uint8).reshape(len(imgs), -1)


def _canonical_index(latents: torch.Tensor) -> torch.Tensor:
    """Index after folding each shape's rotational symmetry (square 90 deg, ellipse 180 deg)."""
    period = torch.tensor([10, 20, 40])[latents[:, 1]]
    c = latents.clone()
    c[:, 3] = latents[:, 3] % period
    return D.latents_to_index(c)


def _centroid(img: torch.Tensor) -> tuple[float, float]:
    """(x, y) centre of mass of a (3, H, W) image's coverage, in pixels (y down)."""
    m = img.max(0).values
    ys, xs = torch.meshgrid(torch.arange(m.shape[0]).float(), torch.arange(m.shape[1]).float(), indexing="ij")
    return float((m * xs).sum() / m.sum()), float((m * ys).sum() / m.sum())


# ---- index <-> latents ---------------------------------------------------------------------------

def test_sizes_and_bases_follow_the_dsprites_order():
    assert D.LATENT_NAMES == ("color", "shape", "scale", "orientation", "posx", "posy")
    assert D.LATENT_SIZES == (4, 3, 6, 40, 32, 32)
    assert D.NUM_IMAGES == 4 * 737_280 == 2_949_120
    assert D.LATENT_BASES == (737280, 245760, 40960, 1024, 32, 1)
    # one step in a single latent moves the index by that latent's base
    assert D.latents_to_index(torch.eye(6, dtype=torch.long)).tolist() == list(D.LATENT_BASES)
    assert D.index_to_latents(torch.tensor([1, 32, 1024])).tolist() == [
        [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0]]


def test_index_latents_round_trip_over_every_index():
    idx = torch.arange(D.NUM_IMAGES)
    lat = D.index_to_latents(idx)
    assert lat.shape == (D.NUM_IMAGES, 6) and lat.dtype == torch.long
    assert torch.equal(D.latents_to_index(lat), idx)
    # independent reference: row-major (C order) unravelling with posy fastest
    sample = torch.randint(0, D.NUM_IMAGES, (5000,), generator=torch.Generator().manual_seed(0))
    ref = np.stack(np.unravel_index(sample.numpy(), D.LATENT_SIZES), axis=1)
    assert np.array_equal(lat[sample].numpy(), ref)
    corners = torch.tensor([0, D.NUM_IMAGES - 1])
    assert D.index_to_latents(corners).tolist() == [[0] * 6, [s - 1 for s in D.LATENT_SIZES]]


def test_out_of_range_indices_and_latents_are_usage_errors():
    with pytest.raises(UsageError):
        D.index_to_latents(torch.tensor([D.NUM_IMAGES]))
    with pytest.raises(UsageError):
        D.index_to_latents(torch.tensor([-1]))
    with pytest.raises(UsageError):
        D.latents_to_index(_lat([[4, 0, 0, 0, 0, 0]]))
    with pytest.raises(UsageError):
        D.render(_lat([[0, 0, 0, 40, 0, 0]]))
    with pytest.raises(UsageError):
        D.render(torch.zeros(2, 5, dtype=torch.long))


def test_latent_values_follow_the_spec():
    assert D.LATENT_VALUES["scale"] == pytest.approx(np.linspace(0.5, 1, 6).tolist())
    assert D.LATENT_VALUES["posx"] == pytest.approx(np.linspace(0, 1, 32).tolist())
    orient = D.LATENT_VALUES["orientation"]
    assert len(orient) == 40 and orient[0] == 0 and orient[-1] == pytest.approx(2 * math.pi * 39 / 40)
    v = D.latent_values(_lat([[3, 2, 5, 10, 31, 0]]))[0].tolist()
    assert v == pytest.approx([3, 2, 1.0, math.pi / 2, 1.0, 0.0])


# ---- rendering -----------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [32, 64])
def test_render_is_batched_deterministic_and_in_unit_range(size):
    lat = D.index_to_latents(torch.randint(0, D.NUM_IMAGES, (64,), generator=torch.Generator().manual_seed(1)))
    a = D.render(lat, size)
    assert a.shape == (64, 3, size, size) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, D.render(lat, size))
    assert (a.amax((1, 2, 3)) == 1).all()  # every object has fully covered pixels
    # one batched call equals per-item calls, and the memory chunking does not change the result
    single = torch.cat([D.render(lat[i:i + 1], size) for i in range(len(lat))])
    torch.testing.assert_close(a, single, atol=1e-6, rtol=0)
    torch.testing.assert_close(a, D.render(lat, size, chunk_pixels=3 * size * size), atol=1e-6, rtol=0)


def test_colour_channels_follow_the_rgb_masks():
    rows = [[c, s, 2, 7, 11, 20] for c in range(4) for s in range(3)]
    imgs = D.render(_lat(rows), 64)
    for (c, _s, *_), img in zip(rows, imgs):
        mask = D.COLOR_MASKS[c]
        for ch in range(3):
            if mask[ch]:
                assert img[ch].sum() > 0
                assert torch.equal(img[ch], img.max(0).values)
            else:
                assert img[ch].abs().sum() == 0


def test_binary_rendering_without_antialiasing():
    lat = D.index_to_latents(torch.arange(0, D.NUM_IMAGES, 99_991))
    imgs = D.render(lat, 64, antialias=False)
    assert set(imgs.unique().tolist()) == {0.0, 1.0}
    soft = D.render(lat, 64)
    assert ((soft > 0) & (soft < 1)).any()  # anti-aliased edges


@pytest.mark.parametrize("size", [32, 64])
def test_every_shape_stays_inside_the_frame(size):
    rows = [[3, s, 5, o, x, y] for s in range(3) for o in range(40) for x in (0, 31) for y in (0, 31)]
    imgs = D.render(_lat(rows), size)
    border = torch.cat([imgs[..., 0, :], imgs[..., -1, :], imgs[..., :, 0], imgs[..., :, -1]], -1)
    assert border.abs().max() == 0
    # and the extreme positions really reach towards the border (within a few pixels)
    cover = imgs.amax(1) > 0
    first_row = cover.any(2).float().argmax(1)
    assert first_row.min() <= max(2, size // 16)


@pytest.mark.parametrize("shape,period", [(0, 10), (1, 20), (2, 40)])
def test_orientations_differ_exactly_up_to_rotational_symmetry(shape, period):
    # smallest scale: the hardest case for telling orientations apart
    rows = [[3, shape, 0, o, 13, 17] for o in range(40)]
    q = _uint8(D.render(_lat(rows), 64))
    for i in range(40):
        for j in range(i + 1, 40):
            same = torch.equal(q[i], q[j])
            assert same == (i % period == j % period), (shape, i, j)


def test_the_symmetries_are_real_geometry():
    """The signed distances are invariant under the symmetry rotations that rendering folds."""
    g = torch.linspace(-1.2, 1.2, 61)
    u, v = torch.meshgrid(g, g, indexing="ij")

    def rotated(sdf, angle):
        c, s = math.cos(angle), math.sin(angle)
        return sdf(c * u - s * v, s * u + c * v)

    square, ellipse, heart = D._SDFS
    torch.testing.assert_close(rotated(square, math.pi / 2), square(u, v), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotated(ellipse, math.pi), ellipse(u, v), atol=1e-5, rtol=0)
    assert (rotated(square, math.pi / 4) - square(u, v)).abs().max() > 0.1
    assert (rotated(ellipse, math.pi / 2) - ellipse(u, v)).abs().max() > 0.1
    for angle in (math.pi / 2, math.pi, 3 * math.pi / 2):
        assert (rotated(heart, angle) - heart(u, v)).abs().max() > 0.1
    # every shape fits in the unit circle that sets OBJECT_RADIUS and the margin
    outside = u * u + v * v > 1.0001
    for sdf in D._SDFS:
        assert (sdf(u, v)[outside] > 0).all()


def test_every_position_gives_a_different_image():
    rows = [[3, s, 0, 7, x, y] for s in range(3) for x in range(32) for y in range(32)]
    q = _uint8(D.render(_lat(rows), 64))
    assert torch.unique(q, dim=0).shape[0] == len(rows)


def test_every_colour_shape_and_scale_gives_a_different_image():
    rows = [[c, s, sc, 3, 16, 16] for c in range(4) for s in range(3) for sc in range(6)]
    q = _uint8(D.render(_lat(rows), 64))
    assert torch.unique(q, dim=0).shape[0] == len(rows)


def test_random_latents_are_distinct_up_to_symmetry():
    lat = D.index_to_latents(torch.randint(0, D.NUM_IMAGES, (3000,), generator=torch.Generator().manual_seed(2)))
    # add symmetric twins so the sample also contains images that must coincide
    twins = lat[:200].clone()
    twins[:, 3] = (twins[:, 3] + torch.tensor([10, 20, 40])[twins[:, 1]]) % 40
    lat = torch.cat([lat, twins])
    q = _uint8(D.render(lat, 64))
    assert torch.unique(q, dim=0).shape[0] == torch.unique(_canonical_index(lat)).numel()


def test_latents_move_the_object_as_documented():
    # posx moves right, posy moves down, a larger scale covers more pixels
    imgs = D.render(_lat([[3, 1, 3, 0, 5, 9], [3, 1, 3, 0, 25, 9], [3, 1, 3, 0, 5, 29]]), 64)
    (x0, y0), (x1, y1), (x2, y2) = (_centroid(i) for i in imgs)
    assert x1 > x0 + 10 and abs(y1 - y0) < 0.1 and y2 > y0 + 10 and abs(x2 - x0) < 0.1
    areas = D.render(_lat([[3, 0, s, 0, 16, 16] for s in range(6)]), 64).sum((1, 2, 3))
    assert (areas.diff() > 0).all()
    # orientation 5 = 45 deg counter-clockwise on screen: the ellipse's long axis rises to the right
    m = D.render(_lat([[3, 1, 5, 5, 16, 16]]), 64)[0, 0]
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    cx, cy = (m * xs).sum() / m.sum(), (m * ys).sum() / m.sum()
    assert ((m * (xs - cx) * (ys - cy)).sum() / m.sum()) < -5  # y grows downwards
    # the heart's tip points down at orientation 0 (lobes above: mass above the box centre),
    # and to the right after a quarter turn counter-clockwise
    for o, axis in ((0, "y"), (10, "x")):
        img = D.render(_lat([[3, 2, 5, o, 16, 16]]), 64)[0]
        cover = img[0] > 0.5
        rows_, cols_ = cover.any(1).nonzero().squeeze(1), cover.any(0).nonzero().squeeze(1)
        x, y = _centroid(img)
        if axis == "y":
            assert y < (rows_.min() + rows_.max()) / 2 - 1
        else:
            assert x < (cols_.min() + cols_.max()) / 2 - 1


# ---- dataset -------------------------------------------------------------------------------------

def test_dataset_items_labels_and_names():
    idx = torch.tensor([0, 5, 737_280 * 2 + 245_760 + 40_960 * 3 + 1024 * 7 + 32 * 4 + 9, D.NUM_IMAGES - 1])
    for task, col in zip(D.LATENT_NAMES, range(6)):
        ds = D.ColorDSprites(task, idx, img_size=32)
        assert len(ds) == 4 and ds.num_classes == D.LATENT_SIZES[col] == len(ds.class_names)
        assert torch.equal(ds.labels, D.index_to_latents(idx)[:, col])
        img, label = ds[2]
        assert img.shape == (3, 32, 32) and isinstance(label, int)
        assert label == D.index_to_latents(idx[2:3])[0, col]
        assert torch.equal(img, D.render(D.index_to_latents(idx[2:3]), 32)[0])
    assert D.ColorDSprites("color").class_names == ["red", "green", "blue", "white"]
    assert D.ColorDSprites("shape").class_names == ["square", "ellipse", "heart"]
    assert len(D.ColorDSprites()) == D.NUM_IMAGES
    with pytest.raises(UnknownChoiceError) as e:
        D.ColorDSprites("colour")
    assert e.value.kind == "task" and "color" in str(e.value)
    with pytest.raises(IndexError):
        D.ColorDSprites("shape", [1, 2])[2]


def test_dataloader_fetches_each_batch_with_one_render(monkeypatch):
    ds = D.ColorDSprites("orientation", torch.arange(100, 180), img_size=32)
    calls = []
    real = D.render
    monkeypatch.setattr(D, "render", lambda lat, *a, **k: (calls.append(len(lat)), real(lat, *a, **k))[1])
    batches = list(DataLoader(ds, batch_size=16, shuffle=False, num_workers=0))
    assert calls == [16] * 5
    x, y = batches[1]
    assert x.shape == (16, 3, 32, 32) and y.dtype == torch.long
    ref = torch.stack([ds[i][0] for i in range(16, 32)])
    assert torch.equal(x, ref)
    assert y.tolist() == D.index_to_latents(torch.arange(116, 132))[:, 3].tolist()


def test_registered_dataset_splits_are_seeded_and_disjoint():
    a = create_dataset("dsprites", task="scale", img_size=32, train_size=300, seed=3)
    assert len(a.train) == 300 and len(a.val) == 30
    assert a.num_classes == 6 and a.class_names == ["0.5", "0.6", "0.7", "0.8", "0.9", "1.0"]
    assert a.img_size == 32 and a.in_chans == 3 and a.task == "scale"
    assert not set(a.train.indices.tolist()) & set(a.val.indices.tolist())
    b = create_dataset("dsprites", task="scale", img_size=32, train_size=300, seed=3)
    c = create_dataset("dsprites", task="scale", img_size=32, train_size=300, seed=4)
    assert torch.equal(a.train.indices, b.train.indices) and not torch.equal(a.train.indices, c.train.indices)
    x, y = a.train[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 6
    d = create_dataset("dsprites", train_size=5, val_size=None)
    assert len(d.val) == 1 and d.task == "shape" and d.img_size == 64 and d.class_names == list(D.SHAPE_NAMES)
    with pytest.raises(UsageError):
        create_dataset("dsprites:/some/path")
    with pytest.raises(UsageError):
        create_dataset("dsprites", train_size=D.NUM_IMAGES)
    with pytest.raises(UnknownChoiceError):
        create_dataset("dsprites", task="size")
