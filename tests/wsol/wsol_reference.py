"""Test-only reference: the wsolevaluation protocol written out with OpenCV, call for call.

Per threshold: uint8(map * 255), cv2.threshold(..., int(tau * max), 255, THRESH_BINARY),
cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE), boxes from cv2.boundingRect as
(x, y, x + w, y + h) clipped to (W - 1, H - 1), the single box of max cv2.contourArea for
MaxBoxAcc, [0, 0, 0, 0] when there is no contour; IoU with +1 inclusive areas; PxAP from
np.histogram over the thresholds plus [1, 2, 3]. Written independently of cuekit.wsol so the
tests compare two implementations.
"""
from __future__ import annotations

import cv2
import numpy as np


def reference_boxes(scoremap: np.ndarray, thresholds, multi_contour: bool) -> list[np.ndarray]:
    """The boxes the protocol predicts at each threshold: a list of (B_t, 4) int arrays."""
    height, width = scoremap.shape
    img = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    out = []
    for tau in thresholds:
        _, binary = cv2.threshold(src=img, thresh=int(tau * np.max(img)), maxval=255, type=cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            out.append(np.asarray([[0, 0, 0, 0]]))
            continue
        if not multi_contour:
            contours = [max(contours, key=cv2.contourArea)]
        boxes = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        out.append(np.asarray(boxes))
    return out


def reference_iou(box_a: np.ndarray, box_b: np.ndarray) -> np.ndarray:
    """(A, B) IoU matrix with the protocol's +1 pixel areas and 0 for a degenerate union."""
    a = np.asarray(box_a)[:, None, :]
    b = np.asarray(box_b)[None, :, :]
    min_x = np.maximum(a[..., 0], b[..., 0])
    min_y = np.maximum(a[..., 1], b[..., 1])
    max_x = np.minimum(a[..., 2], b[..., 2])
    max_y = np.minimum(a[..., 3], b[..., 3])
    inter = np.maximum(0, max_x - min_x + 1) * np.maximum(0, max_y - min_y + 1)
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    den = area_a + area_b - inter
    bad = den <= 0
    den = np.where(bad, 1, den)
    return np.where(bad, 0, inter / den)


def reference_box_ious(scoremap: np.ndarray, gt_boxes: np.ndarray, thresholds, multi_contour: bool) -> np.ndarray:
    """Best IoU per threshold (T,) for one map."""
    return np.asarray([reference_iou(b, gt_boxes).max() for b in
                       reference_boxes(scoremap, thresholds, multi_contour)])


def reference_maxboxacc(scoremaps, gt_boxes, iou_thresholds=(30, 50, 70), multi_contour=True,
                        cam_curve_interval=0.001) -> dict:
    """{delta: MaxBoxAcc in percent} and the per-threshold counts, as BoxEvaluator computes them."""
    thresholds = list(np.arange(0, 1, cam_curve_interval))
    num_correct = {d: np.zeros(len(thresholds)) for d in iou_thresholds}
    for m, g in zip(scoremaps, gt_boxes):
        best = reference_box_ious(m, np.asarray(g).reshape(-1, 4), thresholds, multi_contour)
        for d in iou_thresholds:
            num_correct[d][np.where(best >= d / 100)[0]] += 1
    n = float(len(scoremaps))
    return {d: (num_correct[d] * 100.0 / n).max() for d in iou_thresholds}


def reference_pxap(scoremaps, masks, cam_curve_interval=0.001) -> float:
    """PxAP in percent from np.histogram over the protocol's bin edges."""
    thresholds = list(np.arange(0, 1, cam_curve_interval))
    edges = np.append(thresholds, [1.0, 2.0, 3.0])
    true_hist = np.zeros(len(thresholds) + 2)
    false_hist = np.zeros(len(thresholds) + 2)
    for m, g in zip(scoremaps, masks):
        true_hist += np.histogram(m[g == 1], bins=edges)[0]
        false_hist += np.histogram(m[g == 0], bins=edges)[0]
    tp = true_hist[::-1].cumsum()
    fn = true_hist.sum() - tp
    fp = false_hist[::-1].cumsum()
    nonzero = (tp + fp) != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
    return float((precision[1:] * np.diff(recall))[nonzero[1:]].sum() * 100)
