"""Forward throughput of cuekit's PiT against timm's PiT, and of PiT against the ViT baselines.

Both PiT implementations run the same kernels (convolutions, Linear, LayerNorm and
scaled_dot_product_attention), so ours should run at timm's speed: the target is a median
ratio >= 0.95. Timings are interleaved (A, B, A, B, ...) on the same machine, in one process,
and the median over rounds of the per-round ratio is reported.

    python benchmarks/pit_throughput.py [--batch-size 16] [--img-size 224] [--rounds 7] [--out DIR]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from cuekit.io import environment, format_table, write_results
from cuekit.models import create_model
from cuekit.models.complexity import count_macs, count_params, interleaved_ratio
from cuekit.models.pit import pit_key_remap

TARGET = 0.95


def main(argv: list[str] | None = None) -> int:
    """Run the comparisons and print a table; exit 1 if ours is slower than the target against timm."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=1, help="forward passes per timing")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="ti,s", help="PiT variants, comma-separated")
    parser.add_argument("--out", default=None, help="folder for results.json")
    args = parser.parse_args(argv)
    import timm

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    rows, results = [], []
    below_target = False
    for variant in args.models.split(","):
        ours = create_model(f"pit_{variant}", img_size=args.img_size).to(device).eval()
        reference = timm.create_model(f"pit_{variant}_224", img_size=args.img_size).to(device).eval()
        ours.load_state_dict(pit_key_remap(reference.state_dict()))
        with torch.inference_mode():
            max_diff = (ours(x[:2]) - reference(x[:2])).abs().max().item()
        ratio, t_ours, t_timm = interleaved_ratio(ours, reference, x, args.rounds, args.iters)
        ips_ours = args.batch_size / statistics.median(t_ours)
        ips_timm = args.batch_size / statistics.median(t_timm)
        below_target |= ratio < TARGET
        rows.append([f"pit_{variant} (cuekit)", f"timm pit_{variant}_224", f"{ips_ours:.1f}", f"{ips_timm:.1f}",
                     f"{ratio:.3f}", f"max|dlogits| {max_diff:.1e}"])
        results.append({"a": f"pit_{variant}", "b": f"timm:pit_{variant}_224", "images_per_s_a": ips_ours,
                        "images_per_s_b": ips_timm, "median_ratio": ratio, "times_a": t_ours, "times_b": t_timm,
                        "max_abs_logit_diff": max_diff})
        del reference

        vit_name = {"ti": "vit_ti", "s": "vit_s", "b": "vit_b"}.get(variant)
        if vit_name is None:
            continue
        vit = create_model(vit_name, img_size=args.img_size).to(device).eval()
        ratio, t_pit, t_vit = interleaved_ratio(ours, vit, x, args.rounds, args.iters)
        macs_pit, macs_vit = count_macs(ours, args.img_size), count_macs(vit, args.img_size)
        rows.append([f"pit_{variant}", vit_name, f"{args.batch_size / statistics.median(t_pit):.1f}",
                     f"{args.batch_size / statistics.median(t_vit):.1f}", f"{ratio:.3f}",
                     f"GMACs {macs_pit / 1e9:.2f} vs {macs_vit / 1e9:.2f}; params {count_params(ours) / 1e6:.1f}M "
                     f"vs {count_params(vit) / 1e6:.1f}M"])
        results.append({"a": f"pit_{variant}", "b": vit_name, "median_ratio": ratio, "times_a": t_pit,
                        "times_b": t_vit, "macs_a": macs_pit, "macs_b": macs_vit})
        del vit, ours

    columns = ["A", "B", "A img/s", "B img/s", "median ratio A/B", "notes"]
    print(f"forward throughput, batch {args.batch_size} at {args.img_size} px on {device} "
          f"({torch.get_num_threads()} threads), median of {args.rounds} interleaved rounds")
    table = format_table(columns, rows)
    if args.out:
        write_results(args.out, {"benchmark": "pit_throughput", "config": vars(args), "results": results,
                                 "target_vs_timm": TARGET, "environment": environment()}, columns, rows)
    print(table)
    print(f"cuekit PiT vs timm PiT: target ratio >= {TARGET}: {'NOT MET' if below_target else 'met'}")
    return 1 if below_target else 0


if __name__ == "__main__":
    sys.exit(main())
