"""`cuekit reproduce rexnet`: the ReXNet paper's claims, one row each (Han et al., CVPR 2021, arXiv 2007.00992).

Two parts, both run as independent jobs in 2 worker processes:
1. Random networks, measured as the paper's Sec. 3 does: a random 1x1 conv layer f(BN(W X)), W of
   d_out x d_in, X of d_in x N (N = 4 d_out Gaussian vectors, d_out random), the rank of its output
   divided by d_out, averaged over many random networks per dimension ratio DR = d_in / d_out in
   0.1..1.0 and per nonlinearity (the paper's eight). A seed is one independent draw of the whole set
   of networks. Rows: low DR loses rank; nonlinearities lift the rank above Linear's DR; ELU/SiLU lift
   it more than ReLU/ReLU6.
2. Trained networks (the headline, the paper's title claim): ReXNet's blocks with MobileNetV2's
   stage-wise widths against the same blocks with widths linear in the block index, the linear
   widths' intercept and slope solved so that parameters AND MACs both match the stage-wise net;
   trained the same way on Color-dSprites. Rows: val accuracy (linear minus stage-wise) and the
   nuclear norm of the final features (the paper's trained-network check of the rank).
"""
from __future__ import annotations

import functools
import math
import os
import time
from pathlib import Path

import torch

from cuekit.io import save_figure

# ---- declared before running (docs/rexnet.md); none of it was changed after seeing the method's effects ----

# The rank measure of the claims: singular values above 1e-2 * sigma_max (the paper does not state its tolerance;
# at torch's float32 default a single random layer is full rank for every nonlinearity, so ReLU has no room to be
# exceeded). The fp32 tolerance and the effective rank are reported beside it.
RANK_MEASURE = "1e-2"
SENSITIVITY_MEASURES = ("fp32", "effective")
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# The claims' random networks: one 1x1 conv layer (the paper's f(WX)), Gaussian X, N = 4 d_out one-vector samples.
QUICK_RANK = dict(networks=128, networks_per_width=8, d_out_range=(32, 96))   # 16 random widths per DR
FULL_RANK = dict(networks=1000, networks_per_width=10, d_out_range=(32, 128))  # 100 random widths per DR
# The figure's inverted bottleneck (ReXNet's block: expansion 6, depthwise 3x3), seed 0 only: not a claim row.
QUICK_FIGURE = dict(blocks=("ib_dw3x3",), networks=16, networks_per_width=4, d_out_range=(32, 96))
FULL_FIGURE = dict(blocks=("ib_conv3x3", "ib_dw3x3"), networks=200, networks_per_width=25, d_out_range=(32, 128))
FIGURE_EXPANSION = 6

# The trained pair. The stage-wise net is ReXNet's blocks with MobileNetV2's stage widths (16, 24, 32, 64, 96, 160)
# times `stage_scale`; the linear net's widths are solved to its parameters and MACs. "scale" is the dSprites task
# these small nets learn in a few epochs at 32 px ("shape" stays near chance at this budget).
QUICK_TRAIN = dict(task="scale", train_size=2048, val_size=512, epochs=5, batch_size=64, depth_mult=0.5,
                   stage_scale=0.5, pen_channels=256, stem_channels=16, opt="adamw", lr=3e-3, weight_decay=1e-5)
FULL_TRAIN = dict(task="scale", train_size=12000, val_size=2000, epochs=12, batch_size=128, depth_mult=1.0,
                  stage_scale=0.35, pen_channels=640, stem_channels=32, opt="adamw", lr=2e-3, weight_decay=1e-5)
COST_TOLERANCE = 0.02       # parameters and MACs of the two nets must agree within 2%
LEARNS_MARGIN = 0.10        # both nets above chance + 0.10 val accuracy ...
SATURATED = 0.95            # ... and below 0.95 (room for a difference)
LINEAR_DR_TOLERANCE = 0.02  # Linear's rank ratio must equal DR within this (d_in = round(DR d_out))
ROOM_BELOW_FULL = 0.99      # ReLU/ReLU6 mean rank ratio over DR < 1 must be below this


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def channel_pair(settings: dict, num_classes: int, img_size: int) -> tuple[dict, dict, dict]:
    """(linear config, stage-wise config, match info): equal parameters and MACs by solving the linear widths."""
    from cuekit.models.rexnet import STAGE_LAYERS, config_macs, config_params, linear_match_cost, stagewise_config

    s = settings
    layers = [math.ceil(n * s["depth_mult"]) for n in STAGE_LAYERS]
    stagewise = dict(stagewise_config(s["stage_scale"], s["stem_channels"], s["pen_channels"], layers=layers),
                     stem_stride=2)
    target_p, target_m = config_params(stagewise, num_classes), config_macs(stagewise, img_size, num_classes)
    solved = linear_match_cost(target_p, target_m, img_size, s["stem_channels"], s["pen_channels"],
                               num_classes=num_classes, layers=layers, stem_stride=2)
    info = {k: solved.pop(k) for k in ("intercept", "slope", "params", "macs", "params_error", "macs_error")}
    return solved, stagewise, info


@functools.lru_cache(maxsize=2)
def _data(task: str, img_size: int, train_size: int, val_size: int, seed: int, spec: str | None = None):
    """One seed's splits: Color-dSprites `task`, or the dataset `spec` of `cuekit reproduce --data`."""
    from cuekit.report.experiments import experiment_data

    return experiment_data(spec, builtin="dsprites", task=task, img_size=img_size, train_size=train_size,
                           val_size=val_size, seed=seed)


def _train_job(seed: int, name: str, cfg: dict, s: dict, img_size: int, device: str, spec: str | None = None
               ) -> dict:
    """Train one net for one seed (on `spec`'s data, None: the built-in); val accuracy per epoch and the spectrum
    of its final features."""
    from cuekit.models.rexnet import ReXNet
    from cuekit.rank.study import effective_rank, numerical_rank, singular_values
    from cuekit.train import TrainConfig, train

    data = _data(s["task"], img_size, s["train_size"], s["val_size"], seed, spec)
    torch.manual_seed(seed)
    model = ReXNet(**cfg, num_classes=data.num_classes)
    tcfg = TrainConfig(model=f"rexnet_{name}", data=spec or "dsprites", task=None if spec else s["task"],
                       epochs=s["epochs"], batch_size=s["batch_size"], lr=s["lr"], opt=s["opt"],
                       weight_decay=s["weight_decay"], warmup_epochs=0, seed=seed, out=None, img_size=img_size,
                       device=device, progress=False)
    res = train(tcfg, model=model, data=data)
    model = res.model.eval()
    x_val = data.val.tensors[0]
    with torch.no_grad():
        feats = torch.cat([model.forward_features(x_val[i:i + 512].to(device)).mean((2, 3)).cpu()
                           for i in range(0, len(x_val), 512)])  # (N_val, pen) pooled final features
    sv = singular_values(feats.T.contiguous())  # (pen,)
    return {"history": [float(h["val_acc"]) for h in res.history], "acc": float(res.final["val_acc"]),
            "nuclear_norm": float(sv.sum()), "feature_rank": int(numerical_rank(sv, float(RANK_MEASURE))),
            "feature_effective_rank": float(effective_rank(sv)), "num_classes": data.num_classes,
            "split_sizes": [len(data.train), len(data.val)]}


def _rank_job(seed: int, rank: dict, blocks: tuple[str, ...], expansion: int | None, device: str) -> dict:
    """One seed's random networks: {measure: {block: {nonlinearity: mean rank / d_out per DR}}}."""
    from cuekit.rank.study import RankStudyConfig, run_rank_study

    cfg = RankStudyConfig(blocks=blocks, ratios=RATIOS, inputs=("gaussian",), sample_factors=(4.0,), depths=(1,),
                          spatial=1, tolerances=("fp32", RANK_MEASURE), expansion=expansion, seed=seed,
                          device=device, threads=None, **rank)
    study = run_rank_study(cfg)
    out: dict = {}
    for measure in ("fp32", RANK_MEASURE, "effective"):
        out[measure] = {b: study.curves(input="gaussian", sample_factor=4.0, depth=1, block=b, measure=measure)
                        for b in blocks}
    out["seconds"] = study.seconds
    return out


def _job(job: tuple):
    """Worker entry point: ("train", ...) or ("rank", ...)."""
    kind, *args = job
    return _train_job(*args) if kind == "train" else _rank_job(*args)


# ---- effects (one number per seed) ----

def _below(ratios=RATIOS) -> list[int]:
    return [j for j, r in enumerate(ratios) if r < 1.0]


def _avg(values: list[float], idx: list[int]) -> float:
    return sum(values[j] for j in idx) / len(idx)


def expansion_effect(curves: dict[str, list[float]], ratios=RATIOS) -> float:
    """Mean over the nonlinear f of rank ratio at the largest DR minus at the smallest (> 0: low DR loses rank)."""
    lo, hi = ratios.index(min(ratios)), ratios.index(max(ratios))
    nonlinear = [n for n in curves if n != "linear"]
    return sum(curves[n][hi] - curves[n][lo] for n in nonlinear) / len(nonlinear)


def nonlinear_lift_effect(curves: dict[str, list[float]], ratios=RATIOS) -> float:
    """Smallest over the nonlinear f of its mean rank ratio over DR < 1 minus Linear's (> 0: every f lifts it)."""
    idx = _below(ratios)
    lin = _avg(curves["linear"], idx)
    return min(_avg(curves[n], idx) - lin for n in curves if n != "linear")


def ordering_effect(curves: dict[str, list[float]], ratios=RATIOS) -> float:
    """Mean rank ratio over DR < 1 of ELU/SiLU minus ReLU/ReLU6 (> 0: the paper's ordering)."""
    from cuekit.rank.study import STRONG_EXPANDERS, WEAK_EXPANDERS

    idx = _below(ratios)
    strong = sum(_avg(curves[n], idx) for n in STRONG_EXPANDERS) / len(STRONG_EXPANDERS)
    weak = sum(_avg(curves[n], idx) for n in WEAK_EXPANDERS) / len(WEAK_EXPANDERS)
    return strong - weak


def _mean_curves(per_seed: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    return {n: [sum(c[n][j] for c in per_seed) / len(per_seed) for j in range(len(per_seed[0][n]))]
            for n in per_seed[0]}


# ---- plots ----

def _plot_rank(panels: list[tuple[str, dict[str, list[float]], str]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.5 * len(panels), 3.4), squeeze=False)
    for ax, (name, curves, ylabel) in zip(axes[0], panels):
        for nl, vals in curves.items():
            ax.plot(RATIOS, vals, marker="o", ms=2.5, lw=1.2, ls="--" if nl == "linear" else "-", label=nl)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("dimension ratio d_in / d_out")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _plot_training(runs: dict, configs: dict, cost: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    colors = {"linear": "tab:red", "stagewise": "tab:blue"}
    labels = {"linear": "linear widths (ReXNet)", "stagewise": "stage-wise widths (MobileNetV2)"}
    fig, (ax_w, ax_c) = plt.subplots(1, 2, figsize=(9.2, 3.5))
    for name in ("linear", "stagewise"):
        widths = configs[name]["block_channels"]
        ax_w.plot(range(len(widths)), widths, marker="o", ms=3, color=colors[name], label=labels[name])
        for i, hist in enumerate(runs[name]):
            ax_c.plot(range(1, len(hist) + 1), hist, color=colors[name], alpha=0.7, lw=1.2,
                      label=labels[name] if i == 0 else None)
    ax_w.set(xlabel="block index", ylabel="output channels", title=(
        f"params {cost['params']['linear']:,} vs {cost['params']['stagewise']:,}; MMACs "
        f"{cost['macs']['linear'] / 1e6:.2f} vs {cost['macs']['stagewise'] / 1e6:.2f}"))
    ax_w.title.set_fontsize(8)
    ax_c.set(xlabel="epoch", ylabel="val accuracy", title="every seed")
    ax_c.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_w, ax_c):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


# ---- the experiment ----

def run_experiment(config) -> dict:
    """Random-network rank rows and the trained linear-vs-stage-wise rows; writes PNGs, returns the result dict."""
    from cuekit.models.complexity import count_macs, count_params
    from cuekit.models.rexnet import ReXNet
    from cuekit.parallel import available_cpus, run_jobs, torch_threads
    from cuekit.report.experiments import claim, make_result, mean_spread, precondition

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    quick = config.quick
    seeds = list(config.seeds)
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    s = QUICK_TRAIN if quick else FULL_TRAIN
    rank = QUICK_RANK if quick else FULL_RANK
    figure = dict(QUICK_FIGURE if quick else FULL_FIGURE)
    img_size = config.img_size
    start, cpu_start = time.perf_counter(), _cpu_seconds()

    num_classes = _data(s["task"], 16, 8, 8, 0, config.data).num_classes  # the class count (a tiny draw)
    linear_cfg, stagewise_cfg, match = channel_pair(s, num_classes, img_size)
    configs = {"linear": linear_cfg, "stagewise": stagewise_cfg}

    cpu = device == "cpu"
    # Training runs first (the long jobs), then the random-network draws: 2 workers stay busy to the end.
    jobs = [("train", seed, name, configs[name], s, img_size, device) + ((config.data,) if config.data else ())
            for seed in seeds for name in configs]
    jobs += [("rank", seed, rank, ("conv1x1",), None, device) for seed in seeds]
    fig_blocks = figure.pop("blocks")
    jobs.append(("rank", seeds[0], figure, fig_blocks, FIGURE_EXPANSION, device))
    workers = min(2, available_cpus(), len(jobs)) if cpu else 1
    with torch_threads(1 if cpu else None):
        results = run_jobs(_job, jobs, workers=workers, desc="rexnet runs", progress=config.progress, threads=1)
        built = {name: ReXNet(**cfg, num_classes=num_classes) for name, cfg in configs.items()}
        cost = {"params": {n: count_params(m) for n, m in built.items()},
                "macs": {n: count_macs(m, img_size) for n, m in built.items()}}
    n_train = 2 * len(seeds)
    train_runs = {(job[1], job[2]): r for job, r in zip(jobs[:n_train], results[:n_train])}
    rank_runs = results[n_train:n_train + len(seeds)]
    n_train_images, n_val_images = results[0]["split_sizes"]  # the first training run's splits
    figure_run = results[-1]

    # ---- random-network rows ----
    curves = {m: [r[m]["conv1x1"] for r in rank_runs] for m in ("fp32", RANK_MEASURE, "effective")}
    main = curves[RANK_MEASURE]
    exp_eff = [expansion_effect(c) for c in main]
    lift_eff = [nonlinear_lift_effect(c) for c in main]
    order_eff = [ordering_effect(c) for c in main]
    order_sens = {m: [ordering_effect(c) for c in curves[m]] for m in SENSITIVITY_MEASURES}
    exp_sens = {m: [expansion_effect(c) for c in curves[m]] for m in SENSITIVITY_MEASURES}
    # DR < 1 only: at DR = 1 W is square, and its smallest singular values fall below any relative tolerance.
    linear_err = max(abs(c["linear"][j] - RATIOS[j]) for c in main for j in _below())
    weak_room = max(_avg(c[n], _below()) for c in main for n in ("relu", "relu6"))
    pre_linear = precondition(f"the measure counts dimensions: Linear's rank ratio equals DR (< 1) within "
                              f"{LINEAR_DR_TOLERANCE}", linear_err <= LINEAR_DR_TOLERANCE,
                              f"max |Linear - DR| = {linear_err:.4f}")
    pre_room = precondition(f"ReLU/ReLU6 lose rank at DR < 1 (mean rank ratio <= {ROOM_BELOW_FULL}, room to be "
                            "exceeded)", weak_room <= ROOM_BELOW_FULL, f"largest ReLU/ReLU6 mean {weak_room:.3f}")
    n_nets = rank["networks"]
    rank_regime = (f"random 1x1 conv f(BN(W X)), X Gaussian with N = 4 d_out samples, d_out "
                   f"uniform in {list(rank['d_out_range'])}, DR {RATIOS[0]}..{RATIOS[-1]}, {n_nets} networks per DR "
                   f"per seed (each seed an independent draw), rank = singular values > {RANK_MEASURE} sigma_max, "
                   f"divided by d_out")
    mean_main = _mean_curves(main)
    sens_note = ("Same effect with the other measures, per seed: "
                 + "; ".join(f"{m}: {[round(e, 4) for e in vals]}" for m, vals in order_sens.items()) + ".")
    rows = [
        claim(id="expansion_limits_rank",
              claim="\"Drastic channel expansion harms the rank\": a layer with a small dimension ratio "
                    "d_in/d_out (a large expansion) has a lower rank ratio (Sec. 3, Fig. 1).",
              measure=f"rank/d_out at DR 1.0 minus at DR 0.1, mean over the 7 nonlinear f, 1x1 conv, tol "
                      f"{RANK_MEASURE}, per seed", effects=exp_eff, expected_sign=+1, preconditions=[pre_linear],
              regime=rank_regime,
              note="Same effect with the fp32 tolerance / effective rank per seed: "
                   + "; ".join(f"{m}: {[round(e, 4) for e in v]}" for m, v in exp_sens.items()) + "."),
        claim(id="nonlinearity_expands_rank",
              claim="\"Nonlinearities expand rank\": all the ranks are expanded above the input channel "
                    "dimension by the nonlinear functions (Sec. 3, Fig. 1 caption).",
              measure=f"smallest over the 7 nonlinear f of [mean rank/d_out over DR < 1 minus Linear's], 1x1 conv, "
                      f"tol {RANK_MEASURE}, per seed", effects=lift_eff, expected_sign=+1,
              preconditions=[pre_linear], regime=rank_regime),
        claim(id="nonlinearity_order",
              claim="ELU/SiLU-type nonlinearities expand the rank more than ReLU/ReLU6 (Sec. 3, Fig. 1; rule: "
                    "\"a complicated nonlinearity such as ELU and SiLU\" after the expand convs).",
              measure=f"mean rank/d_out over DR < 1 of ELU, SiLU minus ReLU, ReLU6, 1x1 conv, tol {RANK_MEASURE}, "
                      "per seed", effects=order_eff, expected_sign=+1, preconditions=[pre_linear, pre_room],
              regime=rank_regime, note=sens_note),
    ]

    # ---- trained rows ----
    acc = {n: [train_runs[(seed, n)]["acc"] for seed in seeds] for n in configs}
    nuc = {n: [train_runs[(seed, n)]["nuclear_norm"] for seed in seeds] for n in configs}
    hist = {n: [train_runs[(seed, n)]["history"] for seed in seeds] for n in configs}
    acc_eff = [a - b for a, b in zip(acc["linear"], acc["stagewise"])]
    nuc_eff = [a / b - 1 for a, b in zip(nuc["linear"], nuc["stagewise"])]
    p_err = cost["params"]["linear"] / cost["params"]["stagewise"] - 1
    m_err = cost["macs"]["linear"] / cost["macs"]["stagewise"] - 1
    chance = 1.0 / num_classes
    mean_acc = {n: mean_spread(v)[0] for n, v in acc.items()}
    pre_cost = [
        precondition(f"equal parameters within {COST_TOLERANCE:.0%}", abs(p_err) <= COST_TOLERANCE,
                     f"{cost['params']['linear']:,} vs {cost['params']['stagewise']:,} ({p_err:+.2%})"),
        precondition(f"equal MACs within {COST_TOLERANCE:.0%}", abs(m_err) <= COST_TOLERANCE,
                     f"{cost['macs']['linear']:,} vs {cost['macs']['stagewise']:,} ({m_err:+.2%})"),
    ]
    pre_learn = [
        precondition(f"both nets learn the task (mean val acc > chance {chance:.3f} + {LEARNS_MARGIN})",
                     min(mean_acc.values()) > chance + LEARNS_MARGIN,
                     f"linear {mean_acc['linear']:.3f}, stage-wise {mean_acc['stagewise']:.3f}"),
        precondition(f"neither net saturates (mean val acc < {SATURATED})", max(mean_acc.values()) < SATURATED,
                     f"linear {mean_acc['linear']:.3f}, stage-wise {mean_acc['stagewise']:.3f}"),
    ]
    pre_feat = precondition("the final features have the same width and the same images",
                            linear_cfg["pen_channels"] == stagewise_cfg["pen_channels"],
                            f"{linear_cfg['pen_channels']} vs {stagewise_cfg['pen_channels']} channels, "
                            f"{n_val_images} val images")
    data = (f"Color-dSprites '{s['task']}'" if config.data is None else
            f"user data {config.data} (its own train/val split, decoded once)")
    train_regime = (f"{'quick, ' if quick else ''}{img_size} px {data} ({num_classes} classes), "
                    f"{n_train_images} train / {n_val_images} val images "
                    f"({'rendered' if config.data is None else 'drawn'} per seed), {s['epochs']} epochs, "
                    f"batch {s['batch_size']}, {s['opt']} lr {s['lr']} cosine; {len(linear_cfg['block_channels'])} "
                    f"ReXNet blocks (SE, SiLU after the expand 1x1, ReLU6 after the dw conv), stem "
                    f"{s['stem_channels']}, penultimate {s['pen_channels']}; only the block widths differ")
    rows += [
        claim(id="linear_vs_stagewise", headline=True,
              claim="Block widths that grow linearly with the block index beat the conventional stage-wise "
                    "(MobileNetV2) configuration at the same parameters and FLOPs (Sec. 4 search, Fig. 2, "
                    "Table 3; the paper's title claim).",
              measure="val accuracy of the linear-width net minus the stage-wise net, same seed and data, per seed",
              effects=acc_eff, expected_sign=+1, preconditions=pre_cost + pre_learn, regime=train_regime),
        claim(id="final_feature_nuclear_norm",
              claim="The design that expands the rank has the higher-rank final features: the paper checks trained "
                    "networks by the nuclear norm of the final feature (Table 2, where it rises with accuracy); "
                    "applied here to linear vs stage-wise widths.",
              measure="nuclear norm of the pooled final features (val images x penultimate channels), linear / "
                      "stage-wise - 1, per seed", effects=nuc_eff, expected_sign=+1,
              preconditions=pre_cost + pre_learn + [pre_feat], regime=train_regime),
    ]

    # ---- figures ----
    plots = []
    panels = [(f"1x1 conv, tol {RANK_MEASURE} (claims)", mean_main, "rank / d_out"),
              ("1x1 conv, tol fp32", _mean_curves(curves["fp32"]), "rank / d_out"),
              ("1x1 conv, effective rank", _mean_curves(curves["effective"]), "effective rank / d_out")]
    for b in fig_blocks:
        panels.append((f"{b} (t = {FIGURE_EXPANSION}), tol {RANK_MEASURE}, seed {seeds[0]}, "
                       f"{figure['networks']} nets", figure_run[RANK_MEASURE][b], "rank / d_out"))
    _plot_rank(panels, out_dir / "rank_curves.png",
               f"{'quick, ' if quick else ''}random networks, mean of {len(seeds)} seeds x {n_nets} networks per point "
               "(1x1 conv)")
    plots.append("rank_curves.png")
    _plot_training(hist, configs, cost, out_dir / "channels_training.png")
    plots.append("channels_training.png")

    # ---- table: the numbers behind the rows, per seed ----
    def row(label: str, values: list[float], digits: int = 4) -> list:
        return [label] + [round(v, digits) for v in values] + [round(mean_spread(values)[0], digits)]

    table_rows = [row("val acc, linear widths", acc["linear"]), row("val acc, stage-wise widths", acc["stagewise"]),
                  row("nuclear norm, linear", nuc["linear"], 1), row("nuclear norm, stage-wise", nuc["stagewise"], 1)]
    idx = _below()
    for nl in main[0]:
        table_rows.append(row(f"rank/d_out at DR 0.1, {nl} (tol {RANK_MEASURE})", [c[nl][0] for c in main], 3))
    for nl in main[0]:
        table_rows.append(row(f"mean rank/d_out over DR < 1, {nl} (tol {RANK_MEASURE})",
                              [_avg(c[nl], idx) for c in main], 3))
    for m, vals in order_sens.items():
        table_rows.append(row(f"ELU/SiLU minus ReLU/ReLU6, {m}", vals))
    table = {"columns": ["quantity"] + [f"seed {x}" for x in seeds] + ["mean"], "rows": table_rows}

    head = next(r for r in rows if r["headline"])
    verdicts = {r["id"]: r["verdict"] for r in rows}
    disagree = [r["id"] for r in rows if not r["headline"] and r["verdict"] != head["verdict"]]
    fmt = lambda v: f"{mean_spread(v)[0]:+.4f} +- {mean_spread(v)[1]:.4f}"  # noqa: E731
    measured = (
        f"Headline = linear_vs_stagewise, the paper's title claim (channel configuration): val acc linear "
        f"{mean_acc['linear']:.3f} vs stage-wise {mean_acc['stagewise']:.3f}, difference {fmt(acc_eff)} -> "
        f"{verdicts['linear_vs_stagewise']}, at {cost['params']['linear']:,} vs {cost['params']['stagewise']:,} "
        f"params ({p_err:+.2%}) and {cost['macs']['linear'] / 1e6:.3f} vs {cost['macs']['stagewise'] / 1e6:.3f} "
        f"MMACs ({m_err:+.2%}). Final-feature nuclear norm linear/stage-wise - 1: {fmt(nuc_eff)} -> "
        f"{verdicts['final_feature_nuclear_norm']}. Random 1x1 layers ({n_nets} networks per DR per seed, tol "
        f"{RANK_MEASURE}): rank lost at low DR {fmt(exp_eff)} -> {verdicts['expansion_limits_rank']}; every "
        f"nonlinearity above Linear by at least {fmt(lift_eff)} -> {verdicts['nonlinearity_expands_rank']}; "
        f"ELU/SiLU minus ReLU/ReLU6 {fmt(order_eff)} -> {verdicts['nonlinearity_order']}. "
        + (f"The area verdict is the headline's only; these rows disagree with it and are separate claims with "
           f"their own verdicts: {', '.join(f'{i} ({verdicts[i]})' for i in disagree)}." if disagree else
           "Every row agrees with the headline.")
    )
    seconds = time.perf_counter() - start
    return make_result(
        area="rexnet",
        title="ReXNet: channel configuration and the feature-rank study",
        claim=("The expansion ratio and the nonlinearity limit a layer's output rank (ELU/SiLU expand it more than "
               "ReLU/ReLU6), and block widths growing linearly with the block index beat MobileNetV2's stage-wise "
               "widths at equal parameters and FLOPs (the headline)."),
        measured=measured, table=table, claims=rows, plots=plots, seeds=seeds,
        regime=(f"{train_regime}. Widths: linear {linear_cfg['block_channels']} (intercept {match['intercept']:.2f}, "
                f"slope {match['slope']:.2f}, solved to the stage-wise net's params and MACs) vs stage-wise "
                f"{stagewise_cfg['block_channels']} (MobileNetV2's stage widths x {s['stage_scale']}). Random "
                f"networks: {rank_regime}."),
        details={
            "rank_measure": RANK_MEASURE, "ratios": list(RATIOS), "rank_settings": rank,
            "rank_curves": {m: v for m, v in curves.items()},
            "ordering_effects_other_measures": order_sens, "expansion_effects_other_measures": exp_sens,
            "figure_curves": {b: figure_run[RANK_MEASURE][b] for b in fig_blocks},
            "training": {"settings": s, "acc": acc, "nuclear_norm": nuc, "history": hist,
                         "feature_rank": {n: [train_runs[(x, n)]["feature_rank"] for x in seeds] for n in configs},
                         "feature_effective_rank": {n: [train_runs[(x, n)]["feature_effective_rank"] for x in seeds]
                                                    for n in configs},
                         "configs": {n: c["block_channels"] for n, c in configs.items()}, "match": match,
                         "params": cost["params"], "macs": cost["macs"]},
            "scale": "quick (smoke scale, 32 px)" if quick else "full", "data": config.data or "dsprites",
            "split_sizes": {"train": n_train_images, "val": n_val_images},
            "seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu_start,
        },
    )
