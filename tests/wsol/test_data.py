"""shapes-loc and the wsolevaluation metadata reader (boxes, masks with ignore regions)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cuekit.data import create_dataset
from cuekit.errors import DataError, UsageError
from cuekit.wsol.data import WSOLImageDataset, load_mask, read_wsol_metadata, resize_box


def test_shapes_loc_samples_boxes_and_masks():
    b = create_dataset("shapes-loc", img_size=24, train_size=40, val_size=10, seed=3)
    assert b.num_classes == 5 and b.class_names[0] == "disc" and len(b.train) == 40 and len(b.val) == 10
    x, y = b.train[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert 0 <= y < 5
    for i in range(len(b.train)):
        loc = b.train.localization(i)
        ys, xs = np.nonzero(loc["mask"])
        assert loc["boxes"].tolist() == [[xs.min(), ys.min(), xs.max(), ys.max()]]  # tight inclusive box
        assert 0.02 < loc["mask"].mean() < 0.6
    # a pure function of the seed; another seed gives other images
    again = create_dataset("shapes-loc", img_size=24, train_size=40, val_size=10, seed=3)
    assert torch.equal(again.train.images, b.train.images) and torch.equal(again.val.masks, b.val.masks)
    other = create_dataset("shapes-loc", img_size=24, train_size=40, val_size=10, seed=4)
    assert not torch.equal(other.train.images, b.train.images)
    assert not torch.equal(b.train.images[:10], b.val.images)


def test_shapes_loc_options():
    assert create_dataset("shapes-loc", task="3", img_size=16, train_size=8, val_size=4).num_classes == 3
    with pytest.raises(UsageError):
        create_dataset("shapes-loc", task="colour", img_size=16, train_size=8, val_size=4)
    with pytest.raises(UsageError):
        create_dataset("shapes-loc:/some/path")


def _write_split(root, boxes=True):
    """A 2-image wsolevaluation split: images 40x20 and 30x30, boxes or OpenImages-style masks."""
    (root / "images" / "a").mkdir(parents=True)
    meta = root / "meta"
    meta.mkdir()
    Image.fromarray(np.full((20, 40, 3), 200, np.uint8)).save(root / "images/a/1.png")
    Image.fromarray(np.full((30, 30, 3), 50, np.uint8)).save(root / "images/a/2.png")
    (meta / "image_ids.txt").write_text("a/1.png\na/2.png\n")
    (meta / "class_labels.txt").write_text("a/1.png,0\na/2.png,2\n")
    (meta / "image_sizes.txt").write_text("a/1.png,40,20\na/2.png,30,30\n")
    if boxes:
        (meta / "localization.txt").write_text("a/1.png,4,2,20,10\na/1.png,0,0,39,19\na/2.png,3,3,29,29\n")
    else:
        masks = root / "masks"
        masks.mkdir()
        m1 = np.zeros((20, 40), np.uint8)
        m1[5:10, 10:20] = 255
        m2 = np.zeros((20, 40), np.uint8)
        m2[12:15, 30:35] = 255
        ign = np.zeros((20, 40), np.uint8)
        ign[0:20, 0:12] = 255  # overlaps the first instance: the overlap stays foreground
        Image.fromarray(m1).save(masks / "m1.png")
        Image.fromarray(m2).save(masks / "m2.png")
        Image.fromarray(ign).save(masks / "ign.png")
        Image.fromarray(np.zeros((30, 30), np.uint8)).save(masks / "m3.png")
        (meta / "localization.txt").write_text("a/1.png,m1.png,ign.png\na/1.png,m2.png,\na/2.png,m3.png,\n")
    return meta


def test_metadata_boxes_are_rescaled_like_the_reference(tmp_path):
    meta_dir = _write_split(tmp_path)
    meta = read_wsol_metadata(meta_dir)
    assert meta.image_ids == ["a/1.png", "a/2.png"] and meta.labels == {"a/1.png": 0, "a/2.png": 2}
    assert len(meta.boxes["a/1.png"]) == 2 and not meta.has_masks
    assert resize_box((4, 2, 20, 10), (40, 20), (10, 10)) == (1, 1, 5, 5)  # int(x * new / old)
    ds = WSOLImageDataset(tmp_path / "images", meta_dir, img_size=10)
    x, y = ds[1]
    assert x.shape == (3, 10, 10) and y == 2 and ds.num_classes == 3
    np.testing.assert_array_equal(ds.localization(0)["boxes"], [[1, 1, 5, 5], [0, 0, 9, 9]])
    np.testing.assert_array_equal(ds.localization(1)["boxes"], [[1, 1, 9, 9]])


def test_metadata_masks_with_ignore_region(tmp_path):
    meta_dir = _write_split(tmp_path, boxes=False)
    meta = read_wsol_metadata(meta_dir)
    assert meta.mask_paths["a/1.png"] == ["m1.png", "m2.png"] and meta.ignore_paths == {"a/1.png": "ign.png"}
    mask = load_mask(tmp_path / "masks", meta.mask_paths["a/1.png"], "ign.png", (40, 20))
    assert mask[7, 15] == 1 and mask[13, 32] == 1     # both instances
    assert mask[7, 11] == 1                            # instance wins over the ignore box
    assert mask[0, 0] == 255 and mask[19, 39] == 0     # ignore box minus foreground; background
    ds = WSOLImageDataset(tmp_path / "images", meta_dir, img_size=20, mask_root=tmp_path / "masks")
    assert ds.localization(0)["mask"].shape == (20, 20) and ds.localization(0)["boxes"] is None
    with pytest.raises(DataError):
        WSOLImageDataset(tmp_path / "images", meta_dir, img_size=20).localization(0)  # no mask root


def test_metadata_errors(tmp_path):
    with pytest.raises(DataError):
        read_wsol_metadata(tmp_path / "missing")
    meta_dir = _write_split(tmp_path)
    (meta_dir / "localization.txt").write_text("a/1.png,1,2\n")
    read_wsol_metadata(meta_dir)  # two fields: a mask line without ignore path
    (meta_dir / "localization.txt").write_text("a/1.png,1,2,3\n")
    with pytest.raises(DataError):
        read_wsol_metadata(meta_dir)
    (meta_dir / "class_labels.txt").write_text("a/1.png,0\n")
    with pytest.raises(DataError):
        read_wsol_metadata(meta_dir)  # a/2.png has no label


def test_wsol_metadata_data_trains_and_evaluates(tmp_path):
    import shutil

    from cuekit.wsol.cams import evaluate_wsol
    from cuekit.wsol.pipeline import WSOLTrainConfig, build_wsol_data, train_cam

    meta_dir = _write_split(tmp_path)
    root = tmp_path / "metadata"
    for split in ("train", "test"):
        shutil.copytree(meta_dir, root / split)
    data = build_wsol_data(f"wsol:{tmp_path / 'images'}", str(root), img_size=16)
    assert data.num_classes == 3 and data.mean[0] == pytest.approx(0.485)
    cfg = WSOLTrainConfig(data=f"wsol:{tmp_path / 'images'}", metadata=str(root), img_size=16, epochs=1,
                          batch_size=2, device="cpu", progress=False, lr=0.01)
    result, data = train_cam(cfg, data)
    res = evaluate_wsol(result.model, data.val, ("minmax", "ivr"), batch_size=2)
    assert res["count"] == 2 and set(res["metrics"]["ivr"]) >= {"maxboxacc_v2", "maxboxacc"}
    with pytest.raises(UsageError):
        build_wsol_data(f"wsol:{tmp_path / 'images'}", None)


# ---------------------------------------------------------------- masks: OpenCV's nearest-neighbour rule


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_resize_nearest_equals_opencv_inter_nearest(dtype):
    cv2 = pytest.importorskip("cv2")
    from cuekit.wsol.data import resize_nearest

    rng = np.random.default_rng(0)
    sizes = [(1, 1), (3, 5), (7, 13), (224, 224), (337, 513), (512, 512), (600, 401), (97, 1001), (225, 223)]
    targets = [(1, 1), (5, 3), (224, 224), (223, 225), (513, 337), (31, 7)]
    for h, w in sizes:
        img = (rng.random((h, w)) * 255).astype(dtype)
        for tw, th in targets:
            expect = cv2.resize(img, (tw, th), interpolation=cv2.INTER_NEAREST)
            np.testing.assert_array_equal(resize_nearest(img, (tw, th)), expect, err_msg=f"{(h, w)} -> {(th, tw)}")


def _reference_get_mask(cv2, root, mask_paths, ignore_path, size):
    """The wsolevaluation get_mask, step for step (cv2.imread grayscale, INTER_NEAREST, > 0.5)."""
    def load(rel):
        m = np.float32(cv2.imread(str(root / rel), cv2.IMREAD_GRAYSCALE))
        return cv2.resize(m, size, interpolation=cv2.INTER_NEAREST) > 0.5

    fg = np.stack([load(p) for p in mask_paths]).any(0)
    ignore = load(ignore_path) & ~fg
    return fg.astype(np.uint8) + 255 * ignore.astype(np.uint8)


def _blob_masks(rng, root, h, w, k):
    """k instance masks and an ignore mask of odd size (h, w) with ragged edges, as PNGs."""
    yy, xx = np.mgrid[:h, :w]
    names = []
    for i in range(k + 1):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.1, 0.4) * min(h, w)
        m = (np.hypot(yy - cy, xx - cx) + 3 * rng.standard_normal((h, w)) < r).astype(np.uint8) * 255
        names.append(f"m{h}x{w}_{i}.png")
        Image.fromarray(m).save(root / names[-1])
    return names[:-1], names[-1]


def test_masks_of_odd_sizes_equal_the_reference_get_mask(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(1)
    for h, w in ((337, 513), (512, 512), (101, 257), (480, 641)):
        instances, ignore = _blob_masks(rng, tmp_path, h, w, 2)
        for size in ((224, 224), (56, 40)):
            ours = load_mask(tmp_path, instances, ignore, size)
            np.testing.assert_array_equal(ours, _reference_get_mask(cv2, tmp_path, instances, ignore, size))


def test_pxap_from_a_metadata_folder_equals_the_reference_pipeline(tmp_path):
    cv2 = pytest.importorskip("cv2")
    from wsol_reference import reference_pxap

    from cuekit.wsol.cams import evaluate_score_map_folder

    rng = np.random.default_rng(2)
    meta, maps_dir, masks_dir = tmp_path / "meta", tmp_path / "maps", tmp_path / "masks"
    for d in (meta, maps_dir, masks_dir):
        d.mkdir()
    ids, lines, maps, ref_masks = [], [], [], []
    for i, (h, w) in enumerate(((337, 513), (512, 512), (255, 383))):
        instances, ignore = _blob_masks(rng, masks_dir, h, w, 2)
        image_id = f"img{i}.jpg"
        ids.append(image_id)
        lines += [f"{image_id},{instances[0]},{ignore}", f"{image_id},{instances[1]},"]
        gt = _reference_get_mask(cv2, masks_dir, instances, ignore, (224, 224))
        score = np.clip(0.6 * (gt == 1) + 0.5 * rng.random((224, 224)), 0, 1)  # informative but noisy
        np.save(maps_dir / f"{image_id}.npy", score)
        maps.append(score)
        ref_masks.append(gt)
    (meta / "image_ids.txt").write_text("\n".join(ids) + "\n")
    (meta / "class_labels.txt").write_text("".join(f"{i},0\n" for i in ids))
    (meta / "localization.txt").write_text("\n".join(lines) + "\n")
    res = evaluate_score_map_folder(maps_dir, meta, mask_root=masks_dir)
    assert res["pxap"] == reference_pxap(np.stack(maps), np.stack(ref_masks))


def test_an_out_of_range_score_map_is_named(tmp_path, capsys):
    from cuekit.cli import main
    from cuekit.wsol.cams import evaluate_score_map_folder

    meta_dir = _write_split(tmp_path)
    maps = tmp_path / "maps"
    (maps / "a").mkdir(parents=True)
    np.save(maps / "a/1.png.npy", np.full((10, 10), 0.5))
    np.save(maps / "a/2.png.npy", np.full((10, 10), 0.5))
    assert evaluate_score_map_folder(maps, meta_dir)["count"] == 2
    for bad in (np.full((10, 10), 1.5), np.full((10, 10), np.nan), np.full((10, 10), -0.1)):
        np.save(maps / "a/2.png.npy", bad)
        with pytest.raises(DataError, match=r"a/2\.png\.npy"):
            evaluate_score_map_folder(maps, meta_dir)
    assert main(["wsol", "eval", "--scoremaps", str(maps), "--metadata", str(meta_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "a/2.png.npy" in err and len(err.splitlines()) == 1
