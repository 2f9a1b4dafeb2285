"""Cue preference: train on the diagonal set, watch accuracy on every cue's off-diagonal set.

On the diagonal every cue predicts the label perfectly. The cue a model adopted is the one whose
off-diagonal set it classifies well (about 100%); a cue it ignored scores about chance there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cuekit.io import save_figure
from cuekit.parallel import run_jobs
from cuekit.report.experiments import mean_spread
from cuekit.wcst.datasets import DIAGONAL, CueConflictData
from cuekit.wcst.runs import FitSettings, adopted_cue, fit


def preference_run(data: CueConflictData, settings: FitSettings, seed: int, progress: bool = False,
                   record: str = "epochs") -> dict:
    """One seed: train on the diagonal; off-diagonal accuracy of every cue after every epoch
    (record="final": after the last epoch only).

    Returns {"seed", "model", "curves": {name: [acc at epoch 0..E]}, "final": {cue: acc},
    "adopted": cue or None (no single cue above chance), "diagonal_acc": float}.
    """
    eval_sets = {cue: data.dataset(cue, "valid") for cue in data.cues}
    _, curves = fit(data, settings, seed, eval_sets=eval_sets, progress=progress, record=record)
    final = {cue: curves[cue][-1] for cue in data.cues}
    return {"seed": seed, "model": settings.model, "curves": curves, "final": final,
            "adopted": adopted_cue(final, 1.0 / data.num_levels), "diagonal_acc": curves[DIAGONAL][-1]}


def _preference_job(job: tuple) -> dict:
    data, settings, seed, progress = job
    return preference_run(data, settings, seed, progress)


def summarize_preference(runs: Sequence[dict], cues: Sequence[str]) -> dict:
    """Mean and spread (sample std) of each cue's final off-diagonal accuracy over runs, the
    preference order (highest mean first), how often each cue was adopted, and how many runs
    adopted none (no single cue above chance)."""
    stats = {c: mean_spread([r["final"][c] for r in runs]) for c in cues}
    order = sorted(cues, key=lambda c: -stats[c][0])
    adoption = {c: sum(r["adopted"] == c for r in runs) for c in cues}
    return {
        "order": order,
        "mean": {c: stats[c][0] for c in cues},
        "std": {c: stats[c][1] for c in cues},
        "adoption": adoption,
        "undecided": sum(r["adopted"] is None for r in runs),
        "diagonal_acc": mean_spread([r["diagonal_acc"] for r in runs]),
        "runs": len(runs),
    }


def run_preference(data: CueConflictData, settings: FitSettings, seeds: Sequence[int], workers: int = 1,
                   progress: bool = True) -> dict:
    """Preference runs over `seeds` (in worker processes when workers > 1) and their summary."""
    settings.validate()
    data.materialize()
    epoch_bars = progress and workers == 1   # per-epoch bars only in this process
    runs = run_jobs(_preference_job, [(data, settings, s, epoch_bars) for s in seeds], workers,
                    desc=f"preference {settings.model}", progress=progress)
    return {"model": settings.model, "runs": runs, "summary": summarize_preference(runs, data.cues),
            "chance": 1.0 / data.num_levels}


def plot_learning_curves(result: dict, cues: Sequence[str], path: str | Path, title: str | None = None) -> Path:
    """Off-diagonal accuracy per cue vs epoch (mean line, min-max band over seeds); diagonal dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = result["runs"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for cue in cues:
        curves = np.array([r["curves"][cue] for r in runs])
        epochs = np.arange(curves.shape[1])
        line, = ax.plot(epochs, curves.mean(0), label=f"{cue} (D_{cue})")
        ax.fill_between(epochs, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
    diag = np.array([r["curves"][DIAGONAL] for r in runs])
    ax.plot(np.arange(diag.shape[1]), diag.mean(0), "k--", lw=1, label="diagonal (valid)")
    ax.axhline(result["chance"], color="gray", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy on the off-diagonal set")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or f"Cue preference of {result['model']} ({len(runs)} seeds)")
    ax.legend(fontsize=8, loc="best", framealpha=0.8)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=110)
    return path


def plot_preference_bars(panels: Sequence[dict], chance: float, path: str | Path, title: str = "") -> Path:
    """One panel per cue-conflict experiment: final off-diagonal accuracy of each of its cues (bar: mean,
    dots: seeds), chance dotted.

    panels: [{"title": str, "cues": [cue, ...], "acc": {cue: [acc per seed]}, "highlight": cue or None}].
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        cues = list(panel["cues"])
        means = [float(np.mean(panel["acc"][c])) for c in cues]
        colors = ["C1" if c == panel.get("highlight") else "C0" for c in cues]
        ax.bar(range(len(cues)), means, color=colors, alpha=0.75)
        for i, c in enumerate(cues):
            vals = panel["acc"][c]
            ax.scatter([i + d for d in np.linspace(-0.15, 0.15, len(vals))], vals, color="k", s=10, zorder=3)
        ax.axhline(chance, color="gray", lw=0.8, ls=":", label=f"1/L = {chance:.2f}")
        ax.set_xticks(range(len(cues)))
        ax.set_xticklabels(cues, fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_title(panel["title"], fontsize=9)
    axes[0][0].set_ylabel("accuracy on the cue's off-diagonal set")
    axes[0][0].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
