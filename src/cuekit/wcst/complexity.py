"""A Kolmogorov-complexity proxy for each cue (cuekit's own; the paper's exact proxy is not public).

The paper explains cue preference by Kolmogorov (descriptional) complexity but its code has no
estimator. Ours: the extra compressed bytes needed to describe how an image changes when only the
cue changes level.

- "renderings" (sources that can render from latents, e.g. Color-dSprites): for each of
  `bases` random latent settings, render the L images that differ only in the cue (one per level,
  the level's middle value); cost = C(all L images) - C(the first image), divided by L - 1.
- "level_means" (any source): the mean image of each level over the cue's off-diagonal samples
  (other cues vary, so they average out), quantised to `bits` bits to drop sampling noise;
  cost = (C(all L means) - C(the first mean)) / (L - 1).

C is the compressed size in bytes under zlib (level 9), bz2 (level 9) and LZMA (preset 6); the
rank order is reported per codec. Lower cost = simpler cue.
"""
from __future__ import annotations

import bz2
import lzma
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from cuekit.errors import UnknownChoiceError, UsageError
from cuekit.io import save_figure
from cuekit.wcst.datasets import CueConflictData, DSpritesSource

CODECS: dict[str, Callable[[bytes], bytes]] = {
    "zlib": lambda b: zlib.compress(b, 9),
    "bz2": lambda b: bz2.compress(b, 9),
    "lzma": lambda b: lzma.compress(b, preset=6),
}
METHODS = ("renderings", "level_means")
PROXY_LABEL = "cuekit's proxy (not the paper's): conditional compressed size of cue-only image changes"


def compressed_size(data: bytes, codec: str) -> int:
    """Size in bytes of `data` compressed with `codec` (zlib, bz2 or lzma)."""
    if codec not in CODECS:
        raise UnknownChoiceError("codec", codec, CODECS)
    return len(CODECS[codec](data))


def conditional_cost(images: Sequence[np.ndarray], codec: str) -> float:
    """(C(all images) - C(first image)) / (n - 1): bytes per extra image given the first."""
    if len(images) < 2:
        raise ValueError("need at least two images")
    whole = b"".join(np.ascontiguousarray(im).tobytes() for im in images)
    first = np.ascontiguousarray(images[0]).tobytes()
    return (compressed_size(whole, codec) - compressed_size(first, codec)) / (len(images) - 1)


def _to_uint8(imgs: torch.Tensor, bits: int = 8) -> np.ndarray:
    q = (imgs.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    if bits < 8:
        q = (q >> (8 - bits)) << (8 - bits)
    return q


def _level_representatives(data: CueConflictData, cue: str) -> list[int]:
    out = []
    for d in data.level_definitions[cue]:
        if isinstance(d, (tuple, list)):
            lo, hi = d
            out.append(int(lo + hi) // 2)
        else:
            out.append(int(d))
    return out


def rendering_costs(data: CueConflictData, cues: Sequence[str], codecs: Sequence[str], bases: int = 16,
                    seed: int = 0, img_size: int | None = None) -> dict[str, dict[str, list[float]]]:
    """Per codec, per cue: the conditional cost of each base's cue-only renderings (dSprites)."""
    src = data.source
    if not isinstance(src, DSpritesSource):
        raise UsageError(f"the 'renderings' complexity proxy needs a source that renders from latents "
                         f"(dsprites); {src.name} does not: use --method level_means")
    img_size = img_size or data.img_size
    table = src.latents()
    rng = np.random.default_rng(seed)
    base_rows = table[rng.choice(len(table), size=bases, replace=False)].astype(np.int64)
    out: dict[str, dict[str, list[float]]] = {c: {cue: [] for cue in cues} for c in codecs}
    for cue in cues:
        col = src.cue_names.index(cue)
        reps = _level_representatives(data, cue)
        for row in base_rows:
            lat = np.repeat(row[None], len(reps), axis=0)
            lat[:, col] = reps
            imgs = list(_to_uint8(src.render_latents(lat, img_size)))
            for codec in codecs:
                out[codec][cue].append(conditional_cost(imgs, codec))
    return out


def level_mean_costs(data: CueConflictData, cues: Sequence[str], codecs: Sequence[str],
                     bits: int = 4) -> dict[str, dict[str, list[float]]]:
    """Per codec, per cue: the conditional cost of the cue's per-level mean images (one value)."""
    out: dict[str, dict[str, list[float]]] = {c: {cue: [] for cue in cues} for c in codecs}
    for cue in cues:
        parts = [data.split(cue, s) for s in ("train", "valid")]
        idx = np.concatenate([p.indices for p in parts])
        labels = np.concatenate([p.labels for p in parts])
        imgs = data.images(idx)
        means = [imgs[torch.from_numpy(labels == lv)].mean(0) for lv in range(data.num_levels)]
        q = list(_to_uint8(torch.stack(means), bits))
        for codec in codecs:
            out[codec][cue].append(conditional_cost(q, codec))
    return out


def rank(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of `values` (ascending), ties get their average rank."""
    vals = np.asarray(values, dtype=np.float64)
    order = np.argsort(vals, kind="stable")
    ranks = np.empty(len(vals))
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[order[j + 1]] == vals[order[i]]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks.tolist()


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); nan if either is constant."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("spearman needs two sequences of the same length >= 2")
    ra, rb = np.asarray(rank(a)), np.asarray(rank(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two sequences (ties handled); nan if either is constant."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("kendall_tau needs two sequences of the same length >= 2")
    concordant = discordant = tied_a = tied_b = pairs = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            pairs += 1
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            tied_a += da == 0
            tied_b += db == 0
            if da * db > 0:
                concordant += 1
            elif da * db < 0:
                discordant += 1
    den = float(np.sqrt((pairs - tied_a) * (pairs - tied_b)))
    return float((concordant - discordant) / den) if den > 0 else float("nan")


def cue_complexity(data: CueConflictData, cues: Sequence[str] | None = None, *, method: str | None = None,
                   codecs: Sequence[str] = tuple(CODECS), bases: int = 16, bits: int = 4, seed: int = 0) -> dict:
    """The complexity proxy of every cue under every codec, and the rank order (simplest first).

    method: "renderings" (default for dSprites) or "level_means" (default otherwise).
    Returns {"method", "label", "cost": {codec: {cue: mean bytes}}, "cost_std", "order": {codec: [cues]},
    "mean_rank": {cue: rank averaged over codecs}}.
    """
    cues = tuple(cues or data.cues)
    for c in codecs:
        if c not in CODECS:
            raise UnknownChoiceError("codec", c, CODECS)
    if method is None:
        method = "renderings" if isinstance(data.source, DSpritesSource) else "level_means"
    if method == "renderings":
        raw = rendering_costs(data, cues, codecs, bases, seed)
    elif method == "level_means":
        data.materialize()
        raw = level_mean_costs(data, cues, codecs, bits)
    else:
        raise UnknownChoiceError("complexity method", method, METHODS)
    cost = {c: {cue: float(np.mean(v)) for cue, v in raw[c].items()} for c in codecs}
    std = {c: {cue: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for cue, v in raw[c].items()} for c in codecs}
    order = {c: sorted(cues, key=lambda q: cost[c][q]) for c in codecs}
    ranks = {c: dict(zip(cues, rank([cost[c][q] for q in cues]))) for c in codecs}
    mean_rank = {q: float(np.mean([ranks[c][q] for c in codecs])) for q in cues}
    return {"method": method, "label": PROXY_LABEL, "cost": cost, "cost_std": std, "order": order,
            "mean_rank": mean_rank, "bases": bases if method == "renderings" else None}


def correlate(complexity: dict, scores: dict[str, float]) -> dict[str, float]:
    """Spearman correlation, per codec, between each cue's complexity and a score (e.g. its
    preference accuracy or adoption count). The paper's account predicts a negative value."""
    cues = [c for c in scores if c in next(iter(complexity["cost"].values()))]
    return {codec: spearman([complexity["cost"][codec][c] for c in cues], [scores[c] for c in cues])
            for codec in complexity["cost"]}


def plot_complexity(result: dict, path: str | Path, title: str | None = None) -> Path:
    """Grouped bars: complexity proxy of each cue under each codec (bytes per extra level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    codecs = list(result["cost"])
    cues = list(next(iter(result["cost"].values())))
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / len(codecs)
    for i, codec in enumerate(codecs):
        xs = [j + (i - (len(codecs) - 1) / 2) * width for j in range(len(cues))]
        ax.bar(xs, [result["cost"][codec][c] for c in cues], width,
               yerr=[result["cost_std"][codec][c] for c in cues], label=codec, capsize=2)
    ax.set_xticks(range(len(cues)))
    ax.set_xticklabels(cues)
    ax.set_ylabel("extra compressed bytes per level")
    ax.set_title(title or f"Cue complexity proxy ({result['method']}; ours, not the paper's)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=110)
    return path
