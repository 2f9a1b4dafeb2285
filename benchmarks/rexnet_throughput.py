"""Forward throughput of cuekit's ReXNet against timm's, same weights, same machine, one process.

Timed in inference mode, where ours runs its eval-mode program: each BatchNorm folded into the conv
before it, SiLU / ReLU6 / SE gating in place, channels_last on the CPU (the modules and state-dict
keys are unchanged; training and autograd run the modules). timm runs its modules as they are
(contiguous). Target (issue 21): a median ratio of images/s (ours / timm) >= 1.0, at 1 and 2 threads.
Timings are interleaved (A, B, B, A, ...) and the median of the per-round ratios is reported, so
both models see the same machine load.

    python benchmarks/rexnet_throughput.py [--batch-size 8] [--img-size 224] [--rounds 9] [--models 100] [--threads N]
"""
from __future__ import annotations

import sys

from _timm_parity import against_timm, parse_args, report  # benchmarks/ is on sys.path

from cuekit.models import create_model
from cuekit.models.complexity import count_macs, count_params
from cuekit.models.rexnet import rexnet_key_remap

TARGET = 1.0  # median images/s ratio, ours / timm


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
    return report("rexnet_throughput", "cuekit ReXNet vs timm ReXNet", args, rows, results, below, target=TARGET)


if __name__ == "__main__":
    sys.exit(main())
