"""The WSOL benchmarks' own on-disk formats, on tiny copies written here: CUB-200-2011's release files
(`--data cub:PATH`) and OpenImages30k's wsolevaluation layout with masks (`--data openimages:ROOT`)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cuekit.cli import main
from cuekit.data import create_dataset
from cuekit.errors import DataError, UsageError
from cuekit.wsol.data import WSOLImageDataset, read_cub_metadata, read_wsol_metadata, resize_box
from shared_helpers import one_torch_thread  # noqa: F401  (autouse fixture)

CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
# (image id, class id, is_training_image, (width, height), (x, y, box width, box height)): ids are 1-based and
# deliberately not in split order; sizes differ so that a swapped width/height would show.
IMAGES = [
    (1, 1, 0, (24, 18), (2.0, 3.0, 10.0, 12.0)),
    (2, 1, 1, (20, 30), (0.0, 5.0, 20.0, 20.0)),
    (3, 2, 1, (32, 16), (4.0, 2.0, 16.0, 8.0)),
    (4, 2, 0, (16, 16), (1.0, 1.0, 14.0, 14.0)),
    (5, 3, 1, (18, 26), (6.0, 7.0, 9.0, 11.0)),
    (6, 3, 0, (30, 20), (12.0, 4.0, 15.0, 13.0)),
    (7, 1, 1, (22, 22), (3.0, 3.0, 8.0, 8.0)),
    (8, 2, 1, (26, 18), (5.0, 0.0, 20.0, 17.0)),
]


def _name(image_id: int, class_id: int) -> str:
    cls = CLASSES[class_id - 1]
    return f"{cls}/{cls.split('.')[1]}_{image_id:04d}_{100 + image_id}.jpg"


def write_cub(parent, images=IMAGES):
    """A tiny CUB_200_2011 folder in the release format under `parent`; returns the folder."""
    root = parent / "CUB_200_2011"
    rng = np.random.default_rng(0)
    for image_id, class_id, _, (w, h), _ in images:
        path = root / "images" / _name(image_id, class_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path, quality=90)
    (root / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    (root / "images.txt").write_text("".join(f"{i} {_name(i, c)}\n" for i, c, *_ in images))
    (root / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c, *_ in images))
    (root / "train_test_split.txt").write_text("".join(f"{i} {t}\n" for i, _, t, *_ in images))
    (root / "bounding_boxes.txt").write_text("".join(f"{i} {x} {y} {bw} {bh}\n"
                                                     for i, *_, (x, y, bw, bh) in images))
    return root


@pytest.fixture
def cub(tmp_path):
    return write_cub(tmp_path)


# --- CUB-200-2011 ------------------------------------------------------------------------------------------------

def test_cub_splits_counts_labels_and_class_names(cub):
    for split, flag in (("train", 1), ("test", 0)):
        meta, names = read_cub_metadata(cub, split)
        expected = [(_name(i, c), c - 1) for i, c, t, *_ in IMAGES if t == flag]
        assert meta.image_ids == [n for n, _ in expected]  # images.txt order
        assert meta.labels == dict(expected) and names == CLASSES
    data = create_dataset(f"cub:{cub.parent}", img_size=16)  # the parent of CUB_200_2011 works too
    assert len(data.train) == 5 and len(data.val) == 3 and data.num_classes == 3 and data.class_names == CLASSES
    x, y = data.val[0]
    assert x.shape == (3, 16, 16) and y == 0
    assert [data.train[i][1] for i in range(5)] == [0, 1, 2, 0, 1]


def test_cub_boxes_are_x_y_width_height_in_pixels(cub):
    size = 12
    data = create_dataset(f"cub:{cub}", img_size=size)
    tests = [img for img in IMAGES if img[2] == 0]
    for k, (_, _, _, (w, h), (x, y, bw, bh)) in enumerate(tests):
        want = [int(x * size / w), int(y * size / h), int((x + bw) * size / w), int((y + bh) * size / h)]
        np.testing.assert_array_equal(data.val.localization(k)["boxes"], [want])
        assert data.val.localization(k)["mask"] is None
    meta, _ = read_cub_metadata(cub, "test", sizes=True)
    assert meta.sizes[_name(1, 1)] == (24, 18) and meta.boxes[_name(1, 1)] == [(2.0, 3.0, 12.0, 15.0)]


def test_cub_boxes_equal_the_same_images_in_wsolevaluation_metadata(cub, tmp_path):
    meta_dir = tmp_path / "metadata"
    meta_dir.mkdir()
    tests = [img for img in IMAGES if img[2] == 0]
    (meta_dir / "image_ids.txt").write_text("".join(f"{_name(i, c)}\n" for i, c, *_ in tests))
    (meta_dir / "class_labels.txt").write_text("".join(f"{_name(i, c)},{c - 1}\n" for i, c, *_ in tests))
    (meta_dir / "image_sizes.txt").write_text("".join(f"{_name(i, c)},{w},{h}\n" for i, c, _, (w, h), _ in tests))
    (meta_dir / "localization.txt").write_text("".join(
        f"{_name(i, c)},{x:g},{y:g},{x + bw:g},{y + bh:g}\n" for i, c, _, _, (x, y, bw, bh) in tests))
    theirs = WSOLImageDataset(cub / "images", meta_dir, img_size=20)
    ours = create_dataset(f"cub:{cub}", img_size=20).val
    assert len(ours) == len(theirs)
    for k in range(len(ours)):
        np.testing.assert_array_equal(ours.localization(k)["boxes"], theirs.localization(k)["boxes"])
        assert ours[k][1] == theirs[k][1]
    assert resize_box((2, 3, 12, 15), (24, 18), (20, 20)) == tuple(ours.localization(0)["boxes"][0])


def test_cub_sizes_subsets_keep_localization(cub):
    data = create_dataset(f"cub:{cub}", img_size=16, train_size=2, val_size=2, seed=3)
    assert len(data.train) == 2 and len(data.val) == 2
    assert data.val.localization(1)["boxes"].shape == (1, 4)
    again = create_dataset(f"cub:{cub}", img_size=16, train_size=2, val_size=2, seed=3)
    assert again.val.meta.image_ids == data.val.meta.image_ids
    assert len(data.val.samples) == 2 and data.val.samples[0][0].endswith(".jpg")


@pytest.mark.parametrize("file", ["images.txt", "image_class_labels.txt", "train_test_split.txt",
                                  "bounding_boxes.txt", "classes.txt"])
def test_cub_missing_file_is_named(cub, file):
    (cub / file).unlink()
    with pytest.raises(DataError, match=str(cub / file) if file != "images.txt" else "images.txt not found"):
        create_dataset(f"cub:{cub}", img_size=16)


@pytest.mark.parametrize("file,line,match", [
    ("bounding_boxes.txt", "3 4.0 2.0 16.0\n", r"line 3: expected '<image_id> <x> <y> <width> <height>'"),
    ("bounding_boxes.txt", "3 4.0 2.0 0 8.0\n", "image id 3 has a box of width 0"),
    ("image_class_labels.txt", "3 two\n", r"line 3: expected '<image_id> <class_id>'"),
    ("image_class_labels.txt", "3 9\n", "image id 3 has class 9, outside 1..3"),
    ("train_test_split.txt", "3 2\n", "image id 3 has 2; expected 1 \\(train\\) or 0 \\(test\\)"),
    ("images.txt", "3\n", r"line 3: expected '<image_id> <image_name>'"),
])
def test_cub_malformed_line_is_named_with_file_and_line(cub, file, line, match):
    lines = (cub / file).read_text().splitlines(keepends=True)
    lines[2] = line
    (cub / file).write_text("".join(lines))
    with pytest.raises(DataError, match=match) as err:
        create_dataset(f"cub:{cub}", img_size=16)
    assert str(cub / file) in str(err.value)


def test_cub_ids_must_agree_across_files(cub):
    (cub / "bounding_boxes.txt").write_text((cub / "bounding_boxes.txt").read_text() + "99 1 1 2 2\n")
    with pytest.raises(DataError, match="bounding_boxes.txt: image id 99 is not in images.txt"):
        read_cub_metadata(cub)
    lines = (cub / "train_test_split.txt").read_text().splitlines(keepends=True)
    (cub / "train_test_split.txt").write_text("".join(lines[:-1]))
    (cub / "bounding_boxes.txt").write_text("".join((cub / "bounding_boxes.txt").read_text().splitlines(True)[:-1]))
    with pytest.raises(DataError, match="train_test_split.txt: no line for image id 8"):
        read_cub_metadata(cub)


def test_cub_missing_image_is_named(cub):
    path = cub / "images" / _name(1, 1)
    path.unlink()
    val = create_dataset(f"cub:{cub}", img_size=16).val
    with pytest.raises(DataError, match=f"cannot read image {path}"):
        val[0]
    with pytest.raises(DataError, match=f"cannot read image {path}"):
        val.localization(0)


def test_data_check_lists_an_unreadable_cub_image(cub, capsys):
    bad = cub / "images" / _name(5, 3)
    bad.write_bytes(bad.read_bytes()[:40])  # truncated JPEG
    assert main(["data", "check", f"cub:{cub}", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert bad.name in out and _name(1, 1).split("/")[1] not in out


def test_cub_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--data", f"cub:{tmp_path / 'nowhere'}", "--no-progress", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "CUB folder not found" in err and str(tmp_path / "nowhere") in err and err.count("\n") == 1
    assert main(["train", "--data", "cub", "--no-progress", "--out", str(tmp_path / "r")]) == 2
    assert "--data cub:PATH" in capsys.readouterr().err
    assert "cub" in create_dataset.__globals__["list_datasets"]()


def test_cuekit_train_takes_cub(cub, tmp_path):
    out = tmp_path / "cls"
    assert main(["train", "--model", "resnet8", "--data", f"cub:{cub}", "--img-size", "16", "--epochs", "1",
                 "--batch-size", "4", "--out", str(out), "--no-progress", "--lr-mult", "fc.*=10"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["train_samples"] == 5 and res["val_samples"] == 3 and res["num_classes"] == 3
    assert main(["eval", "--ckpt", str(out / "model.safetensors")]) == 0


def test_wsol_train_takes_cub(cub, tmp_path):
    wout = tmp_path / "wsol"
    assert main(["wsol", "train", "--data", f"cub:{cub}", "--img-size", "16", "--epochs", "1", "--batch-size", "4",
                 "--out", str(wout), "--no-progress", "--overlays", "2", "--device", "cpu", "--norm", "ivr",
                 "--lr-mult", "fc.*=10"]) == 0
    ev = json.loads((wout / "eval" / "results.json").read_text())
    assert ev["count"] == 3 and 0 <= ev["metrics"]["ivr"]["maxboxacc_v2"] <= 100
    assert json.loads((wout / "config.json").read_text())["lr_mult"] == ["fc.*=10"]


def test_scoremaps_against_cub_release_files(cub, tmp_path):
    maps = tmp_path / "maps"
    tests = [img for img in IMAGES if img[2] == 0]
    for i, c, _, (w, h), (x, y, bw, bh) in tests:  # a perfect map: 1 inside the box at 24 x 24, 0 outside
        m = np.zeros((24, 24))
        x0, y0, x1, y1 = resize_box((x, y, x + bw, y + bh), (w, h), (24, 24))
        m[y0:y1 + 1, x0:x1 + 1] = 1.0
        (maps / _name(i, c)).parent.mkdir(parents=True, exist_ok=True)
        np.save(maps / (_name(i, c) + ".npy"), m)
    out = tmp_path / "ev"
    assert main(["wsol", "eval", "--scoremaps", str(maps), "--metadata", f"cub:{cub}", "--out", str(out),
                 "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["metrics"]["maxboxacc_v2"] == 100.0


# --- OpenImages30k (wsolevaluation layout, masks for PxAP) ------------------------------------------------------------

def write_openimages(root):
    """ROOT/dataset/OpenImages/{train,test}/<class>/<img>.jpg, masks beside them, ROOT/metadata/OpenImages/."""
    images = root / "dataset" / "OpenImages"
    rng = np.random.default_rng(1)
    lines = {"train": [], "test": []}
    for split, n in (("train", 4), ("test", 2)):
        for k in range(n):
            cls = k % 2
            rel = f"{split}/c{cls}/img{k}.jpg"
            (images / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((rng.random((20, 28, 3)) * 255).astype(np.uint8)).save(images / rel)
            lines[split].append((rel, cls))
    # test masks (20 x 28 px): image 0 has two instances and an ignore box, image 1 one instance
    masks = images / "test" / "masks"
    masks.mkdir(parents=True)
    a, b, ign, c = (np.zeros((20, 28), np.uint8) for _ in range(4))
    a[2:8, 2:10] = 255
    b[12:18, 16:26] = 255
    ign[0:10, 0:14] = 255
    c[5:15, 5:20] = 255
    for name, arr in (("a.png", a), ("b.png", b), ("ign.png", ign), ("c.png", c)):
        Image.fromarray(arr).save(masks / name)
    meta = root / "metadata" / "OpenImages"
    for split in ("train", "test"):
        d = meta / split
        d.mkdir(parents=True)
        (d / "image_ids.txt").write_text("".join(f"{r}\n" for r, _ in lines[split]))
        (d / "class_labels.txt").write_text("".join(f"{r},{c}\n" for r, c in lines[split]))
    t0, t1 = lines["test"][0][0], lines["test"][1][0]
    (meta / "test" / "localization.txt").write_text(
        f"{t0},test/masks/a.png,test/masks/ign.png\n{t0},test/masks/b.png,\n{t1},test/masks/c.png,\n")
    return root


def test_openimages_counts_labels_and_masks(tmp_path):
    root = write_openimages(tmp_path)
    data = create_dataset(f"openimages:{root}", img_size=28)
    assert len(data.train) == 4 and len(data.val) == 2 and data.num_classes == 2
    assert [data.val[i][1] for i in range(2)] == [0, 1] and data.val[0][0].shape == (3, 28, 28)
    loc = data.val.localization(0)
    assert loc["boxes"] is None and loc["mask"].shape == (28, 28)
    mask = loc["mask"]
    rows, cols = (np.arange(28) * 20 / 28).astype(int), np.arange(28)  # 20 rows resized to 28 (nearest)
    a = np.zeros((20, 28), bool)
    a[2:8, 2:10] = True
    a[12:18, 16:26] = True
    ign = np.zeros((20, 28), bool)
    ign[0:10, 0:14] = True
    want = np.where(a, 1, np.where(ign, 255, 0))[rows][:, cols]
    np.testing.assert_array_equal(mask, want)
    assert set(np.unique(data.val.localization(1)["mask"])) == {0, 1}


def test_openimages_pxap_through_wsol_train(tmp_path):
    root = write_openimages(tmp_path)
    out = tmp_path / "run"
    assert main(["wsol", "train", "--data", f"openimages:{root}", "--img-size", "16", "--epochs", "1",
                 "--batch-size", "2", "--out", str(out), "--no-progress", "--overlays", "0", "--device", "cpu",
                 "--norm", "minmax"]) == 0
    pxap = json.loads((out / "eval" / "results.json").read_text())["metrics"]["minmax"]["pxap"]
    assert 0 <= pxap <= 100


def test_openimages_errors_name_the_file(tmp_path, capsys):
    with pytest.raises(DataError, match="dataset/OpenImages not found"):
        create_dataset(f"openimages:{tmp_path}")
    (tmp_path / "dataset" / "OpenImages").mkdir(parents=True)
    with pytest.raises(DataError, match="metadata/OpenImages/train not found"):
        create_dataset(f"openimages:{tmp_path}")
    root = write_openimages(tmp_path / "oi")
    (root / "dataset" / "OpenImages" / "test" / "masks" / "b.png").unlink()
    data = create_dataset(f"openimages:{root}", img_size=16)
    with pytest.raises(DataError, match="cannot read mask .*test/masks/b.png"):
        data.val.localization(0)
    (root / "metadata" / "OpenImages" / "test" / "class_labels.txt").unlink()
    with pytest.raises(DataError, match="metadata file not found: .*test/class_labels.txt"):
        create_dataset(f"openimages:{root}")
    with pytest.raises(UsageError, match="openimages:ROOT"):
        create_dataset("openimages")
    assert read_wsol_metadata(root / "metadata" / "OpenImages" / "train").has_masks is False
