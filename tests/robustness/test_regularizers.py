"""`--reg` names -> batch transforms and label smoothing; the pipeline trains with the shared engine."""
from __future__ import annotations

import pytest
import torch

from cuekit.augment.regularizers import REGULARIZER_NAMES, build_batch_transform, parse_regularizers
from cuekit.errors import UnknownChoiceError, UsageError
from shared_helpers import TinyNoBN, make_blobs_bundle


def test_names_parse_and_unknown_names_are_usage_errors():
    assert parse_regularizers("mixup, LS,mixup") == ["mixup", "ls"]
    assert parse_regularizers("none") == [] and parse_regularizers(None) == []
    assert set(REGULARIZER_NAMES) == {"ls", "mixup", "cutmix", "cutout", "fgsm-at"}
    with pytest.raises(UnknownChoiceError, match="did you mean"):
        parse_regularizers("mixpu")
    with pytest.raises(UsageError):
        build_batch_transform(["mixup"], 4, mixup_alfa=0.2)


def test_label_smoothing_is_returned_not_applied():
    transform, ls = build_batch_transform(["ls"], 10)
    assert transform is None and ls == pytest.approx(0.1)
    transform, ls = build_batch_transform("ls,mixup", 10, label_smoothing=0.2)
    assert ls == pytest.approx(0.2)
    x = torch.rand(6, 3, 8, 8)
    out, t = transform(x, torch.arange(6))
    torch.testing.assert_close(t.sum(1), torch.ones(6))
    assert float(t.max()) <= 1.0 and float(t[t > 0].min()) > 0.0  # mixed, not smoothed (the loss smooths)


def test_every_name_builds_a_transform_with_soft_targets():
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 4
    model = TinyNoBN(4)
    for name in REGULARIZER_NAMES:
        transform, ls = build_batch_transform([name], 4, model, seed=0)
        if name == "ls":
            assert transform is None
            continue
        out, t = transform(x, y)
        assert out.shape == x.shape and t.shape == (8, 4)
        torch.testing.assert_close(t.sum(1), torch.ones(8))
        assert not torch.equal(out, x), name
    both, _ = build_batch_transform(["cutout", "cutmix", "mixup", "fgsm-at"], 4, seed=0)
    assert [type(s).__name__ for s in both.steps] == ["Cutout", "MixupOrCutMix", "FGSMTraining"]
    both.bind(model=model, data=make_blobs_bundle())
    assert both.steps[-1].model is model and both.steps[-1].mean is not None
    out, t = both(x, y)
    torch.testing.assert_close(t.sum(1), torch.ones(8))


@pytest.mark.parametrize("names", [["mixup", "ls"], ["cutmix"], ["cutout"], ["fgsm-at"]])
def test_training_with_each_regularizer_learns(names):
    from cuekit.train import TrainConfig, train

    data = make_blobs_bundle(n_train=256, n_val=64)
    torch.manual_seed(0)
    model = TinyNoBN(2)
    transform, ls = build_batch_transform(names, 2, model, seed=0)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.1, opt="sgd", label_smoothing=ls, amp="off", progress=False)
    res = train(cfg, model=model, data=data, batch_transform=transform)
    assert res.final["val_acc"] > 0.8, res.history
