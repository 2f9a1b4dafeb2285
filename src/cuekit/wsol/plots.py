"""PNG figures for WSOL: overlays of image, score map and boxes; metric bars per normalization."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cuekit.io import save_figure


def _image_for_display(img: Any, mean: Sequence[float] = (0, 0, 0), std: Sequence[float] = (1, 1, 1)) -> np.ndarray:
    x = np.asarray(img.detach().cpu() if hasattr(img, "detach") else img, np.float32)
    if x.ndim == 3 and x.shape[0] in (1, 3):
        c = x.shape[0]
        x = x * np.asarray(std, np.float32)[:c, None, None] + np.asarray(mean, np.float32)[:c, None, None]
        x = x.transpose(1, 2, 0)
    return np.clip(x.squeeze(), 0, 1)


def save_overlays(path: str | Path, images: Sequence[Any], maps_by_norm: dict[str, np.ndarray],
                  gt_boxes: Sequence[np.ndarray], thresholds: dict[str, float] | None = None,
                  mean: Sequence[float] = (0, 0, 0), std: Sequence[float] = (1, 1, 1), title: str = "") -> str:
    """A grid: one row per image (image + GT box, then each normalization's score map over the
    image with GT (green) and the largest-contour box at that normalization's best threshold (red))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cuekit.wsol.metrics import predicted_boxes

    norms = list(maps_by_norm)
    n = len(images)
    fig, axes = plt.subplots(n, len(norms) + 1, figsize=(2.2 * (len(norms) + 1), 2.2 * n), squeeze=False)

    def rect(ax, b, color):
        ax.add_patch(plt.Rectangle((b[0] - 0.5, b[1] - 0.5), b[2] - b[0] + 1, b[3] - b[1] + 1,
                                   fill=False, edgecolor=color, linewidth=1.5))

    for i in range(n):
        img = _image_for_display(images[i], mean, std)
        ax = axes[i, 0]
        ax.imshow(img, cmap="gray")
        for b in np.asarray(gt_boxes[i]).reshape(-1, 4):
            rect(ax, b, "lime")
        if i == 0:
            ax.set_title("image + GT", fontsize=8)
        for j, norm in enumerate(norms):
            ax = axes[i, j + 1]
            m = maps_by_norm[norm][i]
            ax.imshow(img, cmap="gray")
            ax.imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            for b in np.asarray(gt_boxes[i]).reshape(-1, 4):
                rect(ax, b, "lime")
            tau = (thresholds or {}).get(norm)
            if tau is not None:
                rect(ax, predicted_boxes(m, tau, multi_contour=False)[0], "red")
            if i == 0:
                ax.set_title(norm + (f" (tau={tau:.2f})" if tau is not None else ""), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=90)
    return path.name


def save_metric_bars(path: str | Path, table: dict[str, dict[str, tuple[float, float]]],
                     metrics: Sequence[str], title: str = "") -> str:
    """Grouped bars: table[norm][metric] = (mean, spread)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    norms = list(table)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        means = [table[n][metric][0] for n in norms]
        spreads = [table[n][metric][1] for n in norms]
        ax.bar(norms, means, yerr=spreads, color=["#888", "#4a8", "#a84", "#48c"][: len(norms)], capsize=3)
        lo = min(m - s for m, s in zip(means, spreads))
        ax.set_ylim(max(0, lo - 5), min(100, max(m + s for m, s in zip(means, spreads)) + 3))
        ax.set_title(metric, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=90)
    return path.name
