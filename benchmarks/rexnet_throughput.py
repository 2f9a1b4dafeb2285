"""Forward throughput of cuekit's ReXNet against timm's, same weights, same machine, one process.

Ours adds the shortcut in place (`out[:, :c_in] += x`) where timm concatenates a sum and a slice,
and uses plain nn.SiLU / BatchNorm2d modules; the target is a median ratio >= 0.95 of images/s
(ours / timm). Timings are interleaved (A, B, B, A, ...) and the median of the per-round ratios is
reported, so both models see the same machine load.

    python benchmarks/rexnet_throughput.py [--batch-size 8] [--img-size 224] [--rounds 9] [--models 100]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from cuekit.io import environment, format_table, write_results
from cuekit.models import create_model
from cuekit.models.complexity import count_macs, count_params, interleaved_ratio
from cuekit.models.rexnet import rexnet_key_remap

TARGET = 0.95


def main(argv: list[str] | None = None) -> int:
    """Time ours vs timm per width; print a table; exit 1 if a ratio is below the target."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--iters", type=int, default=1, help="forward passes per timing")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="100", help="widths, comma-separated: 100,130,150,200,300")
    parser.add_argument("--out", default=None, help="folder for results.json")
    args = parser.parse_args(argv)
    import timm

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    rows, results = [], []
    below = False
    for width in args.models.split(","):
        name = f"rexnet_{width.strip()}"
        reference = timm.create_model(name).to(device).eval()
        ours = create_model(name).to(device).eval()
        ours.load_state_dict(rexnet_key_remap(reference.state_dict()))
        with torch.inference_mode():
            max_diff = (ours(x[:2]) - reference(x[:2])).abs().max().item()
        ratio, t_ours, t_timm = interleaved_ratio(ours, reference, x, args.rounds, args.iters)
        ips_ours = args.batch_size / statistics.median(t_ours)
        ips_timm = args.batch_size / statistics.median(t_timm)
        below |= ratio < TARGET
        rows.append([f"{name} (cuekit)", f"timm {name}", f"{ips_ours:.1f}", f"{ips_timm:.1f}", f"{ratio:.3f}",
                     f"{count_params(ours) / 1e6:.2f}M params, {count_macs(ours, args.img_size) / 1e9:.3f} GMACs, "
                     f"max|dlogits| {max_diff:.1e}"])
        results.append({"a": name, "b": f"timm:{name}", "images_per_s_a": ips_ours, "images_per_s_b": ips_timm,
                        "median_ratio": ratio, "times_a": t_ours, "times_b": t_timm, "max_abs_logit_diff": max_diff})
        del reference, ours

    columns = ["A", "B", "A img/s", "B img/s", "median ratio A/B", "notes"]
    print(f"forward throughput, batch {args.batch_size} at {args.img_size} px on {device} "
          f"({torch.get_num_threads()} threads), median of {args.rounds} interleaved rounds")
    table = format_table(columns, rows)
    if args.out:
        write_results(args.out, {"benchmark": "rexnet_throughput", "config": vars(args), "results": results,
                                 "target_vs_timm": TARGET, "environment": environment()}, columns, rows)
    print(table)
    print(f"cuekit ReXNet vs timm ReXNet: target ratio >= {TARGET}: {'NOT MET' if below else 'met'}")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
