"""Readers for real data: class-per-folder images and CIFAR (binary and python formats)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from cuekit.data import create_dataset
from cuekit.errors import DataError, UnknownChoiceError, UsageError
from shared_helpers import write_image_folder


def test_folder_split_and_classes(tmp_path):
    write_image_folder(tmp_path / "imgs")
    b = create_dataset(f"folder:{tmp_path / 'imgs'}", img_size=16, val_split=0.25, seed=1)
    assert b.class_names == ["circle", "square"] and b.num_classes == 2
    assert len(b.train) + len(b.val) == 24 and len(b.val) == 6
    x, y = b.train[0]
    assert x.shape == (3, 16, 16) and y in (0, 1)
    # the split is a pure function of the seed, and train / val are disjoint
    again = create_dataset(f"folder:{tmp_path / 'imgs'}", img_size=16, val_split=0.25, seed=1)
    assert list(again.val.indices) == list(b.val.indices)
    assert not set(b.train.indices) & set(b.val.indices)


def test_folder_with_train_and_val_subfolders(tmp_path):
    write_image_folder(tmp_path / "d" / "train", per_class=4)
    write_image_folder(tmp_path / "d" / "val", per_class=2)
    b = create_dataset(f"folder:{tmp_path / 'd'}", img_size=16)
    assert len(b.train) == 8 and len(b.val) == 4


def test_missing_and_empty_folders_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        create_dataset(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        create_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(UsageError):
        create_dataset("folder")
    with pytest.raises(UnknownChoiceError, match="folder"):
        create_dataset("foldr:x")


def _cifar100_binary(root, n_train=20, n_test=10):
    d = root / "cifar-100-binary"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train.bin", n_train), ("test.bin", n_test)):
        rec = np.zeros((n, 3074), dtype=np.uint8)
        rec[:, 0] = rng.integers(0, 20, n)
        rec[:, 1] = np.arange(n) % 100
        rec[:, 2:] = rng.integers(0, 256, (n, 3072))
        rec.tofile(d / name)
    (d / "fine_label_names.txt").write_text("\n".join(f"class{i}" for i in range(100)))
    return d


def test_cifar100_binary_reader(tmp_path):
    d = _cifar100_binary(tmp_path)
    b = create_dataset(f"cifar100:{tmp_path}")
    assert b.num_classes == 100 and b.class_names[3] == "class3"
    assert len(b.train) == 20 and len(b.val) == 10
    x, y = b.val[7]
    assert x.shape == (3, 32, 32) and y == 7
    # the pixels are the file's (planar R, G, B) bytes: undo the normalisation and compare
    raw = np.fromfile(d / "test.bin", dtype=np.uint8).reshape(-1, 3074)[7, 2:].reshape(3, 32, 32)
    mean, std = torch.tensor(b.mean)[:, None, None], torch.tensor(b.std)[:, None, None]
    assert torch.allclose((x * std + mean) * 255, torch.from_numpy(raw).float(), atol=0.01)


def test_cifar_truncated_file_is_a_data_error(tmp_path):
    d = _cifar100_binary(tmp_path)
    (d / "train.bin").write_bytes((d / "train.bin").read_bytes()[:-5])
    with pytest.raises(DataError, match="multiple"):
        create_dataset(f"cifar100:{tmp_path}")


def test_cifar10_python_format_and_refusal_of_foreign_pickles(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (d / name).write_bytes(pickle.dumps(batch))
    (d / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    b = create_dataset(f"cifar10:{tmp_path}")
    assert len(b.train) == 20 and b.class_names[2] == "c2" and b.val[3][1] == 3

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (d / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(DataError, match="refusing"):
        create_dataset(f"cifar10:{tmp_path}")


def test_cifar_needs_a_local_path():
    with pytest.raises(UsageError, match="never downloads"):
        create_dataset("cifar100")


def test_the_default_folder_size_is_announced_with_how_much_images_are_scaled(tmp_path, capsys):
    write_image_folder(tmp_path / "imgs", size=20)
    b = create_dataset(f"folder:{tmp_path / 'imgs'}")
    err = capsys.readouterr().err.strip()
    assert b.img_size == 224 and b.train[0][0].shape == (3, 224, 224)
    assert len(err.splitlines()) == 1 and err.startswith("cuekit: note:")
    assert "224 px, the default" in err and "20x20 px" in err and f"upscaled about {224 / 20:.1f}x" in err
    create_dataset(f"folder:{tmp_path / 'imgs'}", img_size=16)  # a size the user chose: nothing to say
    assert capsys.readouterr().err == ""


def test_the_default_video_clip_settings_are_announced(tmp_path, capsys):
    from data.test_video_folders import write_frames

    for name in ("a", "b"):
        write_frames(tmp_path / name / "clip", 3)
        write_frames(tmp_path / name / "clip2", 3)
    create_dataset(f"video-folder:{tmp_path}", frames=4)
    err = capsys.readouterr().err
    assert "112 px (--img-size)" in err and "frames (--frames)" not in err
    create_dataset(f"video-folder:{tmp_path}", frames=4, img_size=32)
    assert capsys.readouterr().err == ""


def test_a_single_class_cannot_be_trained_on(tmp_path):
    from cuekit.data.registry import check_training_data
    from cuekit.train import TrainConfig, train

    write_image_folder(tmp_path / "imgs", classes=("only",), per_class=4)
    one = create_dataset(f"folder:{tmp_path / 'imgs'}", img_size=16)  # fine to read (e.g. as OOD images)
    assert one.num_classes == 1
    with pytest.raises(DataError, match="1 class .only.: a classifier needs at least 2"):
        check_training_data(one)
    with pytest.raises(DataError, match="at least 2"):
        train(TrainConfig(model="resnet8", epochs=1, batch_size=2, progress=False), data=one)


def test_models_and_data_of_different_kinds_are_refused():
    from cuekit.data.registry import check_model_fits_data, is_video_dataset

    assert is_video_dataset("moving-shapes") and is_video_dataset("video-folder:/x")
    assert not is_video_dataset("dsprites") and not is_video_dataset("folder:/x")
    with pytest.raises(UsageError, match="video model but dsprites is image data"):
        check_model_fits_data("video_cnn_small", "dsprites")
    with pytest.raises(UsageError, match="image model but moving-shapes is video data"):
        check_model_fits_data("resnet8", "moving-shapes")
    check_model_fits_data("resnet8", "dsprites")
    check_model_fits_data("video_cnn_small", "video-folder:/x")
    check_model_fits_data(None, "moving-shapes")  # an unregistered model is not judged
