"""CIFAR-10-C / CIFAR-100-C / ImageNet-C readers on tiny copies in the releases' exact on-disk formats."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from corrupted_set_helpers import (
    WNIDS,
    cifar_c_arrays,
    imagenet_c_colour,
    write_cifar_c,
    write_imagenet_c,
)
from cuekit.cli import main
from cuekit.data import create_dataset
from cuekit.data.corrupted_sets import is_corrupted_spec, open_corrupted_sets
from cuekit.data.registry import check_training_data
from cuekit.errors import DataError, UnknownChoiceError, UsageError

# ---- CIFAR-10-C / CIFAR-100-C ----


@pytest.mark.parametrize("classes", [10, 100])
def test_cifar_c_counts_labels_and_severity_major_order(tmp_path, classes):
    labels = write_cifar_c(tmp_path, ("fog", "contrast", "speckle_noise"), n=4, classes=classes, seed=3)
    sets = open_corrupted_sets(f"cifar{classes}-c:{tmp_path}")
    assert sets.available == ["fog", "contrast", "speckle_noise"]  # CORRUPTIONS order, extras included
    assert sets.num_classes == classes
    sets.check(["fog", "contrast"], [1, 2, 3, 4, 5])
    for c in ("fog", "contrast"):
        for s in range(1, 6):
            assert sets.count(c, s) == 4
            batches = list(sets.batches(c, s, batch_size=3))
            assert [len(y) for _, y in batches] == [3, 1]
            x = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            assert x.dtype == torch.uint8 and x.shape == (4, 3, 32, 32) and y.dtype == torch.int64
            # pixel (0, 0) = (label, severity, index within the severity): the right rows and labels
            assert x[:, 0, 0, 0].tolist() == labels.tolist() == y.tolist()
            assert x[:, 1, 0, 0].tolist() == [s] * 4
            assert x[:, 2, 0, 0].tolist() == [0, 1, 2, 3]
    assert sets.count("fog", 2, limit=2) == 2
    only = torch.cat([b[0] for b in sets.batches("fog", 5, batch_size=8, limit=2)])
    assert only[:, 2, 0, 0].tolist() == [0, 1] and only[:, 1, 0, 0].tolist() == [5, 5]


def test_cifar_c_as_a_dataset_is_evaluation_only(tmp_path):
    labels = write_cifar_c(tmp_path, ("fog", "contrast"), n=3)
    b = create_dataset(f"cifar10-c:{tmp_path}")
    assert b.num_classes == 10 and len(b.val) == len(b.train) == 2 * 5 * 3 and b.img_size == 32
    ds = b.val.dataset
    assert [ds.where(i) for i in (0, 3, 14, 15, 29)] == [("fog", 1), ("fog", 2), ("fog", 5), ("contrast", 1),
                                                         ("contrast", 5)]
    assert [ds[i][1] for i in range(30)] == labels.tolist() * 10
    x, _ = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    with pytest.raises(UsageError, match="evaluation-only"):
        check_training_data(b)
    assert is_corrupted_spec(f"cifar100-c:{tmp_path}") and not is_corrupted_spec("cifar100:x")


def _expect(spec: str, match: str, corruptions=("fog",), severities=(1, 2, 3, 4, 5)):
    with pytest.raises(DataError, match=match) as err:
        open_corrupted_sets(spec).check(list(corruptions), list(severities))
    return str(err.value)


def test_cifar_c_missing_labels_and_missing_files_name_the_file(tmp_path):
    write_cifar_c(tmp_path, ("fog",))
    (tmp_path / "labels.npy").unlink()
    msg = _expect(f"cifar10-c:{tmp_path}", "labels.npy is missing")
    assert str(tmp_path / "labels.npy") in msg
    write_cifar_c(tmp_path, ("fog",))
    msg = _expect(f"cifar10-c:{tmp_path}", "is missing", corruptions=("fog", "snow"))
    assert str(tmp_path / "snow.npy") in msg and "found: fog" in msg
    with pytest.raises(DataError, match="not found"):
        open_corrupted_sets(f"cifar10-c:{tmp_path / 'nope'}")
    empty = tmp_path / "empty"
    empty.mkdir()
    np.save(empty / "labels.npy", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match="no <corruption>.npy"):
        open_corrupted_sets(f"cifar10-c:{empty}")
    with pytest.raises(UsageError, match="local folder"):
        open_corrupted_sets("cifar10-c:")
    with pytest.raises(UnknownChoiceError, match="cifar10-c"):
        open_corrupted_sets(f"cifar10c:{tmp_path}")


@pytest.mark.parametrize("bad, match", [
    (np.zeros((20, 32, 32), np.uint8), r"shape \(20, 32, 32\) is not \(N, 32, 32, 3\)"),
    (np.zeros((20, 3, 32, 32), np.uint8), r"shape \(20, 3, 32, 32\) is not"),
    (np.zeros((20, 28, 28, 3), np.uint8), r"shape \(20, 28, 28, 3\) is not"),
    (np.zeros((20, 32, 32, 3), np.float32), "dtype float32, expected uint8"),
    (np.zeros((15, 32, 32, 3), np.uint8), "holds 15 images but .*labels.npy has 20 labels"),
])
def test_cifar_c_malformed_corruption_file_names_the_file(tmp_path, bad, match):
    write_cifar_c(tmp_path, ("fog",), n=4)
    np.save(tmp_path / "fog.npy", bad)
    assert str(tmp_path / "fog.npy") in _expect(f"cifar10-c:{tmp_path}", match)


def test_cifar_c_unreadable_and_truncated_files_name_the_file(tmp_path):
    write_cifar_c(tmp_path, ("fog", "contrast"), n=4)
    (tmp_path / "fog.npy").write_bytes(b"not a numpy file at all")
    assert str(tmp_path / "fog.npy") in _expect(f"cifar10-c:{tmp_path}", "not a readable .npy array")
    raw = (tmp_path / "contrast.npy").read_bytes()
    (tmp_path / "contrast.npy").write_bytes(raw[: len(raw) // 2])  # cut off mid-download
    assert str(tmp_path / "contrast.npy") in _expect(f"cifar10-c:{tmp_path}", "not a readable",
                                                     corruptions=("contrast",))
    np.save(tmp_path / "labels.npy", np.array([{"a": 1}] * 20, dtype=object))  # a pickle: never loaded
    with pytest.raises(DataError, match="labels.npy: not a readable"):
        open_corrupted_sets(f"cifar10-c:{tmp_path}")


@pytest.mark.parametrize("labels, match", [
    (np.zeros(19, np.uint8), "19 labels is not 5 severities"),
    (np.zeros((5, 4), np.uint8), "1-D integer array"),
    (np.zeros(20, np.float32), "1-D integer array"),
    (np.full(20, 10, np.uint8), r"labels span 10..10, outside 0..9"),
    (np.r_[np.zeros(16, np.uint8), np.ones(4, np.uint8)], "severity 5 differ from those of severity 1"),
])
def test_cifar_c_malformed_labels_name_the_file(tmp_path, labels, match):
    write_cifar_c(tmp_path, ("fog",), n=4)
    np.save(tmp_path / "labels.npy", labels)
    with pytest.raises(DataError, match=match) as err:
        open_corrupted_sets(f"cifar10-c:{tmp_path}")
    assert str(tmp_path / "labels.npy") in str(err.value)


def test_cifar_c_labels_count_mismatch_names_both_files(tmp_path):
    write_cifar_c(tmp_path, ("fog",), n=4)
    np.save(tmp_path / "labels.npy", np.tile(np.arange(3, dtype=np.uint8), 5))  # 15 labels, 20 images
    msg = _expect(f"cifar10-c:{tmp_path}", "holds 20 images but")
    assert str(tmp_path / "fog.npy") in msg and str(tmp_path / "labels.npy") in msg and "15 labels" in msg


def test_cifar_c_unknown_corruption_file_is_refused(tmp_path):
    write_cifar_c(tmp_path, ("fog",))
    x, _ = cifar_c_arrays()
    np.save(tmp_path / "fgo.npy", x)
    with pytest.raises(DataError, match="did you mean fog") as err:
        open_corrupted_sets(f"cifar10-c:{tmp_path}")
    assert str(tmp_path / "fgo.npy") in str(err.value)
    (tmp_path / "fgo.npy").unlink()
    (tmp_path / "README.txt").write_text("other files are ignored")
    assert open_corrupted_sets(f"cifar10-c:{tmp_path}").available == ["fog"]


def test_data_commands_accept_cifar_c(tmp_path, capsys):
    write_cifar_c(tmp_path / "c", ("fog",), n=2, classes=100)
    assert main(["data", "preview", f"cifar100-c:{tmp_path / 'c'}", "--n", "4", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").is_file()
    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert "cifar10-c" in listed and "cifar100-c" in listed and "imagenet-c" in listed
    np.save(tmp_path / "c" / "fog.npy", np.zeros((10, 32, 32), np.uint8))
    assert main(["data", "check", f"cifar100-c:{tmp_path / 'c'}"]) == 2
    assert str(tmp_path / "c" / "fog.npy") in capsys.readouterr().err
    assert main(["train", "--data", f"cifar100-c:{tmp_path / 'x'}", "--no-progress"]) == 2


def test_training_on_a_corrupted_set_is_refused(tmp_path, capsys):
    write_cifar_c(tmp_path / "c", ("fog",), n=2)
    assert main(["train", "--model", "resnet8", "--data", f"cifar10-c:{tmp_path / 'c'}", "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "evaluation-only" in err and "--corrupted-data" in err


# ---- ImageNet-C ----


def test_imagenet_c_counts_labels_and_severities(tmp_path):
    write_imagenet_c(tmp_path, ("fog", "gaussian_noise"), (1, 3), WNIDS[:2], per_class=3)
    # the model's classes: all three wnids; the folders hold the first two
    sets = open_corrupted_sets(f"imagenet-c:{tmp_path}", class_names=WNIDS, img_size=24)
    assert sets.available == ["gaussian_noise", "fog"] and sets.num_classes == 3
    sets.check(["fog", "gaussian_noise"], [1, 3])
    for c in ("fog", "gaussian_noise"):
        for s in (1, 3):
            assert sets.count(c, s) == 6
            x, y = (torch.cat(t) for t in zip(*sets.batches(c, s, batch_size=4)))
            assert x.shape == (6, 3, 24, 24) and x.dtype == torch.uint8
            assert y.tolist() == [0, 0, 0, 1, 1, 1]
            for img, label in zip(x, y.tolist()):
                want = torch.tensor(imagenet_c_colour(label, s), dtype=torch.float32)
                assert torch.allclose(img.float().mean((1, 2)), want, atol=3)  # JPEG keeps a flat colour
    # labels follow the model's class order, not the folders' positions
    shifted = open_corrupted_sets(f"imagenet-c:{tmp_path}", class_names=["n00000000", *WNIDS[:2]], img_size=24)
    assert [lab for _, lab in shifted.samples("fog", 1)] == [1, 1, 1, 2, 2, 2]
    # without class names: the sorted class folders
    plain = open_corrupted_sets(f"imagenet-c:{tmp_path}")
    assert plain.count("fog", 1) == 6 and plain.class_names == list(WNIDS[:2])


def test_imagenet_c_resizes_and_crops_to_the_model_size(tmp_path):
    write_imagenet_c(tmp_path, ("fog",), (2,), WNIDS[:1], per_class=1, size=24)
    sets = open_corrupted_sets(f"imagenet-c:{tmp_path}", img_size=16)
    x, _ = next(sets.batches("fog", 2, batch_size=8))
    assert x.shape == (1, 3, 16, 16)


def test_imagenet_c_category_folders(tmp_path):
    write_imagenet_c(tmp_path / "noise", ("gaussian_noise", "shot_noise"), (1,), WNIDS[:2], per_class=1)
    write_imagenet_c(tmp_path / "weather", ("fog",), (1,), WNIDS[:2], per_class=1)
    sets = open_corrupted_sets(f"imagenet-c:{tmp_path}")
    assert sets.available == ["gaussian_noise", "shot_noise", "fog"]
    sets.check(sets.available, [1])
    assert sets.location("fog", 1) == str(tmp_path / "weather" / "fog" / "1")
    write_imagenet_c(tmp_path, ("fog",), (1,), WNIDS[:1], per_class=1)  # fog both loose and in weather/
    with pytest.raises(DataError, match="found twice"):
        open_corrupted_sets(f"imagenet-c:{tmp_path}")


def test_imagenet_c_unknown_corruption_folder_names_it(tmp_path):
    write_imagenet_c(tmp_path, ("fog",), (1,))
    (tmp_path / "fogg" / "1").mkdir(parents=True)
    with pytest.raises(DataError, match="unknown corruption folder 'fogg'") as err:
        open_corrupted_sets(f"imagenet-c:{tmp_path}")
    assert str(tmp_path / "fogg") in str(err.value) and "did you mean fog" in str(err.value)
    (tmp_path / "fogg" / "1").rmdir()
    (tmp_path / "fogg").rmdir()
    (tmp_path / "noise" / "rain").mkdir(parents=True)  # unknown corruption inside a category folder
    with pytest.raises(DataError, match="unknown corruption folder 'rain'"):
        open_corrupted_sets(f"imagenet-c:{tmp_path}")


def test_imagenet_c_empty_missing_and_bad_severity_folders_name_them(tmp_path):
    write_imagenet_c(tmp_path, ("fog",), (1, 2))
    spec = f"imagenet-c:{tmp_path}"
    (tmp_path / "fog" / "3" / WNIDS[0]).mkdir(parents=True)  # a class folder without images
    msg = _expect(spec, "empty severity folder", severities=(1, 3))
    assert str(tmp_path / "fog" / "3") in msg
    (tmp_path / "fog" / "4").mkdir()  # no class folders at all
    assert str(tmp_path / "fog" / "4") in _expect(spec, "empty severity folder", severities=(4,))
    assert str(tmp_path / "fog" / "5") in _expect(spec, "severity folder .* is missing", severities=(5,))
    assert str(tmp_path / "snow") in _expect(spec, "is missing", corruptions=("snow",), severities=(1,))
    (tmp_path / "fog" / "6").mkdir()
    assert str(tmp_path / "fog" / "6") in _expect(spec, "not a severity folder", severities=(1,))
    with pytest.raises(UsageError, match="severities"):
        open_corrupted_sets(spec).check(["fog"], [0])


def test_imagenet_c_loose_images_unknown_classes_and_bad_images(tmp_path):
    write_imagenet_c(tmp_path, ("fog",), (1,), WNIDS[:2], per_class=1)
    spec = f"imagenet-c:{tmp_path}"
    sets = open_corrupted_sets(spec, class_names=WNIDS[:1])  # the model knows only the first class
    with pytest.raises(DataError, match="not one of the 1 classes") as err:
        sets.samples("fog", 1)
    assert str(tmp_path / "fog" / "1" / WNIDS[1]) in str(err.value)
    loose = tmp_path / "fog" / "1" / "stray.JPEG"
    loose.write_bytes((tmp_path / "fog" / "1" / WNIDS[0] / "ILSVRC2012_val_00000000.JPEG").read_bytes())
    assert str(loose) in _expect(spec, "must sit in class folders", severities=(1,))
    loose.unlink()
    broken = tmp_path / "fog" / "1" / WNIDS[0] / "ILSVRC2012_val_00000000.JPEG"
    broken.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError, match="cannot read image") as err:
        list(open_corrupted_sets(spec).batches("fog", 1, batch_size=4))
    assert str(broken) in str(err.value)
    with pytest.raises(DataError, match="not found"):
        open_corrupted_sets(f"imagenet-c:{tmp_path / 'nope'}")
    with pytest.raises(DataError, match="no corruption folders"):
        (tmp_path / "empty").mkdir()
        open_corrupted_sets(f"imagenet-c:{tmp_path / 'empty'}")


def test_imagenet_c_as_a_dataset_and_data_check(tmp_path, capsys):
    write_imagenet_c(tmp_path / "c", ("fog", "snow"), (1, 2), WNIDS[:2], per_class=2)
    b = create_dataset(f"imagenet-c:{tmp_path / 'c'}", img_size=16)
    assert b.num_classes == 2 and b.class_names == list(WNIDS[:2]) and len(b.val) == 2 * 2 * 4
    assert b.val[0][0].shape == (3, 16, 16) and b.eval_only
    assert main(["data", "check", f"imagenet-c:{tmp_path / 'c'}", "--no-progress"]) == 0
    assert "checked 16 files" in capsys.readouterr().out
    broken = tmp_path / "c" / "snow" / "2" / WNIDS[1] / "ILSVRC2012_val_00000101.JPEG"
    broken.write_bytes(b"not a jpeg")
    assert main(["data", "check", f"imagenet-c:{tmp_path / 'c'}", "--no-progress"]) == 1
    assert str(broken) in capsys.readouterr().out
