"""`cuekit relabel generate` end to end on built-in data and on an image folder; train with the maps."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cuekit.cli import main
from cuekit.models import create_model
from cuekit.relabel.storage import LabelMapStore
from cuekit.train.checkpoint import save_weights


@pytest.fixture()
def teacher_ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=5, in_chans=3)
    path = tmp_path / "teacher.safetensors"
    save_weights(path, model, {"model": "resnet8", "num_classes": 5, "in_chans": 3, "img_size": 32,
                               "mean": [0.0] * 3, "std": [1.0] * 3})
    return path


def test_generate_on_builtin_data_then_show(tmp_path, teacher_ckpt, capsys):
    out = tmp_path / "maps"
    rc = main(["relabel", "generate", "--teacher", str(teacher_ckpt), "--data", "multi-shapes", "--train-size",
               "24", "--img-size", "16", "--out", str(out), "--map-size", "4", "--topk", "3", "--shard-size", "10",
               "--no-progress"])
    assert rc == 0
    store = LabelMapStore(out)
    assert store.complete and len(store) == 24 and store.map_size == (4, 4) and store.topk == 3
    assert len(list(out.glob("shard-*.safetensors"))) == 3
    assert json.loads((out / "results.json").read_text())["images"] == 24
    assert main(["relabel", "show", str(out), "--image", "3"]) == 0
    assert "bytes_per_image" in capsys.readouterr().out


def test_generate_on_an_image_folder_names_images_by_path(tmp_path, teacher_ckpt):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ["a", "b", "c", "d", "e"]:
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / "x.png")
    out = tmp_path / "maps"
    assert main(["relabel", "generate", "--teacher", str(teacher_ckpt), "--data", str(tmp_path / "imgs"),
                 "--out", str(out), "--map-size", "2", "--topk", "2", "--no-progress"]) == 0
    store = LabelMapStore(out)
    assert store.images == [f"{c}/x.png" for c in "abcde"]
    scores, ids = store.get("c/x.png")
    assert scores.shape == ids.shape == (2, 2, 2)


def test_unknown_teacher_is_a_usage_error(tmp_path, capsys):
    assert main(["relabel", "generate", "--teacher", "resnet_nope", "--out", str(tmp_path / "m")]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_train_with_relabel_maps_through_the_train_command(tmp_path, teacher_ckpt):
    maps = tmp_path / "maps"
    common = ["--data", "multi-shapes", "--train-size", "64", "--img-size", "16", "--seed", "0"]
    assert main(["relabel", "generate", "--teacher", str(teacher_ckpt), *common, "--out", str(maps),
                 "--map-size", "4", "--topk", "3", "--no-progress"]) == 0
    run = tmp_path / "run"
    assert main(["train", "--model", "resnet8", *common, "--val-size", "16", "--epochs", "1", "--batch-size", "16",
                 "--relabel", str(maps), "--out", str(run), "--no-progress"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed" and results["train_samples"] == 64
    # maps for other classes than the data's are refused with one clear message
    assert main(["train", "--model", "resnet8", "--data", "dsprites", "--task", "color", "--train-size", "64",
                 "--img-size", "16", "--epochs", "1", "--batch-size", "16", "--relabel", str(maps),
                 "--out", str(tmp_path / "bad"), "--no-progress"]) == 2
