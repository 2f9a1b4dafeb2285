"""Speed against quality: NARA over a sweep of tau against sequential sampling of the same mother model."""
from __future__ import annotations

import statistics
import time
from collections import Counter

import torch
from torch import Tensor

from cuekit.io import save_figure
from cuekit.nara.predictors import MotherProbabilityConfidence
from cuekit.nara.sampler import gumbel_noise, nara_sample, sample_sequential
from cuekit.nara.training import mean_nll


def ngram_tv(a: Tensor, b: Tensor, n: int = 2) -> float:
    """Total-variation distance between the n-gram frequencies of two sample sets a (N, T), b (M, T)."""
    def freq(x: Tensor) -> Counter:
        c: Counter = Counter()
        for row in x.tolist():
            c.update(tuple(row[i:i + n]) for i in range(len(row) - n + 1))
        return c
    fa, fb = freq(a), freq(b)
    na, nb = sum(fa.values()), sum(fb.values())
    return 0.5 * sum(abs(fa[k] / na - fb[k] / nb) for k in set(fa) | set(fb))


def method_list(taus: list[float], speculative: bool = True, mother_probability: bool = False) -> list[dict]:
    """The methods of a sweep: sequential, exact, each tau of the learned gate, optionally speculative."""
    methods = [{"method": "sequential"}, {"method": "exact"}]
    methods += [{"method": "approx", "tau": t} for t in taus]
    if mother_probability:
        methods += [{"method": "approx-q", "tau": t} for t in taus]
    if speculative:
        methods.append({"method": "speculative"})
    return methods


def sweep(domain, taus: list[float], n_samples: int = 8, repeats: int = 3, seed: int = 0, speculative: bool = True,
          mother_probability: bool = False, horizon: int | None = None, length: int | None = None,
          progress: bool = False) -> dict:
    """Time and score every method on the same pre-drawn noise; wall time is the median of interleaved repeats.

    Returns {"rows": [dict per method], "noise_floor_tv": bigram TV between two independent sequential sets}.
    """
    from tqdm.auto import tqdm

    mother, prior, conf = domain.mother, domain.prior, domain.confidence
    horizon, length = horizon or domain.horizon, length or domain.length
    v = mother.vocab_size
    g = torch.Generator().manual_seed(seed)
    noises = [gumbel_noise(length, v, g) for _ in range(n_samples)]
    methods = method_list(taus, speculative, mother_probability)
    qconf = MotherProbabilityConfidence()

    def run(m: dict, noise: Tensor, gen: torch.Generator):
        kind = m["method"]
        if kind == "sequential":
            return sample_sequential(mother, length, noise)
        if kind == "exact":
            return nara_sample(mother, prior, length, horizon, "exact", noise=noise)
        if kind == "speculative":
            return nara_sample(mother, prior, length, horizon, "speculative", generator=gen)
        return nara_sample(mother, prior, length, horizon, "approx", noise=noise, tau=m["tau"],
                           confidence=conf if kind == "approx" else qconf)

    times = {i: [] for i in range(len(methods))}
    outputs: dict[int, list] = {}
    with tqdm(total=repeats * len(methods), desc="sweep", unit="method", disable=not progress, leave=False) as bar:
        for r in range(repeats):
            order = list(range(len(methods)))
            order = order[r % len(order):] + order[:r % len(order)]
            for i in order:
                gen = torch.Generator().manual_seed(seed * 1000 + 17)
                t0 = time.perf_counter()
                res = [run(methods[i], nz, gen) for nz in noises]
                times[i].append(time.perf_counter() - t0)
                outputs[i] = res
                bar.update(1)
    seq_time = statistics.median(times[0])
    seq_tokens = torch.stack([x.tokens for x in outputs[0]])
    seq_nll = mean_nll(mother, seq_tokens)
    ref = torch.stack([sample_sequential(mother, length, gumbel_noise(length, v, g)).tokens for _ in range(n_samples)])
    rows = []
    for i, m in enumerate(methods):
        toks = torch.stack([x.tokens for x in outputs[i]])
        calls = sum(x.calls for x in outputs[i])
        t = statistics.median(times[i])
        nll = mean_nll(mother, toks)
        rows.append({**m, "tau": m.get("tau"), "calls_per_seq": calls / n_samples,
                     "tokens_per_call": length * n_samples / calls, "time_s": t, "speedup_wall": seq_time / t,
                     "speedup_calls": length * n_samples / calls, "nll": nll, "nll_rel": nll / seq_nll - 1,
                     "bigram_tv": ngram_tv(toks, ref)})
    return {"rows": rows, "noise_floor_tv": ngram_tv(seq_tokens, ref), "length": length, "horizon": horizon,
            "n_samples": n_samples, "repeats": repeats}


TABLE_COLUMNS = ["method", "tau", "calls/seq", "tokens/call", "time s", "speed-up (wall)", "NLL", "NLL vs seq",
                 "bigram TV"]


def table_rows(rows: list[dict]) -> list[list]:
    """Rows of `sweep` as table cells."""
    return [[r["method"], "-" if r["tau"] is None else r["tau"], round(r["calls_per_seq"], 1),
             round(r["tokens_per_call"], 2), round(r["time_s"], 3), round(r["speedup_wall"], 2), round(r["nll"], 3),
             f"{100 * r['nll_rel']:+.1f}%", round(r["bigram_tv"], 3)] for r in rows]


def plot_speed_quality(results: dict, path) -> None:
    """Speed-up (wall) against NLL change per domain: results {domain: sweep result} -> PNG at path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.4), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        for kind, marker in (("approx", "o-"), ("approx-q", "s--")):
            pts = [r for r in res["rows"] if r["method"] == kind]
            if pts:
                ax.plot([100 * r["nll_rel"] for r in pts], [r["speedup_wall"] for r in pts], marker,
                        label="learned gate" if kind == "approx" else "gate q(draft)")
                for r in pts:
                    ax.annotate(f"{r['tau']}", (100 * r["nll_rel"], r["speedup_wall"]), fontsize=7)
        for kind, marker in (("exact", "k*"), ("speculative", "r^")):
            for r in (r for r in res["rows"] if r["method"] == kind):
                ax.plot([100 * r["nll_rel"]], [r["speedup_wall"]], marker, label=kind)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.axvline(5.0, color="gray", lw=0.8, ls=":")
        ax.set_xlabel("sample NLL vs sequential (%)")
        ax.set_ylabel("wall-clock speed-up")
        ax.set_title(f"{name} (tau annotated)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
