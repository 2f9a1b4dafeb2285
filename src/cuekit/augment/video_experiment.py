"""`cuekit reproduce videomix`: does VideoMix raise a video classifier's accuracy?

The paper's claim (Yun et al. 2020, arXiv 2012.03457, abstract): VideoMix, pasting a cuboid of one video
into another and mixing the labels by voxel share, "consistently outperforms other augmentation baselines
on Kinetics and the challenging Something-Something-V2 benchmarks", i.e. higher action-recognition accuracy
on the training distribution; its motivation is that video classifiers overfit to object and scene cues.

Here a small 3D CNN is trained on `moving-shapes` (the class is a motion; the training split's scene
predicts the class with `scene_bias`) with no regulariser (baseline), the three VideoMix variants, video
Mixup and frame-wise CutMix: per seed the same data, initialisation, data order and steps, only the batch
transform differs. The claims, one row each (effects in accuracy points, per seed):
- headline: spatial VideoMix minus baseline on a held-out split drawn like training (in-distribution);
- the same two runs on the test split whose scenes are independent of the class;
- the control: the same comparison trained and judged with no scene shortcut at all (`scene_bias = 0`);
- the temporal and spatio-temporal variants against the baseline, and spatial VideoMix against video
  Mixup and frame CutMix (the paper's "other augmentation baselines"); Mixup and frame CutMix against the
  baseline as reference rows.
Preconditions come from the baseline's runs only: its held-out accuracy has stopped rising (the paper's
regime is a converged model), it beats chance, and it leaves room above it.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import torch

from cuekit.report.experiments import ExperimentConfig, claim, make_result, mean_spread, precondition

__all__ = ["CONTROL_METHODS", "METHODS", "run_experiment"]

# method label -> --reg name (None: no regulariser). Spatial VideoMix is the headline and library default.
METHODS = {
    "baseline": None,
    "videomix-s": "videomix-s",
    "videomix-t": "videomix-t",
    "videomix-st": "videomix-st",
    "video mixup": "video-mixup",
    "frame cutmix": "frame-cutmix",
}
CONTROL_METHODS = ("baseline", "videomix-s")  # the scene_bias = 0 control trains only these
NUM_CLASSES = 8
CHANCE = 1 / NUM_CLASSES


def _plan(config: ExperimentConfig) -> dict:
    """Training scale for quick (about 240 CPU seconds) and full mode (about 20 CPU minutes).

    Sized from the baseline alone, before any mixing run was looked at (docs/video.md, "Reproduction"):
    about twice the epochs after which the baseline's held-out accuracy stopped rising (7 quick, 9 full),
    and few enough clips that the baseline overfits (train 100 %, held-out about 96 %) with room above it.
    Both ignore `config.img_size`: 16 px (quick) and 24 px (full) clips keep the motions learnable.
    """
    if config.quick:
        return dict(img_size=16, frames=6, train_size=1000, eval_size=1000, curve_size=500, epochs=15, batch_size=32,
                    lr=3e-3, widths=(8, 16, 32, 64), scene_bias=0.8, plateau_epochs=3, plateau_tol=1.0, headroom=1.0)
    return dict(img_size=24, frames=8, train_size=1500, eval_size=2000, curve_size=1000, epochs=20, batch_size=32,
                lr=3e-3, widths=(8, 16, 32, 64), scene_bias=0.8, plateau_epochs=4, plateau_tol=1.0, headroom=1.0)


def _splits(plan: dict) -> dict[str, tuple[str, float, int]]:
    """Split name -> (moving-shapes split, scene bias, clips). The control trains on `train_control` and is
    judged on `test`, which is drawn like it (no scene bias)."""
    n_train, n_eval, bias = plan["train_size"], plan["eval_size"], plan["scene_bias"]
    return {"train": ("train", bias, n_train), "heldout": ("biased", bias, n_eval), "test": ("test", 0.0, n_eval),
            "train_control": ("train", 0.0, n_train)}


def _render(job: tuple) -> tuple:
    """One split of one seed (a worker's job): (clips (N, 3, T, S, S) float, labels (N,), scenes (N,))."""
    from cuekit.data.moving_shapes import MovingShapesDataset

    seed, split, scene_bias, n, plan = job
    ds = MovingShapesDataset(n, split=split, frames=plan["frames"], img_size=plan["img_size"], scene_bias=scene_bias,
                             seed=seed)
    clips, labels = ds.tensors()
    return clips, labels, torch.as_tensor(ds.scenes)


@torch.no_grad()
def _predictions(model: torch.nn.Module, clips: torch.Tensor, device: str, batch_size: int = 250) -> torch.Tensor:
    """Predicted class (N,) of clips (N, 3, T, S, S), in order."""
    model.eval()
    return torch.cat([model(clips[i:i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(clips), batch_size)])


def _train_one(job: tuple) -> dict:
    """One (seed, method, condition) run in a worker process.

    job: (seed, method, condition, plan, device, data); condition "biased" trains on `train` and follows
    `heldout` per epoch, "control" trains on `train_control` and follows `test`; data maps split names to
    (clips, labels, scenes). -> accuracies, scene agreement, the per-epoch held-out curve, seconds.
    """
    from torch.utils.data import TensorDataset

    from cuekit.data.moving_shapes import TASKS
    from cuekit.data.registry import DataBundle
    from cuekit.models.registry import create_model
    from cuekit.train import TrainConfig, train

    seed, method, condition, plan, device, data = job
    train_split, follow = ("train", "heldout") if condition == "biased" else ("train_control", "test")
    train_clips, train_labels, _ = data[train_split]
    classes = list(TASKS["motion"])
    n_curve = plan["curve_size"]  # the per-epoch curve follows the first clips of the held-out split
    bundle = DataBundle(train=TensorDataset(train_clips, train_labels),
                        val=TensorDataset(data[follow][0][:n_curve], data[follow][1][:n_curve]),
                        num_classes=len(classes), class_names=classes, in_chans=3, img_size=plan["img_size"],
                        task="motion", frames=plan["frames"])
    cfg = TrainConfig(model="video_cnn_small", model_kwargs=dict(widths=tuple(plan["widths"])), data="moving-shapes",
                      epochs=plan["epochs"], batch_size=plan["batch_size"], lr=plan["lr"], opt="adamw",
                      weight_decay=0.05, warmup_epochs=0.3, reg=METHODS[method], seed=seed, out=None,
                      device=device, progress=False, eval_batch_size=250)
    torch.manual_seed(seed)  # the same initial weights for every method of a seed
    model = create_model(cfg.model, num_classes=len(classes), in_chans=3, **cfg.model_kwargs)
    # channels-last 3D: the strided 3D convolutions' backward pass is the bulk of a step; 1.3-1.7x faster on CPU
    model = model.to(memory_format=torch.channels_last_3d)
    start = time.perf_counter()
    result = train(cfg, model=model, data=bundle)
    out = {"curve": [100 * float(h["val_acc"]) for h in result.history], "time_s": time.perf_counter() - start}
    for split in ("heldout", "test") if condition == "biased" else ("test",):
        clips, labels, scenes = data[split]
        pred = _predictions(result.model, clips, device)
        out[f"{split}_acc"] = 100 * float((pred == labels).float().mean())
        out[f"{split}_scene_agreement"] = 100 * float((pred == scenes).float().mean())
    pred = _predictions(result.model, train_clips, device)
    out["train_acc"] = 100 * float((pred == train_labels).float().mean())
    return out


def _plot(out_dir: Path, runs: dict, plan: dict, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cuekit.io import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    epochs = range(1, plan["epochs"] + 1)
    for ax, condition, label in ((axes[0], "biased", f"held-out, scene bias {plan['scene_bias']} (as training)"),
                                 (axes[1], "control", "control: no scene bias (train and held-out)")):
        for i, method in enumerate(METHODS):
            seeds = runs[condition].get(method)
            if not seeds:
                continue
            curve = [statistics.fmean(c) for c in zip(*(r["curve"] for r in seeds))]
            ax.plot(epochs, curve, color=f"C{i}", label=method, linewidth=2.2 if method in CONTROL_METHODS else 1.2)
        ax.axhline(100 * CHANCE, color="gray", linestyle="--", linewidth=1)
        ax.set_ylim(0, 100)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%), mean over seeds")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8, loc="lower right")
    ax = axes[2]
    names = list(METHODS)
    for j, (key, label) in enumerate((("heldout_acc", "in-distribution"), ("test_acc", "scene-independent"))):
        for i, name in enumerate(names):
            values = [r[key] for r in runs["biased"][name]]
            x = i + (j - 0.5) * 0.38
            ax.bar(x, statistics.fmean(values), width=0.36, color=f"C{i}", alpha=0.85 if j == 0 else 0.4,
                   label=label if i == 0 else None)
            ax.scatter([x] * len(values), values, color="k", s=8, zorder=3)
    ax.axhline(100 * CHANCE, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_title("final accuracy: in-distribution (dark), scene-independent (light)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, out_dir / "videomix.png")
    return "videomix.png"


def _baseline_preconditions(runs: list[dict], key: str, plan: dict, split_words: str) -> list[dict]:
    """What a claim judged on `key` needs from the baseline's runs: a converged curve, above chance, headroom."""
    k, tol = plan["plateau_epochs"], plan["plateau_tol"]
    curve = [statistics.fmean(c) for c in zip(*(r["curve"] for r in runs))]  # mean over seeds, per epoch
    if len(curve) >= 2 * k:
        last, before = statistics.fmean(curve[-k:]), statistics.fmean(curve[-2 * k:-k])
        rise, rise_text = last - before, f"{before:.1f} -> {last:.1f} ({last - before:+.1f} points)"
    else:
        rise, rise_text = float("nan"), f"only {len(curve)} epochs"
    acc = statistics.fmean(r[key] for r in runs)
    return [
        precondition(f"the baseline has stopped rising: its held-out accuracy (mean over seeds) over the last {k} "
                     f"epochs exceeds that of the {k} before by less than {tol:g} points", met=rise < tol,
                     measured=rise_text),
        precondition(f"the baseline beats chance on the {split_words} ({100 * CHANCE:.1f} % + 10 points)",
                     met=acc > 100 * CHANCE + 10, measured=f"{acc:.1f} %"),
        precondition(f"the baseline leaves room to improve on the {split_words} (below {100 - plan['headroom']:g} %)",
                     met=acc < 100 - plan["headroom"], measured=f"{acc:.1f} %"),
    ]


def run_experiment(config: ExperimentConfig) -> dict:
    """Train every method per seed on moving-shapes (and the control without scene bias); one row per claim."""
    from cuekit.parallel import available_cpus, run_jobs, torch_threads

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = _plan(config)
    seeds = list(config.seeds)
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = device == "cpu"
    workers = min(available_cpus(), 2) if cpu else 1
    times = os.times()
    cpu_start = times.user + times.system + times.children_user + times.children_system
    start = time.perf_counter()
    # Each split is rendered once, in the workers; the tensors go to the training runs through shared memory.
    splits = _splits(plan)
    render_jobs = [(seed, *splits[name], plan) for seed in seeds for name in splits]
    # One torch thread per run, the independent runs as worker processes (seeded: the same numbers as one
    # after another in one process).
    with torch_threads(1 if cpu else None):
        rendered = run_jobs(_render, render_jobs, workers=workers, desc="videomix data", progress=config.progress,
                            threads=1 if cpu else None)
        data = {seed: {} for seed in seeds}
        for (seed, *_), name, tensors in zip(render_jobs, [n for _ in seeds for n in splits], rendered):
            data[seed][name] = tensors
        jobs = [(seed, method, "biased", plan, device, data[seed]) for seed in seeds for method in METHODS]
        jobs += [(seed, method, "control", plan, device, data[seed]) for seed in seeds for method in CONTROL_METHODS]
        results = run_jobs(_train_one, jobs, workers=workers, desc="videomix runs", progress=config.progress,
                           threads=1 if cpu else None)
    elapsed = time.perf_counter() - start
    times = os.times()
    cpu_time = times.user + times.system + times.children_user + times.children_system - cpu_start
    runs: dict[str, dict[str, list[dict]]] = {"biased": {m: [] for m in METHODS},
                                              "control": {m: [] for m in CONTROL_METHODS}}
    for (_, method, condition, *_), res in zip(jobs, results):
        runs[condition][method].append(res)

    result = _summarise(runs, plan, seeds, config.quick)
    result["plots"] = [_plot(out_dir, runs, plan, result["title"] + (" (quick)" if config.quick else " (full)"))]
    result["details"].update(time_s=elapsed, cpu_s=cpu_time, worker_processes=workers, cpu_count=os.cpu_count())
    return result


def _summarise(runs: dict, plan: dict, seeds: list[int], quick: bool) -> dict:
    """The claims, table and text of the result from the runs of every method, condition and seed."""
    biased, control = runs["biased"], runs["control"]

    def diffs(group: dict, method: str, other: str, key: str) -> list[float]:
        return [a[key] - b[key] for a, b in zip(group[method], group[other])]

    pre_heldout = _baseline_preconditions(biased["baseline"], "heldout_acc", plan, "in-distribution held-out split")
    converged = ("the baseline's held-out accuracy had stopped rising" if pre_heldout[0]["met"]
                 else "the baseline's held-out accuracy was still rising")
    train_acc = statistics.fmean(r["train_acc"] for r in biased["baseline"])
    regime = (f"video_cnn_small (widths {'-'.join(map(str, plan['widths']))}), {plan['train_size']} training clips "
              f"of {plan['frames']} x {plan['img_size']} px, {plan['epochs']} epochs of AdamW (lr {plan['lr']:g}, "
              f"wd 0.05, cosine), batch {plan['batch_size']}; mixing with Beta(1, 1), every batch; {converged}; "
              f"baseline training accuracy {train_acc:.1f} %")
    pre_test = _baseline_preconditions(biased["baseline"], "test_acc", plan, "scene-independent test split")
    pre_control = _baseline_preconditions(control["baseline"], "test_acc", plan, "held-out split of the control")
    words = ("VideoMix \"consistently outperforms other augmentation baselines on Kinetics and the challenging "
             "Something-Something-V2 benchmarks\" (abstract): higher top-1 accuracy than training without it")
    claims = [
        claim(id="videomix_s_in_distribution", headline=True, expected_sign=+1, preconditions=pre_heldout,
              claim=words + "; here the spatial variant (S-VideoMix, the library default).",
              measure="accuracy of spatial VideoMix minus the baseline's, points, on a held-out split drawn like "
                      "training (scene bias as in training), per seed",
              effects=diffs(biased, "videomix-s", "baseline", "heldout_acc"),
              regime=f"in-distribution (scene bias {plan['scene_bias']}); " + regime),
        claim(id="videomix_s_scene_independent", expected_sign=+1, preconditions=pre_test,
              claim="\"VideoMix lets a model learn beyond the object and scene biases and extract more robust cues "
                    "for action recognition\" (abstract)",
              measure="accuracy of spatial VideoMix minus the baseline's, points, on the test split whose scene is "
                      "independent of the class (same runs as the headline), per seed",
              effects=diffs(biased, "videomix-s", "baseline", "test_acc"),
              regime="trained with scene bias, judged with none; " + regime),
        claim(id="videomix_s_no_scene_bias", expected_sign=+1, preconditions=pre_control,
              claim=words + " — a generic accuracy claim, so it should hold without any scene shortcut too.",
              measure="accuracy of spatial VideoMix minus the baseline's, points, both trained and judged with "
                      "scene_bias = 0 (the control: same clips, scenes redrawn independently of the class)",
              effects=diffs(control, "videomix-s", "baseline", "test_acc"),
              regime="control without scene bias; " + regime),
    ]
    for method, cid, name in (("videomix-t", "videomix_t_in_distribution", "temporal"),
                              ("videomix-st", "videomix_st_in_distribution", "spatio-temporal")):
        claims.append(claim(
            id=cid, expected_sign=+1, preconditions=pre_heldout,
            claim=f"{words}; here the {name} variant (the paper proposes three cuboid shapes).",
            measure=f"accuracy of {name} VideoMix minus the baseline's, points, in-distribution held-out split",
            effects=diffs(biased, method, "baseline", "heldout_acc"), regime="in-distribution; " + regime))
    for other, cid in (("video mixup", "videomix_s_vs_video_mixup"), ("frame cutmix", "videomix_s_vs_frame_cutmix")):
        claims.append(claim(
            id=cid, expected_sign=+1, preconditions=pre_heldout,
            claim=f"VideoMix \"consistently outperforms other augmentation baselines\" (abstract): here {other}",
            measure=f"accuracy of spatial VideoMix minus {other}'s, points, in-distribution held-out split",
            effects=diffs(biased, "videomix-s", other, "heldout_acc"), regime="in-distribution; " + regime))
    for other, cid in (("video mixup", "video_mixup_vs_baseline"), ("frame cutmix", "frame_cutmix_vs_baseline")):
        claims.append(claim(
            id=cid, reference=True, expected_sign=+1, preconditions=pre_heldout,
            claim=f"(reference, not a claim of VideoMix) {other} against no mixing",
            measure=f"accuracy of {other} minus the baseline's, points, in-distribution held-out split",
            effects=diffs(biased, other, "baseline", "heldout_acc"), regime="in-distribution; " + regime))

    def cell(values: list[float]) -> str:
        mean, spread = mean_spread(values)
        return f"{mean:.1f} ± {spread:.1f}"

    rows = []
    for condition, group in (("scene bias", biased), ("no scene bias (control)", control)):
        for method, rs in group.items():
            heldout = "heldout_acc" if condition == "scene bias" else "test_acc"
            rows.append([method, condition, cell([r[heldout] for r in rs]),
                         cell([r["test_acc"] for r in rs]) if condition == "scene bias" else "(same)",
                         f"{statistics.fmean(r['test_scene_agreement'] for r in rs):.1f}",
                         f"{statistics.fmean(r['train_acc'] for r in rs):.1f}",
                         ", ".join(f"{r[heldout]:.1f}" for r in rs)])
    head = claims[0]
    base_heldout = statistics.fmean(r["heldout_acc"] for r in biased["baseline"])
    s_heldout = statistics.fmean(r["heldout_acc"] for r in biased["videomix-s"])
    measured = (f"In-distribution held-out accuracy: baseline {base_heldout:.1f} %, spatial VideoMix "
                f"{s_heldout:.1f} % (per-seed differences {', '.join(f'{e:+.1f}' for e in head['effects'])} points). "
                + " ".join(f"{c['id']}: {statistics.fmean(c['effects']):+.1f} points ({c['verdict']})."
                           for c in claims[1:])
                + f" {plan['train_size']} training clips of {plan['frames']} x {plan['img_size']} px, "
                  f"{plan['epochs']} epochs, {len(seeds)} seeds.")
    return make_result(
        area="videomix",
        title="VideoMix: data augmentation for video classification (Yun et al., 2020)",
        claim=("Pasting a cuboid of one video into another, labels mixed by voxel share (VideoMix), gives higher "
               "action-recognition accuracy than no mixing and than other augmentations; it is motivated by "
               "classifiers' reliance on object and scene cues."),
        measured=measured,
        table={"columns": ["method", "training", "held-out acc % (like training)", "scene-independent test acc %",
                           "test predictions = the scene's class %", "train acc %", "held-out acc per seed"],
               "rows": rows},
        claims=claims,
        regime=("smoke scale (quick); " if quick else "full; ") + regime,
        seeds=seeds,
        details={"plan": {**plan, "widths": list(plan["widths"])}, "runs": runs,
                 "methods": dict(METHODS), "control_methods": list(CONTROL_METHODS),
                 "recipe": "video_cnn_small channels-last 3D, AdamW, weight decay 0.05, cosine with 0.3 warm-up "
                           "epochs, mixing alpha 1 (Beta(1, 1)) in batch mode, no label smoothing"},
    )
