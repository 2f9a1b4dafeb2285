"""Benchmark: NARA sampling against sequential sampling of the same mother model (KV cache on).

Prints, per method (sequential, exact NARA, the confidence-gated mode over a sweep of tau, speculative):
mother calls, wall-clock time (median of interleaved repeats, same process, same pre-drawn noise),
the speed-up over sequential sampling, the samples' NLL under the mother and their bigram
total-variation distance to independent sequential samples (with the sequential-vs-sequential floor).
Target from the issue: >= 2x wall-clock speed-up with sample NLL within 5% of sequential sampling's.

    python benchmarks/nara.py                      # trains a quick text domain first (a few minutes on 2 cores)
    python benchmarks/nara.py --ckpt runs/nara-text  # a domain written by `cuekit nara train`
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    """Run the benchmark and print its table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domain", default="text", choices=["text", "image"])
    ap.add_argument("--ckpt", default=None, help="folder written by `cuekit nara train` (default: train quick)")
    ap.add_argument("--taus", default="0.9,0.7,0.5,0.3")
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--horizon", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared machine)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from cuekit.io import format_table
    from cuekit.nara.domains import build_domain, load_domain
    from cuekit.nara.evaluate import TABLE_COLUMNS, sweep, table_rows

    t0 = time.perf_counter()
    domain = load_domain(args.ckpt) if args.ckpt else build_domain(args.domain, quick=True, seed=args.seed,
                                                                  progress=True)
    print(f"domain {domain.name}: length {domain.length}, horizon {args.horizon or domain.horizon}, "
          f"setup {time.perf_counter() - t0:.0f}s, threads {torch.get_num_threads()}")
    res = sweep(domain, [float(t) for t in args.taus.split(",")], n_samples=args.samples, repeats=args.repeats,
                seed=args.seed, horizon=args.horizon, mother_probability=True, progress=True)
    print(format_table(TABLE_COLUMNS, table_rows(res["rows"])))
    print(f"bigram TV between two independent sequential sets (noise floor): {res['noise_floor_tv']:.3f}")
    ok = [r for r in res["rows"]
          if r["method"] != "sequential" and r["speedup_wall"] >= 2 and abs(r["nll_rel"]) <= 0.05]
    best = max((r for r in res["rows"] if abs(r["nll_rel"]) <= 0.05 and r["method"] != "sequential"),
               key=lambda r: r["speedup_wall"], default=None)
    if best:
        print(f"best speed-up with NLL within 5%: {best['speedup_wall']:.2f}x ({best['method']}, tau {best['tau']})")
    print("target >= 2x at NLL within 5%:", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
