"""Forward throughput of cuekit's ReXNet against timm's, same weights, same machine, one process.

Ours adds the shortcut in place (`out[:, :c_in] += x`) where timm concatenates a sum and a slice,
and uses plain nn.SiLU / BatchNorm2d modules; the target is a median ratio >= 0.95 of images/s
(ours / timm). Timings are interleaved (A, B, B, A, ...) and the median of the per-round ratios is
reported, so both models see the same machine load.

    python benchmarks/rexnet_throughput.py [--batch-size 8] [--img-size 224] [--rounds 9] [--models 100]
"""
from __future__ import annotations

import sys

from _timm_parity import TARGET, against_timm, parse_args, report  # benchmarks/ is on sys.path

from cuekit.models import create_model
from cuekit.models.complexity import count_macs, count_params
from cuekit.models.rexnet import rexnet_key_remap


def main(argv: list[str] | None = None) -> int:
    """Time ours vs timm per width; print a table; exit 1 if a ratio is below the target."""
    args, x = parse_args(__doc__, argv, batch_size=8, rounds=9, models="100",
                         models_help="widths, comma-separated: 100,130,150,200,300")
    import timm

    device = x.device
    rows, results = [], []
    below = False
    for width in args.models.split(","):
        name = f"rexnet_{width.strip()}"
        reference = timm.create_model(name).to(device).eval()
        ours = create_model(name).to(device).eval()
        ours.load_state_dict(rexnet_key_remap(reference.state_dict()))
        ratio, row, result = against_timm(ours, reference, x, args, name, name)
        below |= ratio < TARGET
        rows.append(row + [f"{count_params(ours) / 1e6:.2f}M params, {count_macs(ours, args.img_size) / 1e9:.3f} "
                           f"GMACs, max|dlogits| {result['max_abs_logit_diff']:.1e}"])
        results.append(result)
        del reference, ours
    return report("rexnet_throughput", "cuekit ReXNet vs timm ReXNet", args, rows, results, below)


if __name__ == "__main__":
    sys.exit(main())
