import numpy as np
import pytest
import torch

from cuekit.data import create_dataset
from cuekit.data.moving_shapes import MOTIONS, MovingShapesDataset, render_clip
from cuekit.errors import UnknownChoiceError, UsageError


def _masks(motion: str, seed: int = 0, frames: int = 8, size: int = 32) -> np.ndarray:
    clip, mask = render_clip(np.random.default_rng(seed), MOTIONS.index(motion), 0, 8, frames, size,
                             return_mask=True)
    assert clip.shape == (frames, size, size, 3) and mask.shape == (frames, size, size)
    assert mask.any(axis=(1, 2)).all()  # the object is in every frame
    return mask


def _centroids(mask: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:mask.shape[1], 0:mask.shape[2]]
    return np.array([[xx[m].mean(), yy[m].mean()] for m in mask])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_motion_moves_the_object_as_named(seed):
    for motion, axis, sign in (("right", 0, 1), ("left", 0, -1), ("down", 1, 1), ("up", 1, -1)):
        c = _centroids(_masks(motion, seed))
        steps = np.diff(c[:, axis]) * sign
        assert (steps > 0).all(), (motion, c)
        assert abs(c[-1, 1 - axis] - c[0, 1 - axis]) < 1.0  # no drift across the motion
    grow, shrink = _masks("grow", seed).sum((1, 2)), _masks("shrink", seed).sum((1, 2))
    assert (np.diff(grow) >= 0).all() and grow[-1] > 1.8 * grow[0]
    assert (np.diff(shrink) <= 0).all() and shrink[0] > 1.8 * shrink[-1]
    for motion in ("rotate-cw", "rotate-ccw"):
        m = _masks(motion, seed)
        c, area = _centroids(m), m.sum((1, 2))
        assert np.abs(c - c[0]).max() < 1.0 and area.max() < 1.25 * area.min()
        assert (m[0] != m[-1]).sum() > 0.2 * area[0]  # it turned
    cw, ccw = _masks("rotate-cw", seed), _masks("rotate-ccw", seed)
    assert (cw[0] == ccw[0]).all()  # same start, opposite turns: no later frame coincides (square, cross, triangle)
    assert all((cw[k] != ccw[k]).any() for k in range(1, len(cw)))


def test_clips_are_deterministic_in_range_and_depend_on_the_seed():
    ds = MovingShapesDataset(6, frames=5, img_size=20, seed=0)
    x, y = ds[2]
    assert x.shape == (3, 5, 20, 20) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y == ds.labels[2] and 0 <= y < 8
    assert torch.equal(x, MovingShapesDataset(6, frames=5, img_size=20, seed=0)[2][0])
    assert not torch.equal(x, MovingShapesDataset(6, frames=5, img_size=20, seed=1)[2][0])
    clips, labels = ds.tensors()
    assert torch.equal(clips[2], x) and torch.equal(labels, torch.as_tensor(ds.labels))


def test_scenes_follow_the_class_in_training_and_not_in_test():
    n = 4000
    train = MovingShapesDataset(n, split="train", scene_bias=0.8, seed=0)
    test = MovingShapesDataset(n, split="test", scene_bias=0.8, seed=0)
    # own scene with probability 0.8, else any of the 8 scenes (which may again be the own one)
    expected = 0.8 + 0.2 / 8
    assert np.mean(train.scenes == train.labels) == pytest.approx(expected, abs=0.03)
    assert np.mean(test.scenes == test.labels) == pytest.approx(1 / 8, abs=0.03)
    assert np.bincount(test.scenes, minlength=8).min() > n / 8 * 0.8


def test_direction_task_has_the_four_translations():
    ds = MovingShapesDataset(50, task="direction")
    assert ds.classes == ["right", "left", "down", "up"] and set(ds.labels) <= {0, 1, 2, 3}
    assert set(ds.scenes) <= {0, 1, 2, 3}


def test_bundle_uses_frames_and_the_scene_independent_split_for_validation():
    b = create_dataset("moving-shapes", img_size=16, frames=4, train_size=10, val_size=6)
    assert b.frames == 4 and b.num_classes == 8 and b.img_size == 16
    assert b.train[0][0].shape == (3, 4, 16, 16)
    assert b.train.split == "train" and b.val.split == "test" and b.val.scene_bias == 0.0


def test_bad_input_is_a_clear_error():
    with pytest.raises(UsageError, match="2 frames"):
        MovingShapesDataset(4, frames=1)
    with pytest.raises(UnknownChoiceError):
        MovingShapesDataset(4, task="colour")
    with pytest.raises(UsageError, match="img-size"):
        create_dataset("moving-shapes", img_size=8)
    with pytest.raises(UsageError, match="video datasets"):
        create_dataset("dsprites", frames=4)
    with pytest.raises(UsageError, match="no path"):
        create_dataset("moving-shapes:/tmp")


def test_engine_trains_a_video_model_on_it(tmp_path):
    from cuekit.train import TrainConfig, train

    cfg = TrainConfig(model="video_cnn_small", model_kwargs={"widths": (4, 8, 8, 8)}, data="moving-shapes",
                      frames=4, img_size=16, train_size=32, val_size=16, epochs=1, batch_size=16, lr=1e-3,
                      opt="adamw", out=str(tmp_path / "run"), device="cpu", progress=False, reg="videomix-st")
    res = train(cfg)
    assert np.isfinite(res.final["train_loss"])
    import json

    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["frames"] == 4 and meta["data"] == "moving-shapes"


@pytest.mark.parametrize("size,frames", [(16, 6), (32, 8)])
def test_the_moving_object_fills_a_fair_share_of_the_voxels(size, frames):
    """About a fifth of a clip's voxels are the object (outline not counted), every motion alike, at any size."""
    share = {m: [] for m in MOTIONS}
    for i in range(240):
        motion = MOTIONS[i % 8]
        _, mask = render_clip(np.random.default_rng(i), i % 8, i % 8, 8, frames, size, return_mask=True)
        share[motion].append(mask.mean())
    per_motion = {m: float(np.mean(v)) for m, v in share.items()}
    overall = float(np.mean(list(per_motion.values())))
    assert 0.17 < overall < 0.25, per_motion
    assert min(per_motion.values()) > 0.15 and max(per_motion.values()) < 0.28, per_motion


def test_a_translation_stays_inside_the_clip():
    for seed in range(20):
        for motion in ("right", "left", "down", "up"):
            m = _masks(motion, seed, frames=6, size=16)
            area = m.sum((1, 2))
            assert area.max() - area.min() <= 0.15 * area.max()  # not cut at the border as it moves
