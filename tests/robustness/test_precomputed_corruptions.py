"""The suite and `cuekit robustness bench|eval` on precomputed corrupted sets (CIFAR-C, ImageNet-C), CE / mCE
against a table of baseline errors (AlexNet's on ImageNet-C)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import cuekit.robustness.benchmark as benchmark
from corrupted_set_helpers import WNIDS, write_cifar_binary, write_cifar_c, write_imagenet_c
from cuekit.cli import main
from cuekit.errors import DataError, UnknownChoiceError, UsageError
from cuekit.robustness.benchmark import (
    RobustnessSuite,
    SuiteSettings,
    corruption_errors_from_table,
    load_baseline_errors,
)
from cuekit.robustness.corruptions import COMMON_CORRUPTIONS

FAST = ["--epsilons", "0", "--occlusion", "0.5", "--ood", "uniform", "--no-progress", "--device", "cpu"]


class PixelCode(nn.Module):
    """Predicts class round(255 * x[:, channel, 0, 0] / step - offset): reads the label the test wrote."""

    def __init__(self, classes: int, channel: int = 0, step: float = 1.0, offset: float = 0.0):
        super().__init__()
        self.classes, self.channel, self.step, self.offset = classes, channel, step, offset
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        v = x[:, self.channel, 0, 0] * 255 / self.step - self.offset
        k = torch.arange(self.classes, dtype=x.dtype, device=x.device)
        return -(v[:, None] - k) ** 2 + self.dummy


@pytest.fixture
def no_corruption(monkeypatch):
    """Fail the test if any corruption is generated (precomputed sets are read, never made)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a corruption was generated")

    monkeypatch.setattr(benchmark, "corrupt", refuse)


def _wrong_first(root, corruption: str, n: int, classes: int = 10):
    """Make the first s - 1 images of severity s predict the wrong class: accuracy (n - s + 1) / n."""
    x = np.load(root / f"{corruption}.npy")
    for s in range(1, 6):
        for i in range(s - 1):
            row = (s - 1) * n + i
            x[row, 0, 0, 0] = (int(x[row, 0, 0, 0]) + 1) % classes
    np.save(root / f"{corruption}.npy", x)


def _clean(n=5, classes=10):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_suite_reads_cifar_c_errors_per_corruption_and_severity(tmp_path, no_corruption):
    write_cifar_c(tmp_path, ("fog", "contrast"), n=5)
    _wrong_first(tmp_path, "fog", 5)
    images, labels = _clean()
    settings = SuiteSettings(corruptions=("fog", "contrast"), severities=(1, 2, 3, 4, 5), ood=("uniform",),
                             epsilons=(0.0,), occlusion=(0.5,), batch_size=3, corrupted_data=f"cifar10-c:{tmp_path}")
    suite = RobustnessSuite(images, labels, [0.0] * 3, [1.0] * 3, settings, num_classes=10)
    res = suite.evaluate(PixelCode(10))
    corr = res["corruption"]
    assert corr["acc"]["fog"] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert corr["error"]["fog"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert corr["acc"]["contrast"] == [1.0] * 5
    assert corr["images"] == {"fog": [5] * 5, "contrast": [5] * 5}
    assert corr["source"] == f"cifar10-c:{tmp_path}" and corr["preset"] == "precomputed"
    assert corr["mean_acc"] == pytest.approx((3.0 + 5.0) / 10)
    # the first N images of each severity block
    sub = RobustnessSuite(images, labels, [0.0] * 3, [1.0] * 3,
                          SuiteSettings(corruptions=("fog",), severities=(2, 4), ood=(), epsilons=(0.0,),
                                        occlusion=(), corruption_images=2, corrupted_data=f"cifar10-c:{tmp_path}"))
    res = sub.evaluate(PixelCode(10))
    assert res["corruption"]["images"]["fog"] == [2, 2]
    assert res["corruption"]["acc"]["fog"] == pytest.approx([0.5, 0.0])  # s=2: 1 of 2 wrong; s=4: 3 wrong


def test_suite_fits_precomputed_images_to_the_clean_size(tmp_path, no_corruption):
    write_cifar_c(tmp_path, ("fog",), n=2)
    settings = SuiteSettings(corruptions=("fog",), severities=(1,), ood=(), epsilons=(0.0,), occlusion=(),
                             corrupted_data=f"cifar10-c:{tmp_path}")
    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append(tuple(x.shape))
            return x.mean((1, 2, 3))[:, None] * torch.arange(10.0)

    RobustnessSuite(torch.rand(2, 1, 16, 16), torch.zeros(2), [0.0], [1.0], settings).evaluate(Spy())
    assert (2, 1, 16, 16) in seen and all(s[1:] == (1, 16, 16) for s in seen)


def test_suite_reads_imagenet_c_by_class_name(tmp_path, no_corruption):
    write_imagenet_c(tmp_path, ("fog", "snow"), (1, 2), WNIDS[:2], per_class=2, size=24)
    # severity 2 of snow: class 0's images carry class 1's colour -> half wrong
    import shutil

    bad = tmp_path / "snow" / "2" / WNIDS[0]
    for f in bad.iterdir():
        shutil.copy(next((tmp_path / "snow" / "2" / WNIDS[1]).iterdir()), f)
    settings = SuiteSettings(corruptions=("fog", "snow"), severities=(1, 2), ood=(), epsilons=(0.0,), occlusion=(),
                             batch_size=3, corrupted_data=f"imagenet-c:{tmp_path}")
    suite = RobustnessSuite(torch.rand(4, 3, 24, 24), torch.zeros(4), [0.0] * 3, [1.0] * 3, settings,
                            class_names=list(WNIDS[:2]), num_classes=2)
    res = suite.evaluate(PixelCode(2, step=40, offset=0.5))  # red = 40 * label + 20
    assert res["corruption"]["acc"] == {"fog": [1.0, 1.0], "snow": [1.0, 0.5]}
    assert res["corruption"]["images"] == {"fog": [4, 4], "snow": [4, 4]}


def test_suite_checks_precomputed_sets_before_any_work(tmp_path, no_corruption):
    write_cifar_c(tmp_path, ("fog",), n=2)
    base = dict(severities=(1,), ood=(), epsilons=(0.0,), occlusion=())
    with pytest.raises(DataError, match="snow.npy is missing"):
        RobustnessSuite(torch.rand(2, 3, 32, 32), torch.zeros(2), [0.0] * 3, [1.0] * 3,
                        SuiteSettings(corruptions=("snow",), corrupted_data=f"cifar10-c:{tmp_path}", **base))
    with pytest.raises(DataError, match="has 10 classes but the model predicts 100"):
        RobustnessSuite(torch.rand(2, 3, 32, 32), torch.zeros(2), [0.0] * 3, [1.0] * 3,
                        SuiteSettings(corruptions=("fog",), corrupted_data=f"cifar10-c:{tmp_path}", **base),
                        num_classes=100)


# ---- CE / mCE against a table of baseline errors ----


def _result(clean_acc: float, accs: dict[str, list[float]], severities=(1, 2, 3, 4, 5)) -> dict:
    return {"clean": {"acc": clean_acc}, "corruption": {"acc": accs, "severities": list(severities)}}


def test_alexnet_table_and_ce_by_hand():
    table = load_baseline_errors("alexnet")
    assert set(table["errors"]) == set(COMMON_CORRUPTIONS) and table["clean"] is None
    assert table["errors"]["gaussian_noise"] == 0.886428 and table["errors"]["jpeg_compression"] == 0.6065
    accs = {c: [0.5] * 5 for c in COMMON_CORRUPTIONS}
    accs["fog"] = [0.9, 0.8, 0.7, 0.6, 0.5]  # mean error 0.3
    out = corruption_errors_from_table({"m": _result(0.76, accs)}, table)["m"]
    assert out["ce"]["fog"] == pytest.approx(0.3 / 0.819324)
    assert out["ce"]["brightness"] == pytest.approx(0.5 / 0.564592)
    assert out["mce"] == pytest.approx(sum(out["ce"].values()) / 15)
    assert "relative_mce" not in out  # AlexNet's clean error is not in the table
    with pytest.raises(UsageError, match="severities 1-5"):
        corruption_errors_from_table({"m": _result(0.7, {"fog": [0.5, 0.5]}, (1, 2))}, table)
    with pytest.raises(UsageError, match="no 'spatter'"):
        corruption_errors_from_table({"m": _result(0.7, {"spatter": [0.5] * 5})}, table)


def test_baseline_error_file_per_severity_with_clean(tmp_path):
    f = tmp_path / "base.json"
    f.write_text(json.dumps({"errors": {"fog": [0.2, 0.3, 0.4, 0.5, 0.6], "snow": 0.5}, "clean": 0.1}))
    table = load_baseline_errors(str(f))
    res = _result(0.9, {"fog": [0.9, 0.8]}, (2, 4))  # errors 0.1, 0.2 against the base's 0.3, 0.5
    out = corruption_errors_from_table({"m": res}, table)["m"]
    assert out["ce"]["fog"] == pytest.approx(0.3 / 0.8)
    assert out["relative_ce"]["fog"] == pytest.approx((0.0 + 0.1) / (0.2 + 0.4))
    assert out["relative_mce"] == pytest.approx(out["relative_ce"]["fog"])
    for bad, match in [("[1, 2]", "JSON object"), ('{"fog": 81.9}', r"error in \[0, 1\]"),
                       ('{"fog": [0.1, 0.2]}', "list of 5"), ('{"errors": {}}', "no corruption errors"),
                       ('{"fog": 0.5, "clean": 2}', "clean"), ("{nope", "not readable JSON")]:
        f.write_text(bad)
        with pytest.raises(DataError, match=match):
            load_baseline_errors(str(f))
    f.write_text('{"rain": 0.5}')
    with pytest.raises(UnknownChoiceError, match="rain"):
        load_baseline_errors(str(f))
    with pytest.raises(DataError, match="not found"):
        load_baseline_errors(str(tmp_path / "missing.json"))


# ---- the commands ----


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    """A tiny CIFAR-10 copy, its CIFAR-10-C (fog, contrast; 4 test images) and a checkpoint trained on it."""
    root = tmp_path_factory.mktemp("cifar")
    labels = write_cifar_c(root / "c10c", ("fog", "contrast"), n=4)
    write_cifar_binary(root / "c10", labels, classes=10, n_train=20)
    assert main(["train", "--model", "resnet8", "--data", f"cifar10:{root / 'c10'}", "--epochs", "1",
                 "--batch-size", "8", "--out", str(root / "run"), "--no-progress", "--device", "cpu"]) == 0
    return root


def test_eval_on_cifar_c_reports_errors_per_corruption_and_severity(cifar_run, tmp_path, capsys):
    ckpt = str(cifar_run / "run" / "model.safetensors")
    out = tmp_path / "eval"
    assert main(["robustness", "eval", "--ckpt", ckpt, "--baseline-ckpt", ckpt, "--data",
                 f"cifar10:{cifar_run / 'c10'}", "--corrupted-data", f"cifar10-c:{cifar_run / 'c10c'}",
                 "--corruptions", "available", "--out", str(out), *FAST]) == 0
    res = json.loads((out / "results.json").read_text())
    corr = res["models"]["model"]["corruption"]
    assert corr["source"] == f"cifar10-c:{cifar_run / 'c10c'}" and list(corr["acc"]) == ["fog", "contrast"]
    assert corr["images"] == {"fog": [4] * 5, "contrast": [4] * 5}
    assert res["mce"]["model"]["mce"] == pytest.approx(1.0)  # against itself
    text = (out / "results.txt").read_text()
    assert "Corruption error per severity" in text and "err s5" in text and "OOD detection" in text
    assert text.strip() in capsys.readouterr().out


def test_bench_on_cifar_c(cifar_run, tmp_path, no_corruption):
    out = tmp_path / "bench"
    assert main(["robustness", "bench", "--data", f"cifar10:{cifar_run / 'c10'}", "--corrupted-data",
                 f"cifar10-c:{cifar_run / 'c10c'}", "--corruptions", "fog", "--severities", "1,5", "--regularizers",
                 "none,ls", "--epochs", "1", "--train-size", "20", "--val-size", "4", "--batch-size", "8",
                 "--out", str(out), "--ood-scores", "msp,energy", *FAST]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["corrupted_data"] == f"cifar10-c:{cifar_run / 'c10c'}"
    for name in ("none", "ls"):
        assert res["models"][name]["corruption"]["images"] == {"fog": [4, 4]}
        assert set(res["models"][name]["ood_scores"]) == {"msp", "energy"}


def test_eval_refuses_bad_corrupted_data_before_any_work(cifar_run, tmp_path, capsys, no_corruption):
    ckpt = str(cifar_run / "run" / "model.safetensors")
    broken = tmp_path / "broken"
    write_cifar_c(broken, ("fog",), n=4)
    (broken / "labels.npy").unlink()
    # the checkpoint does not exist either: the data is checked first
    assert main(["robustness", "eval", "--ckpt", str(tmp_path / "x.safetensors"), "--corrupted-data",
                 f"cifar10-c:{broken}", "--corruptions", "fog", *FAST]) == 2
    assert str(broken / "labels.npy") in capsys.readouterr().err
    assert main(["robustness", "eval", "--ckpt", ckpt, "--data", f"cifar10-c:{cifar_run / 'c10c'}", *FAST]) == 2
    assert "--corrupted-data" in capsys.readouterr().err
    assert main(["robustness", "eval", "--ckpt", ckpt, "--corrupted-data", f"cifar10c:{broken}", *FAST]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["robustness", "bench", "--corruptions", "available", *FAST]) == 2
    assert "--corrupted-data" in capsys.readouterr().err
    # default corruptions: the 15 common ones, which the tiny copy lacks
    assert main(["robustness", "eval", "--ckpt", ckpt, "--data", f"cifar10:{cifar_run / 'c10'}",
                 "--corrupted-data", f"cifar10-c:{cifar_run / 'c10c'}", *FAST]) == 2
    assert "gaussian_noise.npy is missing" in capsys.readouterr().err
    # a CIFAR-100-C set for a 10-class model
    c100 = tmp_path / "c100c"
    write_cifar_c(c100, ("fog",), n=4, classes=100)
    assert main(["robustness", "eval", "--ckpt", ckpt, "--data", f"cifar10:{cifar_run / 'c10'}",
                 "--corrupted-data", f"cifar100-c:{c100}", "--corruptions", "fog", *FAST]) == 2
    assert "has 100 classes but the model predicts 10" in capsys.readouterr().err


def test_eval_baseline_errors_flags(cifar_run, tmp_path, capsys, no_corruption):
    ckpt = str(cifar_run / "run" / "model.safetensors")
    common = ["--data", f"cifar10:{cifar_run / 'c10'}", "--corrupted-data", f"cifar10-c:{cifar_run / 'c10c'}",
              "--corruptions", "fog,contrast", *FAST]
    assert main(["robustness", "eval", "--ckpt", ckpt, "--baseline-ckpt", ckpt, "--baseline-errors", "alexnet",
                 *common]) == 2
    assert "one mCE reference" in capsys.readouterr().err
    table = tmp_path / "errors.json"
    table.write_text(json.dumps({"errors": {"fog": 0.5}}))
    assert main(["robustness", "eval", "--ckpt", ckpt, "--baseline-errors", str(table), *common]) == 2
    assert "no 'contrast'" in capsys.readouterr().err
    table.write_text(json.dumps({"errors": {"fog": 0.5, "contrast": [0.4] * 5}, "clean": 0.2}))
    out = tmp_path / "ev"
    assert main(["robustness", "eval", "--ckpt", ckpt, "--baseline-errors", str(table), "--out", str(out),
                 *common]) == 0
    res = json.loads((out / "results.json").read_text())
    model = res["models"]["model"]
    fog_err = sum(model["corruption"]["error"]["fog"]) / 5
    assert res["mce"]["model"]["ce"]["fog"] == pytest.approx(fog_err / 0.5)
    assert not math.isnan(res["mce"]["model"]["relative_mce"])
