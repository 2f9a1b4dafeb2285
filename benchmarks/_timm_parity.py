"""Shared by the throughput benchmarks that time a cuekit model against timm's with the same weights.

Not a benchmark itself: `pit_throughput.py` and `rexnet_throughput.py` import it (benchmarks/ is on
sys.path when a script in it runs); `make bench` skips files whose name starts with "_".
"""
from __future__ import annotations

import argparse
import statistics

import torch

from cuekit.io import environment, format_table, write_results
from cuekit.models.complexity import interleaved_ratio

TARGET = 0.95  # median images/s ratio, ours / timm: both run the same kernels


def parse_args(doc: str, argv: list[str] | None, *, batch_size: int, rounds: int, models: str,
               models_help: str) -> tuple[argparse.Namespace, torch.Tensor]:
    """The common options; sets the thread count -> (args, a seeded input batch (B, 3, S, S) on the device)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--iters", type=int, default=1, help="forward passes per timing")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default=models, help=models_help)
    parser.add_argument("--out", default=None, help="folder for results.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=torch.device(args.device))
    return args, x


def against_timm(ours: torch.nn.Module, reference: torch.nn.Module, x: torch.Tensor, args: argparse.Namespace,
                 a: str, b: str) -> tuple[float, list, dict]:
    """Logit difference and interleaved throughput of ours vs the reference -> (ratio, table row start, result)."""
    with torch.inference_mode():
        max_diff = (ours(x[:2]) - reference(x[:2])).abs().max().item()
    ratio, t_ours, t_timm = interleaved_ratio(ours, reference, x, args.rounds, args.iters)
    ips_ours = args.batch_size / statistics.median(t_ours)
    ips_timm = args.batch_size / statistics.median(t_timm)
    row = [f"{a} (cuekit)", f"timm {b}", f"{ips_ours:.1f}", f"{ips_timm:.1f}", f"{ratio:.3f}"]
    result = {"a": a, "b": f"timm:{b}", "images_per_s_a": ips_ours, "images_per_s_b": ips_timm,
              "median_ratio": ratio, "times_a": t_ours, "times_b": t_timm, "max_abs_logit_diff": max_diff}
    return ratio, row, result


def report(name: str, what: str, args: argparse.Namespace, rows: list, results: list, below: bool,
           target: float = TARGET) -> int:
    """Print (and with --out write) the table and the verdict against `target` -> exit code (1: below it)."""
    columns = ["A", "B", "A img/s", "B img/s", "median ratio A/B", "notes"]
    print(f"forward throughput, batch {args.batch_size} at {args.img_size} px on {args.device} "
          f"({torch.get_num_threads()} threads), median of {args.rounds} interleaved rounds")
    table = format_table(columns, rows)
    if args.out:
        write_results(args.out, {"benchmark": name, "config": vars(args), "results": results,
                                 "target_vs_timm": target, "environment": environment()}, columns, rows)
    print(table)
    print(f"{what}: target ratio >= {target}: {'NOT MET' if below else 'met'}")
    return 1 if below else 0
