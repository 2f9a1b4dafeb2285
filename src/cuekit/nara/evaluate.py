"""Speed against quality: NARA over a sweep of tau against sequential sampling of the same mother model."""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from cuekit.io import save_figure
from cuekit.nara.predictors import MotherProbabilityConfidence
from cuekit.nara.sampler import gumbel_noise, nara_sample, sample_sequential
from cuekit.nara.training import mean_nll


def ngram_tv(a: Tensor, b: Tensor, n: int = 2) -> float:
    """Total-variation distance between the n-gram frequencies of two sample sets a (N, T), b (M, T) of tokens."""
    def codes(x: Tensor) -> Tensor:
        x = x.long()
        out = torch.zeros(x.shape[0], x.shape[1] - n + 1, dtype=torch.long)
        for i in range(n):
            out = out * base + x[:, i:x.shape[1] - n + 1 + i]
        return out.reshape(-1)
    base = int(max(int(a.max()), int(b.max()))) + 1
    return _histogram_tv(codes(a), codes(b))


def patch_tv(a: Tensor, b: Tensor, size: int, patch: int = 3) -> float:
    """Total-variation distance between the frequencies of (position, patch x patch binary pattern) pairs (every
    position inside the image) of two image sets a (N, size * size), b (M, size * size) in {0, 1}: the image
    analogue of n-gram TV, keeping where each local pattern occurs."""
    def codes(x: Tensor) -> Tensor:
        cols = F.unfold(x.view(-1, 1, size, size).float(), patch).long()  # (N, patch*patch, positions)
        pattern = (cols << torch.arange(patch * patch)[:, None]).sum(1)  # (N, positions)
        return (pattern * pattern.shape[1] + torch.arange(pattern.shape[1])).reshape(-1)
    return _histogram_tv(codes(a), codes(b))


def _histogram_tv(ca: Tensor, cb: Tensor) -> float:
    """TV between the empirical distributions of two code lists (N,), (M,) long."""
    keys, inverse = torch.unique(torch.cat([ca, cb]), return_inverse=True)
    fa = torch.bincount(inverse[:ca.numel()], minlength=keys.numel()).double() / ca.numel()
    fb = torch.bincount(inverse[ca.numel():], minlength=keys.numel()).double() / cb.numel()
    return 0.5 * float((fa - fb).abs().sum())


@torch.inference_mode()
def batch_sequential(mother, noise: Tensor) -> Tensor:
    """Sequential sampling of many sequences at once, by the rule of `sample_sequential`
    (x_t = argmax(logits_t + noise_t)): noise (N, T, V) -> tokens (N, T) long.

    A `TransformerMother` decodes the batch with its KV cache, a `PixelCNNMother` runs one pass over the batch
    per pixel (over the rows up to the pixel's); any other mother falls back to `sample_sequential` per
    sequence. Batched float arithmetic can differ from the one-sequence sampler in the last bits, so rare
    near-ties may resolve differently.
    """
    from cuekit.nara.mother import PixelCNNMother, TransformerMother

    n, length, _ = noise.shape
    if isinstance(mother, TransformerMother):
        model = mother.model
        cache = model.new_cache(n)
        x = torch.full((n, 1), mother.bos, dtype=torch.long)
        out = torch.empty(n, length, dtype=torch.long)
        for t in range(length):
            logits, _ = model(x, cache, start=t)
            x = torch.argmax(logits[:, 0].float() + noise[:, t], dim=-1, keepdim=True)
            out[:, t] = x[:, 0]
        return out
    if isinstance(mother, PixelCNNMother):
        s = mother.size
        canvas = torch.zeros(n, 1, s, s)
        flat = canvas.view(n, -1)
        for t in range(length):
            r = t // s  # masked convolutions see no row below r: the rows after it are left out of the pass
            logits = mother.model(canvas[:, :, :r + 1])[:, :, r, t % s]
            flat[:, t] = torch.argmax(logits + noise[:, t], dim=-1).float()
        return flat.long()
    return torch.stack([sample_sequential(mother, length, nz).tokens for nz in noise])


def interleaved_runs(methods: dict, noise: Tensor, *, timed: int, chunk: int, quality: tuple = (),
                     seed: int = 0) -> dict:
    """Run sampling methods on sequences under pre-drawn noise (N, T, V) and time them.

    methods: name -> fn(noise (T, V), generator) -> `SampleResult`. The first `timed` sequences are run by
    every method, in chunks of `chunk` sequences with the methods in a rotating order per chunk (interleaved,
    so every method meets the same machine load); the other sequences only by the methods in `quality`
    (the sample sets a distribution distance needs). A method that draws its own randomness (speculative)
    gets a generator seeded by (seed, sequence index).

    Returns name -> {"tokens": (n, T) long, "calls": mother calls per sequence (list), "chunk_times": [s, ...]
    of the timed chunks}.
    """
    names = list(methods)
    n = noise.shape[0]
    out = {m: {"tokens": [], "calls": [], "chunk_times": []} for m in names}
    starts = list(range(0, n, chunk))
    for c, lo in enumerate(starts):
        hi = min(lo + chunk, n)
        is_timed = hi <= timed
        order = names[c % len(names):] + names[:c % len(names)]
        for m in order:
            if not is_timed and m not in quality:
                continue
            t0 = time.perf_counter()
            res = [methods[m](noise[i], torch.Generator().manual_seed(seed * 100_003 + i)) for i in range(lo, hi)]
            if is_timed:
                out[m]["chunk_times"].append(time.perf_counter() - t0)
            out[m]["tokens"] += [r.tokens for r in res]
            out[m]["calls"] += [r.calls for r in res]
    for m in names:
        out[m]["tokens"] = torch.stack(out[m]["tokens"])
    return out


def speedup(chunk_times: list[float], baseline_times: list[float]) -> float:
    """Median over the interleaved chunks of baseline time / method time."""
    return statistics.median(b / t for b, t in zip(baseline_times, chunk_times))


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
