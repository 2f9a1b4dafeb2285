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
