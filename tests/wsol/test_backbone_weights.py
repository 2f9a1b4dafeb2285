"""`cuekit wsol train --backbone-weights`: an ImageNet classifier's backbone (torchvision ResNet names) or a CAM
model's own features start the CAM network; the classifier head starts fresh."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from cuekit.cli import main
from cuekit.errors import CheckpointError
from cuekit.models import create_model
from cuekit.wsol.pipeline import WSOLTrainConfig, load_backbone_file, train_cam
from shared_helpers import one_torch_thread  # noqa: F401  (autouse fixture)


def _resnet18_file(tmp_path, seed: int = 3):
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in create_model("resnet18", num_classes=1000).state_dict().items()}
    path = tmp_path / "resnet18.safetensors"
    save_file(state, str(path))
    return path, state


def test_torchvision_resnet_names_map_onto_every_backbone_tensor(tmp_path):
    path, state = _resnet18_file(tmp_path)
    cam = create_model("cam_resnet18", num_classes=4)
    load_backbone_file(cam, path)
    loaded = cam.state_dict()
    for k in loaded:
        if k.startswith("features."):
            source = k.removeprefix("features.").removeprefix("stem.")
            assert torch.equal(loaded[k], state[source]), k


def test_a_cam_checkpoint_starts_the_backbone_too(tmp_path):
    torch.manual_seed(5)
    donor = create_model("cam_resnet18", num_classes=3)
    path = tmp_path / "cam.safetensors"
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, str(path))
    cam = create_model("cam_resnet18", num_classes=7)
    load_backbone_file(cam, path)
    key = "features.layer4.1.conv2.weight"
    assert torch.equal(cam.state_dict()[key], donor.state_dict()[key])


def test_training_starts_from_the_file(tmp_path):
    path, state = _resnet18_file(tmp_path)
    # the backbone frozen (learning rate x0, no decay): its convolutions keep exactly the loaded weights
    cfg = WSOLTrainConfig(model="cam_resnet18", data="shapes-loc", epochs=1, batch_size=8, weight_decay=0.0,
                          img_size=32, train_size=16, val_size=8, backbone_weights=str(path), progress=False,
                          device="cpu", lr_mult=["features.*=0"])
    result, data = train_cam(cfg)
    trained = result.model.state_dict()
    assert torch.equal(trained["features.layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert torch.equal(trained["features.stem.conv1.weight"], state["conv1.weight"])
    assert trained["fc.weight"].shape[0] == data.num_classes  # the head is the CAM model's own, not the file's
    scratch = train_cam(WSOLTrainConfig(**{**cfg.__dict__, "backbone_weights": None}))[0].model.state_dict()
    assert not torch.equal(scratch["features.stem.conv1.weight"], state["conv1.weight"])


def test_a_backbone_of_another_architecture_is_refused(tmp_path):
    path, _ = _resnet18_file(tmp_path)
    cfg = WSOLTrainConfig(model="cam_resnet50", data="shapes-loc", epochs=1, batch_size=8, img_size=32, train_size=8,
                          val_size=8, backbone_weights=str(path), progress=False, device="cpu")
    with pytest.raises(CheckpointError, match="backbone weights|do not fit"):
        train_cam(cfg)


def test_a_file_without_backbone_tensors_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "other.safetensors"
    save_file({"head.weight": torch.zeros(2, 2)}, str(path))
    code = main(["wsol", "train", "--model", "cam_resnet18", "--backbone-weights", str(path), "--img-size", "32",
                 "--train-size", "8", "--val-size", "4", "--epochs", "1", "--no-eval", "--no-progress",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "no backbone weights recognised" in err and "Traceback" not in err
