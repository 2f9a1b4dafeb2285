"""`--resume`: bit-identical to an uninterrupted run (every regularizer, ReLabel, random data pipelines);
changed flags refused or noted; corrupted tensor bytes detected."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from cuekit.augment.regularizers import REGULARIZER_NAMES, VIDEO_REGULARIZER_NAMES
from cuekit.data import DataBundle
from cuekit.errors import CheckpointError, DataError, UsageError
from cuekit.train import TrainConfig, train
from shared_helpers import TinyNoBN, make_blobs_bundle

BATCH = 16


class _Killed(Exception):
    pass


class _Tiny3D(nn.Module):
    """Conv3d -> ReLU -> pool -> Linear: the smallest video classifier, (B, C, T, H, W) -> (B, 2)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3, 4)))


def _video_blobs(n_train: int = 64, n_val: int = 16) -> DataBundle:
    """Two classes of tiny clips (3, 4, 6, 6) that differ in mean brightness."""
    g = torch.Generator().manual_seed(0)
    n = n_train + n_val
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 3, 4, 6, 6, generator=g) * 0.5 + (y.float() * 2 - 1)[:, None, None, None, None] * 0.3
    return DataBundle(train=TensorDataset(x[:n_train], y[:n_train]), val=TensorDataset(x[n_train:], y[n_train:]),
                      num_classes=2, class_names=["dark", "bright"], in_chans=3, img_size=6, frames=4)


def _cfg(out, **kw) -> TrainConfig:
    base = dict(model="tiny", epochs=3, batch_size=BATCH, lr=0.05, progress=False, seed=0, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def _kill_and_resume(tmp_path, bundle, make_model, make_transform=None, kill_epoch: int = 1, **kw):
    """(uninterrupted run, run killed mid-way into epoch kill_epoch + 1 and resumed): their TrainResults."""
    steps_per_epoch = len(bundle.train) // BATCH

    def kill(step, model, opt, loss):
        if step == kill_epoch * steps_per_epoch + 1:
            raise _Killed

    full = train(_cfg(tmp_path / "full", **kw), model=make_model(), data=bundle,
                 batch_transform=make_transform() if make_transform else None)
    with pytest.raises(_Killed):
        train(_cfg(tmp_path / "cut", **kw), model=make_model(), data=bundle,
              batch_transform=make_transform() if make_transform else None, step_callback=kill)
    resumed = train(_cfg(tmp_path / "cut", resume=True, **kw), model=make_model(), data=bundle,
                    batch_transform=make_transform() if make_transform else None)
    return full, resumed


def _assert_identical(full, resumed) -> None:
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k}: max difference {(a[k].float() - b[k].float()).abs().max().item()}"
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]


def _seeded(factory):
    def make():
        torch.manual_seed(0)
        return factory()
    return make


@pytest.mark.parametrize("reg", [*REGULARIZER_NAMES, *VIDEO_REGULARIZER_NAMES, "mixup,cutmix", "cutout,mixup,ls"])
def test_resume_is_bit_identical_for_every_regularizer(reg, tmp_path):
    video = any(name in VIDEO_REGULARIZER_NAMES for name in reg.split(","))
    data = _video_blobs() if video else make_blobs_bundle(n_train=96, n_val=16)
    full, resumed = _kill_and_resume(tmp_path, data, _seeded(_Tiny3D if video else TinyNoBN), reg=reg)
    _assert_identical(full, resumed)


def test_resume_is_bit_identical_with_relabel_crops_and_cutmix(tmp_path):
    from cuekit.data import create_dataset
    from cuekit.models import create_model
    from cuekit.relabel.generate import generate_label_maps
    from cuekit.relabel.training import builtin_image_names, relabel_training

    bundle = create_dataset("multi-shapes", img_size=16, train_size=48, val_size=16, seed=0)
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=5, in_chans=3).eval()
    maps = tmp_path / "maps"
    generate_label_maps(teacher, bundle.train, builtin_image_names(48), maps, num_classes=5, map_size=(4, 4),
                        topk=2, shard_size=48, progress=False)
    cfg = dict(data="multi-shapes", img_size=16, train_size=48, val_size=16)
    data, _ = relabel_training(TrainConfig(**cfg), maps, cutmix_alpha=1.0)

    def transform():
        return relabel_training(TrainConfig(**cfg), maps, cutmix_alpha=1.0)[1]

    full, resumed = _kill_and_resume(tmp_path, data, _seeded(lambda: TinyNoBN(5)), transform, **cfg)
    _assert_identical(full, resumed)
    # another ReLabel setting than the run's is refused, naming the flag
    other = relabel_training(TrainConfig(**cfg), maps, cutmix_alpha=1.0, partner_target="box")[1]
    with pytest.raises(UsageError, match="--relabel-cutmix-target crop, not box"):
        train(_cfg(tmp_path / "cut", resume=True, epochs=4, **cfg), model=TinyNoBN(5), data=data,
              batch_transform=other)


class _RandomlyAugmented(Dataset):
    """Adds noise from torch's, NumPy's and Python's global generators to every item, as augmentations do."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        noise = torch.rand(()) + float(np.random.rand()) + random.random()
        return x + 0.1 * noise, y


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_bit_identical_with_random_augmentation_and_workers(workers, tmp_path):
    blobs = make_blobs_bundle(n_train=64, n_val=16)
    data = DataBundle(train=_RandomlyAugmented(blobs.train), val=blobs.val, num_classes=2,
                      class_names=blobs.class_names, in_chans=3, img_size=blobs.img_size)
    full, resumed = _kill_and_resume(tmp_path, data, _seeded(TinyNoBN), workers=workers, reg="mixup")
    _assert_identical(full, resumed)


# --- resuming with changed flags -------------------------------------------------------------------------------

def _one_epoch_run(tmp_path, **kw):
    data = make_blobs_bundle(n_train=64, n_val=16)
    train(TrainConfig(model="resnet8", epochs=1, batch_size=BATCH, lr=0.05, progress=False, out=str(tmp_path),
                      **kw), model=TinyNoBN(), data=data)
    return data


@pytest.mark.parametrize("change,flag,was,now", [
    (dict(opt="adamp"), "--opt", '"sgd"', '"adamp"'),
    (dict(model="resnet14"), "--model", '"resnet8"', '"resnet14"'),
    (dict(lr=0.01), "--lr", "0.05", "0.01"),
    (dict(reg="cutmix"), "--reg", "unset", '"cutmix"'),
    (dict(batch_size=32), "--batch-size", "16", "32"),
    (dict(seed=1), "--seed", "0", "1"),
])
def test_resume_refuses_a_changed_setting_naming_the_flag_and_both_values(change, flag, was, now, tmp_path):
    data = _one_epoch_run(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    settings = dict(model="resnet8", epochs=2, batch_size=BATCH, lr=0.05, progress=False, out=str(tmp_path),
                    resume=True)
    settings.update(change)
    with pytest.raises(UsageError) as err:
        train(TrainConfig(**settings), model=TinyNoBN(), data=data)
    message = str(err.value)
    assert f"{flag} {now} (the run's: {was})" in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched


def test_resume_allows_safe_changes_with_a_note_and_keeps_the_original_config(tmp_path, capsys):
    data = _one_epoch_run(tmp_path)
    original = json.loads((tmp_path / "config.json").read_text())
    res = train(TrainConfig(model="resnet8", epochs=3, batch_size=BATCH, lr=0.05, progress=False, out=str(tmp_path),
                            resume=True, accum_steps=2, eval_batch_size=7), model=TinyNoBN(), data=data)
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    err = capsys.readouterr().err
    for line in ("--epochs 3 (the run's: 1)", "--accum-steps 2 (the run's: 1)", "--eval-batch-size 7 (the run's: 256)"):
        assert line in err
    assert json.loads((tmp_path / "config.original.json").read_text()) == original
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 3
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["resumes"] == [{"after_epoch": 1, "changed": {"epochs": [1, 3], "accum_steps": [1, 2],
                                                                 "eval_batch_size": [256, 7]}}]


def test_resume_with_the_same_settings_keeps_one_config(tmp_path, capsys):
    data = _one_epoch_run(tmp_path)
    train(TrainConfig(model="resnet8", epochs=1, batch_size=BATCH, lr=0.05, progress=False, out=str(tmp_path),
                      resume=True), model=TinyNoBN(), data=data)
    assert "note:" not in capsys.readouterr().err
    assert not (tmp_path / "config.original.json").exists()


def test_resume_refuses_fewer_epochs_than_completed(tmp_path):
    data = _one_epoch_run(tmp_path)
    train(TrainConfig(model="resnet8", epochs=2, batch_size=BATCH, lr=0.05, progress=False, out=str(tmp_path),
                      resume=True), model=TinyNoBN(), data=data)
    with pytest.raises(UsageError, match="already completed 2 epochs"):
        train(TrainConfig(model="resnet8", epochs=1, batch_size=BATCH, lr=0.05, progress=False, out=str(tmp_path),
                          resume=True), model=TinyNoBN(), data=data)


def test_a_model_that_does_not_fit_gives_the_whole_reason_on_one_line(tmp_path, blobs):
    class Wider(TinyNoBN):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.fc = nn.Linear(16, 2)

    train(_cfg(tmp_path, epochs=1), model=TinyNoBN(), data=blobs)
    with pytest.raises(CheckpointError) as err:
        train(_cfg(tmp_path, epochs=2, resume=True), model=Wider(), data=blobs)
    message = str(err.value)
    assert "size mismatch for conv.weight" in message and "\n" not in message


def test_cli_resume_with_another_optimizer_is_a_one_line_error(tmp_path, capsys):
    from cuekit.cli import main

    args = ["train", "--model", "resnet8", "--data", "dsprites", "--train-size", "32", "--val-size", "16",
            "--img-size", "16", "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    capsys.readouterr()
    code = main([*args, "--resume", "--epochs", "2", "--opt", "adamp"])
    err = capsys.readouterr().err
    assert code == UsageError.exit_code and "Traceback" not in err
    assert err.count("\n") == 1 and '--opt "adamp" (the run\'s: "sgd")' in err


# --- corrupted checkpoints ---------------------------------------------------------------------------------------

def _flip_a_tensor_byte(path) -> None:
    """Flip one byte in the middle of a safetensors file's tensor data (after its JSON header)."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    raw[start + (len(raw) - start) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def test_flipped_bytes_in_the_training_state_are_refused_on_resume(tmp_path, blobs):
    train(_cfg(tmp_path, epochs=1), model=TinyNoBN(), data=blobs)
    state = tmp_path / "checkpoints" / "last.safetensors"
    _flip_a_tensor_byte(state)
    with pytest.raises(DataError, match="SHA-256") as err:
        train(_cfg(tmp_path, epochs=2, resume=True), model=TinyNoBN(), data=blobs)
    assert isinstance(err.value, CheckpointError) and str(state) in str(err.value)


def test_flipped_bytes_in_the_weights_are_refused_on_load(tmp_path, capsys):
    from cuekit.cli import main
    from cuekit.models import create_model, load_checkpoint

    args = ["train", "--model", "resnet8", "--data", "dsprites", "--train-size", "32", "--val-size", "16",
            "--img-size", "16", "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    weights = tmp_path / "model.safetensors"
    assert main(["eval", "--ckpt", str(weights)]) == 0
    capsys.readouterr()
    _flip_a_tensor_byte(weights)
    with pytest.raises(DataError, match="SHA-256"):
        load_checkpoint(create_model("resnet8", num_classes=3, img_size=16), weights)
    code = main(["eval", "--ckpt", str(weights)])
    err = capsys.readouterr().err
    assert code == DataError.exit_code and str(weights) in err and "SHA-256" in err and err.count("\n") == 1


# --- default learning rate per optimizer --------------------------------------------------------------------------

@pytest.mark.parametrize("opt,expected", [("sgd", 0.1), ("sgdp", 0.1), ("adam", 1e-3), ("adamw", 1e-3),
                                          ("adamp", 1e-3)])
def test_each_optimizer_has_its_own_default_lr(opt, expected, capsys):
    from cuekit.optim import create_optimizer
    from cuekit.optim.factory import default_lr

    assert default_lr(opt) == expected
    assert create_optimizer(opt, TinyNoBN()).param_groups[0]["lr"] == expected
    res = train(TrainConfig(model="tiny", epochs=1, batch_size=BATCH, opt=opt, schedule="constant", seed=0),
                model=TinyNoBN(), data=make_blobs_bundle(n_train=32, n_val=16))
    assert res.history[0]["lr"] == expected
    assert f"optimizer {opt}, peak learning rate {expected:g} (the default for {opt}" in capsys.readouterr().err


def test_an_explicit_lr_is_kept_and_the_default_is_recorded(tmp_path, blobs, capsys):
    train(TrainConfig(model="tiny", epochs=1, batch_size=BATCH, opt="adamp", lr=0.02, schedule="constant", seed=0,
                      out=str(tmp_path / "given")), model=TinyNoBN(), data=blobs)
    assert "peak learning rate 0.02 (--lr)" in capsys.readouterr().err
    assert json.loads((tmp_path / "given" / "config.json").read_text())["lr"] == 0.02
    train(TrainConfig(model="tiny", epochs=1, batch_size=BATCH, opt="adamp", seed=0, progress=False,
                      out=str(tmp_path / "default")), model=TinyNoBN(), data=blobs)
    assert json.loads((tmp_path / "default" / "config.json").read_text())["lr"] == 1e-3


def test_the_training_state_keeps_the_gradient_scaler_and_tensor_states_of_a_transform(tmp_path):
    from cuekit.train.checkpoint import load_train_state, save_train_state

    class WithTensorState:
        """A batch transform whose state holds a tensor (saved in the file) beside JSON data."""

        def __init__(self, value: float):
            self.buffer, self.calls = torch.full((3,), value), int(value)

        def state_dict(self):
            return {"buffer": self.buffer, "calls": self.calls}

        def load_state_dict(self, state):
            self.buffer, self.calls = state["buffer"], state["calls"]

    model = TinyNoBN()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    scaler.scale(torch.ones(1))
    scaler.update(new_scale=64.0)
    path = tmp_path / "state.safetensors"
    save_train_state(path, model=model, optimizer=opt, ema=None, epoch=0, metadata={},
                     batch_transform=WithTensorState(5.0), scaler=scaler)
    fresh_scaler, fresh_transform = torch.amp.GradScaler("cpu"), WithTensorState(0.0)
    load_train_state(path, model=TinyNoBN(), optimizer=torch.optim.SGD(TinyNoBN().parameters(), lr=0.1), ema=None,
                     batch_transform=fresh_transform, scaler=fresh_scaler)
    assert fresh_scaler.get_scale() == 64.0
    assert torch.equal(fresh_transform.buffer, torch.full((3,), 5.0)) and fresh_transform.calls == 5
    with pytest.raises(UsageError, match="trained with the batch transform WithTensorState"):
        load_train_state(path, model=TinyNoBN(), optimizer=torch.optim.SGD(TinyNoBN().parameters(), lr=0.1),
                         ema=None, batch_transform=None)


def test_mixers_sharing_one_generator_restore_it_exactly():
    from cuekit.augment.regularizers import build_batch_transform

    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 2, (8,))
    first, _ = build_batch_transform("cutout,mixup,cutmix", 2, seed=3)
    first(x.clone(), y)
    saved = json.loads(json.dumps(first.state_dict()))  # as stored in the checkpoint's JSON
    expected = first(x.clone(), y)
    second, _ = build_batch_transform("cutout,mixup,cutmix", 2, seed=99)
    second.load_state_dict(saved)
    got = second(x.clone(), y)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_resume_without_lr_keeps_the_runs_lr_not_the_default(tmp_path, blobs, capsys):
    train(TrainConfig(model="tiny", epochs=1, batch_size=BATCH, opt="adamp", lr=0.02, seed=0, progress=False,
                      out=str(tmp_path)), model=TinyNoBN(), data=blobs)
    train(TrainConfig(model="tiny", epochs=2, batch_size=BATCH, opt="adamp", seed=0, resume=True,
                      out=str(tmp_path)), model=TinyNoBN(), data=blobs)
    err = capsys.readouterr().err
    assert "peak learning rate 0.02 (the run's)" in err and "--lr" not in err.split("optimizer")[0]
    assert json.loads((tmp_path / "config.json").read_text())["lr"] == 0.02
