"""Label-map generation (ReLabel Appendix A; the original code was never released): a teacher run densely.

Any classifier of the form features -> global average pooling -> linear head is run with the pooling
removed and the head applied as a 1x1 convolution, giving class scores at every location of the last
feature map (pre-softmax). The map is brought to `map_size` (adaptive average pooling, which keeps its
spatial mean when the sizes divide) and the top-k scores and class ids of every cell are stored in
safetensors shards (`cuekit.relabel.storage`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from cuekit.errors import UsageError
from cuekit.relabel.storage import LabelMapStore, LabelMapWriter

__all__ = ["DenseClassifier", "generate_label_maps", "dense_topk"]


def _global_pool(model: nn.Module) -> nn.Module | None:
    """The last AdaptiveAvgPool2d with a 1 x 1 output in `model`, or None."""
    found = None
    for m in model.modules():
        if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1), [1, 1]):
            found = m
    return found


def _last_linear(model: nn.Module) -> nn.Linear | None:
    found = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            found = m
    return found


class DenseClassifier(nn.Module):
    """A GAP + linear classifier applied densely: x (N, 3, H, W) -> (dense (N, C, h, w), logits (N, C)).

    `pool` (default: the model's last AdaptiveAvgPool2d(1)) is where the feature map (N, D, h, w) is
    read, by a hook; `head` (default: the model's last nn.Linear, D -> C) is applied to it as a 1x1
    conv. The model's own logits come along, so `check()` can verify that the dense logits averaged
    over space equal them (true exactly when nothing but GAP, flatten and dropout sits between the
    two). Models that pool with a function instead of a module: pass `features` (x -> (N, D, h, w)).
    """

    def __init__(self, model: nn.Module, head: nn.Linear | None = None, pool: nn.Module | None = None,
                 features: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        self.model = model
        self.head = head if head is not None else _last_linear(model)
        if self.head is None:
            raise UsageError("the teacher has no nn.Linear head; ReLabel needs a GAP + linear classifier")
        self.features = features
        self.pool = None if features is not None else (pool if pool is not None else _global_pool(model))
        if self.features is None and self.pool is None:
            raise UsageError("the teacher has no AdaptiveAvgPool2d(1) module to remove; pass features= "
                             "(x -> feature map) for a model that pools with a function")

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (N, C_in, H, W) -> dense scores (N, classes, h, w), the model's logits (N, classes)."""
        if self.features is not None:
            feats = self.features(x)
            logits = self.head(feats.mean((2, 3)))
        else:
            captured: list[Tensor] = []
            handle = self.pool.register_forward_pre_hook(lambda mod, inp: captured.append(inp[0]))
            try:
                logits = self.model(x)
            finally:
                handle.remove()
            if len(captured) != 1:
                raise UsageError(f"the teacher's pooling layer ran {len(captured)} times per forward; expected once")
            feats = captured[0]
        if feats.dim() != 4 or feats.shape[1] != self.head.in_features:
            raise UsageError(f"the pooled feature map has shape {tuple(feats.shape)}, but the head takes "
                             f"{self.head.in_features} features: not a GAP + linear classifier")
        weight = self.head.weight[:, :, None, None]
        dense = F.conv2d(feats, weight, self.head.bias)
        return dense, logits

    @torch.no_grad()
    def check(self, x: Tensor, rtol: float = 1e-3) -> float:
        """Largest |mean_hw(dense) - logits| on a batch; raises UsageError if it exceeds rtol * scale."""
        dense, logits = self(x)
        err = (dense.float().mean((2, 3)) - logits.float()).abs().max().item()
        scale = max(1.0, logits.float().abs().max().item())
        if err > rtol * scale:
            raise UsageError(f"the teacher is not GAP + linear: its dense scores averaged over space differ "
                             f"from its logits by {err:.3g}; ReLabel cannot run it densely")
        return err


def dense_topk(dense: Tensor, map_size: Sequence[int], topk: int) -> tuple[Tensor, Tensor]:
    """Dense scores (N, C, h, w) -> top-k scores and class ids (N, K, map_h, map_w) at `map_size`."""
    size = (int(map_size[0]), int(map_size[1]))
    if tuple(dense.shape[-2:]) != size:
        dense = F.adaptive_avg_pool2d(dense.float(), size)
    if topk > dense.shape[1]:
        raise UsageError(f"topk {topk} exceeds the teacher's {dense.shape[1]} classes")
    scores, indices = dense.float().topk(topk, dim=1)
    return scores, indices


def _images_only(batch):
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return x


@torch.no_grad()
def generate_label_maps(teacher: nn.Module | DenseClassifier, images: Dataset, names: Sequence[str],
                        out_dir: str | Path, *, num_classes: int, map_size: Sequence[int] = (15, 15),
                        topk: int = 5, batch_size: int = 64, shard_size: int = 1024, device: str = "cpu",
                        workers: int = 0, progress: bool = True, meta: dict | None = None,
                        on_shard: Callable[[int], None] | None = None) -> LabelMapStore:
    """Run `teacher` densely over `images` (items: image (3, H, W) or (image, ...)) into a store at out_dir.

    names[i] names images[i] (e.g. its relative path). Shards already written by an earlier,
    interrupted run with the same images and settings are kept and skipped. The first batch is
    checked: dense scores averaged over space must equal the teacher's logits. on_shard(s) runs
    after each shard is written. Returns the store, opened for reading.
    """
    from tqdm.auto import tqdm

    if len(names) != len(images):
        raise UsageError(f"{len(names)} names for {len(images)} images")
    dense_model = teacher if isinstance(teacher, DenseClassifier) else DenseClassifier(teacher)
    dense_model.eval().to(device)
    writer = LabelMapWriter(out_dir, names, num_classes=num_classes, topk=topk, map_size=map_size,
                            shard_size=shard_size, meta=meta)
    todo = writer.missing_shards()
    checked = False
    bar = tqdm(total=sum(len(writer.shard_range(s)) for s in todo), desc="label maps", unit="img",
               disable=not progress, dynamic_ncols=True)
    for shard in todo:
        rng = writer.shard_range(shard)
        loader = DataLoader(Subset(images, list(rng)), batch_size=batch_size, shuffle=False, num_workers=workers)
        all_scores, all_ids = [], []
        for batch in loader:
            x = _images_only(batch).to(device).float()
            if not checked:
                dense_model.check(x)
                checked = True
            dense, _ = dense_model(x)
            if dense.shape[1] != num_classes:
                raise UsageError(f"the teacher outputs {dense.shape[1]} classes, expected {num_classes}")
            s, i = dense_topk(dense, map_size, topk)
            all_scores.append(s.cpu())
            all_ids.append(i.cpu())
            bar.update(len(x))
        writer.write_shard(shard, torch.cat(all_scores), torch.cat(all_ids))
        if on_shard is not None:
            on_shard(shard)
    bar.close()
    return LabelMapStore(out_dir)
