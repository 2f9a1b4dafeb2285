"""`cuekit models list|info|convert|export` through the real entry point."""
from __future__ import annotations

import json

import pytest
import torch

from cuekit.cli import main
from cuekit.models import create_model, load_checkpoint
from cuekit.models.complexity import count_macs, count_params
from cuekit.models.pit import to_timm_keys


def test_list_with_a_pattern(capsys, tmp_path):
    assert main(["models", "list", "pit_s*", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pit_s_distilled" in out and "pit_s_nopool" in out and "pit_ti" not in out
    assert json.loads((tmp_path / "results.json").read_text())["models"] == ["pit_s", "pit_s_distilled",
                                                                             "pit_s_nopool"]


def test_info_prints_a_table_and_writes_json(capsys, tmp_path):
    assert main(["models", "info", "pit_nano", "--batch-size", "2", "--repeats", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "MACs" in out and "images/s" in out
    result = json.loads((tmp_path / "results.json").read_text())
    model = create_model("pit_nano")
    assert result["params"] == count_params(model)
    assert result["macs"] == count_macs(model, 32)
    assert result["img_size"] == 32
    assert result["throughput"]["images_per_s"] > 0


def test_info_at_another_size_counts_more_macs(capsys):
    assert main(["models", "info", "pit_nano", "--img-size", "64", "--no-throughput"]) == 0
    out = capsys.readouterr().out
    assert f"{count_macs(create_model('pit_nano'), 64) / 1e9:.3f} G" in out


def test_unknown_model_is_a_one_line_usage_error(capsys):
    assert main(["models", "info", "pit_tiny"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cuekit: error: unknown model 'pit_tiny'") and "Traceback" not in err


@pytest.mark.parametrize("key_style", ["timm", "official"])
def test_convert_then_load_weights_only(tmp_path, capsys, key_style):
    source = create_model("pit_ti", num_classes=17, img_size=256).eval()  # a fine-tuned model at 256 px
    state = source.state_dict()
    if key_style == "timm":
        state = to_timm_keys(state)
    src = tmp_path / "checkpoint.pth"
    torch.save({"model": state}, src)
    dst = tmp_path / "pit_ti.safetensors"
    assert main(["models", "convert", str(src), "--model", "pit_ti", "--to", str(dst)]) == 0
    assert "keys renamed" in capsys.readouterr().out
    meta = json.loads(dst.with_suffix(".json").read_text())
    assert meta["num_classes"] == 17 and meta["img_size"] == 256  # read from the head and the position grid
    converted = create_model("pit_ti", num_classes=17, img_size=256)
    load_checkpoint(converted, dst)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(converted.eval()(x), source(x), rtol=0, atol=0)
    from safetensors import safe_open

    with safe_open(str(dst), framework="pt") as f:
        assert "pools.0.conv.weight" in f.keys()  # our (official) names, whatever came in


def test_convert_into_the_wrong_architecture_fails_cleanly(tmp_path, capsys):
    src = tmp_path / "nano.pth"
    torch.save(create_model("pit_nano").state_dict(), src)
    assert main(["models", "convert", str(src), "--model", "pit_ti", "--to", str(tmp_path / "x.safetensors")]) == 2
    assert "does not fit pit_ti" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_export_torch_export_writes_a_loadable_program(tmp_path, capsys):
    out = tmp_path / "nano.pt2"
    assert main(["models", "export", "pit_nano", "--format", "torch-export", "--num-classes", "3",
                 "--out", str(out)]) == 0
    program = torch.export.load(str(out))
    with torch.no_grad():
        logits = program.module()(torch.randn(5, 3, 32, 32))  # dynamic batch
    assert logits.shape == (5, 3)
    assert "max |exported - eager|" in capsys.readouterr().out


def test_export_onnx(tmp_path, capsys):
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        code = main(["models", "export", "pit_nano", "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
        assert code == 2
        assert "pip install onnx onnxscript" in capsys.readouterr().err
        return
    assert main(["models", "export", "pit_nano", "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0


@pytest.mark.parametrize("name", ["resnet8", "pit_nano"])
def test_export_onnx_matches_eager_logits_in_onnxruntime(tmp_path, capsys, name):
    """`models export NAME --format onnx`, run in onnxruntime on a new batch size, gives eager PyTorch's logits
    within 1e-4 (weights from a checkpoint, so that the eager model is the same one)."""
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from cuekit.train.checkpoint import save_weights

    torch.manual_seed(0)
    model = create_model(name, num_classes=5, img_size=32).eval()
    save_weights(tmp_path / "w.safetensors", model, {"model": name, "num_classes": 5, "in_chans": 3, "img_size": 32})
    out = tmp_path / f"{name}.onnx"
    assert main(["models", "export", name, "--format", "onnx", "--checkpoint", str(tmp_path / "w.safetensors"),
                 "--out", str(out)]) == 0
    assert "not checked" not in capsys.readouterr().out
    x = torch.randn(7, 3, 32, 32)
    with torch.no_grad():
        eager = model(x).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == eager.shape == (7, 5)
    print(f"{name}: max |onnxruntime - eager| = {abs(got - eager).max():.2e}")
    assert abs(got - eager).max() < 1e-4
