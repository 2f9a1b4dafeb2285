"""`cuekit robustness`: every input checked before work starts, and mCE without a baseline."""
from __future__ import annotations

import pytest
import torch

import cuekit.robustness.benchmark as benchmark
from cuekit.cli import main
from cuekit.errors import DataError

FAST = ["--corruptions", "contrast", "--severities", "1", "--epsilons", "0", "--occlusion", "0.5", "--no-progress"]


@pytest.fixture
def no_corruption(monkeypatch):
    """Fail the test if any corrupted set is computed."""
    def refuse(*args, **kwargs):
        raise AssertionError("corruptions were computed before the inputs were checked")

    monkeypatch.setattr(benchmark, "corrupt", refuse)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    assert main(["train", "--model", "resnet8", "--data", "dsprites", "--task", "color", "--epochs", "1",
                 "--train-size", "64", "--val-size", "16", "--img-size", "16", "--batch-size", "32",
                 "--out", str(out), "--no-progress"]) == 0
    return out / "model.safetensors"


def test_a_missing_ood_folder_is_reported_before_any_work(tmp_path, capsys, no_corruption):
    missing = tmp_path / "no-such-folder"
    # before the checkpoint is even read (it does not exist either) and before any training
    assert main(["robustness", "eval", "--ckpt", str(tmp_path / "x.safetensors"), "--ood", f"folder:{missing}",
                 *FAST]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["robustness", "bench", "--ood", f"uniform,folder:{missing}", *FAST]) == 2
    assert str(missing) in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["robustness", "bench", "--ood", f"folder:{empty}", *FAST]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["robustness", "bench", "--ood", "gausian", *FAST]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_the_suite_checks_ood_sets_before_corrupting(tmp_path, no_corruption):
    settings = benchmark.SuiteSettings(corruptions=("contrast",), severities=(1,), ood=(f"folder:{tmp_path / 'x'}",))
    with pytest.raises(DataError, match="does not exist"):
        benchmark.RobustnessSuite(torch.rand(4, 3, 8, 8), torch.zeros(4), [0.0] * 3, [1.0] * 3, settings)
    with pytest.raises(Exception, match="corruption"):
        benchmark.RobustnessSuite(torch.rand(4, 3, 8, 8), torch.zeros(4), [0.0] * 3, [1.0] * 3,
                                  benchmark.SuiteSettings(corruptions=("contrast", "rain"), ood=()))


def test_a_missing_baseline_checkpoint_is_reported_before_any_work(ckpt, tmp_path, capsys, no_corruption):
    missing = tmp_path / "baseline.safetensors"
    assert main(["robustness", "eval", "--ckpt", str(ckpt), "--baseline-ckpt", str(missing), "--ood", "uniform",
                 *FAST]) == 2
    assert "baseline.safetensors" in capsys.readouterr().err


def test_mce_without_a_baseline_says_so(ckpt, capsys):
    assert main(["robustness", "eval", "--ckpt", str(ckpt), "--ood", "uniform", "--device", "cpu", *FAST]) == 0
    out = capsys.readouterr().out
    assert "n/a (needs --baseline-ckpt)" in out and "nan" not in out
