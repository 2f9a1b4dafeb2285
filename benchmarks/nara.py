"""Benchmark: NARA sampling against sequential sampling of the same mother model (KV cache on).

Prints, per method (sequential, exact NARA, the confidence-gated mode over a sweep of tau, the gate q(draft),
speculative): mother calls, wall-clock time (median of interleaved repeats, same process, same pre-drawn
noise), the speed-up over sequential sampling, the samples' NLL under the mother and their bigram
total-variation distance to independent sequential samples (with the sequential-vs-sequential floor).
The confidence-gated mode (`approx`) is the paper's method; `exact` and `speculative` are references.
A few samples per method make the distances noisy: `cuekit reproduce nara` is the judged measurement.

With several --priors, every prior is trained on the same mother (same seed, same quick settings) and
swept in turn; the sequential baseline is rerun with each sweep.

    python benchmarks/nara.py                                  # quick text domain, its default prior
    python benchmarks/nara.py --priors hidden-chain,hidden,window
    python benchmarks/nara.py --domain image
    python benchmarks/nara.py --ckpt runs/nara-text            # a domain written by `cuekit nara train`
"""
from __future__ import annotations

import argparse
import os
import time

import torch


def main() -> None:
    """Run the benchmark and print its tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domain", default="text", choices=["text", "image"])
    ap.add_argument("--ckpt", default=None, help="folder written by `cuekit nara train` (default: train quick)")
    ap.add_argument("--priors", default=None,
                    help="comma-separated prior kinds to train and compare (default: the domain's default)")
    ap.add_argument("--taus", default="0.9,0.7,0.5,0.3")
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--horizon", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from cuekit.io import format_table
    from cuekit.nara.domains import build_domain, load_domain
    from cuekit.nara.evaluate import TABLE_COLUMNS, sweep, table_rows

    kinds = [None] if args.ckpt or not args.priors else [k.strip() for k in args.priors.split(",") if k.strip()]
    summary = []
    for kind in kinds:
        t0 = time.perf_counter()
        domain = load_domain(args.ckpt) if args.ckpt else build_domain(args.domain, quick=True, seed=args.seed,
                                                                      progress=True, prior=kind)
        setup = time.perf_counter() - t0
        res = sweep(domain, [float(t) for t in args.taus.split(",")], n_samples=args.samples, repeats=args.repeats,
                    seed=args.seed, horizon=args.horizon, mother_probability=True, progress=True)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\ndomain {domain.name}, prior {domain.prior_kind}: length {res['length']}, horizon {res['horizon']}, "
              f"{args.samples} samples x {args.repeats} repeats, setup {setup:.0f}s, "
              f"threads {torch.get_num_threads()}, load average {load}")
        print(format_table(TABLE_COLUMNS, table_rows(res["rows"])))
        print(f"bigram TV between two independent sequential sets (noise floor): {res['noise_floor_tv']:.3f}")
        gated = [r for r in res["rows"] if r["method"] == "approx"]
        best = max(gated, key=lambda r: r["speedup_wall"], default=None)
        if best:
            print(f"fastest confidence-gated tau: {best['tau']}: {best['speedup_wall']:.2f}x wall-clock, "
                  f"{best['tokens_per_call']:.2f} tokens per mother call, NLL {100 * best['nll_rel']:+.1f}%, "
                  f"bigram TV {best['bigram_tv']:.3f} (floor {res['noise_floor_tv']:.3f})")
            summary.append(f"{domain.prior_kind}: gated {best['speedup_wall']:.2f}x (tau {best['tau']})")
    if len(summary) > 1:
        print("\n" + "; ".join(summary))


if __name__ == "__main__":
    main()
