"""The benchmark suite, mCE, `cuekit robustness bench|eval` and the reproduce entry, at toy scale."""
from __future__ import annotations

import json
import math

import pytest
import torch

from cuekit.cli import main
from cuekit.robustness.benchmark import RobustnessSuite, SmallConvNet, SuiteSettings, corruption_errors


def _fake_result(clean: float, accs: dict[str, list[float]]) -> dict:
    return {"clean": {"acc": clean}, "corruption": {"acc": accs}}


def test_mce_is_relative_to_the_baseline():
    base = _fake_result(0.9, {"fog": [0.8, 0.6], "snow": [0.7, 0.5]})
    other = _fake_result(0.8, {"fog": [0.7, 0.7], "snow": [0.8, 0.6]})
    out = corruption_errors({"base": base, "other": other}, "base")
    assert out["base"]["mce"] == pytest.approx(1.0) and out["base"]["relative_mce"] == pytest.approx(1.0)
    # fog: errors (.3 + .3) / (.2 + .4) = 1; snow: (.2 + .4) / (.3 + .5) = .75
    assert out["other"]["ce"] == pytest.approx({"fog": 1.0, "snow": 0.75})
    assert out["other"]["mce"] == pytest.approx(0.875)
    # relative: fog (.1 + .1) / (.1 + .3) = .5; snow (0 + .2) / (.2 + .4) = 1/3
    assert out["other"]["relative_mce"] == pytest.approx((0.5 + 1 / 3) / 2)
    perfect = corruption_errors({"b": _fake_result(1.0, {"fog": [1.0]}), "o": _fake_result(1.0, {"fog": [1.0]})}, "b")
    assert math.isnan(perfect["o"]["mce"])


def test_suite_evaluates_every_metric():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(24, 3, 16, 16, generator=g)
    labels = torch.randint(0, 3, (24,), generator=g)
    settings = SuiteSettings(corruptions=("gaussian_noise", "contrast"), severities=(1, 5), ood=("uniform",),
                             epsilons=(0.0, 4 / 255), occlusion=(0.5,), batch_size=10)
    suite = RobustnessSuite(images, labels, [0.5] * 3, [0.25] * 3, settings)
    assert suite.corrupted[("contrast", 5)].dtype == torch.uint8
    torch.manual_seed(0)
    res = suite.evaluate(SmallConvNet(3))
    assert set(res) >= {"clean", "corruption", "ood", "fgsm", "occlusion", "ood_mean_auroc"}
    assert 0 <= res["clean"]["ece"] <= 1 and len(res["corruption"]["acc"]["contrast"]) == 2
    assert set(res["fgsm"]) == {"0", "0.0156863"} and res["fgsm"]["0"] == pytest.approx(res["clean"]["acc"])
    assert sum(res["clean"]["reliability"]["count"]) == 24


def test_bench_and_eval_commands(tmp_path, capsys):
    out = tmp_path / "bench"
    common = ["--corruptions", "contrast,gaussian_noise", "--severities", "1,3", "--ood", "uniform",
              "--epsilons", "0,2", "--occlusion", "0.5", "--no-progress"]
    rc = main(["robustness", "bench", "--regularizers", "none,mixup+ls", "--epochs", "1", "--train-size", "128",
               "--val-size", "32", "--img-size", "16", "--batch-size", "32", "--device", "cpu", "--out", str(out),
               *common])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert [r[0] for r in res["rows"]] == ["none", "mixup+ls"] and res["baseline"] == "none"
    assert (out / "robustness_reliability.png").exists() and (out / "robustness_curves.png").exists()
    assert "mixup+ls" in capsys.readouterr().out

    train_out = tmp_path / "train"
    assert main(["train", "--model", "resnet8", "--data", "dsprites", "--task", "color", "--epochs", "1",
                 "--train-size", "128", "--val-size", "32", "--img-size", "16", "--batch-size", "32",
                 "--out", str(train_out), "--no-progress"]) == 0
    eval_out = tmp_path / "eval"
    assert main(["robustness", "eval", "--ckpt", str(train_out / "model.safetensors"), "--baseline-ckpt",
                 str(train_out / "model.safetensors"), "--out", str(eval_out), "--device", "cpu", *common]) == 0
    ev = json.loads((eval_out / "results.json").read_text())
    assert ev["mce"]["model"]["mce"] == pytest.approx(1.0)  # a model against itself


def test_bad_cli_input_is_one_line_exit_2(capsys):
    assert main(["robustness", "bench", "--regularizers", "mixpu", "--no-progress"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["robustness", "eval", "--ckpt", "x.safetensors", "--severities", "0,9"]) == 2
    assert main(["robustness", "bench", "--corruptions", "rain"]) == 2
