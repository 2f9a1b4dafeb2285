"""WSOL localization metrics, equal to the wsolevaluation protocol (Choe et al., CVPR'20), fast.

All metrics take score maps in [0, 1] (N, H, W) (numpy or torch, any device) and are reported
in percent, like the reference:

* BoxAcc(tau, delta): fraction of images whose predicted box at score-map threshold tau has
  IoU >= delta/100 with a ground-truth box; MaxBoxAcc(delta) = max over tau (1,000 thresholds).
* `maxboxacc`: the CVPR'20 metric, delta = 50, one box per threshold: the contour of largest area.
* `maxboxacc_v2`: mean over delta in {30, 50, 70}, every contour's box competes (holes included).
* `pxap`: area under the pixel precision-recall curve from score histograms, ignoring mask == 255.
* top-1 localization: an image counts only when its class is also predicted correctly.

Boxes are (x0, y0, x1, y1) in score-map pixels, inclusive, as in wsolevaluation. The boxes a
threshold yields are those of every contour OpenCV's findContours(RETR_TREE) returns on
`uint8(map * 255) > int(tau * max)`; they are computed without OpenCV (see `_boxcore`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from cuekit.errors import DataError

DEFAULT_IOU_THRESHOLDS = (30, 50, 70)
DEFAULT_CAM_CURVE_INTERVAL = 0.001


def cam_thresholds(cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL) -> np.ndarray:
    """The score-map thresholds of the protocol: np.arange(0, 1, interval) (1,000 by default)."""
    if not 0 < cam_curve_interval < 1:
        raise DataError(f"cam_curve_interval must be in (0, 1), got {cam_curve_interval}")
    return np.arange(0, 1, cam_curve_interval)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


_RANGE_MESSAGE = ("score maps must lie in [0, 1] without NaN (normalize them first, "
                  "e.g. cuekit.wsol.normalize_cams)")


def _as_maps(scoremaps: Any, check_values: bool = True) -> Any:
    """(N, H, W) float array or tensor; with check_values, validated to lie in [0, 1] without NaN
    (numpy maps skip it here when a compiled kernel checks them on the way)."""
    if _is_torch(scoremaps):
        import torch

        maps = scoremaps.detach()
        if not maps.is_floating_point():
            raise DataError(f"score maps must be floating point, got {maps.dtype}")
        if maps.dtype in (torch.float16, torch.bfloat16):
            maps = maps.float()
        if check_values and maps.numel():
            # one host sync: any NaN or value outside [0, 1]
            if bool(((maps >= 0) & (maps <= 1)).logical_not().any()):
                raise DataError(_RANGE_MESSAGE)
    else:
        maps = np.asarray(scoremaps)
        if maps.dtype.kind != "f":
            raise DataError(f"score maps must be floating point, got {maps.dtype}")
        if maps.dtype not in (np.float32, np.float64):
            maps = maps.astype(np.float32)
        if check_values and maps.size and not ((maps >= 0) & (maps <= 1)).all():
            raise DataError(_RANGE_MESSAGE)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise DataError(f"score maps must be (N, H, W) or (H, W), got shape {tuple(maps.shape)}")
    return maps


def scoremaps_to_uint8(scoremaps: Any) -> np.ndarray:
    """uint8(map * 255) with truncation, as the protocol does: (N, H, W) uint8, C-contiguous.

    Raises DataError for values outside [0, 1] or NaN.
    """
    maps = _as_maps(scoremaps, check_values=_is_torch(scoremaps))
    if _is_torch(maps):
        import torch

        return np.ascontiguousarray((maps * 255).to(torch.uint8).cpu().numpy())
    from cuekit.wsol import _boxcore

    out = np.empty(maps.shape, np.uint8)
    if not _boxcore.to_uint8(np.ascontiguousarray(maps).reshape(-1), out.reshape(-1)):
        raise DataError(_RANGE_MESSAGE)
    return out


def _gt_arrays(gt_boxes: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Flatten per-image GT boxes into (M, 4) float64 and (n + 1,) offsets."""
    if _is_torch(gt_boxes):
        gt_boxes = gt_boxes.detach().cpu().numpy()
    if isinstance(gt_boxes, np.ndarray) and gt_boxes.ndim == 2:
        gt_boxes = gt_boxes[:, None, :]
    if len(gt_boxes) != n:
        raise DataError(f"{n} score maps but {len(gt_boxes)} sets of GT boxes")
    per = []
    for b in gt_boxes:
        a = np.asarray(b.detach().cpu().numpy() if _is_torch(b) else b, dtype=np.float64).reshape(-1, 4)
        if np.isnan(a).any() or (a < 0).any() or (a[:, 2] < a[:, 0]).any() or (a[:, 3] < a[:, 1]).any():
            raise DataError(f"GT boxes must be non-negative (x0, y0, x1, y1) with x0 <= x1, y0 <= y1: {a.tolist()}")
        per.append(a)
    start = np.zeros(n + 1, np.int64)
    start[1:] = np.cumsum([len(a) for a in per])
    flat = np.concatenate(per) if per else np.zeros((0, 4))
    return np.ascontiguousarray(flat, dtype=np.float64), start


def box_ious(scoremaps: Any, gt_boxes: Any, cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL,
             multi_contour: bool = True, largest_contour: bool = False,
             num_threads: int | None = None) -> dict[str, np.ndarray]:
    """Per image and threshold, the best IoU between the predicted boxes and the GT boxes.

    scoremaps: (N, H, W) in [0, 1]; gt_boxes: a sequence of N (K_i, 4) arrays or an (N, 4)
    array. Returns {"multi": (N, T)} (all contours, v2) and/or {"largest": (N, T)} (the
    largest contour, v1), T = len(cam_thresholds(cam_curve_interval)). num_threads: maps are
    spread over numba's threads (None: as many as torch uses; 1: serial); results are identical.
    """
    from cuekit.wsol import _boxcore

    _boxcore.warn_if_slow()
    imgs = scoremaps_to_uint8(scoremaps)
    if max(imgs.shape[1:]) > 32000:
        raise DataError(f"score maps up to 32000 pixels a side are supported, got {imgs.shape[1:]}")
    gt, start = _gt_arrays(gt_boxes, imgs.shape[0])
    taus = cam_thresholds(cam_curve_interval)
    n = imgs.shape[0]
    out_multi = np.zeros((n, len(taus)), np.float64)
    out_largest = np.zeros((n, len(taus)) if largest_contour else (n, 0), np.float64)
    if not multi_contour:
        out_multi = np.zeros((n, 0), np.float64)
    _boxcore.run_box_ious(imgs, gt, start, taus, multi_contour, largest_contour, out_multi, out_largest,
                          num_threads)
    res = {}
    if multi_contour:
        res["multi"] = out_multi
    if largest_contour:
        res["largest"] = out_largest
    return res


def _as_flags(correct_class: Any, n: int) -> np.ndarray | None:
    if correct_class is None:
        return None
    if _is_torch(correct_class):
        correct_class = correct_class.detach().cpu().numpy()
    flags = np.asarray(correct_class).astype(bool).reshape(-1)
    if len(flags) != n:
        raise DataError(f"{n} score maps but {len(flags)} classification flags")
    return flags


class BoxEvaluator:
    """Streaming BoxAcc / MaxBoxAcc: `accumulate` per batch, `compute` at the end.

    multi_contour=True with IoU (30, 50, 70) is MaxBoxAccV2; False with (50,) is MaxBoxAcc.
    Pass `correct_class` (N,) bools to `accumulate` to get top-1 localization as well.
    """

    def __init__(self, iou_thresholds: Sequence[int] = DEFAULT_IOU_THRESHOLDS, multi_contour: bool = True,
                 cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL):
        self.iou_thresholds = [int(d) for d in iou_thresholds]
        if not self.iou_thresholds or any(not 0 <= d <= 100 for d in self.iou_thresholds):
            raise DataError(f"IoU thresholds must be percentages in [0, 100], got {list(iou_thresholds)}")
        self.multi_contour = bool(multi_contour)
        self.cam_curve_interval = cam_curve_interval
        self.thresholds = cam_thresholds(cam_curve_interval)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        t = len(self.thresholds)
        self.num_correct = {d: np.zeros(t, np.int64) for d in self.iou_thresholds}
        self.num_correct_top1 = {d: np.zeros(t, np.int64) for d in self.iou_thresholds}
        self.count = 0
        self.count_top1 = 0

    def accumulate(self, scoremaps: Any, gt_boxes: Any, correct_class: Any = None) -> np.ndarray:
        """Add a batch: scoremaps (N, H, W) in [0, 1], gt_boxes N x (K_i, 4); returns (N, T) IoUs."""
        key = "multi" if self.multi_contour else "largest"
        ious = box_ious(scoremaps, gt_boxes, self.cam_curve_interval, multi_contour=self.multi_contour,
                        largest_contour=not self.multi_contour)[key]
        self.add_ious(ious, correct_class)
        return ious

    def add_ious(self, ious: np.ndarray, correct_class: Any = None) -> None:
        """Add precomputed per-image IoU curves (N, T) (from `box_ious`)."""
        flags = _as_flags(correct_class, len(ious))
        for d in self.iou_thresholds:
            hit = ious >= (d / 100)
            self.num_correct[d] += hit.sum(0)
            if flags is not None:
                self.num_correct_top1[d] += (hit & flags[:, None]).sum(0)
        self.count += len(ious)
        if flags is not None:
            self.count_top1 += len(ious)

    def compute(self) -> dict:
        """MaxBoxAcc per IoU threshold, their mean, BoxAcc curves and best thresholds (percent)."""
        if self.count == 0:
            raise DataError("no score maps were accumulated")
        out: dict[str, Any] = {"count": self.count, "iou_thresholds": list(self.iou_thresholds),
                               "multi_contour": self.multi_contour, "max_box_acc": {}, "best_threshold": {},
                               "box_acc": {}}
        for d in self.iou_thresholds:
            acc = self.num_correct[d] * 100.0 / float(self.count)
            out["box_acc"][d] = acc
            out["max_box_acc"][d] = float(acc.max())
            out["best_threshold"][d] = float(self.thresholds[int(acc.argmax())])
        out["mean"] = float(np.mean([out["max_box_acc"][d] for d in self.iou_thresholds]))
        if self.count_top1 == self.count:
            out["top1_loc"] = {d: float((self.num_correct_top1[d] * 100.0 / float(self.count)).max())
                               for d in self.iou_thresholds}
        return out


class MaskEvaluator:
    """Streaming PxAP: score histograms at GT-foreground (mask 1) and background (mask 0) pixels.

    Masks with value 255 (the protocol's ignore region) or any other value are left out.
    """

    def __init__(self, cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL):
        self.cam_curve_interval = cam_curve_interval
        self.thresholds = cam_thresholds(cam_curve_interval)
        # bins [0, bw), ..., [1 - bw, 1), [1, 2), [2, 3] as in the reference
        self.edges = np.append(self.thresholds, [1.0, 2.0, 3.0])
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.hist_true = np.zeros(len(self.edges) - 1, np.int64)
        self.hist_false = np.zeros(len(self.edges) - 1, np.int64)

    def accumulate(self, scoremaps: Any, masks: Any) -> None:
        """Add a batch: scoremaps (N, H, W) in [0, 1]; masks (N, H, W) uint8 with 0, 1, 255."""
        maps = _as_maps(scoremaps, check_values=_is_torch(scoremaps))
        n, h, w = maps.shape
        if _is_torch(masks):
            masks = masks.detach()
        if tuple(masks.shape[-2:]) != (h, w) or (masks.ndim == 3 and masks.shape[0] != n):
            raise DataError(f"masks of shape {tuple(masks.shape)} do not match score maps {(n, h, w)}")
        if _is_torch(maps) and maps.is_cuda:
            self._accumulate_torch(maps, masks)
            return
        from cuekit.wsol import _boxcore

        scores = maps.cpu().numpy() if _is_torch(maps) else maps
        m = masks.cpu().numpy() if _is_torch(masks) else np.asarray(masks)
        scores = np.ascontiguousarray(scores.reshape(n, h * w))
        m = np.ascontiguousarray(m.reshape(n, h * w).astype(np.uint8, copy=False))
        true_add = np.zeros_like(self.hist_true)
        false_add = np.zeros_like(self.hist_false)
        if not _boxcore.score_histograms(scores, m, self.edges, 1.0 / self.cam_curve_interval, true_add, false_add):
            raise DataError(_RANGE_MESSAGE)
        self.hist_true += true_add
        self.hist_false += false_add

    def _accumulate_torch(self, maps, masks) -> None:
        import torch

        edges = torch.as_tensor(self.edges, dtype=torch.float64, device=maps.device)
        masks = torch.as_tensor(masks, device=maps.device).reshape(maps.shape)
        bins = torch.bucketize(maps.double(), edges, right=True) - 1
        nb = len(self.edges) - 1
        bins = bins.clamp_(0, nb - 1)
        for value, hist in ((1, self.hist_true), (0, self.hist_false)):
            sel = bins[masks == value]
            hist += torch.bincount(sel, minlength=nb).cpu().numpy()

    def compute(self) -> dict:
        """PxAP (percent) and the precision-recall curve, computed as the reference does."""
        true_hist = self.hist_true.astype(np.float64)
        false_hist = self.hist_false.astype(np.float64)
        num_true = true_hist.sum()
        tp = true_hist[::-1].cumsum()
        fn = num_true - tp
        fp = false_hist[::-1].cumsum()
        if ((tp + fn) <= 0).all():
            raise DataError("no positive ground-truth pixel in the accumulated masks")
        if ((tp + fp) <= 0).all():
            raise DataError("no scored pixel in the accumulated masks")
        nonzero = (tp + fp) != 0
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = tp / (tp + fp)
            recall = tp / (tp + fn)
        auc = (precision[1:] * np.diff(recall))[nonzero[1:]].sum() * 100
        return {"pxap": float(auc), "precision": precision, "recall": recall,
                "num_foreground": int(num_true), "num_background": int(false_hist.sum())}


class LocalizationEvaluator:
    """Every metric in one streaming pass: MaxBoxAcc, MaxBoxAccV2 (and per IoU), top-1 and
    GT-known localization (IoU 50, largest-contour box), PxAP when masks are given.

    `accumulate(scoremaps, gt_boxes=None, masks=None, correct_class=None)`; `compute()` returns a
    flat dict of percentages.
    """

    def __init__(self, cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL,
                 iou_thresholds: Sequence[int] = DEFAULT_IOU_THRESHOLDS, boxes_v1: bool = True):
        self.v2 = BoxEvaluator(iou_thresholds, True, cam_curve_interval)
        self.v1 = BoxEvaluator((50,), False, cam_curve_interval) if boxes_v1 else None
        self.mask = MaskEvaluator(cam_curve_interval)
        self.cam_curve_interval = cam_curve_interval
        self.has_masks = False

    def accumulate(self, scoremaps: Any, gt_boxes: Any = None, masks: Any = None,
                   correct_class: Any = None) -> None:
        """Add a batch of score maps with their GT boxes and/or masks."""
        if gt_boxes is None and masks is None:
            raise DataError("give GT boxes, masks, or both")
        if gt_boxes is not None:
            ious = box_ious(scoremaps, gt_boxes, self.cam_curve_interval, multi_contour=True,
                            largest_contour=self.v1 is not None)
            self.v2.add_ious(ious["multi"], correct_class)
            if self.v1 is not None:
                self.v1.add_ious(ious["largest"], correct_class)
        if masks is not None:
            self.mask.accumulate(scoremaps, masks)
            self.has_masks = True

    def compute(self) -> dict:
        """A flat dict: maxboxacc_v2, maxboxacc_v2_iou{30,50,70}, maxboxacc, gt_known_loc,
        top1_loc (if classification flags were given), pxap (if masks were given)."""
        out: dict[str, Any] = {}
        if self.v2.count:
            r2 = self.v2.compute()
            out["maxboxacc_v2"] = r2["mean"]
            for d, v in r2["max_box_acc"].items():
                out[f"maxboxacc_v2_iou{d}"] = v
        if self.v1 is not None and self.v1.count:
            r1 = self.v1.compute()
            out["maxboxacc"] = r1["max_box_acc"][50]
            out["gt_known_loc"] = r1["max_box_acc"][50]
            if "top1_loc" in r1:
                out["top1_loc"] = r1["top1_loc"][50]
        if self.has_masks:
            out["pxap"] = self.mask.compute()["pxap"]
        return out


def maxboxacc(scoremaps: Any, gt_boxes: Any, iou_threshold: int = 50,
              cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL) -> float:
    """MaxBoxAcc (CVPR'20): best-threshold accuracy of the largest-contour box at IoU 50 (percent)."""
    ev = BoxEvaluator((iou_threshold,), multi_contour=False, cam_curve_interval=cam_curve_interval)
    ev.accumulate(scoremaps, gt_boxes)
    return ev.compute()["max_box_acc"][iou_threshold]


def maxboxacc_v2(scoremaps: Any, gt_boxes: Any, iou_thresholds: Sequence[int] = DEFAULT_IOU_THRESHOLDS,
                 cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL) -> float:
    """MaxBoxAccV2: MaxBoxAcc averaged over IoU 30/50/70 with every contour's box (percent)."""
    ev = BoxEvaluator(iou_thresholds, multi_contour=True, cam_curve_interval=cam_curve_interval)
    ev.accumulate(scoremaps, gt_boxes)
    return ev.compute()["mean"]


def pxap(scoremaps: Any, masks: Any, cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL) -> float:
    """PxAP: area under the pixel precision-recall curve (percent); mask 1 = object, 0 = background,
    255 = ignored."""
    ev = MaskEvaluator(cam_curve_interval)
    ev.accumulate(scoremaps, masks)
    return ev.compute()["pxap"]


def box_accuracy(scoremaps: Any, gt_boxes: Any, iou_threshold: int = 50, multi_contour: bool = True,
                 cam_curve_interval: float = DEFAULT_CAM_CURVE_INTERVAL) -> np.ndarray:
    """BoxAcc at every threshold (T,) in percent: the curve whose maximum is MaxBoxAcc."""
    ev = BoxEvaluator((iou_threshold,), multi_contour=multi_contour, cam_curve_interval=cam_curve_interval)
    ev.accumulate(scoremaps, gt_boxes)
    return ev.compute()["box_acc"][iou_threshold]


def predicted_boxes(scoremap: Any, threshold: float, multi_contour: bool = True) -> np.ndarray:
    """The protocol's predicted boxes (B, 4) int64 for one score map (H, W) at threshold tau:
    every contour's box (v2) or the largest contour's (v1); [[0, 0, 0, 0]] when there is none.
    For display and inspection; the metrics never need the boxes themselves."""
    from cuekit.wsol import _boxcore

    img = scoremaps_to_uint8(scoremap)
    if img.shape[0] != 1:
        raise DataError("predicted_boxes takes one score map (H, W)")
    h, w = img.shape[1:]
    boxes = _boxcore.boxes_at_level(img[0].reshape(-1), h, w, int(threshold * img.max()), multi_contour)
    return boxes if len(boxes) else np.zeros((1, 4), np.int64)
