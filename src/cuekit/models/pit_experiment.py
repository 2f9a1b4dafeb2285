"""`cuekit reproduce pit`: does pooling help a vision transformer? The one-change ablation, and PiT vs ViT.

The paper's claims (Heo et al. 2021, abstract and Figs. 2 and 4): reducing the spatial size of the tokens
while widening the channels, as a CNN does, improves a ViT's capability (lower training loss), its
generalization (validation accuracy against training accuracy) and its performance (validation
accuracy), at fewer FLOPs; PiT-Ti beats DeiT-Ti at about half the MACs. Here the one change is tested
directly: `pit_nano` against `pit_nano_nopool`, the same network (stem, layers, widths, parameters)
whose pooling convolutions have stride 1, so its token grid never shrinks; and `pit_nano` against the
tiny DeiT-style `vit_nano` (about twice the MACs, as DeiT-Ti against PiT-Ti). Every model gets the same
data, steps and recipe per seed; one row per claim, each with its preconditions.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
from pathlib import Path
from typing import Sequence

import torch

from cuekit.io import save_figure
from cuekit.report.experiments import ExperimentConfig, claim, make_result, mean_spread, precondition

# The dSprites latent to classify (6 scales). Chosen before any PiT number of this design was seen: the
# control learns it within the quick budget (checked on the control only while sizing); "shape"
# stays at chance at this budget.
TASK = "scale"

# Thresholds of the preconditions, fixed before the run (accuracies are fractions).
LEARN_MARGIN = 0.10      # a model "learns the task": mean validation accuracy > chance + this
SATURATED = 0.95         # the control "is saturated": mean training accuracy >= this
MIN_CONTROL_GAP = 0.02   # the control "overfits": mean train - val accuracy >= this (else no gap to shrink)
FIT_TOLERANCE = 0.02     # a smaller gap counts only where PiT fits the training set at least this well

RECIPE = ("AdamW, weight decay 0.05 (none on position embeddings, class tokens, norms, biases), cosine "
          "schedule with 0.3 warm-up epochs, label smoothing 0.1 (DeiT's recipe without its augmentations)")


def _plan(config: ExperimentConfig) -> dict:
    """Models and training scale for quick (32 px, a minute on 2 cores) and full mode (64 px)."""
    small = config.img_size <= 48
    pit, vit = ("pit_nano", "vit_nano") if small else ("pit_micro", "vit_micro")
    models = {"pit": pit, "nopool": f"{pit}_nopool", "vit": vit}
    # One recipe in both modes: batch 16 at lr 1e-3 (the lr scaled with the batch from 2e-3 at 32, DeiT's rule).
    recipe = dict(batch_size=16, lr=1e-3)
    if config.quick:
        # Sized on the controls alone (pit_nano_nopool, vit_nano): the most steps that fit the budget, at which
        # both leave chance (docs/pit.md). 640 images x 3 epochs = 120 steps.
        return dict(models=models, train_size=640, val_size=400, epochs=3, **recipe)
    return dict(models=models, train_size=4000, val_size=2000, epochs=10, **recipe)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _train_one(job: tuple) -> dict:
    """One seeded training run (a worker process's job): per-epoch training loss, and loss and accuracy on
    the whole training set and the whole validation set at the end (eval mode, no label smoothing)."""
    from torch.utils.data import Subset

    from cuekit.report.experiments import experiment_data
    from cuekit.train import TrainConfig, evaluate, train

    seed, name, plan, img_size, device, *spec = job  # a 6th item: the --data spec (absent or None: built-in)
    spec = spec[0] if spec else None
    data = experiment_data(spec, builtin="dsprites", task=TASK, img_size=img_size, train_size=plan["train_size"],
                           val_size=plan["val_size"], seed=seed)
    # The engine validates after every epoch; the claims need only the end, so it gets a small slice
    # (its numbers are not used) and both full splits are evaluated once below.
    engine_data = dataclasses.replace(data, val=Subset(data.val, range(min(32, len(data.val)))))
    cfg = TrainConfig(model=name, data=spec or "dsprites", task=None if spec else TASK, epochs=plan["epochs"],
                      batch_size=plan["batch_size"],
                      lr=plan["lr"], opt="adamw", weight_decay=0.05, warmup_epochs=0.3, label_smoothing=0.1,
                      seed=seed, out=None, img_size=img_size, device=device, workers=0, progress=False)
    result = train(cfg, data=engine_data)
    on_train = evaluate(result.model, data.train, 256, device)
    on_val = evaluate(result.model, data.val, 256, device)
    return {"train_loss_curve": [float(h["train_loss"]) for h in result.history],
            "train_loss": on_train["loss"], "train_acc": on_train["acc"],
            "val_loss": on_val["loss"], "val_acc": on_val["acc"], "num_classes": data.num_classes,
            "split_sizes": [len(data.train), len(data.val)]}


def build_claims(metrics: dict[str, dict[str, list[float]]], macs: dict[str, float], num_classes: int,
                 regime: str) -> list[dict]:
    """The claims table from per-seed numbers: metrics[role][key] is one value per seed (role pit / nopool /
    vit; key train_loss, train_acc, val_acc), macs[role] the MACs per image."""
    pit, nopool, vit = metrics["pit"], metrics["nopool"], metrics["vit"]
    chance = 1.0 / num_classes
    mean = statistics.fmean

    def learns(role: str) -> dict:
        acc = mean(metrics[role]["val_acc"])
        return precondition(f"{role} learns the task (mean val acc > chance {chance:.3f} + {LEARN_MARGIN})",
                            acc > chance + LEARN_MARGIN, f"{acc:.3f}")

    def macs_not_above(a: str, b: str) -> dict:
        return precondition(f"{a} has no more MACs than {b}", macs[a] <= macs[b],
                            f"{macs[a] / 1e6:.1f}M vs {macs[b] / 1e6:.1f}M")

    control_train_acc = mean(nopool["train_acc"])
    not_saturated = precondition(f"the control (nopool) is not saturated (mean train acc < {SATURATED})",
                                 control_train_acc < SATURATED, f"{control_train_acc:.3f}")
    gaps = {role: [t - v for t, v in zip(metrics[role]["train_acc"], metrics[role]["val_acc"])]
            for role in ("pit", "nopool")}
    control_gap = mean(gaps["nopool"])
    overfits = precondition(f"the control (nopool) overfits (mean train - val acc >= {MIN_CONTROL_GAP})",
                            control_gap >= MIN_CONTROL_GAP, f"{control_gap:+.3f}")
    fit_gap = mean(pit["train_acc"]) - control_train_acc
    fits = precondition(f"pit fits the training set about as well as the control or better (mean train acc "
                        f"difference >= -{FIT_TOLERANCE}; else a smaller gap only means pit fits less)",
                        fit_gap >= -FIT_TOLERANCE, f"{fit_gap:+.3f}")
    ablation = [learns("pit"), learns("nopool"), macs_not_above("pit", "nopool")]
    vit_vs_pit = [learns("pit"), learns("vit"), macs_not_above("pit", "vit"),
                  precondition(f"the control (vit) is not saturated (mean val acc < {SATURATED})",
                               mean(vit["val_acc"]) < SATURATED, f"{mean(vit['val_acc']):.3f}")]
    return [
        claim(id="capability",
              claim='"PiT achieves the improved model capability ... against ViT" (abstract); spatial reduction '
                    "lowers the training loss (Fig. 2(a) for ResNet-50, Fig. 4(a) for ViT vs PiT: model capability)",
              measure="training-set cross-entropy of pit_nopool minus that of pit (nats, eval mode, end of "
                      "training), per seed; > 0: pooling lowers the training loss",
              effects=[b - a for a, b in zip(pit["train_loss"], nopool["train_loss"])], expected_sign=+1,
              headline=True, preconditions=[*ablation, not_saturated], regime=regime,
              note="one-change ablation: the same network with pooling (stride-2 pooling convs) and without "
                   "(stride 1)"),
        claim(id="generalization",
              claim='"PiT achieves the improved ... generalization performance against ViT" (abstract); Fig. 2(b)/4(b) '
                    "plot validation against training accuracy: with pooling, more validation accuracy for the "
                    "training accuracy reached",
              measure="train-val accuracy gap of pit_nopool minus that of pit (accuracy points as fractions, end "
                      "of training), per seed; > 0: pooling narrows the gap",
              effects=[b - a for a, b in zip(gaps["pit"], gaps["nopool"])], expected_sign=+1,
              preconditions=[*ablation, overfits, fits], regime=regime,
              note="generalization read as the train-val gap at the end (the paper's panel compares validation "
                   "accuracy at equal training accuracy); a gap is only comparable where pit fits at least as well"),
        claim(id="performance",
              claim="With pooling, higher validation accuracy (Fig. 2(c)/4(c): model performance)",
              measure="validation accuracy of pit minus pit_nopool, per seed",
              effects=[a - b for a, b in zip(pit["val_acc"], nopool["val_acc"])], expected_sign=+1,
              preconditions=[*ablation, not_saturated], regime=regime),
        claim(id="pit_vs_vit",
              claim="PiT beats ViT (DeiT) at fewer FLOPs: PiT-Ti 73.0% at 0.71 GMACs vs DeiT-Ti 72.2% at 1.3 "
                    "GMACs on ImageNet, DeiT recipe (README table; abstract: PiT outperforms the baseline on "
                    "image classification)",
              measure="validation accuracy of pit minus vit (a DeiT-style ViT with about twice the MACs), per seed",
              effects=[a - b for a, b in zip(pit["val_acc"], vit["val_acc"])], expected_sign=+1,
              preconditions=vit_vs_pit, regime=regime),
    ]


def _throughput(models: dict[str, torch.nn.Module], img_size: int, device: str, rounds: int) -> dict[str, float]:
    """Forward images/s of each model at batch 64, median of interleaved rounds (same machine load)."""
    from cuekit.models.complexity import time_forward

    x = torch.randn(64, 3, img_size, img_size, device=device)
    for m in models.values():
        m.eval()
        time_forward(m, x, 1)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(reversed(list(models)))
        for name in order:
            times[name].append(time_forward(models[name], x, 1))
    return {name: 64 / statistics.median(t) for name, t in times.items()}


def _plot(out_dir: Path, names: dict[str, str], metrics: dict[str, dict[str, list]], macs: dict[str, float],
          title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_gen, ax_macs) = plt.subplots(1, 3, figsize=(15, 4.2))
    colors = {role: f"C{i}" for i, role in enumerate(names)}
    for role, name in names.items():
        curves = metrics[role]["train_loss_curve"]
        epochs = list(range(1, len(curves[0]) + 1))
        for i, curve in enumerate(curves):
            ax_loss.plot(epochs, curve, marker="o", color=colors[role], alpha=0.7, label=name if i == 0 else None)
        ax_loss.set_xticks(epochs)
        ax_gen.scatter(metrics[role]["train_acc"], metrics[role]["val_acc"], color=colors[role], label=name)
        x = macs[role] / 1e6
        ax_macs.scatter([x] * len(metrics[role]["val_acc"]), metrics[role]["val_acc"], color=colors[role], alpha=0.4)
        ax_macs.scatter([x], [statistics.fmean(metrics[role]["val_acc"])], color=colors[role], marker="D", s=60,
                        label=f"{name} (mean)")
    ax_loss.set(xlabel="epoch", ylabel="training loss (running mean over the epoch)",
                title="capability: training loss per seed")
    lo = min(min(m["val_acc"] + m["train_acc"]) for m in metrics.values())
    hi = max(max(m["val_acc"] + m["train_acc"]) for m in metrics.values())
    ax_gen.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="val = train")
    ax_gen.set(xlabel="training accuracy (end)", ylabel="validation accuracy (end)",
               title="generalization: each seed (below the line: a gap)")
    ax_macs.set_xlim(0, max(macs.values()) / 1e6 * 1.15)
    ax_macs.set(xlabel="MACs per image (millions)", ylabel="validation accuracy (end)",
                title="performance vs MACs (each seed, and the mean)")
    for ax in (ax_loss, ax_gen, ax_macs):
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    name = "pit_pooling.png"
    save_figure(fig, out_dir / name, dpi=110)
    return name


def _mean_sd(values: Sequence[float], signed: bool = False) -> str:
    mean, sd = mean_spread(values)
    return f"{mean:+.3f} ± {sd:.3f}" if signed else f"{mean:.3f} ± {sd:.3f}"


def _per_seed(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


def run_experiment(config: ExperimentConfig) -> dict:
    """Train pit, pit without pooling and the ViT per seed on the same data; one row per claim of the paper."""
    from cuekit.models import create_model
    from cuekit.models.complexity import count_macs, count_params
    from cuekit.parallel import available_cpus, run_jobs, torch_threads

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(config)
    names: dict[str, str] = plan["models"]
    img_size = config.img_size
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = device == "cpu"
    # Tiny models gain little from intra-op threads and slow down on a busy machine: on the CPU every run
    # has one thread and the independent (seed, model) runs share the cores as processes. Each run is
    # seeded, so the numbers are those of running them one after another.
    workers = min(available_cpus(), 2, len(names) * len(config.seeds)) if cpu else 1
    # Longest runs first (the pooling-free control costs about 4x pit), so the two workers finish together.
    order = ["nopool", "vit", "pit"]
    jobs = [(seed, names[role], plan, img_size, device) + ((config.data,) if config.data else ())
            for role in order for seed in config.seeds]
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    with torch_threads(1 if cpu else None):
        runs = run_jobs(_train_one, jobs, workers=workers, desc="pit runs", progress=config.progress, threads=1)
        by_job = {(job[0], job[1]): run for job, run in zip(jobs, runs)}
        keys = ("train_loss", "train_acc", "val_loss", "val_acc", "train_loss_curve")
        metrics = {role: {k: [by_job[(s, names[role])][k] for s in config.seeds] for k in keys} for role in names}
        num_classes = runs[0]["num_classes"]
        built = {role: create_model(name, num_classes=num_classes, img_size=img_size).to(device)
                 for role, name in names.items()}
        params = {role: count_params(m) for role, m in built.items()}
        macs = {role: float(count_macs(m, img_size)) for role, m in built.items()}
        speed = _throughput(built, img_size, device, rounds=3 if config.quick else 9)
    elapsed, cpu_time = time.perf_counter() - start, _cpu_seconds() - cpu_start

    n_train, n_val = runs[0]["split_sizes"]
    steps = plan["epochs"] * (n_train // plan["batch_size"])
    data = (f"dSprites {TASK}" if config.data is None else
            f"user data {config.data} (its own train/val split, decoded once)")
    regime = (f"{data} ({num_classes} classes, chance {1 / num_classes:.3f}), {img_size} px, "
              f"{n_train} training images, {plan['epochs']} epochs = {steps} steps of batch "
              f"{plan['batch_size']}, lr {plan['lr']}; tiny models trained from scratch for a short budget (not "
              f"converged; the paper trains 300 epochs on ImageNet); {RECIPE}; metrics on the whole training "
              f"and validation ({n_val}) sets at the end")
    rows = build_claims(metrics, macs, num_classes, regime)
    table_rows = []
    for role, name in names.items():
        m = metrics[role]
        gap = [t - v for t, v in zip(m["train_acc"], m["val_acc"])]
        table_rows.append([
            name, f"{params[role] / 1e6:.3f}M", f"{macs[role] / 1e6:.1f}M", f"{speed[role]:.0f}",
            _mean_sd(m["train_loss"]), _mean_sd(m["train_acc"]), _mean_sd(m["val_acc"]), _mean_sd(gap, signed=True),
            _per_seed(m["val_acc"]),
        ])
    scale = "smoke-scale run (quick, 32 px)" if config.quick else f"full ({img_size} px)"
    plot = _plot(out_dir, names, metrics, macs, f"Pooling in a ViT: {names['pit']} vs {names['nopool']} vs "
                 f"{names['vit']}, {config.data or 'dSprites ' + TASK} ({scale})")
    mean = statistics.fmean
    pit, nopool, vit = (names[r] for r in ("pit", "nopool", "vit"))
    measured = (
        f"Training loss {pit} {mean(metrics['pit']['train_loss']):.3f} vs {nopool} "
        f"{mean(metrics['nopool']['train_loss']):.3f}; training accuracy {mean(metrics['pit']['train_acc']):.1%} vs "
        f"{mean(metrics['nopool']['train_acc']):.1%}; validation accuracy {mean(metrics['pit']['val_acc']):.1%} vs "
        f"{mean(metrics['nopool']['val_acc']):.1%} at {macs['pit'] / macs['nopool']:.2f}x the MACs "
        f"({macs['pit'] / 1e6:.1f}M vs {macs['nopool'] / 1e6:.1f}M). {vit}: validation accuracy "
        f"{mean(metrics['vit']['val_acc']):.1%} at {macs['vit'] / 1e6:.1f}M MACs ({pit} runs "
        f"{speed['pit'] / speed['vit']:.2f}x its forward throughput). Verdicts: "
        + "; ".join(f"{r['id']} {r['verdict']}" for r in rows) + "."
    )
    return make_result(
        area="pit",
        title="PiT: pooling in vision transformers (Heo et al., ICCV 2021)",
        claim=("Spatial reduction with channel widening (pooling) improves a ViT's capability (training loss), "
               "generalization and performance at fewer FLOPs; PiT-Ti beats DeiT-Ti (73.0% vs 72.2% on ImageNet) "
               "at about half the MACs."),
        measured=measured,
        table={"columns": ["model", "params", "MACs / image", "images/s (fwd, batch 64)", "train loss (mean ± sd)",
                           "train acc", "val acc", "train - val acc", "val acc per seed"], "rows": table_rows},
        claims=rows,
        regime=regime,
        plots=[plot],
        seeds=list(config.seeds),
        details={
            "task": TASK if config.data is None else None, "data": config.data or "dsprites",
            "split_sizes": {"train": n_train, "val": n_val},
            "plan": plan, "img_size": img_size, "models": names, "metrics": metrics,
            "params": params, "macs": macs, "images_per_s": speed,
            "thresholds": {"learn_margin": LEARN_MARGIN, "saturated": SATURATED, "min_control_gap": MIN_CONTROL_GAP,
                           "fit_tolerance": FIT_TOLERANCE},
            "threads": 1 if cpu else torch.get_num_threads(), "worker_processes": workers, "time_s": elapsed,
            "cpu_time_s": cpu_time, "recipe": RECIPE,
            "throughput_note": "forward images/s at batch 64, median of interleaved rounds in this process",
        },
    )
