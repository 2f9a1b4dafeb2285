"""Training recipes of the shared engine: --lr-mult, --randaugment / --color-jitter / --lighting, --repeated-aug,
--reg-off-epochs. Each changes what it should and nothing else, and resume stays bit-identical with them."""
from __future__ import annotations

import collections
import json

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from cuekit.data import DataBundle
from cuekit.errors import UsageError
from cuekit.train import TrainConfig, epoch_batches, train
from cuekit.train.distributed import DistInfo
from shared_helpers import TinyNoBN, make_blobs_bundle, one_torch_thread  # noqa: F401  (autouse fixture)

BATCH = 16


def _cfg(**kw) -> TrainConfig:
    base = dict(model="tiny", epochs=2, batch_size=BATCH, lr=0.05, progress=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _images_bundle(n_train: int = 64, n_val: int = 16, size: int = 12) -> DataBundle:
    """RGB images in [0, 1] (as read from 8-bit files) normalised with a mean and std, two classes."""
    g = torch.Generator().manual_seed(0)
    n = n_train + n_val
    y = torch.randint(0, 2, (n,), generator=g)
    raw = (torch.rand(n, 3, size, size, generator=g) * 0.6 + 0.4 * y.float()[:, None, None, None])
    raw = (raw * 255).round() / 255
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return DataBundle(train=TensorDataset(x[:n_train], y[:n_train]), val=TensorDataset(x[n_train:], y[n_train:]),
                      num_classes=2, class_names=["a", "b"], in_chans=3, img_size=size, mean=mean, std=std)


# --- --lr-mult -----------------------------------------------------------------------------------------------------

def test_lr_mult_sets_each_groups_lr_and_keeps_weight_decay_and_schedule(tmp_path):
    seen = []

    def record(step, model, opt, loss):
        names = {id(p): n for n, p in model.named_parameters()}
        seen.append({names[id(p)]: (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]})

    train(_cfg(lr_mult=["fc.*=10"], weight_decay=1e-3, warmup_epochs=0.5), model=TinyNoBN(),
          data=make_blobs_bundle(n_train=48, n_val=16), step_callback=record)
    plain = []
    train(_cfg(weight_decay=1e-3, warmup_epochs=0.5), model=TinyNoBN(), data=make_blobs_bundle(n_train=48, n_val=16),
          step_callback=lambda step, model, opt, loss: plain.append(opt.param_groups[0]["lr"]))
    assert len(seen) == len(plain) == 6
    for groups, base in zip(seen, plain):
        assert groups["conv.weight"] == (base, 1e-3) and groups["conv.bias"] == (base, 0.0)
        assert groups["fc.weight"][0] == pytest.approx(10 * base) and groups["fc.weight"][1] == 1e-3
        assert groups["fc.bias"][0] == pytest.approx(10 * base) and groups["fc.bias"][1] == 0.0


def test_lr_mult_of_one_everywhere_changes_nothing():
    data = make_blobs_bundle(n_train=48, n_val=16)
    torch.manual_seed(0)
    a = train(_cfg(), model=TinyNoBN(), data=data).model.state_dict()
    torch.manual_seed(0)
    b = train(_cfg(lr_mult=["*=1"]), model=TinyNoBN(), data=data).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(0)
    c = train(_cfg(lr_mult=["fc.*=0"]), model=TinyNoBN(), data=data).model.state_dict()
    torch.manual_seed(0)
    init = TinyNoBN().state_dict()
    assert torch.equal(c["fc.weight"], init["fc.weight"]) and not torch.equal(c["conv.weight"], init["conv.weight"])


def test_lr_mult_first_match_wins_and_is_recorded(tmp_path):
    from cuekit.train.recipes import lr_mult_param_groups

    model = TinyNoBN()
    groups = lr_mult_param_groups(model, ["fc.weight=3", "fc.*=10"], 0.1, 0.0)
    by_name = {n: g["lr"] for g in groups for n, p in model.named_parameters() if any(p is q for q in g["params"])}
    assert sorted(by_name) == ["conv.bias", "conv.weight", "fc.bias", "fc.weight"]
    assert by_name["fc.weight"] == pytest.approx(0.3) and by_name["fc.bias"] == pytest.approx(1.0)
    assert groups[0]["lr_mult"] == 1.0
    train(_cfg(lr_mult=["fc.*=10"], epochs=1, out=str(tmp_path)), model=TinyNoBN(),
          data=make_blobs_bundle(n_train=32, n_val=16))
    assert json.loads((tmp_path / "config.json").read_text())["lr_mult"] == ["fc.*=10"]


@pytest.mark.parametrize("spec,match", [("head.*=10", "matches no parameter"), ("fc.*", "expected PATTERN=K"),
                                        ("fc.*=-1", "expected PATTERN=K"), ("=3", "expected PATTERN=K")])
def test_lr_mult_errors_name_the_pattern(spec, match):
    with pytest.raises(UsageError, match=match):
        train(_cfg(lr_mult=[spec], epochs=1), model=TinyNoBN(), data=make_blobs_bundle(n_train=32, n_val=16))


def test_resume_refuses_a_changed_lr_mult(tmp_path):
    data = make_blobs_bundle(n_train=32, n_val=16)
    train(_cfg(lr_mult=["fc.*=10"], epochs=1, out=str(tmp_path)), model=TinyNoBN(), data=data)
    with pytest.raises(UsageError, match=r'--lr-mult \["fc.\*=5"\] \(the run\'s: \["fc.\*=10"\]\)'):
        train(_cfg(lr_mult=["fc.*=5"], epochs=2, resume=True, out=str(tmp_path)), model=TinyNoBN(), data=data)
    with pytest.raises(UsageError, match="--lr-mult"):
        train(_cfg(epochs=2, resume=True, out=str(tmp_path)), model=TinyNoBN(), data=data)


def test_cli_parses_repeated_lr_mult_and_the_recipe_flags():
    import argparse

    from cuekit.train.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "--lr-mult", "fc.*=10", "--lr-mult", "layer4.*=2", "--randaugment", "2,9",
                              "--color-jitter", "0.4", "--lighting", "0.1", "--repeated-aug", "3",
                              "--reg-off-epochs", "5"])
    assert args.lr_mult == ["fc.*=10", "layer4.*=2"] and args.randaugment == "2,9"
    assert (args.color_jitter, args.lighting, args.repeated_aug, args.reg_off_epochs) == (0.4, 0.1, 3, 5)
    assert parser.parse_args(["train"]).lr_mult is None and TrainConfig(lr_mult=None).lr_mult == []
    assert parser.parse_args(["train", "--relabel", "d", "--relabel-transpose"]).relabel_transpose is True


# --- --randaugment, --color-jitter, --lighting ------------------------------------------------------------------------

def test_the_augmentations_are_in_the_training_pipeline_only():
    from torchvision import transforms as T

    from cuekit.train.engine import _with_recipe_augmentation
    from cuekit.train.recipes import AugmentedImages, Lighting

    data = _images_bundle()
    out = _with_recipe_augmentation(_cfg(randaugment="2,9", color_jitter=0.4, lighting=0.1), data)
    assert isinstance(out.train, AugmentedImages) and out.val is data.val
    ra, cj, li = out.train.transforms
    assert isinstance(ra, T.RandAugment) and (ra.num_ops, ra.magnitude) == (2, 9)
    assert isinstance(cj, T.ColorJitter) and cj.brightness == cj.contrast == cj.saturation == (0.6, 1.4)
    assert cj.hue is None and isinstance(li, Lighting) and li.alphastd == 0.1
    assert _with_recipe_augmentation(_cfg(), data) is data
    only = _with_recipe_augmentation(_cfg(color_jitter=0.2), data).train.transforms
    assert len(only) == 1 and isinstance(only[0], T.ColorJitter)


def test_augmented_images_keep_normalisation_and_labels():
    from cuekit.train.recipes import AugmentedImages

    data = _images_bundle()
    same = AugmentedImages(data.train, [lambda img: img], data.mean, data.std)
    x, y = same[3]
    assert torch.allclose(x, data.train[3][0], atol=1e-5) and y == data.train[3][1]
    # RandAugment works on the exact uint8 values: with magnitude 0 and only identity-like ops it is lossless
    from torchvision import transforms as T

    torch.manual_seed(0)
    jit = AugmentedImages(data.train, [T.ColorJitter(0.5, 0.5, 0.5)], data.mean, data.std)
    assert not torch.allclose(jit[3][0], data.train[3][0], atol=1e-3) and jit[3][1] == data.train[3][1]


def test_lighting_adds_one_pca_offset_per_image():
    from cuekit.train.recipes import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, Lighting

    img = torch.rand(3, 5, 7)
    torch.manual_seed(4)
    out = Lighting(0.1)(img)
    torch.manual_seed(4)
    alpha = torch.randn(3) * 0.1
    offset = torch.tensor(IMAGENET_PCA_EIGVEC) @ (alpha * torch.tensor(IMAGENET_PCA_EIGVAL))
    diff = out - img
    assert torch.allclose(diff, offset[:, None, None].expand_as(img), atol=1e-6) and diff.abs().max() > 0
    assert torch.equal(Lighting(0.0)(img), img)


def test_randaugment_changes_training_images_and_is_seeded():
    from cuekit.train.engine import _with_recipe_augmentation

    data = _images_bundle()
    aug = _with_recipe_augmentation(_cfg(randaugment="2,15"), data).train
    torch.manual_seed(1)
    a = torch.stack([aug[i][0] for i in range(8)])
    torch.manual_seed(1)
    b = torch.stack([aug[i][0] for i in range(8)])
    assert torch.equal(a, b)
    orig = torch.stack([data.train[i][0] for i in range(8)])
    assert not torch.allclose(a, orig, atol=1e-3)


@pytest.mark.parametrize("flags", [dict(randaugment="2"), dict(randaugment="2,31"), dict(color_jitter=-1.0),
                                   dict(lighting=-0.1)])
def test_bad_augmentation_flags_are_refused(flags):
    with pytest.raises(UsageError):
        train(_cfg(epochs=1, **flags), model=TinyNoBN(), data=_images_bundle())


def test_augmentation_needs_rgb_images():
    gray = make_blobs_bundle(n_train=32, n_val=16)
    gray = DataBundle(train=gray.train, val=gray.val, num_classes=2, class_names=["a", "b"], in_chans=1)
    with pytest.raises(UsageError, match="RGB image data"):
        train(_cfg(epochs=1, lighting=0.1), model=TinyNoBN(), data=gray)


def test_augmentation_changes_training_but_not_evaluation_data():
    data = _images_bundle()
    torch.manual_seed(0)
    plain = train(_cfg(), model=TinyNoBN(), data=data)
    torch.manual_seed(0)
    jitter = train(_cfg(color_jitter=0.4, lighting=0.1), model=TinyNoBN(), data=data)
    assert plain.history[0]["train_loss"] != jitter.history[0]["train_loss"]


# --- --repeated-aug ------------------------------------------------------------------------------------------------

def test_repeated_aug_yields_each_sampled_index_k_times_and_keeps_the_epoch_length():
    n, k = 48, 3
    batches = epoch_batches(n, 12, seed=0, epoch=0, info=DistInfo(), accum_steps=1, repeats=k)
    flat = [i for b in batches for i in b]
    counts = collections.Counter(flat)
    assert len(flat) == n and len(counts) == n // k and set(counts.values()) == {k}
    other = [i for b in epoch_batches(n, 12, 0, 1, DistInfo(), 1, repeats=k) for i in b]
    assert collections.Counter(other) != counts  # a new draw each epoch
    # K = 1 is the plain seeded permutation, unchanged
    plain = [i for b in epoch_batches(n, 12, 0, 0, DistInfo(), 1) for i in b]
    assert plain == torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    assert epoch_batches(n, 12, 0, 0, DistInfo(), 1, repeats=1) == epoch_batches(n, 12, 0, 0, DistInfo(), 1)


def test_repeated_aug_deals_the_copies_to_different_ranks_like_deits_rasampler():
    n, k, world = 48, 3, 3
    one = epoch_batches(n, 12, 0, 0, DistInfo(), 1, repeats=k)
    ranks = [epoch_batches(n, 12, 0, 0, DistInfo(rank=r, world_size=world), 1, repeats=k) for r in range(world)]
    for step, global_batch in enumerate(one):  # every step sees the same samples at any world size
        assert sorted(i for r in ranks for i in r[step]) == sorted(global_batch)
        for r in range(world):
            assert ranks[r][step] == global_batch[r::world]
    for r in range(world):  # with K = world, each process sees each sampled image once
        flat = [i for b in ranks[r] for i in b]
        assert len(flat) == len(set(flat)) == n // world


class _Noisy(Dataset):
    """(a fresh random image, index): two reads of one index differ, as two augmentations do."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i):
        return torch.rand(3, 4, 4), i


def test_repeated_copies_are_augmented_differently():
    from cuekit.train.engine import _loader

    batches = epoch_batches(24, 6, 0, 0, DistInfo(), 1, repeats=2)
    x, idx = next(iter(_loader(_Noisy(), batches, 0, 0)))
    assert idx[0] == idx[1] and not torch.equal(x[0], x[1])


def test_bad_repeated_aug_is_refused():
    with pytest.raises(UsageError, match="--repeated-aug"):
        train(_cfg(repeated_aug=0), model=TinyNoBN(), data=make_blobs_bundle(n_train=32, n_val=16))


# --- --reg-off-epochs ---------------------------------------------------------------------------------------------

def _targets_per_epoch(**kw) -> list[set[str]]:
    """Per epoch, which targets the loss saw: 'soft' (a regularizer's (B, C) targets) or 'hard' (labels)."""
    seen: list[str] = []
    steps_per_epoch = 48 // BATCH

    def loss_fn(logits, target):
        seen.append("soft" if target.dim() == 2 else "hard")
        from cuekit.augment.targets import soft_target_cross_entropy
        return soft_target_cross_entropy(logits, target)

    train(_cfg(**kw), model=TinyNoBN(), data=make_blobs_bundle(n_train=48, n_val=16), loss_fn=loss_fn)
    return [set(seen[e * steps_per_epoch:(e + 1) * steps_per_epoch]) for e in range(len(seen) // steps_per_epoch)]


def test_reg_off_epochs_turns_the_regularizer_off_for_the_last_epochs():
    assert _targets_per_epoch(epochs=4, reg="cutmix", reg_off_epochs=2) == [{"soft"}, {"soft"}, {"hard"}, {"hard"}]
    assert _targets_per_epoch(epochs=3, reg="mixup") == [{"soft"}] * 3
    assert _targets_per_epoch(epochs=2, reg="mixup", reg_off_epochs=5) == [{"hard"}] * 2


def test_reg_off_epochs_switches_a_transform_that_can_be_switched():
    calls = []

    class Switchable:
        def set_regularization(self, on):
            calls.append(on)

        def __call__(self, x, y):
            return x, y

    train(_cfg(epochs=3, reg_off_epochs=1), model=TinyNoBN(), data=make_blobs_bundle(n_train=32, n_val=16),
          batch_transform=Switchable())
    assert calls == [True, True, False]
    with pytest.raises(UsageError, match="has none"):
        train(_cfg(epochs=2, reg_off_epochs=1), model=TinyNoBN(), data=make_blobs_bundle(n_train=32, n_val=16))
    with pytest.raises(UsageError, match="cannot be switched off"):
        train(_cfg(epochs=2, reg_off_epochs=1), model=TinyNoBN(), data=make_blobs_bundle(n_train=32, n_val=16),
              batch_transform=lambda x, y: (x, y))


def test_relabel_targets_without_regularization_pool_without_cutmix():
    from cuekit.relabel.pooling import label_pooling
    from cuekit.relabel.training import ReLabelTargets, pack

    g = torch.Generator().manual_seed(0)
    scores, indices = torch.randn(4, 2, 3, 3, generator=g), torch.randint(0, 5, (4, 2, 3, 3), generator=g)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.6, 0.9], [0.5, 0.5, 1.0, 1.0], [0.0, 0.3, 0.4, 0.7]])
    packed = torch.stack([pack(boxes[i], False, scores[i], indices[i]) for i in range(4)])
    x = torch.randn(4, 3, 8, 8)
    t = ReLabelTargets(5, 2, (3, 3), cutmix_alpha=1.0)
    mixed, _ = t(x.clone(), packed)
    assert not torch.equal(mixed, x)
    t.set_regularization(False)
    out, target = t(x.clone(), packed)
    assert torch.equal(out, x) and torch.allclose(target, label_pooling(scores, indices, boxes, 5))


# --- bit-identical resume with the recipes ----------------------------------------------------------------------------

class _Killed(Exception):
    pass


_AUG = dict(randaugment="2,9", color_jitter=0.4, lighting=0.1)
_ALL = dict(reg="mixup", reg_off_epochs=2, repeated_aug=2, lighting=0.1, lr_mult=["fc.*=3"])


@pytest.mark.parametrize("flags,workers", [
    (dict(lr_mult=["fc.*=10", "conv.bias=0.5"]), 0),
    (_AUG, 0),
    (_AUG, 2),  # augmentation in DataLoader workers
    (dict(repeated_aug=3), 0),
    (dict(reg="cutmix", reg_off_epochs=1), 0),  # killed in epoch 2, resumed into the off epoch
    (_ALL, 0),
    (_ALL, 2),
])
def test_resume_is_bit_identical_with_the_recipes(flags, workers, tmp_path):
    data = _images_bundle(n_train=48)

    def run(out, **kw):
        torch.manual_seed(0)
        return train(_cfg(epochs=3, out=str(out), workers=workers, **flags, **kw), model=TinyNoBN(), data=data)

    full = run(tmp_path / "full")

    def kill(step, model, opt, loss):
        if step == 48 // BATCH + 1:  # mid-way into the second epoch
            raise _Killed

    torch.manual_seed(0)
    with pytest.raises(_Killed):
        train(_cfg(epochs=3, out=str(tmp_path / "cut"), workers=workers, **flags), model=TinyNoBN(), data=data,
              step_callback=kill)
    resumed = run(tmp_path / "cut", resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in full.history] == [h["train_loss"] for h in resumed.history]
