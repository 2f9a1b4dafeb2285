"""The (x, y) order of label maps, checked against ground-truth boxes: on synthetic maps in the original
release's format ([2, 5, 15, 15] per image at <wnid>/<stem>.pt), where only one order agrees."""
from __future__ import annotations

import pytest
import torch

from cuekit.cli import main
from cuekit.errors import DataError
from cuekit.relabel.convention import box_order_agreement, check_box_order, check_label_maps
from cuekit.relabel.storage import LabelMapWriter, OriginalLabelMaps, open_label_maps
from cuekit.wsol.data import read_wsol_metadata
from shared_helpers import one_torch_thread  # noqa: F401  (autouse fixture)

NUM_CLASSES = 10
# Two images: (wnid folder, stem, class, image (width, height), object box in pixels (x0, y0, x1, y1)).
# The class-3 object lies top-right, the class-7 object bottom-left: with x and y swapped, each box lands on the
# other object, so only the right order finds the right class.
IMAGES = [("n0003", "n0003_1", 3, (60, 45), (40, 0, 60, 15)),
          ("n0007", "n0007_2", 7, (30, 60), (0, 40, 10, 60))]


def synthetic_map(transposed: bool = False, seed: int = 0) -> torch.Tensor:
    """A [2, 5, 15, 15] label map (scores, class ids as floats): class 3 strong in rows 0-4 x columns 10-14
    (top-right), class 7 in rows 10-14 x columns 0-4 (bottom-left), weak other classes everywhere."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(5, 15, 15, generator=g)
    ids = torch.stack([torch.randperm(NUM_CLASSES, generator=g)[:5] for _ in range(15 * 15)], 1).reshape(5, 15, 15)
    ids[ids == 3] = 0
    ids[ids == 7] = 1  # classes 3 and 7 only where placed below
    ids[0, 0:5, 10:15], scores[0, 0:5, 10:15] = 3, 8.0
    ids[0, 10:15, 0:5], scores[0, 10:15, 0:5] = 7, 8.0
    out = torch.stack([scores, ids.float()])
    return out.transpose(-1, -2).contiguous() if transposed else out


def write_release(root, transposed: bool = False):
    """The original release's layout: ROOT/<wnid>/<stem>.pt, one map per image (the same map for both)."""
    for wnid, stem, *_ in IMAGES:
        (root / wnid).mkdir(parents=True, exist_ok=True)
        torch.save(synthetic_map(transposed), root / wnid / f"{stem}.pt")
    return root


def write_gt(folder):
    """A wsolevaluation metadata split with the images' labels, sizes and boxes."""
    folder.mkdir(parents=True)
    ids = [f"train/{w}/{s}.JPEG" for w, s, *_ in IMAGES]
    (folder / "image_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    (folder / "class_labels.txt").write_text("".join(f"{i},{c}\n" for i, (_, _, c, *_) in zip(ids, IMAGES)))
    (folder / "image_sizes.txt").write_text("".join(f"{i},{w},{h}\n" for i, (*_, (w, h), _) in zip(ids, IMAGES)))
    (folder / "localization.txt").write_text("".join(f"{i},{','.join(map(str, b))}\n"
                                                     for i, (*_, b) in zip(ids, IMAGES)))
    return folder


def test_only_the_right_order_agrees_on_a_synthetic_map(tmp_path):
    maps = OriginalLabelMaps(write_release(tmp_path / "maps"), NUM_CLASSES)
    meta = read_wsol_metadata(write_gt(tmp_path / "gt"))
    report = check_label_maps(maps, meta, NUM_CLASSES)
    assert (report["xy"], report["yx"], report["order"], report["boxes"], report["images"]) == (1.0, 0.0, "xy", 2, 2)
    assert check_box_order(report) is report
    # the same maps stored transposed: only (y, x) agrees, and cuekit's reading is refused
    flipped = OriginalLabelMaps(write_release(tmp_path / "flipped", transposed=True), NUM_CLASSES)
    report = check_label_maps(flipped, meta, NUM_CLASSES)
    assert (report["xy"], report["yx"], report["order"]) == (0.0, 1.0, "yx")
    with pytest.raises(DataError, match=r"100.0% of 2 boxes read as \(y, x\) but only 0.0% read as \(x, y\)"):
        check_box_order(report)
    assert check_label_maps(flipped, meta, NUM_CLASSES, transpose=True)["order"] == "xy"


def test_a_centred_box_cannot_tell_the_orders_apart():
    scores, ids = synthetic_map()[0], synthetic_map()[1].long()
    report = box_order_agreement([(scores, ids, 3, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))], NUM_CLASSES)
    assert report["xy"] == report["yx"] and report["order"] == "tie"
    with pytest.raises(DataError, match="no ground-truth boxes"):
        box_order_agreement([], NUM_CLASSES)


def test_a_cuekit_store_is_matched_by_image_path(tmp_path):
    m = synthetic_map()
    writer = LabelMapWriter(tmp_path / "store", [f"{w}/{s}.JPEG" for w, s, *_ in IMAGES], num_classes=NUM_CLASSES,
                            topk=5, map_size=(15, 15), shard_size=2)
    writer.write_shard(0, torch.stack([m[0], m[0]]), torch.stack([m[1], m[1]]).long())
    meta = read_wsol_metadata(write_gt(tmp_path / "gt"))
    report = check_label_maps(open_label_maps(tmp_path / "store"), meta, NUM_CLASSES)
    assert report["order"] == "xy" and report["xy"] == 1.0


def test_cli_check_passes_the_right_order_and_refuses_the_wrong_one(tmp_path, capsys):
    gt = write_gt(tmp_path / "gt")
    good = write_release(tmp_path / "good")
    out = tmp_path / "out"
    assert main(["relabel", "check", str(good), "--gt", str(gt), "--num-classes", str(NUM_CLASSES),
                 "--out", str(out), "--no-progress"]) == 0
    assert "agree with the ground truth in cuekit's (x, y) order" in capsys.readouterr().out
    import json

    res = json.loads((out / "results.json").read_text())
    assert (res["xy"], res["yx"], res["order"]) == (1.0, 0.0, "xy")
    bad = write_release(tmp_path / "bad", transposed=True)
    assert main(["relabel", "check", str(bad), "--gt", str(gt), "--num-classes", str(NUM_CLASSES),
                 "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "| (y, x)" in captured.out or "(y, x)" in captured.out  # both agreements are reported first
    assert str(bad) in captured.err and "read as (y, x)" in captured.err and captured.err.count("\n") == 1
    assert main(["relabel", "check", str(bad), "--gt", str(gt), "--num-classes", str(NUM_CLASSES), "--transpose",
                 "--no-progress"]) == 0
    assert main(["relabel", "check", str(good), "--gt", str(gt), "--num-classes", "5", "--no-progress"]) == 2
    assert "class 7" in capsys.readouterr().err


def test_cli_check_names_a_missing_map_file(tmp_path, capsys):
    gt = write_gt(tmp_path / "gt")
    maps = write_release(tmp_path / "maps")
    (maps / "n0007" / "n0007_2.pt").unlink()
    assert main(["relabel", "check", str(maps), "--gt", str(gt), "--num-classes", str(NUM_CLASSES),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(maps / "n0007" / "n0007_2.pt") in err and "Traceback" not in err


class _Payload:
    """Pickles to a call of print: torch.load without weights_only would run it."""

    def __reduce__(self):
        return (print, ("UNPICKLED-AND-RAN",))


def test_a_pickled_object_in_the_release_is_never_unpickled(tmp_path, capsys):
    (tmp_path / "n0003").mkdir()
    path = tmp_path / "n0003" / "n0003_1.pt"
    torch.save({"maps": _Payload()}, path)
    torch.load(path, weights_only=False)  # the file is live: a plain unpickling runs the call
    assert "UNPICKLED-AND-RAN" in capsys.readouterr().out
    with pytest.raises(DataError, match=f"cannot read {path}"):
        OriginalLabelMaps(tmp_path, NUM_CLASSES).get("train/n0003/n0003_1.JPEG")
    assert "UNPICKLED-AND-RAN" not in capsys.readouterr().out


def test_training_can_read_transposed_maps(tmp_path):
    from PIL import Image

    from cuekit.errors import UsageError
    from cuekit.relabel.training import ReLabelTargets, relabel_training, unpack
    from cuekit.train import TrainConfig

    for c in range(NUM_CLASSES):  # one image per class (the maps' 10 classes), each with its map
        for split in ("train", "val"):
            (tmp_path / "data" / split / f"n{c:04d}").mkdir(parents=True)
            Image.new("RGB", (12, 10), (40, 80, 120)).save(tmp_path / "data" / split / f"n{c:04d}" / f"im{c}.png")
        for name, transposed in (("good", False), ("bad", True)):
            (tmp_path / name / f"n{c:04d}").mkdir(parents=True)
            torch.save(synthetic_map(transposed, seed=c), tmp_path / name / f"n{c:04d}" / f"im{c}.pt")
    cfg = TrainConfig(data=f"folder:{tmp_path / 'data'}", img_size=8)
    plain_data, plain = relabel_training(cfg, tmp_path / "good")
    fixed_data, fixed = relabel_training(cfg, tmp_path / "bad", transpose=True)
    assert fixed.map_size == plain.map_size == (15, 15) and len(plain_data.train) == NUM_CLASSES
    for i in range(NUM_CLASSES):
        a = unpack(plain_data.train[i][1][None], plain.topk, plain.map_size)
        b = unpack(fixed_data.train[i][1][None], fixed.topk, fixed.map_size)
        assert torch.equal(a[2], b[2]) and torch.equal(a[3], b[3])  # the same maps as the right-order release
    # the setting is part of a run: resuming with another one is refused, an old run (no key) resumes as off
    with pytest.raises(UsageError, match="--relabel-transpose"):
        ReLabelTargets(5, 2, (3, 3), transposed=True).load_state_dict(ReLabelTargets(5, 2, (3, 3)).state_dict())
    old = ReLabelTargets(5, 2, (3, 3)).state_dict()
    assert "transposed" not in old["settings"]
    ReLabelTargets(5, 2, (3, 3)).load_state_dict(old)
    with pytest.raises(UsageError, match="--relabel-transpose True, not False"):
        ReLabelTargets(5, 2, (3, 3)).load_state_dict(ReLabelTargets(5, 2, (3, 3), transposed=True).state_dict())
