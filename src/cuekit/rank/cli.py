"""`cuekit rank-study`: the ReXNet paper's feature-rank study of random networks."""
from __future__ import annotations

import argparse

QUICK = dict(networks=8, networks_per_width=4, d_out_range=(16, 48), ratios=(0.1, 0.25, 0.5, 0.75, 1.0))


def _floats(s: str) -> list[float]:
    return [float(v) for v in s.split(",") if v.strip()]


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def _names(s: str) -> list[str]:
    return [v.strip() for v in s.split(",") if v.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the rank-study command (parser only; the study is imported when it runs)."""
    p = sub.add_parser(
        "rank-study", help="rank of random blocks' features vs dimension ratio, per nonlinearity (ReXNet Sec. 3)",
        description="The ReXNet paper's analysis: random blocks (1x1 conv, 3x3 conv, inverted bottleneck with a 3x3 "
        "or depthwise 3x3 conv) map d_in channels to a random d_out; the rank of their output features divided "
        "by d_out is averaged over random networks for each dimension ratio d_in/d_out and nonlinearity. Because "
        "the paper leaves the input distribution, sample count N, rank tolerance and depth unstated, the study "
        "runs a grid of them and reports every cell: the numerical rank (singular values above tol * sigma_max; "
        "'fp32' = max(d_out, N) * 1.19e-7, torch's float32 default) and the effective rank (exp of the entropy of "
        "the normalised singular values), with a check of the paper's observations per cell. Writes "
        "OUT/results.json, OUT/results.txt, a PNG of every cell per measure and a heatmap of the ordering check. "
        "--quick runs in seconds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"small run: {QUICK['networks']} networks per point, d_out in {QUICK['d_out_range']}, "
                        f"ratios {QUICK['ratios']}")
    p.add_argument("--networks", type=int, default=None,
                   help="random networks per (setting, block, ratio) (default 1000, the paper's count; 8 with --quick)")
    p.add_argument("--blocks", type=_names, default="conv1x1,conv3x3,ib_conv3x3,ib_dw3x3",
                   help="block types, comma-separated")
    p.add_argument("--nonlinearities", type=_names,
                   default="linear,relu,relu6,leaky_relu,elu,softplus,hardswish,silu", help="comma-separated")
    p.add_argument("--ratios", type=_floats, default=None,
                   help="dimension ratios d_in/d_out in (0, 1] (default 0.1,0.2,...,1.0)")
    p.add_argument("--inputs", type=_names, default="gaussian,uniform,smooth",
                   help="input distributions: gaussian, uniform (U[0,1]), smooth (spatially blurred Gaussian)")
    p.add_argument("--samples", type=_floats, default="1.25,4", help="N / d_out factors (each > 1)")
    p.add_argument("--depths", type=_ints, default="1,3",
                   help="random blocks in the network; the studied block is the last")
    p.add_argument("--tolerances", type=_names, default="fp32,1e-3,1e-2",
                   help="rank tolerances relative to sigma_max ('fp32' = torch's float32 default)")
    p.add_argument("--d-out", type=int, nargs=2, metavar=("LOW", "HIGH"), default=None,
                   help="range of the random output width (default 32 128; 16 48 with --quick)")
    p.add_argument("--expansion", type=int, default=None,
                   help="inverted-bottleneck hidden width = EXPANSION * d_in (default: d_out)")
    p.add_argument("--spatial", type=int, default=8,
                   help="H = W of the random inputs; each output pixel is one sample. 1: one vector per sample, the "
                        "paper's X in R^{d_in x N} (`cuekit reproduce rexnet` uses 1; a 3x3 conv then acts as a 1x1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    p.add_argument("--out", default="runs/rank-study", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from cuekit.errors import UsageError
    from cuekit.io import write_results
    from cuekit.rank.study import (
        RankStudyConfig,
        plot_ordering_grid,
        plot_rank_grid,
        result_to_json,
        run_rank_study,
        summary_rows,
    )

    def listify(v, parse):
        return parse(v) if isinstance(v, str) else v

    base = RankStudyConfig()
    networks = args.networks if args.networks is not None else (QUICK["networks"] if args.quick else base.networks)
    ratios = args.ratios if args.ratios is not None else (QUICK["ratios"] if args.quick else base.ratios)
    d_range = tuple(args.d_out) if args.d_out is not None else (QUICK["d_out_range"] if args.quick
                                                                   else base.d_out_range)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available")
    cfg = RankStudyConfig(
        blocks=tuple(listify(args.blocks, _names)), nonlinearities=tuple(listify(args.nonlinearities, _names)),
        ratios=tuple(ratios), networks=networks,
        networks_per_width=QUICK["networks_per_width"] if args.quick else base.networks_per_width,
        d_out_range=d_range, inputs=tuple(listify(args.inputs, _names)),
        sample_factors=tuple(listify(args.samples, _floats)), depths=tuple(listify(args.depths, _ints)),
        tolerances=tuple(listify(args.tolerances, _names)), expansion=args.expansion, spatial=args.spatial,
        seed=args.seed,
        device=args.device,
    )
    cfg.validate()
    result = run_rank_study(cfg, progress=not args.no_progress)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plots = []
    # Every measure in a full run; in a quick one the first tolerance and the effective rank (plotting is slow).
    measures = list(cfg.tolerances) + ["effective"]
    if args.quick:
        measures = measures[:1] + (["effective"] if len(measures) > 1 else [])
    for m in measures:
        name = f"rank_grid_{m}.png"
        plot_rank_grid(result, out / name, measure=m)
        plots.append(name)
    plot_ordering_grid(result, out / "ordering.png")
    plots.append("ordering.png")
    columns, rows = summary_rows(result)
    payload = {"command": "rank-study", **result_to_json(result), "plots": plots,
               "table": {"columns": columns, "rows": rows}}
    table = write_results(out, payload, columns, rows)
    print(table)
    n_yes = sum(1 for r in rows if r[-1] == "yes")
    print(f"\nThe paper's ordering (ELU/SiLU above ReLU/ReLU6) appears in {n_yes} of {len(rows)} cells. "
          f"{cfg.networks} networks per point, {result.seconds:.1f} s. Results in {out}/")
    return 0
