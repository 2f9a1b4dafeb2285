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
