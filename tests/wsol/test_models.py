"""CAM models: shapes, the CAM formula, large feature maps, ADL, backbone weight loading."""
from __future__ import annotations

import pytest
import torch

from cuekit.models import create_model
from cuekit.models.cam import ADL, load_backbone_weights, stage_names


@pytest.mark.parametrize("name,size,small,large", [("cam_small", 32, 8, 16), ("cam_resnet18", 32, 2, 4)])
def test_feature_map_sizes_and_large_feature_map(name, size, small, large):
    x = torch.randn(2, 3, size, size)
    for lfm, side in ((False, small), (True, large)):
        m = create_model(name, num_classes=4, large_feature_map=lfm).eval()
        logits, cams = m.forward_cam(x, torch.tensor([0, 3]))
        assert logits.shape == (2, 4) and cams.shape == (2, side, side)


def test_wsolevaluation_resnet50_and_vgg16_layouts():
    # ResNet-50: layer4 stride 1 -> 14x14 at 224 px (28x28 with the large feature map); here at 64 px
    r50 = create_model("cam_resnet50", num_classes=3).eval()
    assert r50.forward_cam(torch.randn(1, 3, 32, 32))[1].shape == (1, 2, 2)
    assert r50.num_features == 2048
    vgg = create_model("cam_vgg16", num_classes=3, large_feature_map=True).eval()
    assert vgg.forward_cam(torch.randn(1, 3, 32, 32))[1].shape == (1, 4, 4)
    assert create_model("cam_vgg16", num_classes=3).eval().forward_cam(torch.randn(1, 3, 32, 32))[1].shape == (1, 2, 2)
    assert stage_names(vgg)[-1] == "conv6" and vgg.num_features == 1024


def test_cam_is_the_class_weighted_channel_mean_and_pools_to_the_logit():
    torch.manual_seed(0)
    m = create_model("cam_small", num_classes=5, width=8).eval()
    x = torch.randn(3, 3, 32, 32)
    classes = torch.tensor([4, 0, 2])
    logits, cams = m.forward_cam(x, classes)
    feats = m.feature_map(x)
    manual = torch.stack([(m.fc.weight[c][:, None, None] * f).mean(0) for c, f in zip(classes, feats)])
    torch.testing.assert_close(cams, manual)
    # GAP and the linear layer commute: mean(CAM) * C + bias = logit of that class
    rebuilt = cams.mean((1, 2)) * feats.shape[1] + m.fc.bias[classes]
    torch.testing.assert_close(rebuilt, logits[torch.arange(3), classes], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m(x), logits)
    _, cams_pred = m.forward_cam(x)
    torch.testing.assert_close(cams_pred, m.forward_cam(x, logits.argmax(1))[1])


def test_cam_resnet20_from_the_registry():
    m = create_model("cam_resnet20", num_classes=3).eval()
    assert m.forward_cam(torch.randn(2, 3, 32, 32))[1].shape == (2, 8, 8)


def test_adl_drop_mask_and_importance_map():
    x = torch.rand(2, 4, 6, 6)
    x[:, :, 2, 3] = 5.0  # the most activated location
    adl = ADL(drop_rate=1.0, gamma=0.9).train()
    out = adl(x)
    assert torch.all(out[:, :, 2, 3] == 0)                  # the peak is hidden
    assert torch.all(out[:, :, 0, 0] == x[:, :, 0, 0])      # the rest passes
    adl_imp = ADL(drop_rate=0.0).train()
    torch.testing.assert_close(adl_imp(x), x * torch.sigmoid(x.mean(1, keepdim=True)))
    assert torch.equal(ADL().eval()(x), x)                    # identity at inference


def test_adl_inserted_after_stages():
    m = create_model("cam_small", num_classes=3, adl_after=(-2, -1))
    names = list(m.features._modules)
    assert names == ["stage1", "stage2", "adl_stage2", "stage3", "adl_stage3"]
    with pytest.raises(ValueError):
        create_model("cam_small", num_classes=3, adl_after=(7,))


def test_load_backbone_weights_from_a_torchvision_checkpoint(tmp_path):
    from safetensors.torch import save_file

    src = create_model("resnet18", num_classes=1000)
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    cam = create_model("cam_resnet18", num_classes=7)
    unused = load_backbone_weights(cam, str(path))
    assert sorted(unused) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(cam.features.stem.conv1.weight, src.conv1.weight)
    torch.testing.assert_close(cam.features.layer4[1].bn2.running_var, src.layer4[1].bn2.running_var)
