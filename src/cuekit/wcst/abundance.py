"""Abundance of cue solutions in parameter space.

(a) Radius re-run (public code: `main_radius_rerun.py`): perturb each cue-k solution by radius r,
    re-train on the diagonal set only, and see which cue the run lands on. A cue whose basin holds
    the run up to larger r occupies more of the parameter space. Radii are filter-normalised (see
    `cuekit.wcst.flatness`): the same r is the same relative move for every solution; the public
    code moved all parameters along an isotropic Gaussian direction of absolute norm r.
(b) Initialisation census (our addition, not in the paper's code): train many random
    initialisations on the diagonal set and count how often each cue is adopted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from cuekit.io import save_figure
from cuekit.parallel import run_jobs
from cuekit.wcst.datasets import DIAGONAL, CueConflictData
from cuekit.wcst.preference import run_preference
from cuekit.wcst.runs import FitSettings, adopted_cue, fit

CENSUS_LABEL = "initialisation census (cuekit's addition, not in the paper)"


@torch.no_grad()
def perturbed_state(model: torch.nn.Module, radius: float, seed: int) -> dict:
    """The state dict of `model` with its weights moved to theta* + radius d, d a filter-normalised
    random direction (seed `seed`); 1-D parameters and buffers (BatchNorm statistics) unchanged."""
    from cuekit.wcst.flatness import filter_normalized_direction

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    direction = dict(zip(names, filter_normalized_direction(model, seed)))
    out = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, d in direction.items():
        out[name] = out[name] + float(radius) * d.to(out[name].dtype)
    return out


def rerun_from(data: CueConflictData, solution: torch.nn.Module, rerun: FitSettings, seed: int, radius: float,
               direction_seed: int) -> dict:
    """Perturb `solution` by `radius` (filter-normalised, direction `direction_seed`) and re-train it on
    the diagonal train split with `rerun`; returns the radius, the final accuracies ("final": every cue's
    off-diagonal valid split, "diagonal_acc") and the adopted cue (None: no single cue above chance)."""
    eval_sets = {c: data.dataset(c, "valid") for c in data.cues}
    start = perturbed_state(solution, radius, direction_seed)
    _, curves = fit(data, rerun, seed, eval_sets=eval_sets, init_state=start, record="final")
    final = {c: curves[c][-1] for c in data.cues}
    return {"radius": float(radius), "final": final, "diagonal_acc": curves[DIAGONAL][-1],
            "adopted": adopted_cue(final, 1.0 / data.num_levels)}


def radius_rerun(data: CueConflictData, solve: FitSettings, rerun: FitSettings, cue: str, seed: int,
                 radii: Sequence[float], repeats: int = 1) -> dict:
    """Train the cue-`cue` solution, then for every radius perturb it `repeats` times and re-train
    on the diagonal set; returns the adopted cue and off-diagonal accuracies of every re-run."""
    from cuekit.wcst.flatness import cue_solution

    model, final = cue_solution(data, solve, cue, seed)
    reruns = []
    for i, r in enumerate(radii):
        for rep in range(repeats):
            reruns.append({**rerun_from(data, model, rerun, seed, r, seed * 1_000_003 + i * 1009 + rep),
                           "repeat": rep})
    return {"cue": cue, "seed": seed, "solution_final": {c: final[c] for c in data.cues}, "reruns": reruns}


def _rerun_job(job: tuple) -> dict:
    data, solve, rerun, cue, seed, radii, repeats = job
    return radius_rerun(data, solve, rerun, cue, seed, radii, repeats)


def run_radius_rerun(data: CueConflictData, solve: FitSettings, rerun: FitSettings, seeds: Sequence[int],
                     radii: Sequence[float], *, cues: Sequence[str] | None = None, repeats: int = 1,
                     workers: int = 1, progress: bool = True) -> dict:
    """Radius re-runs from every cue's solution; `landing[cue][i][j]` = fraction of re-runs from
    the cue solution at radius i that adopted cue j (cue order of `data.cues`)."""
    solve.validate()
    rerun.validate()
    cues = tuple(cues or data.cues)
    data.materialize()
    jobs = [(data, solve, rerun, c, s, list(radii), repeats) for c in cues for s in seeds]
    runs = run_jobs(_rerun_job, jobs, workers, desc=f"radius re-run {solve.model}", progress=progress)
    landing = {}
    for c in cues:
        rows = []
        for r in radii:
            hits = [x["adopted"] for run in runs if run["cue"] == c for x in run["reruns"] if x["radius"] == float(r)]
            rows.append([sum(h == j for h in hits) / max(1, len(hits)) for j in data.cues])
        landing[c] = rows
    return {"model": solve.model, "radii": [float(r) for r in radii], "runs": runs, "landing": landing,
            "cues": list(data.cues)}


def run_census(data: CueConflictData, settings: FitSettings, inits: int, *, first_seed: int = 0,
               workers: int = 1, progress: bool = True) -> dict:
    """Train `inits` random initialisations on the diagonal set and count each cue's adoptions."""
    res = run_preference(data, settings, range(first_seed, first_seed + inits), workers, progress)
    counts = res["summary"]["adoption"]
    return {"label": CENSUS_LABEL, "model": settings.model, "inits": inits, "counts": counts,
            "undecided": res["summary"]["undecided"], "fractions": {c: n / inits for c, n in counts.items()},
            "preference": res}


def plot_radius_rerun(result: dict, path: str | Path) -> Path:
    """For every cue solution: the fraction of re-runs that stayed on that cue vs the radius."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    cues = result["cues"]
    for c, rows in result["landing"].items():
        ax.plot(result["radii"], [row[cues.index(c)] for row in rows], marker="o", ms=3, label=f"from {c} solution")
    ax.set_xlabel("radius of the perturbed start (filter-normalised)")
    ax.set_ylabel("fraction of re-runs that stay on the cue")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Radius re-run ({result['model']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=110)
    return path


def plot_census(result: dict, path: str | Path) -> Path:
    """Bar chart of how often each cue was adopted over random initialisations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    cues = list(result["counts"])
    ax.bar(cues, [result["fractions"][c] for c in cues])
    ax.set_ylabel("fraction of initialisations")
    ax.set_ylim(0, 1)
    ax.set_title(f"Adopted cue over {result['inits']} inits ({result['model']})\n{CENSUS_LABEL}", fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=110)
    return path
