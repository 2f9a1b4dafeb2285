"""LabelPooling: the right class per crop, flips, the top-k mask, and equality with dense RoIAlign."""
from __future__ import annotations

import random

import pytest
import torch

from cuekit.errors import UsageError
from cuekit.relabel.pooling import (
    RandomResizedCropWithBox,
    label_pooling,
    label_pooling_dense,
    original_relabel,
    relabel_cutmix,
)

C = 10
LEFT, RIGHT = 3, 7


def half_map(h: int = 15, w: int = 15, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: class LEFT dominates the left half, RIGHT the right half; other top-k slots weak."""
    scores = torch.zeros(1, k, h, w)
    indices = torch.zeros(1, k, h, w, dtype=torch.long)
    left = torch.arange(w) < w // 2
    scores[0, 0] = 5.0
    indices[0, 0] = torch.where(left, LEFT, RIGHT)[None, :].expand(h, w)
    for j in range(1, k):
        scores[0, j] = 1.0 - 0.1 * j
        indices[0, j] = torch.where(left, j - 1, j + 3)[None, :].expand(h, w)  # 0,1 left / 4,5 right
    return scores, indices


def boxes(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


@pytest.mark.parametrize("mode", ["topk", "original"])
def test_left_and_right_crops_get_their_class_and_flips_swap_them(mode):
    scores, indices = half_map()
    s, i = scores.expand(4, -1, -1, -1), indices.expand(4, -1, -1, -1)
    b = boxes([0.0, 0.1, 0.4, 0.9], [0.6, 0.1, 1.0, 0.9], [0.0, 0.1, 0.4, 0.9], [0.6, 0.1, 1.0, 0.9])
    flips = torch.tensor([False, False, True, True])
    t = label_pooling(s, i, b, C, flips, mode=mode)
    assert t.argmax(1).tolist() == [LEFT, RIGHT, RIGHT, LEFT]
    assert t[0, LEFT] > 0.9 and t[1, RIGHT] > 0.9
    # a crop across the middle shares the mass between the two classes
    mid = label_pooling(scores, indices, boxes([0.25, 0.0, 0.75, 1.0]), C, mode=mode)[0]
    assert mid[LEFT] > 0.2 and mid[RIGHT] > 0.2


def test_topk_target_sums_to_one_and_has_no_mass_outside_the_stored_classes():
    scores, indices = half_map()
    t = label_pooling(scores.expand(2, -1, -1, -1), indices.expand(2, -1, -1, -1),
                      boxes([0.0, 0.0, 0.3, 1.0], [0.0, 0.0, 1.0, 1.0]), C, mode="topk")
    assert torch.allclose(t.sum(1), torch.ones(2))
    # a crop inside the left half: only the left cells' classes {LEFT, 0, 1} may get mass
    allowed_left = torch.zeros(C, dtype=torch.bool)
    allowed_left[[LEFT, 0, 1]] = True
    assert (t[0, ~allowed_left] == 0).all() and (t[0, allowed_left] > 0).all()
    stored = torch.zeros(C, dtype=torch.bool)
    stored[indices.unique()] = True
    assert (t[1, ~stored] == 0).all()
    # the original's softmax over all classes leaks mass to classes never stored
    orig = label_pooling(scores, indices, boxes([0.0, 0.0, 0.3, 1.0]), C, mode="original")
    assert (orig[0, ~stored] > 0).all()
    assert torch.allclose(orig.sum(1), torch.ones(1))


def random_maps(b: int, k: int, h: int, w: int, c: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, k, h, w, generator=g) * 3
    perm = torch.argsort(torch.rand(b * h * w, c, generator=g), dim=1)[:, :k]
    indices = perm.view(b, h, w, k).permute(0, 3, 1, 2).contiguous()
    x1, y1 = torch.rand(b, generator=g) * 1.1 - 0.1, torch.rand(b, generator=g) * 1.1 - 0.1
    bx = torch.stack([x1, y1, x1 + torch.rand(b, generator=g) * 0.9, y1 + torch.rand(b, generator=g) * 0.9], 1)
    bx[0] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    bx[1] = torch.tensor([0.4, 0.4, 0.41, 0.43])  # smaller than one cell
    flips = torch.rand(b, generator=g) < 0.5
    return scores, indices, bx, flips


@pytest.mark.parametrize("mode", ["topk", "original"])
@pytest.mark.parametrize("shape", [(32, 5, 15, 15, 50), (16, 3, 7, 9, 20)])
def test_weighted_sum_equals_dense_roi_align(mode, shape):
    b, k, h, w, c = shape
    scores, indices, bx, flips = random_maps(b, k, h, w, c)
    fast = label_pooling(scores, indices, bx, c, flips, mode=mode)
    dense = label_pooling_dense(scores, indices, bx, c, flips, mode=mode)
    assert torch.allclose(fast, dense, atol=1e-6)


def test_original_mode_equals_the_original_code_and_its_box_order_is_transposed():
    b, k, h, w, c = 8, 5, 15, 15, 40
    scores, indices, bx, _ = random_maps(b, k, h, w, c, seed=1)
    packed = torch.stack([scores, indices.float()], dim=1)  # (B, 2, K, h, w) as released
    # the original loader builds (top, left, bottom, right) and roi_align reads it as (x1, y1, x2, y2)
    coords = bx[:, [1, 0, 3, 2]]
    orig = original_relabel(packed, coords, num_classes=c)
    ours_transposed = label_pooling(scores, indices, coords, c, mode="original")
    assert torch.allclose(orig, ours_transposed, atol=1e-6)
    ours = label_pooling(scores, indices, bx, c, mode="original")
    assert not torch.allclose(orig, ours, atol=1e-3)


def test_random_resized_crop_returns_the_box_of_the_pixels_it_cut():
    img = torch.zeros(1, 40, 60)
    img[0] = torch.arange(60, dtype=torch.float32)[None, :]  # value = column index
    crop = RandomResizedCropWithBox(size=8, scale=(0.1, 0.5), flip_prob=0.0, rng=random.Random(0))
    for _ in range(5):
        out, box, flipped = crop(img)
        assert out.shape == (1, 8, 8) and not flipped
        x1, x2 = float(box[0]) * 60, float(box[2]) * 60
        assert x1 - 0.5 <= out.min() and out.max() <= x2 - 0.5
    flip = RandomResizedCropWithBox(size=8, scale=(1.0, 1.0), ratio=(1.5, 1.5), flip_prob=1.0, rng=random.Random(0))
    out, box, flipped = flip(img)
    assert flipped and torch.allclose(box, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert out[0, 0, 0] > out[0, 0, -1]  # mirrored


def test_cutmix_box_target_pools_the_pasted_box_from_the_partner_map():
    scores, indices = half_map()
    b = 2
    s = torch.cat([scores, scores])
    i = torch.cat([indices, indices])
    # image 0 is a crop of the left half, image 1 of the right half
    bx = boxes([0.0, 0.0, 0.45, 1.0], [0.55, 0.0, 1.0, 1.0])
    images = torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)])
    mixed, t = relabel_cutmix(images, s, i, bx, torch.zeros(b, dtype=torch.bool), C, alpha=1.0, rng=3, mode="topk",
                              partner_target="box")
    assert torch.allclose(t.sum(1), torch.ones(b), atol=1e-6)
    pasted = (mixed[0, 0] == 1).float().mean().item()  # fraction of image 0 from image 1
    assert 0 < pasted < 1
    assert abs(t[0, RIGHT].item() - pasted) < 0.05 and abs(t[0, LEFT].item() - (1 - pasted)) < 0.05


def test_cutmix_default_is_the_papers_recipe_area_mixed_whole_crop_targets():
    scores, indices = half_map()
    s, i = torch.cat([scores, scores]), torch.cat([indices, indices])
    bx = boxes([0.0, 0.0, 0.45, 1.0], [0.55, 0.0, 1.0, 1.0])
    flips = torch.zeros(2, dtype=torch.bool)
    images = torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)])
    mixed, t = relabel_cutmix(images, s, i, bx, flips, C, alpha=1.0, rng=3)
    own = label_pooling(s, i, bx, C, flips)  # the whole-crop targets, in the default (original) mode
    pasted = (mixed[0, 0] == 1).float().mean().item()
    assert 0 < pasted < 1
    assert torch.allclose(t[0], (1 - pasted) * own[0] + pasted * own[1], atol=1e-6)
    assert torch.allclose(t[1], (1 - pasted) * own[1] + pasted * own[0], atol=1e-6)
    with pytest.raises(UsageError, match="partner_target"):
        relabel_cutmix(images, s, i, bx, flips, C, partner_target="whole")


def test_the_default_target_is_the_papers_softmax_over_all_classes():
    scores, indices = half_map()
    box = boxes([0.0, 0.0, 0.3, 1.0])
    default = label_pooling(scores, indices, box, C)
    assert torch.equal(default, label_pooling(scores, indices, box, C, mode="original"))
    assert (default > 0).all()  # unstored classes are filled, so every class gets a little mass
