"""DeiT hard distillation (`--teacher`): the distillation head learns the teacher's argmax, the class head y."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from cuekit.cli import main
from cuekit.errors import UsageError
from cuekit.models import create_model
from cuekit.parallel import torch_threads
from cuekit.train import TrainConfig, train
from cuekit.train.checkpoint import save_weights
from cuekit.train.engine import _model_output_loss
from shared_helpers import make_blobs_bundle

STUDENT = "pit_nano_distilled"  # 8 px blobs: 3x3 -> 2x2 -> 1x1 tokens


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: one thread is fastest, and several threads crawl on a busy machine.
    with torch_threads(1):
        yield


def _cfg(**kw) -> TrainConfig:
    base = dict(model=STUDENT, epochs=3, batch_size=32, lr=3e-3, opt="adamw", weight_decay=0.0, img_size=8,
                progress=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _constant_teacher(path, label: int, num_classes: int = 2) -> str:
    """A registered classifier that predicts `label` for every input, saved as `cuekit train` saves weights."""
    teacher = create_model("pit_nano", num_classes=num_classes, img_size=8)
    with torch.no_grad():
        teacher.head.weight.zero_()
        teacher.head.bias.zero_()
        teacher.head.bias[label] = 10.0
    save_weights(path, teacher, {"model": "pit_nano", "num_classes": num_classes, "in_chans": 3, "img_size": 8})
    return str(path)


def test_loss_sends_the_teacher_labels_to_the_distillation_head_only():
    torch.manual_seed(0)
    cls_logits = torch.randn(6, 3, requires_grad=True)
    dist_logits = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    teacher_labels = (y + 1) % 3  # every hard label differs from y
    loss = _model_output_loss((cls_logits, dist_logits), y, lambda o, t: F.cross_entropy(o, t), teacher_labels)
    loss.backward()
    n = len(y)
    expected_dist = 0.5 * (dist_logits.detach().softmax(-1) - F.one_hot(teacher_labels, 3)) / n
    expected_cls = 0.5 * (cls_logits.detach().softmax(-1) - F.one_hot(y, 3)) / n
    torch.testing.assert_close(dist_logits.grad, expected_dist)
    torch.testing.assert_close(cls_logits.grad, expected_cls)
    # Descending the distillation head's gradient raises the teacher's class, never y's.
    step = -dist_logits.grad
    assert (step.gather(1, teacher_labels[:, None]) > 0).all() and (step.gather(1, y[:, None]) < 0).all()


def test_without_teacher_both_heads_learn_the_labels():
    cls_logits, dist_logits = torch.randn(4, 2), torch.randn(4, 2)
    y = torch.tensor([0, 1, 1, 0])
    ce = lambda o, t: F.cross_entropy(o, t)  # noqa: E731
    torch.testing.assert_close(_model_output_loss((cls_logits, dist_logits), y, ce),
                               (ce(cls_logits, y) + ce(dist_logits, y)) / 2)


def test_distillation_head_follows_the_teacher_and_class_head_the_labels(tmp_path):
    data = make_blobs_bundle()
    teacher = _constant_teacher(tmp_path / "teacher.safetensors", label=1)
    distilled = train(_cfg(teacher=teacher, out=str(tmp_path / "run")), data=data).model
    control = train(_cfg(), data=data).model
    x, y = data.val.tensors
    for model in (distilled, control):
        model.train()  # train mode returns the two heads separately
    with torch.no_grad():
        cls_out, dist_out = distilled(x)
        _, control_dist = control(x)
    assert (dist_out.argmax(1) == 1).float().mean() > 0.95  # the teacher's label, whatever y is
    assert (cls_out.argmax(1) == y).float().mean() > 0.75
    assert (control_dist.argmax(1) == y).float().mean() > 0.75  # without a teacher it learns y
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["teacher"]["path"] == teacher and meta["teacher"]["model"] == "pit_nano"
    assert len(meta["teacher"]["sha256"]) == 64 and meta["config"]["teacher"] == teacher


class _Killed(Exception):
    pass


def test_resume_with_a_teacher_gives_identical_weights(tmp_path):
    data = make_blobs_bundle()
    teacher = _constant_teacher(tmp_path / "teacher.safetensors", label=0)
    full = train(_cfg(teacher=teacher, out=str(tmp_path / "full")), data=data).model
    steps_per_epoch = len(data.train) // 32

    def kill_in_epoch_2(step, model, opt, loss):
        if step == steps_per_epoch + 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(_cfg(teacher=teacher, out=str(tmp_path / "cut")), data=data, step_callback=kill_in_epoch_2)
    with pytest.raises(UsageError, match="same --teacher"):
        train(_cfg(out=str(tmp_path / "cut"), resume=True), data=data)
    other = _constant_teacher(tmp_path / "other.safetensors", label=1)
    with pytest.raises(UsageError, match="same --teacher"):
        train(_cfg(teacher=other, out=str(tmp_path / "cut"), resume=True), data=data)
    resumed = train(_cfg(teacher=teacher, out=str(tmp_path / "cut"), resume=True), data=data).model
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_teacher_for_other_classes_or_a_student_without_distillation_head_is_refused(tmp_path):
    data = make_blobs_bundle()
    three = _constant_teacher(tmp_path / "three.safetensors", label=2, num_classes=3)
    with pytest.raises(UsageError, match="predicts 3 classes but the data has 2"):
        train(_cfg(teacher=three), data=data)
    two = _constant_teacher(tmp_path / "two.safetensors", label=1)
    with pytest.raises(UsageError, match="distillation head"):
        train(_cfg(model="pit_nano", teacher=two), data=data)


def test_cli_refuses_a_bad_teacher_in_one_line(tmp_path, capsys):
    teacher = _constant_teacher(tmp_path / "teacher.safetensors", label=1)  # 2 classes; shape has 3
    args = ["train", "--model", STUDENT, "--data", "dsprites", "--task", "shape", "--img-size", "8",
            "--train-size", "64", "--val-size", "16", "--epochs", "1", "--batch-size", "32",
            "--teacher", teacher, "--out", tmp_path / "run", "--no-progress"]
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert "2 classes" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
