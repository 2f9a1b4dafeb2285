"""`cuekit reproduce wcst`: WCST-ML's claims on Color-dSprites, one row per claim.

The paper (Scimeca, Oh, Chun, Poli, Yun, ICLR 2022) trains on a "diagonal" set where every cue predicts the
label equally well and reads the adopted cue off the "off-diagonal" sets. Its claims: models prefer some cues
(on dSprites colour > scale > shape > orientation), preferred-cue solutions lie in flatter minima and are more
abundant in parameter space, and Kolmogorov-simple cues are preferred.

Design (fixed before any preference, flatness or abundance number was looked at; see docs/wcst.md):
- data: Color-dSprites at 64 px with orientations 0..81 deg (one symmetry period of the square, so every cue
  can be read from the pixels); cues colour, shape, scale, orientation, L = 3 levels.
- preference: the public code's three cue-conflict experiments, each won by the next cue of the paper's order:
  all four cues (colour), shape/scale/orientation (scale), shape/orientation (shape). Their six comparisons
  are the six cue pairs of the order; the headline effect is Kendall's tau between the measured pairwise
  relation and the paper's order, per seed.
- precondition: each cue is learnable alone at the same budget (own-cue accuracy of its cue-k solution,
  trained with as many steps as a preference run on data that only cue k explains, >= 0.9 in every seed).
- flatness: loss increase of each cue-k solution along filter-normalised directions (Li et al. 2018) at radii
  r > 0, the same radii for every solution; abundance: the public code's radius re-run (perturb the
  cue-k solution, re-train on the diagonal, accuracy on D_k afterwards); complexity: cuekit's proxy. Each is
  related to the measured preference by Kendall's tau over the four cues, per seed.
"""
from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from cuekit.report.experiments import ExperimentConfig, claim, make_result, mean_spread, precondition

CUES = ("color", "shape", "scale", "orientation")
PAPER_ORDER = ("color", "scale", "shape", "orientation")   # most preferred first (paper, dSprites)
# The public code's experiments (name, cues, the cue the paper's order puts first among them).
EXPERIMENTS = (
    ("four_cues", CUES, "color"),
    ("no_colour", ("shape", "scale", "orientation"), "scale"),
    ("shape_orientation", ("shape", "orientation"), "shape"),
)
ORIENTATIONS = tuple(range(10))   # 0..81 deg: the square's symmetry period
LEARNABLE_ACC = 0.9               # own-cue accuracy a cue must reach alone (chance 1/3)
FIT_ACC = 0.9                     # diagonal valid accuracy a run must reach to have adopted a cue

# quick: about 200 CPU-seconds (100 s on 2 cores); full: the same design at 64 px, larger and longer.
SCALES = {
    True: dict(img_size=48, model="convnet", width=16, train_per_class=1000, valid_per_class=100, epochs=5,
               batch_size=32, lr=3e-3, bn_samples=512, flat_radii=(0.1, 0.25, 0.5), flat_directions=3,
               flat_eval=512, rerun_radii=(0.5, 1.0), rerun_epochs=1, bases=16, workers=2),
    False: dict(img_size=64, model="convnet", width=16, train_per_class=2000, valid_per_class=300, epochs=4,
                batch_size=32, lr=3e-3, bn_samples=1024, flat_radii=(0.05, 0.1, 0.25, 0.5, 0.75),
                flat_directions=8, flat_eval=1024, rerun_radii=(0.25, 0.5, 1.0), rerun_epochs=2, bases=32, workers=2),
}


def comparisons(acc: dict[str, dict[str, float]]) -> list[tuple[str, str, float]]:
    """The six pairwise comparisons of one seed: (cue the paper prefers, other cue, accuracy margin).

    acc: {experiment: {cue: off-diagonal accuracy}}. Within each experiment the cue the paper ranks first is
    compared with every other cue of that experiment; over the three experiments that is every cue pair once.
    """
    out = []
    for name, cues, first in EXPERIMENTS:
        out += [(first, other, acc[name][first] - acc[name][other]) for other in cues if other != first]
    return out


def order_agreement(comps: list[tuple[str, str, float]]) -> float:
    """Kendall's tau between the measured pairwise relation and the paper's order: (agreeing - disagreeing
    pairs) / pairs; a pair agrees when the cue the paper prefers has the higher off-diagonal accuracy."""
    return float(np.mean([np.sign(m) for _, _, m in comps]))


def preference_scores(comps: list[tuple[str, str, float]]) -> dict[str, float]:
    """Each cue's measured preference: the sum of its accuracy margins over the three comparisons it is in."""
    score = {c: 0.0 for c in CUES}
    for a, b, m in comps:
        score[a] += m
        score[b] -= m
    return score


def _job(job: tuple) -> dict:
    """One worker job: a preference run, or a cue solution with its flatness and re-runs."""
    from cuekit.wcst.abundance import rerun_from
    from cuekit.wcst.flatness import cue_solution, diagonal_probe_set, loss_increase
    from cuekit.wcst.preference import preference_run

    kind = job[0]
    if kind == "preference":
        _, name, data, settings, seed = job
        run = preference_run(data, settings, seed, record="final")
        return {"kind": kind, "experiment": name, "seed": seed, "final": run["final"],
                "diagonal_acc": run["diagonal_acc"], "adopted": run["adopted"]}
    _, data, settings, rerun, cue, seed, sc = job
    model, final = cue_solution(data, settings, cue, seed, diagonal_per_class=sc["train_per_class"] // 2)
    x, y = diagonal_probe_set(data, sc["flat_eval"])
    flat = loss_increase(model, x, y, sc["flat_radii"], sc["flat_directions"], seed=1000 * seed,
                         batch_size=sc["flat_eval"])
    reruns = [rerun_from(data, model, rerun, seed, r, direction_seed=1000 * seed + 500 + i)
              for i, r in enumerate(sc["rerun_radii"])]
    return {"kind": "solution", "cue": cue, "seed": seed, "final": {c: final[c] for c in data.cues},
            "diagonal_acc": final["diagonal"], "loss_increase": flat, "reruns": reruns}


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_experiment(config: ExperimentConfig) -> dict:
    """The preference order of three cue-conflict experiments, the learnability precondition, and
    flatness, abundance and complexity against the measured preference, per seed."""
    return run_at_scale(config, SCALES[bool(config.quick)])


def run_at_scale(config: ExperimentConfig, sc: dict) -> dict:
    """`run_experiment` with explicit sizes (the keys of SCALES[True])."""
    from cuekit.parallel import torch_threads

    with torch_threads(1):   # small models run fastest, and steadiest on a busy machine, on one thread
        return _run(config, sc)


def _run(config: ExperimentConfig, sc: dict) -> dict:
    from cuekit.parallel import available_cpus, run_jobs
    from cuekit.wcst.complexity import cue_complexity
    from cuekit.wcst.datasets import DSpritesSource, build_cue_conflict
    from cuekit.wcst.runs import FitSettings

    t_start, cpu_start = time.perf_counter(), _cpu_seconds()
    seeds = list(config.seeds)
    timings = {}
    t0 = time.perf_counter()
    source = DSpritesSource(orientations=ORIENTATIONS)
    n, v = sc["train_per_class"], sc["valid_per_class"]
    data = {name: build_cue_conflict(source, cues, train_per_class=n, valid_per_class=v,
                                     offdiag_train_per_class=n // 2 if name == "four_cues" else 0,
                                     offdiag_valid_per_class=v, seed=0, img_size=sc["img_size"]).materialize()
            for name, cues, _ in EXPERIMENTS}
    four = data["four_cues"]
    timings["data_s"] = time.perf_counter() - t0

    settings = FitSettings(model=sc["model"], model_kwargs={"width": sc["width"]}, epochs=sc["epochs"],
                           batch_size=sc["batch_size"], lr=sc["lr"], device=config.device, bn_samples=sc["bn_samples"])
    settings.validate()
    rerun = dataclasses.replace(settings, epochs=sc["rerun_epochs"])
    probe = {k: sc[k] for k in ("train_per_class", "flat_eval", "flat_radii", "flat_directions", "rerun_radii")}
    jobs = [("solution", four, settings, rerun, cue, s, probe) for s in seeds for cue in CUES]  # longest first
    jobs += [("preference", name, data[name], settings, s) for s in seeds for name, _, _ in EXPERIMENTS]
    t0 = time.perf_counter()
    workers = max(1, min(sc["workers"], available_cpus()))
    runs = run_jobs(_job, jobs, workers=workers, desc="wcst runs", progress=config.progress, threads=1)
    timings["runs_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    comp = cue_complexity(four, method="renderings", bases=sc["bases"], seed=0)
    timings["complexity_s"] = time.perf_counter() - t0
    result = build_result(config, sc, runs, comp, {name: d.summary() for name, d in data.items()})
    timings["total_s"] = time.perf_counter() - t_start
    timings["cpu_s"] = _cpu_seconds() - cpu_start
    result["details"].update(timings_s=timings, workers=workers)
    return result


def build_result(config: ExperimentConfig, sc: dict, runs: list[dict], comp: dict, data_summary: dict) -> dict:
    """The claims, table, plots and text from the worker runs (`_job` outputs) and the complexity proxy."""
    from cuekit.wcst.complexity import kendall_tau, plot_complexity

    seeds = list(config.seeds)
    out = config.out_dir
    n, v = sc["train_per_class"], sc["valid_per_class"]
    pref = {(r["experiment"], r["seed"]): r for r in runs if r["kind"] == "preference"}
    sol = {(r["cue"], r["seed"]): r for r in runs if r["kind"] == "solution"}

    # ---- per-seed effects -------------------------------------------------------------------
    per_seed = []
    for s in seeds:
        acc = {name: pref[(name, s)]["final"] for name, _, _ in EXPERIMENTS}
        comps = comparisons(acc)
        score = preference_scores(comps)
        sharp = {c: sol[(c, s)]["loss_increase"]["sharpness"] for c in CUES}
        stay = {c: float(np.mean([x["final"][c] for x in sol[(c, s)]["reruns"]])) for c in CUES}
        scores = [score[c] for c in CUES]
        per_seed.append({
            "seed": s, "comparisons": [list(x) for x in comps], "score": score, "sharpness": sharp, "stay": stay,
            "order_tau": order_agreement(comps),
            "steps": {name: acc[name][first] - max(acc[name][c] for c in cues if c != first)
                      for name, cues, first in EXPERIMENTS},
            "flatness_tau": kendall_tau(scores, [-sharp[c] for c in CUES]),
            "abundance_tau": kendall_tau(scores, [stay[c] for c in CUES]),
            "complexity_tau": kendall_tau(scores, [-comp["mean_rank"][c] for c in CUES]),
        })

    # ---- preconditions ----------------------------------------------------------------------
    own = {c: [sol[(c, s)]["final"][c] for s in seeds] for c in CUES}
    learnable = {c: precondition(f"{c} is learnable alone at this budget: its cue solution's own-cue accuracy "
                                 f">= {LEARNABLE_ACC} in every seed", met=min(own[c]) >= LEARNABLE_ACC,
                                 measured=", ".join(f"{a:.3f}" for a in own[c])) for c in CUES}
    fits = {}
    for name, cues, _ in EXPERIMENTS:
        d = [pref[(name, s)]["diagonal_acc"] for s in seeds]
        fits[name] = precondition(f"the {name} runs fit their diagonal set (valid accuracy >= {FIT_ACC} in every "
                                  "seed)", met=min(d) >= FIT_ACC, measured=", ".join(f"{a:.3f}" for a in d))
    sol_diag = [sol[(c, s)]["diagonal_acc"] for s in seeds for c in CUES]
    solutions_fit = precondition(f"every cue solution fits the diagonal set the loss is measured on (valid "
                                 f"accuracy >= {FIT_ACC})", met=min(sol_diag) >= FIT_ACC,
                                 measured=f"min {min(sol_diag):.3f}")
    rerun_diag = [x["diagonal_acc"] for s in seeds for c in CUES for x in sol[(c, s)]["reruns"]]
    reruns_fit = precondition(f"every re-run fits the diagonal set again (valid accuracy >= {FIT_ACC})",
                              met=min(rerun_diag) >= FIT_ACC, measured=f"min {min(rerun_diag):.3f}")
    all_learnable = [learnable[c] for c in CUES]
    all_fit = [fits[name] for name, _, _ in EXPERIMENTS]

    # ---- claims -------------------------------------------------------------------------------
    regime = (f"{sc['model']} (width {sc['width']}) on Color-dSprites at {sc['img_size']} px, orientations 0-81 deg; "
              f"Adam lr {sc['lr']}, batch {sc['batch_size']}, {sc['epochs']} epochs over {3 * n} images per run "
              f"({sc['epochs'] * (3 * n // sc['batch_size'])} steps), the same for every preference run and every "
              f"cue solution; {len(seeds)} seeds (initialisation and batch order), one data draw")
    pref_regime = regime + f"; accuracy on 3x{v} off-diagonal validation images per cue, BatchNorm re-estimated"
    rows = [
        claim(id="preference_order",
              claim="Under equal opportunity some cues are preferred, in the order colour > scale > shape > "
                    "orientation on dSprites (abstract; the full order is from the paper's figures, not verified "
                    "in our notes)",
              measure="Kendall's tau between the paper's order and the measured pairwise relation over the 6 cue "
                      "pairs (each pair compared in the public code's experiment where the paper's winner leads: "
                      "all four cues, shape/scale/orientation, shape/orientation); +1 = the paper's order",
              effects=[p["order_tau"] for p in per_seed], expected_sign=+1, headline=True,
              preconditions=all_learnable + all_fit, regime=pref_regime),
    ]
    step_words = {"four_cues": ("colour_preferred", "colour is the preferred cue on Color-dSprites (abstract: "
                                "'the inborn bias of models leans toward simple cues, such as color')"),
                  "no_colour": ("scale_preferred_without_colour", "without colour, scale is preferred over shape "
                                "and orientation (paper's order; not verified in our notes)"),
                  "shape_orientation": ("shape_over_orientation", "shape is preferred over orientation (paper's "
                                        "order; not verified in our notes)")}
    for name, cues, first in EXPERIMENTS:
        rid, words = step_words[name]
        rows.append(claim(
            id=rid, claim=words,
            measure=f"diagonal of {'/'.join(cues)}: off-diagonal accuracy of {first} minus the best other cue's",
            effects=[p["steps"][name] for p in per_seed], expected_sign=+1,
            preconditions=[learnable[c] for c in cues] + [fits[name]], regime=pref_regime))
    tau_note = ("with 4 cues tau moves in steps of 1/3; a cue first in both orders (e.g. colour) gives +0.5 on its own "
                "when the other three are unrelated")
    radii = ", ".join(f"{r:g}" for r in sc["flat_radii"])
    rows.append(claim(
        id="flatness", claim="Solutions biased to the preferred (easy) cues converge to relatively flat minima "
                             "(abstract)",
        measure=f"Kendall's tau over the 4 cues between the measured preference (sum of pairwise margins) and "
                f"flatness (minus the loss increase on the diagonal set along {sc['flat_directions']} filter-"
                f"normalised directions at r = {radii}) of the cue-k solutions",
        effects=[p["flatness_tau"] for p in per_seed], expected_sign=+1,
        preconditions=all_learnable + all_fit + [solutions_fit], note=tau_note,
        regime=regime + f"; cue-k solution = {n // 2} diagonal + {n // 2} D_k images per class; eval-mode loss on "
                        f"{sc['flat_eval']} diagonal training images"))
    rrad = ", ".join(f"{r:g}" for r in sc["rerun_radii"])
    rows.append(claim(
        id="abundance", claim="Solutions of the preferred cues are far more abundant in the parameter space "
                              "(abstract; probed as in the public code's radius re-run)",
        measure=f"Kendall's tau over the 4 cues between the measured preference and the cue-k solution's "
                f"accuracy on D_k after it is perturbed (filter-normalised r = {rrad}) and re-trained on the "
                f"diagonal set (mean over radii): how much of the neighbourhood flows back to cue k",
        effects=[p["abundance_tau"] for p in per_seed], expected_sign=+1,
        preconditions=all_learnable + all_fit + [reruns_fit], note=tau_note,
        regime=regime + f"; re-runs: {sc['rerun_epochs']} epoch(s) on the {3 * n}-image diagonal set"))
    rows.append(claim(
        id="simplicity", claim="Kolmogorov-simple cues are preferred (abstract)",
        measure="Kendall's tau over the 4 cues between the measured preference and minus the complexity proxy "
                "(cuekit's, not the paper's: extra compressed bytes of cue-only renderings, mean rank over zlib, "
                "bz2, LZMA)",
        effects=[p["complexity_tau"] for p in per_seed], expected_sign=+1,
        preconditions=all_learnable + all_fit, regime=pref_regime,
        note="the proxy is fixed per cue; the spread comes from the preference measured in each seed; " + tau_note))

    # ---- table, plots, text ---------------------------------------------------------------------
    def ms(values) -> str:
        m, s = mean_spread(values)
        return f"{m:.2f}±{s:.2f}"

    table_rows = []
    for c in CUES:
        table_rows.append([
            c, ms(own[c]),
            *[ms([pref[(name, s)]["final"][c] for s in seeds]) if c in cues else "" for name, cues, _ in EXPERIMENTS],
            ms([p["score"][c] for p in per_seed]), ms([p["sharpness"][c] for p in per_seed]),
            ms([p["stay"][c] for p in per_seed]), round(comp["cost"]["zlib"][c], 1), comp["mean_rank"][c]])
    columns = ["cue", "own-cue acc alone (precondition)", *[f"off-diag acc: {name}" for name, _, _ in EXPERIMENTS],
               "preference score", "loss increase (lower = flatter)", "D_k acc after re-run (abundance)",
               "zlib bytes (proxy)", "complexity mean rank"]
    plots = _plots(out, seeds, pref, sol, per_seed, comp, sc, plot_complexity)

    mean_score = {c: mean_spread([p["score"][c] for p in per_seed])[0] for c in CUES}
    measured_order = sorted(CUES, key=lambda c: -mean_score[c])
    tau_m, tau_s = mean_spread([p["order_tau"] for p in per_seed])
    failed = [c for c in CUES if not learnable[c]["met"]]
    measured = (
        f"Measured preference (mean pairwise score): {' > '.join(measured_order)}; Kendall's tau with the paper's "
        f"order {tau_m:+.2f}±{tau_s:.2f} over {len(seeds)} seeds. Learnable alone (own-cue accuracy of the cue "
        f"solutions, mean): " + ", ".join(f"{c} {np.mean(own[c]):.2f}" for c in CUES)
        + (f" (below {LEARNABLE_ACC}: {', '.join(failed)})" if failed else "")
        + ". Flattest solution first: " + " > ".join(sorted(CUES, key=lambda c: np.mean(
            [p["sharpness"][c] for p in per_seed])))
        + "; most abundant (re-run stays) first: " + " > ".join(sorted(CUES, key=lambda c: -np.mean(
            [p["stay"][c] for p in per_seed])))
        + "; simplest (our proxy) first: " + " < ".join(sorted(CUES, key=lambda c: comp["mean_rank"][c])) + ".")
    return make_result(
        area="wcst",
        title="WCST-ML: which shortcut cue does a model choose?",
        claim=("Under equal opportunity (every cue predicts the label on the diagonal set), DNNs prefer some cues "
               "(on dSprites colour > scale > shape > orientation); preferred-cue solutions are flatter and more "
               "abundant in parameter space, and Kolmogorov-simple cues are preferred."),
        measured=measured,
        table={"columns": columns, "rows": table_rows},
        claims=rows,
        regime=regime,
        plots=plots,
        seeds=seeds,
        details={
            "design": "fixed before looking at any preference, flatness or abundance number (docs/wcst.md)",
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sc.items()},
            "paper_order": list(PAPER_ORDER),
            "experiments": {name: {"cues": list(cues), "paper_first": first} for name, cues, first in EXPERIMENTS},
            "thresholds": {"learnable_acc": LEARNABLE_ACC, "fit_acc": FIT_ACC},
            "data": data_summary,
            "per_seed": per_seed,
            "preference_runs": [pref[(name, s)] for s in seeds for name, _, _ in EXPERIMENTS],
            "solutions": [{k: v for k, v in sol[(c, s)].items() if k != "loss_increase"}
                          | {"loss_increase": {k: v for k, v in sol[(c, s)]["loss_increase"].items()
                                               if k != "delta_loss_all"}} for s in seeds for c in CUES],
            "complexity": comp,
        },
    )


def _plots(out, seeds, pref, sol, per_seed, comp, sc, plot_complexity) -> list[str]:
    """The three figures: preference bars, flatness and abundance curves, complexity bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cuekit.io import save_figure
    from cuekit.wcst.preference import plot_preference_bars

    panels = [{"title": f"{name}: {'/'.join(cues)}\n(paper: {first} first)", "cues": list(cues), "highlight": first,
               "acc": {c: [pref[(name, s)]["final"][c] for s in seeds] for c in cues}}
              for name, cues, first in EXPERIMENTS]
    names = [plot_preference_bars(panels, 1 / 3, out / "wcst_preference.png",
                                  title="Trained on the diagonal set: accuracy on each cue's off-diagonal set").name]
    fig, (ax_f, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    for c in CUES:
        curves = np.array([sol[(c, s)]["loss_increase"]["delta_loss_mean"] for s in seeds])
        line, = ax_f.plot(sc["flat_radii"], curves.mean(0), marker="o", ms=3, label=f"{c} solution")
        ax_f.fill_between(sc["flat_radii"], curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
        stays = np.array([[x["final"][c] for x in sol[(c, s)]["reruns"]] for s in seeds])
        ax_a.plot(sc["rerun_radii"], stays.mean(0), marker="o", ms=3, color=line.get_color(), label=f"from {c}")
    ax_f.set(xlabel="radius r (filter-normalised direction)", ylabel="loss increase on the diagonal set",
             title="Flatness of the cue-k solutions (lower = flatter)")
    ax_f.set_yscale("symlog", linthresh=0.01)
    ax_a.axhline(1 / 3, color="gray", lw=0.8, ls=":")
    ax_a.set(xlabel="radius of the perturbed start (filter-normalised)", ylabel="accuracy on D_k after re-training",
             title="Radius re-run: does training return to cue k?", ylim=(0, 1.02))
    ax_f.legend(fontsize=8)
    ax_a.legend(fontsize=8)
    fig.tight_layout()
    names.append(save_figure(fig, out / "wcst_parameter_space.png", dpi=110).name)
    names.append(plot_complexity(comp, out / "wcst_complexity.png").name)
    return names
