"""Forward throughput of cuekit's PiT against timm's PiT, and of PiT against the ViT baselines.

Both PiT implementations run the same kernels (convolutions, Linear, LayerNorm and
scaled_dot_product_attention), so ours should run at timm's speed: the target is a median
ratio >= 0.95. Timings are interleaved (A, B, A, B, ...) on the same machine, in one process,
and the median over rounds of the per-round ratio is reported.

    python benchmarks/pit_throughput.py [--batch-size 16] [--img-size 224] [--rounds 7] [--out DIR]
"""
from __future__ import annotations

import statistics
import sys

from _timm_parity import TARGET, against_timm, parse_args, report  # benchmarks/ is on sys.path

from cuekit.models import create_model
from cuekit.models.complexity import count_macs, count_params, interleaved_ratio
from cuekit.models.pit import pit_key_remap


def main(argv: list[str] | None = None) -> int:
    """Run the comparisons and print a table; exit 1 if ours is slower than the target against timm."""
    args, x = parse_args(__doc__, argv, batch_size=16, rounds=7, models="ti,s",
                         models_help="PiT variants, comma-separated")
    import timm

    device = x.device
    rows, results = [], []
    below_target = False
    for variant in args.models.split(","):
        ours = create_model(f"pit_{variant}", img_size=args.img_size).to(device).eval()
        reference = timm.create_model(f"pit_{variant}_224", img_size=args.img_size).to(device).eval()
        ours.load_state_dict(pit_key_remap(reference.state_dict()))
        ratio, row, result = against_timm(ours, reference, x, args, f"pit_{variant}", f"pit_{variant}_224")
        below_target |= ratio < TARGET
        rows.append(row + [f"max|dlogits| {result['max_abs_logit_diff']:.1e}"])
        results.append(result)
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

    return report("pit_throughput", "cuekit PiT vs timm PiT", args, rows, results, below_target)


if __name__ == "__main__":
    sys.exit(main())
