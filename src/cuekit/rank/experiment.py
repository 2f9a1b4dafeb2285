"""`cuekit reproduce rexnet`: the feature-rank study and a linear-vs-stage-wise channel comparison.

Two parts, both small enough for 2 CPU cores in quick mode:
1. The rank study (`cuekit.rank.study`) over its declared grid; the figure is the paper's Fig. 1
   for the Gaussian, N = 4 d_out, depth-1 setting, and every cell's checks go into the results.
2. The paper's channel-configuration claim: a ReXNet-style network (block widths growing linearly
   with the block index) against the same blocks with MobileNetV2-style stage-wise widths, scaled
   to the same parameter count, trained on built-in Color-dSprites. The verdict is on this part:
   effect = val accuracy (linear) - val accuracy (stage-wise), one number per seed.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from cuekit.io import save_figure
from cuekit.parallel import torch_threads
from cuekit.rank.study import RankStudyConfig, run_rank_study

# Declared before running (see docs/rexnet.md): the grid of the rank study in each mode.
QUICK_RANK = dict(networks=8, networks_per_width=4, d_out_range=(16, 48), ratios=(0.1, 0.25, 0.5, 0.75, 1.0),
                  inputs=("gaussian", "uniform", "smooth"), sample_factors=(1.25, 4.0), depths=(1, 3))
FULL_RANK = dict(networks=1000, networks_per_width=25, d_out_range=(32, 128),
                 ratios=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
                 inputs=("gaussian", "uniform", "smooth"), sample_factors=(1.25, 4.0), depths=(1, 3))
MAIN_SETTING = dict(input="gaussian", sample_factor=4.0, depth=1)

# Training comparison settings per mode. "scale" is the dSprites task these small nets learn within a few
# epochs at 32 px ("shape" stays near chance at the quick budget).
QUICK_TRAIN = dict(task="scale", train_size=2048, val_size=512, epochs=3, batch_size=64, depth_mult=0.5,
                   width_mult=0.25, pen_channels=256, stem_channels=16, opt="adamw", lr=3e-3, weight_decay=1e-5)
FULL_TRAIN = dict(task="scale", train_size=20000, val_size=2000, epochs=15, batch_size=128, depth_mult=1.0,
                  width_mult=0.5, pen_channels=640, stem_channels=32, opt="adamw", lr=2e-3, weight_decay=1e-5)


def channel_pair(depth_mult: float, width_mult: float, pen_channels: int, stem_channels: int,
                 num_classes: int) -> tuple[dict, dict]:
    """ReXNet-style (linear widths) and MobileNetV2-style (stage-wise widths) configs with equal parameter counts."""
    import math

    from cuekit.models.rexnet import STAGE_LAYERS, config_params, rexnet_config, stagewise_scale_to_params

    linear = dict(rexnet_config(width_mult, depth_mult=depth_mult), pen_channels=pen_channels,
                  stem_channels=stem_channels, stem_stride=2)
    target = config_params(linear, num_classes)
    layers = [math.ceil(n * depth_mult) for n in STAGE_LAYERS]
    stagewise = stagewise_scale_to_params(target, stem_channels, pen_channels, num_classes=num_classes, layers=layers)
    stagewise.pop("scale")
    return linear, dict(stagewise, stem_stride=2)


def train_comparison(settings: dict, seeds, img_size: int, device: str = "cpu", workers: int = 0,
                     progress: bool = False) -> dict:
    """Train both channel layouts for each seed; returns per-seed accuracies, histories, params and MACs."""
    from cuekit.data import create_dataset, materialise
    from cuekit.models.complexity import count_macs, count_params
    from cuekit.models.rexnet import ReXNet
    from cuekit.train import TrainConfig, train

    s = settings
    data = materialise(create_dataset("dsprites", task=s["task"], img_size=img_size, train_size=s["train_size"],
                                       val_size=s["val_size"], seed=0))
    linear, stagewise = channel_pair(s["depth_mult"], s["width_mult"], s["pen_channels"], s["stem_channels"],
                                     data.num_classes)
    configs = {"linear": linear, "stagewise": stagewise}
    out = {"seeds": list(seeds), "acc": {k: [] for k in configs}, "history": {k: [] for k in configs},
           "channels": {k: v["block_channels"] for k, v in configs.items()}}
    for name, cfg in configs.items():
        m = ReXNet(**cfg, num_classes=data.num_classes)
        out.setdefault("params", {})[name] = count_params(m)
        out.setdefault("macs", {})[name] = count_macs(m, img_size)
    for seed in seeds:
        for name, cfg in configs.items():
            torch.manual_seed(seed)
            model = ReXNet(**cfg, num_classes=data.num_classes)
            tcfg = TrainConfig(model=f"rexnet_{name}", data="dsprites", task=s["task"], epochs=s["epochs"],
                               batch_size=s["batch_size"], lr=s["lr"], opt=s["opt"],
                               weight_decay=s["weight_decay"], momentum=0.9,
                               warmup_epochs=0, seed=seed, out=None, img_size=img_size, workers=workers,
                               device=device, progress=progress)
            res = train(tcfg, model=model, data=data)
            out["acc"][name].append(float(res.final["val_acc"]))
            out["history"][name].append([float(h["val_acc"]) for h in res.history])
    return out


def _plot_training(comp: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for name, color in (("linear", "tab:red"), ("stagewise", "tab:blue")):
        label = {"linear": "ReXNet-style (linear widths)", "stagewise": "MobileNetV2-style (stage-wise)"}[name]
        for i, hist in enumerate(comp["history"][name]):
            ax.plot(range(1, len(hist) + 1), hist, color=color, alpha=0.7, lw=1.2, label=label if i == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"params {comp['params']['linear']:,} vs {comp['params']['stagewise']:,}; "
                 f"MMACs {comp['macs']['linear'] / 1e6:.2f} vs {comp['macs']['stagewise'] / 1e6:.2f}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def run_experiment(config) -> dict:
    """Run the rank study and the channel-configuration comparison; write PNGs; return the result dict."""
    from cuekit.rank.study import check_ordering, plot_ordering_grid, plot_rank_curves, result_to_json, summary_rows
    from cuekit.report.experiments import make_result, mean_spread, verdict

    out_dir = config.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    quick = config.quick
    seeds = list(config.seeds)
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    # the study's small matrices and the tiny nets run fastest on one thread on a shared CPU
    with torch_threads(1 if device == "cpu" else None):
        rank_cfg = RankStudyConfig(**(QUICK_RANK if quick else FULL_RANK), seed=0, device=device)
        study = run_rank_study(rank_cfg)
        plots = []
        figures = (("fp32", "rank_fp32.png"), ("1e-2", "rank_tol1e-2.png"), ("effective", "rank_effective.png"))
        for measure, fname in figures:
            plot_rank_curves(study, out_dir / fname, measure=measure, **MAIN_SETTING,
                             title=f"{'quick, ' if quick else ''}gaussian input, N = 4 d_out, depth 1, "
                                   f"{rank_cfg.networks} networks per point; {measure}")
            plots.append(fname)
        plot_ordering_grid(study, out_dir / "rank_ordering.png")
        plots.append("rank_ordering.png")
        # Per-seed check of the paper's nonlinearity ordering in the main setting (1x1 conv, tol 1e-2).
        rank_effects = []
        for seed in seeds:
            one = run_rank_study(dataclasses.replace(rank_cfg, seed=seed, inputs=("gaussian",), sample_factors=(4.0,),
                                                     depths=(1,), blocks=("conv1x1",), tolerances=("1e-2",)))
            cur = one.curves(**MAIN_SETTING, block="conv1x1", measure="1e-2")
            rank_effects.append(check_ordering(cur, rank_cfg.ratios).strong_minus_weak)
        rank_seconds = time.perf_counter() - start

        comp = train_comparison(QUICK_TRAIN if quick else FULL_TRAIN, seeds, config.img_size, device=device,
                                workers=config.workers)
    _plot_training(comp, out_dir / "channels_training.png")
    plots.append("channels_training.png")

    effects = [a - b for a, b in zip(comp["acc"]["linear"], comp["acc"]["stagewise"])]
    v = verdict(effects, +1)
    mean_eff, sd_eff = mean_spread(effects)
    rank_v = verdict(rank_effects, +1)

    columns, rows = summary_rows(study)
    n_cells = len(rows)
    appears = [r for r in rows if r[-1] == "yes"]
    where = ("in no cell" if not appears else
             f"in {len(appears)} of {n_cells} cells: "
             + "; ".join(f"{r[0]}/N={r[1]:g}d/depth {r[2]}/{r[3]}/{r[4]}" for r in appears[:8])
             + (f" (+{len(appears) - 8} more)" if len(appears) > 8 else ""))
    expands = sum(1 for r in rows if r[-2] == "yes")
    harms = sum(1 for r in rows if r[-3] == "yes")
    full_single, n_single = _full_rank_single_layers(study)
    lin_acc, sw_acc = mean_spread(comp["acc"]["linear"]), mean_spread(comp["acc"]["stagewise"])
    task = (QUICK_TRAIN if quick else FULL_TRAIN)["task"]
    measured = (
        f"Rank study ({rank_cfg.networks} random networks per point; {n_cells} cells = settings x blocks x "
        f"measures): nonlinearities lift the rank above Linear in {expands} cells, low DR lowers it in {harms}. "
        f"Single conv layers (1x1, 3x3) are full rank at the fp32 tolerance for every nonlinearity and DR in "
        f"{full_single} of {n_single} settings. The paper's ordering (ELU/SiLU/SoftPlus above ReLU/ReLU6) appears "
        f"{where}. Main setting, 1x1 conv, tol 1e-2, ordering margin per seed "
        f"{[round(e, 3) for e in rank_effects]}: {rank_v} (the paper predicts > 0). "
        f"Training ({'quick, ' if quick else ''}{config.img_size} px Color-dSprites '{task}'): "
        f"linear widths {lin_acc[0]:.3f} +- {lin_acc[1]:.3f} vs stage-wise {sw_acc[0]:.3f} +- {sw_acc[1]:.3f} val acc "
        f"at {comp['params']['linear']:,} vs {comp['params']['stagewise']:,} params; the linear net costs "
        f"{comp['macs']['linear'] / 1e6:.2f} vs {comp['macs']['stagewise'] / 1e6:.2f} MMACs (equal parameters, not "
        f"equal MACs); difference {mean_eff:+.3f} +- {sd_eff:.3f}."
    )
    table_rows = [[s, round(a, 4), round(b, 4), round(a - b, 4)]
                  for s, a, b in zip(seeds, comp["acc"]["linear"], comp["acc"]["stagewise"])]
    return make_result(
        area="rexnet",
        title="ReXNet: channel configuration and the feature-rank study",
        claim=("Expanding layers with nonlinearities raises feature rank, ELU/SiLU/SoftPlus more than ReLU/ReLU6 "
               "(random-network study), and block widths that grow linearly with the block index beat "
               "MobileNetV2's stage-wise widths at equal cost."),
        measured=measured,
        verdict=v,
        table={"columns": ["seed", "acc linear widths", "acc stage-wise widths", "difference"], "rows": table_rows},
        plots=plots,
        seeds=seeds,
        details={
            "verdict_basis": "val accuracy of linear minus stage-wise widths, one value per seed",
            "rank_ordering_effects": rank_effects,
            "rank_ordering_verdict": rank_v,
            "rank_study_table": {"columns": columns, "rows": rows},
            "rank_study": result_to_json(study),
            "rank_seconds": rank_seconds,
            "training": comp,
            "training_settings": QUICK_TRAIN if quick else FULL_TRAIN,
            "scale": "quick (smoke scale, 32 px)" if quick else "full",
        },
    )


def _full_rank_single_layers(study) -> tuple[int, int]:
    """(settings where every nonlinear f gives rank >= 0.99 d_out at every DR at fp32 tol, settings): single convs."""
    import itertools

    c = study.config
    if "fp32" not in c.tolerances:
        return 0, 0
    full = total = 0
    for inp, sf, depth, block in itertools.product(c.inputs, c.sample_factors, c.depths, c.blocks):
        if block not in ("conv1x1", "conv3x3"):
            continue
        cur = study.curves(input=inp, sample_factor=sf, depth=depth, block=block, measure="fp32")
        total += 1
        full += all(min(v) >= 0.99 for k, v in cur.items() if k != "linear")
    return full, total
