"""The shared training engine: learning, exact resume, accumulation, divergence, checkpoints."""
from __future__ import annotations

import json
import math

import pytest
import torch

from cuekit.errors import CheckpointError, TrainingDiverged, UsageError
from cuekit.models import create_model, load_checkpoint
from cuekit.train import TrainConfig, train
from cuekit.train.schedule import lr_factor
from shared_helpers import TinyNoBN, make_blobs_bundle


def _cfg(**kw) -> TrainConfig:
    base = dict(model="resnet8", epochs=2, batch_size=32, lr=0.05, progress=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_training_loss_falls(blobs):
    res = train(_cfg(epochs=4), data=blobs)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < 0.8 * losses[0]
    assert res.final["val_acc"] > 0.75  # two well-separated classes; chance is 0.5


class _Killed(Exception):
    pass


def test_resume_after_kill_gives_identical_weights(tmp_path):
    data = make_blobs_bundle()
    cfg = dict(epochs=3, ema_decay=0.9, opt="sgd", momentum=0.9)
    full = train(_cfg(out=str(tmp_path / "full"), **cfg), data=data).model

    steps_per_epoch = len(data.train) // 32

    def kill_in_epoch_2(step, model, opt, loss):
        if step == steps_per_epoch + 1:  # mid-way into the second epoch, after epoch 1's checkpoint
            raise _Killed

    with pytest.raises(_Killed):
        train(_cfg(out=str(tmp_path / "cut"), **cfg), data=data, step_callback=kill_in_epoch_2)
    history = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1]
    resumed = train(_cfg(out=str(tmp_path / "cut"), resume=True, **cfg), data=data)
    for (k, a), b in zip(full.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    history = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_existing_run_is_not_overwritten_without_resume(tmp_path, blobs):
    train(_cfg(epochs=1, out=str(tmp_path)), data=blobs)
    before = (tmp_path / "checkpoints" / "last.safetensors").read_bytes()
    with pytest.raises(UsageError, match="--resume"):
        train(_cfg(epochs=1, out=str(tmp_path)), data=blobs)
    assert (tmp_path / "checkpoints" / "last.safetensors").read_bytes() == before


def test_gradient_accumulation_equals_full_batch():
    data = make_blobs_bundle()
    torch.manual_seed(0)
    a = train(_cfg(epochs=1, accum_steps=1), model=TinyNoBN(), data=data).model
    torch.manual_seed(0)
    b = train(_cfg(epochs=1, accum_steps=4), model=TinyNoBN(), data=data).model
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, blobs):
    steps_per_epoch = len(blobs.train) // 32
    bad_step = steps_per_epoch + 3
    calls = {"n": 0}

    def loss_fn(logits, target):
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(logits, target)
        return loss * float("nan") if calls["n"] > bad_step else loss

    with pytest.raises(TrainingDiverged, match=f"step {bad_step}") as err:
        train(_cfg(epochs=3, out=str(tmp_path)), data=blobs, loss_fn=loss_fn)
    assert "last good checkpoint" in str(err.value)
    ckpt = tmp_path / "checkpoints" / "last.safetensors"
    model = create_model("resnet8", num_classes=2)
    meta = load_checkpoint(model, ckpt)
    assert meta["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "diverged" and results["diverged_at_step"] == bad_step


def test_truncated_checkpoint_gives_clear_error(tmp_path, blobs):
    train(_cfg(epochs=1, out=str(tmp_path)), data=blobs)
    ckpt = tmp_path / "checkpoints" / "last.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        train(_cfg(epochs=2, out=str(tmp_path), resume=True), data=blobs)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError):
        load_checkpoint(create_model("resnet8", num_classes=2), weights)


def test_weights_file_loads_into_a_fresh_model(tmp_path, blobs):
    res = train(_cfg(epochs=1, out=str(tmp_path)), data=blobs)
    fresh = create_model("resnet8", num_classes=2)
    meta = load_checkpoint(fresh, tmp_path / "model.safetensors")
    assert meta["class_names"] == ["dark", "bright"] and meta["model"] == "resnet8"
    for a, b in zip(res.model.state_dict().values(), fresh.state_dict().values()):
        assert torch.equal(a, b)


def test_ema_tracks_the_weights(blobs):
    res = train(_cfg(epochs=1, ema_decay=0.5), data=blobs)
    assert res.ema is not None and "ema_val_acc" in res.final
    diffs = [(a - b).abs().max().item() for a, b in zip(res.model.parameters(), res.ema.parameters())]
    assert max(diffs) > 0  # an average, not a copy


def test_no_weight_decay_on_1d_and_marked_parameters():
    from cuekit.optim import param_groups

    class WithPosEmbed(TinyNoBN):
        def __init__(self):
            super().__init__()
            self.pos_embed = torch.nn.Parameter(torch.zeros(1, 4, 8))

        def no_weight_decay(self):
            return {"pos_embed"}

    m = WithPosEmbed()
    groups = param_groups(m, weight_decay=0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(m.conv.weight), id(m.fc.weight)}


def test_lr_schedule_warmup_and_cosine():
    assert lr_factor(0, 100, warmup_steps=10) == pytest.approx(0.1)
    assert lr_factor(9, 100, warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(10, 100, warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(55, 100, warmup_steps=10) == pytest.approx(0.5)
    assert lr_factor(100, 100, warmup_steps=10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, 100, schedule="constant") == 1.0
    assert lr_factor(100, 100, min_factor=0.1) == pytest.approx(0.1)


def test_soft_target_loss_matches_torch_label_smoothing():
    from cuekit.augment import one_hot, soft_target_cross_entropy

    logits, y = torch.randn(16, 5), torch.randint(0, 5, (16,))
    ref = torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.1)
    torch.testing.assert_close(soft_target_cross_entropy(logits, one_hot(y, 5), 0.1), ref)
    torch.testing.assert_close(soft_target_cross_entropy(logits, y, 0.1), ref)
    assert math.isclose(soft_target_cross_entropy(logits, one_hot(y, 5)).item(),
                        torch.nn.functional.cross_entropy(logits, y).item(), rel_tol=1e-6)


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(lr=-1.0), dict(batch_size=30, accum_steps=4),
                                 dict(label_smoothing=1.0), dict(amp="maybe")])
def test_bad_settings_are_usage_errors(bad, blobs):
    with pytest.raises(UsageError):
        train(_cfg(**bad), data=blobs)


def test_batch_larger_than_dataset_is_a_usage_error():
    with pytest.raises(UsageError, match="fewer than one batch"):
        train(_cfg(batch_size=1024), data=make_blobs_bundle(n_train=100))
