"""`cuekit reproduce nara`: is NARA's confidence-gated sampling faster than sequential sampling, and are its
samples distributed like sequential samples? Text and image domains, one row per claim and domain.

Design (fixed before any gated-mode number was looked at; docs/nara.md "Reproduction"):
- The mother (the AR model being accelerated) is trained once per domain with the first seed, until it is well
  below a local baseline (bigram for text, 4-neighbour context for images); that is a precondition. NARA's own
  trained parts, the prior and the confidence predictor, are trained anew per seed, and each seed draws its
  own sampling noise.
- The judged mode is the paper's: the confidence gate (`nara_sample(mode="approx")`) at tau = `TAU`, with the
  paper's i.i.d. prior (text: `hidden`, Medusa-style heads on the mother's state; images: `window`). The
  confidence labels are made with the sampler's shared-noise scheme (`training.confidence_dataset`).
- Speed: wall-clock of one-sequence sampling, gated against sequential (same mother code, KV cache on), in
  interleaved chunks of sequences in one process; the per-seed speed-up is the median chunk ratio.
- Quality: a distribution distance (bigram TV for text, 3x3-pattern TV for images) between the gated samples
  and an independent sequential set B, against the noise floor: the distance between sequential samples A
  (drawn with the SAME noise as the gated ones) and B. Effect = `QUALITY_TOLERANCE` minus the excess over the
  floor in units of the floor.
- Exact mode and speculative mode (same prior) are reference rows; tau 0.9 is in the table only.
"""
from __future__ import annotations

import math
import os
import time

from cuekit.report.experiments import ExperimentConfig, claim, make_result, mean_spread, precondition

TAU = 0.5                   # the judged gate threshold: keep a proposal the predictor scores P(keep) >= 0.5
TABLE_TAUS = (0.5, 0.9)     # thresholds in the table (0.9: a stricter gate, for the reader)
QUALITY_TOLERANCE = 0.10    # the gated set may be at most 10% of the noise floor farther from B than A is
TEXT_MOTHER_MARGIN = 0.3    # nats per token: the text mother must be this far below the bigram baseline
IMAGE_MOTHER_RATIO = 0.9    # the image mother's NLL must be below 90% of the 4-neighbour context model's
HARNESS_AGREEMENT = 0.95    # share of sequences that must come out identical where the code says they are

# evaluation sizes: sequences per seed for the distances, of which `timed` run every method for the timings
EVAL = {
    "quick": {"text": dict(n_quality=256, timed=64, chunk=8), "image": dict(n_quality=256, timed=32, chunk=4)},
    "full": {"text": dict(n_quality=512, timed=128, chunk=8), "image": dict(n_quality=512, timed=64, chunk=4)},
}

PAPER_WORDS = {
    "speed": "NARA approximates an AR process so that sampling needs fewer sequential steps and less computation: "
             "priors of future samples are generated in an i.i.d. manner by an efficient predictor, the mother AR "
             "model post-processes them in parallel, and a confidence predictor decides whether a sample needs "
             "resampling (Yoo et al. 2019, abstract: it 'accelerates' AR sampling at 'lower computational cost')",
    "quality": "... while preserving the sequential relationship of the AR process, i.e. samples of the quality of "
               "the mother's own (abstract: 'preserving the sequential relationship'; sequences and images)",
}


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _plan(quick: bool) -> dict:
    """Settings per domain (`domains.SCALES`) and evaluation sizes (`EVAL`)."""
    from cuekit.nara.domains import domain_settings

    scale = "quick" if quick else "full"
    return {name: {"settings": domain_settings(name, quick), "eval": EVAL[scale][name]} for name in ("text", "image")}


def _mother_job(job: tuple) -> dict:
    """Train one domain's mother (a worker's job) -> its config, weights and history."""
    from cuekit.nara.domains import train_mother

    name, settings, seed = job
    t0 = _cpu_seconds()
    mother, history = train_mother(name, settings, seed)
    return {"config": mother.model.config, "state": mother.model.state_dict(), "history": history,
            "cpu_s": _cpu_seconds() - t0}


def _rebuild_mother(name: str, config: dict, state: dict):
    from cuekit.nara.mother import CausalTransformerLM, PixelCNN, PixelCNNMother, TransformerMother

    if name == "text":
        model = CausalTransformerLM(**config)
        model.load_state_dict(state)
        return TransformerMother(model)
    model = PixelCNN(**config)
    model.load_state_dict(state)
    return PixelCNNMother(model)


def _seed_job(job: tuple) -> dict:
    """One (domain, seed): train the prior and confidence predictor, sample, time and measure every method."""
    import torch

    from cuekit.nara.domains import fit_prior
    from cuekit.nara.evaluate import batch_sequential, interleaved_runs, ngram_tv, patch_tv, speedup
    from cuekit.nara.sampler import gumbel_noise, nara_sample, sample_sequential
    from cuekit.nara.training import mean_nll

    name, seed, mother_config, mother_state, s, ev = job
    cpu0 = _cpu_seconds()
    mother = _rebuild_mother(name, mother_config, mother_state)
    kind = "hidden" if name == "text" else "window"  # the paper's i.i.d. prior
    dom = fit_prior(name, kind, mother, s, seed)
    cpu_train = _cpu_seconds() - cpu0
    length, vocab = dom.length, mother.vocab_size
    g = torch.Generator().manual_seed(10_007 * seed + 1)
    n = ev["n_quality"]
    noise_a, noise_b = (gumbel_noise(n * length, vocab, g).view(n, length, vocab) for _ in range(2))

    def gated(tau):
        return lambda nz, gen: nara_sample(mother, dom.prior, length, dom.horizon, "approx", noise=nz, tau=tau,
                                           confidence=dom.confidence)

    methods = {
        "sequential": lambda nz, gen: sample_sequential(mother, length, nz),
        "exact": lambda nz, gen: nara_sample(mother, dom.prior, length, dom.horizon, "exact", noise=nz),
        **{f"gated@{t}": gated(t) for t in TABLE_TAUS},
        "speculative": lambda nz, gen: nara_sample(mother, dom.prior, length, dom.horizon, "speculative",
                                                   generator=gen),
    }
    quality = (f"gated@{TAU}", "speculative")
    runs = interleaved_runs(methods, noise_a, timed=ev["timed"], chunk=ev["chunk"], quality=quality, seed=seed)
    seq_a, seq_b = batch_sequential(mother, noise_a), batch_sequential(mother, noise_b)

    def distance(x, y):
        return ngram_tv(x, y, 2) if name == "text" else patch_tv(x, y, mother.size, 3)

    floor = distance(seq_a, seq_b)
    timed = runs["sequential"]["tokens"]
    seq_nll = mean_nll(mother, seq_a)
    out = {"seed": seed, "floor": floor, "seq_nll": seq_nll,
           "batched_equals_one_sequence": _identical(timed, seq_a[:timed.shape[0]]), "methods": {},
           "prior": {"kind": dom.prior_kind, "horizon": dom.horizon, "prior_loss_last": dom.history["prior_loss_last"],
                     "confidence_val_auroc": dom.history["confidence"].get("val_auroc"),
                     "confidence_val_keep_rate": dom.history["confidence"].get("val_keep_rate")}}
    base_times = runs["sequential"]["chunk_times"]
    for m, r in runs.items():
        toks = r["tokens"]
        row = {"speedup": speedup(r["chunk_times"], base_times),
               "tokens_per_call": length * len(r["calls"]) / sum(r["calls"]),
               "nll_rel": mean_nll(mother, toks) / mean_nll(mother, seq_a[:toks.shape[0]]) - 1, "n": toks.shape[0],
               "identical_to_sequential": _identical(toks[:timed.shape[0]], timed)}
        if m in quality:
            tv = distance(toks, seq_b)
            row.update(tv=tv, excess=(tv - floor) / floor, identical_to_a=_identical(toks, seq_a))
        out["methods"][m] = row
    if name == "text":
        from cuekit.nara.data import decode_text
        out["examples"] = {"sequential": decode_text(seq_a[0]), f"gated@{TAU}": decode_text(
            runs[f"gated@{TAU}"]["tokens"][0])}
    out["cpu_s"] = {"train": cpu_train, "total": _cpu_seconds() - cpu0}
    return out


def _identical(a, b) -> float:
    """Share of rows of a (N, T) tensor equal to the same rows of b."""
    return float((a == b).all(1).float().mean())


def run_experiment(config: ExperimentConfig) -> dict:
    """Mothers in 2 worker processes, then every (domain, seed) in 2 worker processes (1 torch thread each)."""
    from cuekit.parallel import available_cpus, run_jobs, torch_threads

    seeds = list(config.seeds)
    plan = _plan(config.quick)
    workers = max(1, min(2, available_cpus()))
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    with torch_threads(1):
        mothers = run_jobs(_mother_job, [(name, plan[name]["settings"], seeds[0]) for name in ("text", "image")],
                           workers=workers, threads=1, desc="nara mothers", progress=config.progress)
        mothers = dict(zip(("text", "image"), mothers))
        jobs = [(name, seed, mothers[name]["config"], mothers[name]["state"], plan[name]["settings"],
                 plan[name]["eval"]) for name in ("text", "image") for seed in seeds]
        per_seed = run_jobs(_seed_job, jobs, workers=workers, threads=1, desc="nara seeds", progress=config.progress)
    timing = {"wall_s": time.perf_counter() - start, "cpu_s": _cpu_seconds() - cpu_start, "workers": workers,
              "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    runs = {name: [r for (n, *_), r in zip(jobs, per_seed) if n == name] for name in ("text", "image")}
    return summarise(runs, {n: m["history"] for n, m in mothers.items()}, plan, seeds, config, timing)


def summarise(runs: dict, mother_history: dict, plan: dict, seeds: list, config: ExperimentConfig,
              timing: dict) -> dict:
    """The claims, table, plot and result dict from the per-seed measurements runs {domain: [per seed]}."""
    pre = {name: _domain_preconditions(name, mother_history[name], runs[name]) for name in runs}
    metric = {"text": "bigram TV", "image": "3x3-pattern TV"}
    prior_word = {"text": "the paper's i.i.d. prior (`hidden`: heads on the mother's state)",
                  "image": "the paper's i.i.d. prior (`window`: an MLP on the last 16 pixels)"}
    gate = f"gated@{TAU}"
    rows = []
    for name in ("text", "image"):
        rs = runs[name]
        h = mother_history[name]
        s = plan[name]["settings"]
        tokens = s["length"] if name == "text" else s["size"] ** 2
        regime = (f"{name}: mother {_mother_words(name, s)}, held-out NLL {h['mother_heldout_nll']:.3f} vs "
                  f"{h['baseline']} {h['baseline_heldout_nll']:.3f}; {prior_word[name]}, K = "
                  f"{rs[0]['prior']['horizon']}; {tokens} tokens per sequence; one torch thread per process")
        speed_measure = ("log wall-clock speed-up of {what} over sequential sampling of the same mother (KV cache "
                         "on for text), median over interleaved chunks of " + f"{plan[name]['eval']['chunk']} "
                         f"sequences ({plan[name]['eval']['timed']} sequences per seed)")
        quality_measure = (f"{QUALITY_TOLERANCE} - excess, excess = ({metric[name]}(X, B) - {metric[name]}(A, B)) "
                           f"/ {metric[name]}(A, B): X = {{what}} samples, A = sequential samples under the same "
                           f"noise as X, B = independent sequential samples ({plan[name]['eval']['n_quality']} "
                           f"sequences each); tolerance {QUALITY_TOLERANCE} of the noise floor fixed in advance")
        rows.append(claim(
            id=f"gated_speed_{name}", claim=PAPER_WORDS["speed"],
            measure=speed_measure.format(what=f"the confidence-gated mode (tau {TAU})"),
            effects=[math.log(r["methods"][gate]["speedup"]) for r in rs], expected_sign=+1,
            headline=name == "text", preconditions=pre[name]["speed"], regime=regime,
            note=f"tokens per mother call (the reconstruction's K / rounds): "
                 f"{_ms([r['methods'][gate]['tokens_per_call'] for r in rs])}"))
        rows.append(claim(
            id=f"gated_quality_{name}", claim=PAPER_WORDS["quality"],
            measure=quality_measure.format(what=f"confidence-gated (tau {TAU})"),
            effects=[QUALITY_TOLERANCE - r["methods"][gate]["excess"] for r in rs], expected_sign=+1,
            preconditions=pre[name]["quality"], regime=regime,
            note=f"excess over the floor {_ms([100 * r['methods'][gate]['excess'] for r in rs], '%')}; floor "
                 f"{_ms([r['floor'] for r in rs])}; NLL vs sequential "
                 f"{_ms([100 * r['methods'][gate]['nll_rel'] for r in rs], '%')}"))
        rows.append(claim(
            id=f"gated_calls_{name}",
            claim="Reference, the mechanism's measure: the gated mode needs fewer sequential mother passes (the "
                  "reconstruction's speed-up K / rounds; wall-clock follows it where a mother pass dwarfs the "
                  "prior and the gate, as for the paper's WaveNet / PixelCNN++ mothers)",
            measure=f"log(tokens per mother call) of the confidence-gated mode (tau {TAU}) = log of sequential "
                    "mother calls / gated mother calls, over all its sequences",
            effects=[math.log(r["methods"][gate]["tokens_per_call"]) for r in rs], expected_sign=+1, reference=True,
            preconditions=pre[name]["speed"], regime=regime))
        for mode, words in (("exact", "exact mode (predictive sampling: identical to sequential samples)"),
                            ("speculative", "speculative mode (keeps the mother's distribution)")):
            rows.append(claim(
                id=f"{mode}_speed_{name}", claim=f"Reference, not the paper's method: {words}",
                measure=speed_measure.format(what=f"the {mode} mode with the same prior"),
                effects=[math.log(r["methods"][mode]["speedup"]) for r in rs], expected_sign=+1, reference=True,
                preconditions=pre[name]["speed"], regime=regime))
        rows.append(claim(
            id=f"speculative_quality_{name}",
            claim="Reference: the speculative mode is exact in distribution, so this row calibrates the quality "
                  "measure (its samples do not share noise with A: the full sampling spread)",
            measure=quality_measure.format(what="speculative"),
            effects=[QUALITY_TOLERANCE - r["methods"]["speculative"]["excess"] for r in rs], expected_sign=+1,
            reference=True, preconditions=pre[name]["quality"], regime=regime))
    table_rows = []
    for name in ("text", "image"):
        rs = runs[name]
        for m in rs[0]["methods"]:
            vals = [r["methods"][m] for r in rs]
            q = "excess" in vals[0]
            table_rows.append([
                name, m, _ms([v["tokens_per_call"] for v in vals]), _ms([v["speedup"] for v in vals]),
                _ms([100 * v["nll_rel"] for v in vals], "%"),
                _ms([v["tv"] for v in vals], digits=3) if q else "-",
                _ms([100 * v["excess"] for v in vals], "%") if q else "-",
                _ms([v["identical_to_a"] if q else v["identical_to_sequential"] for v in vals])])
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    _plot(runs, out / "speed_quality.png")
    head = {n: [r["methods"][gate] for r in runs[n]] for n in runs}
    measured = "; ".join(
        f"{n}: gated (tau {TAU}) {_ms([v['speedup'] for v in head[n]])}x wall-clock, "
        f"{_ms([v['tokens_per_call'] for v in head[n]])} tokens per mother call, {metric[n]} excess over the "
        f"sequential noise floor {_ms([100 * v['excess'] for v in head[n]], '%')} (tolerance "
        f"{100 * QUALITY_TOLERANCE:.0f}%); exact {_ms([r['methods']['exact']['speedup'] for r in runs[n]])}x, "
        f"speculative {_ms([r['methods']['speculative']['speedup'] for r in runs[n]])}x" for n in runs)
    scale = "quick (smoke scale)" if config.quick else "full"
    return make_result(
        area="nara", title="NARA: confidence-guided approximation of autoregressive sampling (arXiv 1910.06705)",
        claim="A prior predictor proposes future samples i.i.d., one parallel pass of the mother AR model scores them "
              "and a learned confidence predictor decides which to keep: faster than sequential AR sampling, with "
              "samples of the same quality, on sequences and images.",
        measured=measured + ".",
        table={"columns": ["domain", "method", "tokens / call", "speed-up (wall)", "NLL vs seq", "TV to B",
                           "excess over floor", "identical to seq"], "rows": table_rows},
        claims=rows,
        regime=f"{scale}; mothers trained once (first seed), priors and confidence predictors trained per seed, "
               f"sampling noise per seed; wall-clock ratios measured in the same process, interleaved "
               f"(load average at the end {timing.get('load_average')})",
        plots=["speed_quality.png"], seeds=seeds,
        details={"mothers": mother_history, "plan": plan, "runs": runs, "timing": timing, "tau": TAU,
                 "quality_tolerance": QUALITY_TOLERANCE})


def _domain_preconditions(name: str, history: dict, rs: list) -> dict:
    """Preconditions of a domain's speed and quality rows, from this run's numbers."""
    m, b = history["mother_heldout_nll"], history["baseline_heldout_nll"]
    if name == "text":
        mother = precondition(f"the text mother is well below the bigram baseline (held-out NLL < bigram - "
                              f"{TEXT_MOTHER_MARGIN} nats)", m < b - TEXT_MOTHER_MARGIN,
                              f"mother {m:.3f}, bigram {b:.3f} nats per token")
    else:
        mother = precondition(f"the image mother is below the 4-neighbour context model (held-out NLL < "
                              f"{IMAGE_MOTHER_RATIO} x its)", m < IMAGE_MOTHER_RATIO * b,
                              f"mother {m:.4f}, 4-neighbour {b:.4f} nats per pixel")
    exact = min(r["methods"]["exact"]["identical_to_sequential"] for r in rs)
    harness = precondition(f"exact mode reproduces sequential sampling under the shared noise (>= "
                           f"{HARNESS_AGREEMENT:.0%} of timed sequences identical, every seed)",
                           exact >= HARNESS_AGREEMENT, f"min over seeds {exact:.3f}")
    batched = min(r["batched_equals_one_sequence"] for r in rs)
    same_a = precondition(f"the batched sequential set A equals one-sequence sequential sampling (>= "
                          f"{HARNESS_AGREEMENT:.0%} of timed sequences identical, every seed)",
                          batched >= HARNESS_AGREEMENT, f"min over seeds {batched:.3f}")
    floor = min(r["floor"] for r in rs)
    floor_ok = precondition("the noise floor is measurable (sequential-vs-sequential distance > 0)", floor > 0,
                            f"min over seeds {floor:.4f}")
    return {"speed": [mother, harness], "quality": [mother, same_a, floor_ok]}


def _mother_words(name: str, s: dict) -> str:
    if name == "text":
        return (f"causal transformer dim {s['dim']}, {s['depth']} layers, {s['mother_steps']} steps on "
                f"{s['corpus_bytes'] // 1000} kB of stdlib source")
    return f"PixelCNN {s['channels']} channels, {s['layers']} layers, {s['mother_steps']} steps, {s['size']} px shapes"


def _ms(values: list, unit: str = "", digits: int = 2) -> str:
    """'mean ± sd' of per-seed values."""
    mean, sd = mean_spread(values)
    return f"{mean:.{digits}f}{unit} ± {sd:.{digits}f}{unit}"


def _plot(runs: dict, path) -> None:
    """Wall-clock speed-up against the excess over the noise floor, per domain and method (mean ± sd); methods
    whose samples were not measured for quality are left out, except sequential and exact (excess 0 by
    construction)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cuekit.io import save_figure

    fig, axes = plt.subplots(1, len(runs), figsize=(4.4 * len(runs), 3.6), squeeze=False)
    for ax, (name, rs) in zip(axes[0], runs.items()):
        for m in rs[0]["methods"]:
            if m not in ("sequential", "exact") and "excess" not in rs[0]["methods"][m]:
                continue
            speeds = [r["methods"][m]["speedup"] for r in rs]
            excess = [100 * r["methods"][m].get("excess", 0.0) for r in rs]
            (sx, dx), (sy, dy) = mean_spread(excess), mean_spread(speeds)
            marker = "*" if m.startswith("gated") else "o"
            ax.errorbar([sx], [sy], xerr=[dx], yerr=[dy], fmt=marker, ms=8 if marker == "*" else 5, capsize=2,
                        label=m)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.axvline(100 * QUALITY_TOLERANCE, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("distance to B above the floor (% of floor)")
        ax.set_ylabel("wall-clock speed-up over sequential")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
