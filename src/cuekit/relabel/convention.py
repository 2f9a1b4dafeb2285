"""Which (x, y) order do label maps use? A check against ground-truth boxes.

cuekit pools a label map `(K, h, w)` as rows = y and columns = x. The original ReLabel code passes crop
coordinates in (top, left, bottom, right) order to `roi_align`, which reads them as (x1, y1, x2, y2), so the
released maps are right only if they are stored transposed (specs/wsol_relabel.md). The check settles it from
data: pool each image's map over its ground-truth object box, once as (x1, y1, x2, y2) ("xy", cuekit's order)
and once with x and y swapped ("yx"), and count how often the pooled label's top class is the image's class.
Objects are where their class is, so the right order agrees more; the wrong one is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from cuekit.errors import DataError

ORDERS = ("xy", "yx")


def pooled_top_classes(scores: Tensor, indices: Tensor, boxes: Tensor, num_classes: int, order: str = "xy") -> Tensor:
    """Top class (B,) of one map (scores, indices: (K, h, w)) pooled over each box (B, 4), normalised
    (x1, y1, x2, y2) read in `order` ("yx": the box's x and y swapped before pooling)."""
    from cuekit.relabel.pooling import label_pooling

    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    boxes = boxes.float()
    if order == "yx":
        boxes = boxes[:, [1, 0, 3, 2]]
    b = boxes.shape[0]
    target = label_pooling(scores[None].expand(b, *scores.shape), indices[None].expand(b, *indices.shape), boxes,
                           num_classes, mode="topk")
    return target.argmax(dim=1)


def box_order_agreement(samples: Iterable[tuple[Tensor, Tensor, int, Tensor]], num_classes: int) -> dict[str, Any]:
    """Agreement of the pooled label with the ground truth under both orders.

    samples: (scores (K, h, w), indices (K, h, w), class label, boxes (B, 4) normalised (x1, y1, x2, y2) in [0, 1]).
    Returns {"xy": fraction of boxes whose pooled top class is the label, "yx": the same with x and y swapped,
    "boxes": count, "images": count, "order": the order that agrees more ("tie" when equal)}.
    """
    hits = {o: 0 for o in ORDERS}
    n_boxes = n_images = 0
    for scores, indices, label, boxes in samples:
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        if boxes.numel() == 0:
            continue
        for o in ORDERS:
            hits[o] += int((pooled_top_classes(scores, indices, boxes, num_classes, o) == int(label)).sum())
        n_boxes += boxes.shape[0]
        n_images += 1
    if n_boxes == 0:
        raise DataError("no ground-truth boxes to check the label maps against")
    out: dict[str, Any] = {o: hits[o] / n_boxes for o in ORDERS}
    out.update(boxes=n_boxes, images=n_images,
               order="tie" if hits["xy"] == hits["yx"] else max(ORDERS, key=lambda o: hits[o]))
    return out


def check_box_order(report: dict[str, Any], expected: str = "xy", where: str = "the label maps") -> dict[str, Any]:
    """Refuse (DataError) maps whose ground-truth agreement is higher under the other order than `expected`."""
    other = "yx" if expected == "xy" else "xy"
    if report[other] > report[expected]:
        raise DataError(f"{where} agree with the ground truth in {report[other]:.1%} of {report['boxes']} boxes read "
                        f"as ({other[0]}, {other[1]}) but only {report[expected]:.1%} read as ({expected[0]}, "
                        f"{expected[1]}): they are stored in the other order; read them transposed (`relabel check "
                        "--transpose`, `train --relabel-transpose`) or regenerate them")
    return report


def _lookup(maps: Any) -> Any:
    """A function image_id -> (scores, indices) for a cuekit store or the original release."""
    from cuekit.relabel.storage import LabelMapStore

    if not isinstance(maps, LabelMapStore):
        return maps.get
    by_tail = {"/".join(Path(n).parts[-2:]): n for n in maps.images}

    def get(image_id: str):
        if image_id in maps.position:
            return maps.get(image_id)
        tail = "/".join(Path(image_id).parts[-2:])
        if tail not in by_tail:
            raise DataError(f"no label map for image {image_id!r} in {maps.root}")
        return maps.get(by_tail[tail])

    return get


def check_label_maps(maps: Any, meta: Any, num_classes: int, image_ids: Sequence[str] | None = None,
                     transpose: bool = False, progress: bool = False) -> dict[str, Any]:
    """Both orders' agreement of label maps (a LabelMapStore or OriginalLabelMaps) with the boxes and labels of
    WSOLMetadata `meta` (wsolevaluation metadata or CUB's release files; needs image sizes). `transpose` checks
    the maps read transposed. Returns the report of `box_order_agreement`."""
    from tqdm.auto import tqdm

    get = _lookup(maps)
    ids = list(image_ids if image_ids is not None else meta.image_ids)

    def samples():
        for image_id in tqdm(ids, desc="label maps", unit="img", disable=not progress, leave=False):
            if image_id not in meta.boxes:
                continue
            if image_id not in meta.sizes:
                raise DataError(f"no image size for {image_id} (image_sizes.txt) to normalise its boxes")
            w, h = meta.sizes[image_id]
            scores, indices = get(image_id)
            if transpose:
                scores, indices = scores.transpose(-1, -2), indices.transpose(-1, -2)
            boxes = torch.tensor(meta.boxes[image_id], dtype=torch.float32) / torch.tensor([w, h, w, h])
            yield scores, indices, meta.labels[image_id], boxes.clamp(0, 1)

    return box_order_agreement(samples(), num_classes)
