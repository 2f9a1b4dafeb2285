"""The label-map generator: dense logits agree with the classifier, and generation resumes."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from cuekit.errors import UsageError
from cuekit.models import create_model
from cuekit.relabel.generate import DenseClassifier, dense_topk, generate_label_maps
from cuekit.relabel.storage import LabelMapStore, shard_name


@pytest.mark.parametrize("name", ["resnet8", "cam_small", "resnet18"])
def test_dense_logits_averaged_over_space_equal_the_classifier_logits(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_chans=3, img_size=32).eval()
    x = torch.randn(2, 3, 64, 64)
    dense, logits = DenseClassifier(model)(x)
    assert dense.dim() == 4 and dense.shape[:2] == (2, 7) and dense.shape[-1] > 1
    with torch.no_grad():
        own = model(x)
    assert torch.allclose(dense.mean((2, 3)), own, atol=1e-4, rtol=1e-4)
    assert torch.allclose(logits, own)


class MLPHead(nn.Module):
    """GAP followed by a two-layer head: not expressible as a 1x1 conv on the feature map."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(self.pool(self.conv(x)).flatten(1))))


def test_a_head_that_is_not_linear_is_refused():
    with pytest.raises(UsageError, match=r"not GAP \+ linear"):
        DenseClassifier(MLPHead()).check(torch.randn(2, 3, 16, 16))


def test_dense_topk_keeps_the_best_classes_at_the_requested_size():
    dense = torch.randn(2, 9, 6, 6)
    s, i = dense_topk(dense, (3, 3), 4)
    pooled = torch.nn.functional.avg_pool2d(dense, 2)
    assert s.shape == i.shape == (2, 4, 3, 3)
    assert torch.allclose(s, pooled.topk(4, dim=1).values)
    assert torch.allclose(pooled.gather(1, i), s)


class CountingModel(nn.Module):
    def __init__(self, inner, fail_after=None):
        super().__init__()
        self.inner, self.calls, self.fail_after = inner, 0, fail_after

    def forward(self, x):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash")
        return self.inner(x)


def test_generation_resumes_without_redoing_finished_shards(tmp_path):
    torch.manual_seed(0)
    inner = create_model("resnet8", num_classes=6, in_chans=3).eval()
    images = TensorDataset(torch.rand(10, 3, 16, 16), torch.zeros(10, dtype=torch.long))
    names = [f"img{i}" for i in range(10)]
    kw = dict(num_classes=6, map_size=(4, 4), topk=3, batch_size=2, shard_size=4, progress=False)
    # crash while computing the second shard (each shard of 4 images is 2 batches; +1 for the check)
    crashing = CountingModel(inner, fail_after=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_label_maps(crashing, images, names, tmp_path, **kw)
    assert (tmp_path / shard_name(0)).exists() and not (tmp_path / shard_name(1)).exists()
    assert not LabelMapStore(tmp_path).complete
    first = (tmp_path / shard_name(0)).stat().st_mtime_ns
    resumed = CountingModel(inner)
    store = generate_label_maps(resumed, images, names, tmp_path, **kw)
    assert store.complete and len(store) == 10
    assert resumed.calls == 1 + 2 + 1  # the check batch, then shard 1 (2 batches) and shard 2 (1 batch) only
    assert (tmp_path / shard_name(0)).stat().st_mtime_ns == first
    # the resumed store equals a fresh run
    fresh = generate_label_maps(inner, images, names, tmp_path / "fresh", **kw)
    for i in range(10):
        assert torch.equal(store[i][1], fresh[i][1]) and torch.equal(store[i][0], fresh[i][0])
