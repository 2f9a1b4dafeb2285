"""`cuekit reproduce robustness`: regularizers as baselines for robustness and uncertainty (Chun et al. 2019).

The paper (arXiv 2003.03879) trains CIFAR-100 / ImageNet classifiers with cheap regularizers and an
adversarially trained model and measures them on common corruptions, calibration, out-of-distribution
(OOD) detection, FGSM and occlusion. Its classifiers are converged and over-confident; so is the
baseline here, by construction and by check:

- Data: Color-dSprites at 32 px (CIFAR's resolution), the shape task restricted to square vs ellipse
  (all colours, scales, orientations, positions). 400 training images per seed (a seeded sample of a
  fixed pool), 2,000 fixed validation images. The third dSprites shape, the heart, is never trained
  on: 2,000 hearts from the same renderer are the near-OOD set (semantic novelty, not a covariate
  shift); Gaussian and uniform noise are far-OOD extras.
- Model and budget: `SmallConvNet` (width 8, global max pooling), Adam 3e-3, cosine, no weight
  decay, batch 32, 50 epochs. The baseline fits its training set (accuracy 1.0), reaches about 0.88
  validation accuracy and stays there, and is over-confident (mean confidence above accuracy): the
  CIFAR-100 regime (few images per class, training loss near 0). All of this was sized on the
  baseline alone, before any regularizer was run.
- Regularizers: none, label smoothing (0.1), Mixup (alpha 1), CutMix (beta 1), Cutout (half the
  side), FGSM adversarial training (eps 2/255, half of each batch, predicted labels, eval-mode
  attack). Per seed they share the training images, the initial weights and the batch order; only
  the regularizer differs.
- Every (regularizer, metric family) pair is its own claim row: ECE, NLL, corruption error, near-OOD
  AUROC, FGSM accuracy, occlusion accuracy. Rows for which the paper (as far as it could be read)
  states a direction are claims; the others are reference rows. The headline, fixed in advance, is
  Mixup's ECE (see docs/robustness.md for why).
"""
from __future__ import annotations

import functools
import os
import tempfile
import time
from pathlib import Path

import torch

from cuekit.report.experiments import ExperimentConfig, claim, make_result, mean_spread, precondition

__all__ = ["FAMILIES", "PAPER_CLAIMS", "REGULARIZERS", "build_claims", "initial_model", "make_jobs", "run_experiment",
           "summarise", "train_latents"]

REGULARIZERS = ("none", "ls", "mixup", "cutmix", "cutout", "fgsm-at")
CHEAP = ("ls", "mixup", "cutmix", "cutout")
IMG_SIZE = 32            # CIFAR's resolution; the regime below was sized at it
TRAIN_SHAPES = (0, 1)    # dSprites square, ellipse: the classes (labels 0, 1)
OOD_SHAPE = 2            # dSprites heart: the held-out shape, near-OOD
DATA_SEED = 20190615     # the fixed pool of latents (validation, OOD, training pool)
FGSM_EPS = 2 / 255       # the FGSM claim's epsilon, and fgsm-at's training epsilon
EPSILONS = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
OCCLUSION = 0.5          # occluded square's side as a fraction of the image side
LABEL_SMOOTHING = 0.1
BITE = 0.05              # a perturbation must cost the baseline this much accuracy to be a test
MIN_VAL_ACC = 0.80       # the baseline learned the task (chance 0.5)
MIN_TRAIN_ACC = 0.99     # the baseline fits its training set (converged)
AUROC_RANGE = (0.55, 0.99)  # a non-degenerate near-OOD test for the baseline

PLANS = {
    True: dict(train_size=400, train_pool=8000, val_size=2000, ood_size=2000, far_ood_size=500, epochs=50,
               batch_size=32, lr=3e-3, width=8, severities=(3,), corruption_images=500, fgsm_images=1000,
               occlusion_images=1000, curve_images=64),
    False: dict(train_size=400, train_pool=8000, val_size=2000, ood_size=2000, far_ood_size=2000, epochs=50,
                batch_size=32, lr=3e-3, width=8, severities=(1, 2, 3, 4, 5), corruption_images=1000,
                fgsm_images=2000, occlusion_images=2000, curve_images=256),
}

# family -> (metric label, key in the per-run summary, sign of "better", scale of one effect unit, unit)
FAMILIES = {
    "ece": ("ECE (15 bins)", "ece", -1, 100.0, "points"),
    "nll": ("NLL", "nll", -1, 1.0, "nats"),
    "corruption": ("mean corruption error", "corruption_error", -1, 100.0, "points"),
    "ood": ("near-OOD AUROC (held-out heart)", "near_ood_auroc", +1, 100.0, "points"),
    "fgsm": (f"FGSM accuracy at eps {FGSM_EPS * 255:.0f}/255", "fgsm_acc", +1, 100.0, "points"),
    "occlusion": ("occlusion accuracy (centre and boundary, mean fill)", "occlusion_acc", +1, 100.0, "points"),
}

_SECOND_HAND = "davidstutz.de reading notes of the paper, 2nd-hand (specs/adamp_regularization_videomix.md §2)"
# (family, regularizer) -> (the paper's claim, expected sign of the improvement effect, source)
PAPER_CLAIMS = {
    ("ece", "mixup"): ("Mixup improves calibration: lower expected calibration error than no regularization, "
                       "an instance of the abstract's \"certain regularization methods can serve as strong baseline "
                       "methods for robustness and uncertainty estimation\"", +1,
                       "abstract (verified) + the paper's calibration evaluation (2nd-hand)"),
    ("ece", "ls"): ("Label smoothing improves calibration: lower expected calibration error than no "
                    "regularization", +1, "the paper's calibration evaluation (2nd-hand)"),
    ("fgsm", "fgsm-at"): ("The adversarially trained model is more robust to FGSM than the baseline "
                          "(\"AT/ALP help FGSM\")", +1, _SECOND_HAND),
    ("corruption", "fgsm-at"): ("Adversarial training does not buy robustness to common corruptions "
                                "(\"AT/ALP help FGSM but not corruptions\"): its corruption error is not lower",
                                -1, _SECOND_HAND),
    **{("corruption", r): ("Cheap regularizers help on what they target, natural corruptions (\"... and vice "
                           "versa\"): lower corruption error than no regularization", +1, _SECOND_HAND)
       for r in CHEAP},
}
HEADLINE = ("ece", "mixup")
REG_NAMES = {"none": "no regularization", "ls": "label smoothing", "mixup": "Mixup", "cutmix": "CutMix",
             "cutout": "Cutout", "fgsm-at": "FGSM adversarial training"}


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _latent_pool(plan: dict) -> dict[str, torch.Tensor]:
    """Fixed latents (N, 6): validation and training pool (square / ellipse), near-OOD (heart)."""
    from cuekit.data.dsprites import NUM_IMAGES, index_to_latents

    need = 3 * (plan["val_size"] + plan["train_pool"] + plan["ood_size"])
    idx = torch.randperm(NUM_IMAGES, generator=torch.Generator().manual_seed(DATA_SEED))[:need]
    lat = index_to_latents(idx)
    ind = lat[torch.isin(lat[:, 1], torch.tensor(TRAIN_SHAPES))]
    out = lat[lat[:, 1] == OOD_SHAPE]
    val, pool = ind[:plan["val_size"]], ind[plan["val_size"]:plan["val_size"] + plan["train_pool"]]
    return {"val": val, "pool": pool, "ood": out[:plan["ood_size"]]}


def train_latents(pool: torch.Tensor, seed: int, n: int) -> torch.Tensor:
    """The seed's training sample: n rows of the training pool (N, 6) -> (n, 6)."""
    return pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]]


def _build_suite(plan: dict, lat: dict[str, torch.Tensor], progress: bool, device: str = "cpu"):
    """The evaluation sets, built once: clean validation images, corruptions, OOD sets."""
    from cuekit.data.dsprites import render
    from cuekit.robustness.benchmark import RobustnessSuite, SuiteSettings
    from cuekit.robustness.corruptions import COMMON_CORRUPTIONS
    from cuekit.robustness.ood import ood_images

    images = render(lat["val"], IMG_SIZE)
    labels = lat["val"][:, 1].clone()
    n_far = plan["far_ood_size"]
    ood = {"heart (held-out shape)": render(lat["ood"], IMG_SIZE),
           "gaussian noise": ood_images("gaussian", n_far, IMG_SIZE, 3, seed=1),
           "uniform noise": ood_images("uniform", n_far, IMG_SIZE, 3, seed=2)}
    settings = SuiteSettings(corruptions=COMMON_CORRUPTIONS, severities=plan["severities"], preset="cifar", n_bins=15,
                             ood=(), epsilons=EPSILONS, occlusion=(OCCLUSION,), batch_size=1000, seed=0,
                             corruption_images=plan["corruption_images"], fgsm_images=plan["fgsm_images"],
                             occlusion_images=plan["occlusion_images"])
    # Occlusion fill: the data's per-channel mean (the suite's default, from the validation images).
    return RobustnessSuite(images, labels, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), settings, device=device, ood_sets=ood,
                           progress=progress)


def summarise(metrics: dict) -> dict[str, float]:
    """The numbers the claims use, from one `RobustnessSuite.evaluate` result."""
    corr = [a for accs in metrics["corruption"]["acc"].values() for a in accs]
    occl = [a for d in metrics["occlusion"].values() for a in d.values()]
    fgsm = {float(k): v for k, v in metrics["fgsm"].items()}
    ood = metrics["ood"]
    return {
        "acc": metrics["clean"]["acc"], "confidence": metrics["clean"]["confidence"], "ece": metrics["clean"]["ece"],
        "nll": metrics["clean"]["nll"], "brier": metrics["clean"]["brier"],
        "corruption_error": 1 - sum(corr) / len(corr),
        "near_ood_auroc": ood["heart (held-out shape)"]["auroc"],
        "far_ood_auroc": (ood["gaussian noise"]["auroc"] + ood["uniform noise"]["auroc"]) / 2,
        "fgsm_acc": fgsm[min(fgsm, key=lambda e: abs(e - FGSM_EPS))],
        "fgsm_clean_acc": fgsm[min(fgsm)],
        "occlusion_center_acc": sum(metrics["occlusion"]["center"].values()) / len(metrics["occlusion"]["center"]),
        "occlusion_boundary_acc": sum(metrics["occlusion"]["boundary"].values())
        / len(metrics["occlusion"]["boundary"]),
        "occlusion_acc": sum(occl) / len(occl),
        "occlusion_clean_acc": metrics["subset_clean_acc"]["occlusion"],
        "corruption_clean_error": 1 - metrics["subset_clean_acc"]["corruption"],
    }


def initial_model(seed: int, plan: dict) -> torch.nn.Module:
    """The seed's untrained model: the same initial weights for every regularizer of a seed."""
    from cuekit.robustness.benchmark import SmallConvNet

    torch.manual_seed(seed)
    return SmallConvNet(len(TRAIN_SHAPES), 3, plan["width"], pool="max")


def make_jobs(plan: dict, seeds: list[int], regularizers: tuple[str, ...], pool: torch.Tensor, suite_path: str,
              device: str) -> list[tuple]:
    """One job per (seed, regularizer); a seed's jobs share its training latents. fgsm-at runs, the longest,
    come first so that they balance the workers."""
    order = sorted(regularizers, key=lambda r: r != "fgsm-at")
    latents = {s: train_latents(pool, s, plan["train_size"]) for s in seeds}
    return [(s, r, plan, latents[s], suite_path, device) for r in order for s in seeds]


@functools.lru_cache(maxsize=1)
def _load_suite(path: str):
    """The evaluation suite a worker process reads once and keeps for all its jobs."""
    return torch.load(path, weights_only=False)


def _train_one(job: tuple) -> dict:
    """One (seed, regularizer) run in a worker: train on the seed's images, evaluate the suite."""
    from torch.utils.data import TensorDataset

    from cuekit.augment.regularizers import build_batch_transform
    from cuekit.data.dsprites import render
    from cuekit.data.registry import DataBundle
    from cuekit.train import TrainConfig, train

    seed, reg, plan, lat_train, suite_path, device = job
    cpu0 = time.process_time()
    suite = _load_suite(suite_path)
    x, y = render(lat_train, IMG_SIZE), lat_train[:, 1].clone()
    k = plan["curve_images"]
    data = DataBundle(train=TensorDataset(x, y), val=TensorDataset(suite.images[:k], suite.labels[:k]),
                      num_classes=len(TRAIN_SHAPES), class_names=["square", "ellipse"], in_chans=3,
                      img_size=IMG_SIZE, task="shape", name="dsprites")
    model = initial_model(seed, plan)
    names = [] if reg == "none" else [reg]
    transform, smoothing = build_batch_transform(names, len(TRAIN_SHAPES), model, seed=seed,
                                                 label_smoothing=LABEL_SMOOTHING, fgsm_epsilon=FGSM_EPS)
    cfg = TrainConfig(model="small-cnn", data="dsprites", task="shape", epochs=plan["epochs"],
                      batch_size=plan["batch_size"], lr=plan["lr"], opt="adam", weight_decay=0.0, schedule="cosine",
                      label_smoothing=smoothing, amp="off", seed=seed, progress=False, device=device,
                      eval_batch_size=1000)
    res = train(cfg, model=model, data=data, batch_transform=transform)
    model = res.model.eval()
    with torch.no_grad():
        probs = model(x.to(device)).float().softmax(1).cpu()
    metrics = suite.evaluate(model)
    return {"seed": seed, "reg": reg, "summary": summarise(metrics), "metrics": metrics,
            "train_acc": float((probs.argmax(1) == y).float().mean()),
            "train_confidence": float(probs.max(1).values.mean()),
            "curve": [h["val_acc"] for h in res.history], "cpu_s": time.process_time() - cpu0}


def _regime_preconditions(base: list[dict], n_val: int) -> dict[str, list[dict]]:
    """Preconditions from the baseline's runs (one per seed), by the claims they gate."""
    tr = [r["train_acc"] for r in base]
    acc = [r["summary"]["acc"] for r in base]
    over = [r["summary"]["confidence"] - r["summary"]["acc"] for r in base]
    fmt = lambda vals: ", ".join(f"{v:.3f}" for v in vals)  # noqa: E731
    converged = [
        precondition(f"baseline converged: training accuracy >= {MIN_TRAIN_ACC} in every seed",
                     min(tr) >= MIN_TRAIN_ACC, fmt(tr)),
        precondition(f"baseline learned the task: validation accuracy >= {MIN_VAL_ACC} in every seed (chance 0.5)",
                     min(acc) >= MIN_VAL_ACC, fmt(acc)),
    ]
    calib = converged + [
        precondition("baseline over-confident: mean max-softmax confidence > accuracy in every seed", min(over) > 0,
                     "confidence - accuracy: " + fmt(over)),
        precondition("validation set >= 2000 images (15-bin ECE)", n_val >= 2000, str(n_val)),
    ]
    auroc = [r["summary"]["near_ood_auroc"] for r in base]
    ood = converged + [precondition(
        f"near-OOD test non-degenerate: baseline AUROC in [{AUROC_RANGE[0]}, {AUROC_RANGE[1]}] in every seed",
        AUROC_RANGE[0] <= min(auroc) and max(auroc) <= AUROC_RANGE[1], fmt(auroc))]
    drop = lambda key, clean: [r["summary"][clean] - r["summary"][key] for r in base]  # noqa: E731
    fg = drop("fgsm_acc", "fgsm_clean_acc")
    corr = [r["summary"]["corruption_error"] - r["summary"]["corruption_clean_error"] for r in base]
    occ = drop("occlusion_acc", "occlusion_clean_acc")
    return {
        "ece": calib, "nll": calib, "ood": ood,
        "fgsm": converged + [precondition(f"FGSM at eps {FGSM_EPS * 255:.0f}/255 costs the baseline >= {BITE:.2f} "
                                          "accuracy in every seed", min(fg) >= BITE, fmt(fg))],
        "corruption": converged + [precondition(f"the corruptions cost the baseline >= {BITE:.2f} accuracy in every "
                                                "seed", min(corr) >= BITE, fmt(corr))],
        "occlusion": converged + [precondition(f"occlusion costs the baseline >= {BITE:.2f} accuracy in every seed",
                                               min(occ) >= BITE, fmt(occ))],
    }


def build_claims(runs: dict[tuple[int, str], dict], seeds: list[int], regularizers: tuple[str, ...],
                 n_val: int, regime: str) -> list[dict]:
    """One claim row per (metric family, regularizer): effect = improvement over no regularization per seed."""
    pre = _regime_preconditions([runs[(s, "none")] for s in seeds], n_val)
    rows = []
    for family, (label, key, better, scale, unit) in FAMILIES.items():
        for reg in regularizers:
            if reg == "none":
                continue
            effects = [better * (runs[(s, reg)]["summary"][key] - runs[(s, "none")]["summary"][key]) * scale
                       for s in seeds]
            measure = (f"improvement in {label} of {reg} over none, {unit}, per seed "
                       f"({'none minus reg' if better < 0 else 'reg minus none'}); > 0 = {reg} better")
            paper = PAPER_CLAIMS.get((family, reg))
            if paper is not None:
                text, sign, source = paper
                rows.append(claim(id=f"{family}_{reg}", claim=f"{text} [{source}]", measure=measure, effects=effects,
                                  expected_sign=sign, headline=(family, reg) == HEADLINE,
                                  preconditions=pre[family], regime=regime))
            else:
                rows.append(claim(
                    id=f"{family}_{reg}", measure=measure, effects=effects, expected_sign=+1, reference=True,
                    preconditions=pre[family], regime=regime,
                    claim=f"Reference, not a stated claim of the paper: does {REG_NAMES[reg]} improve {label} over "
                          "no regularization (is it a 'strong baseline' on this family)?",
                    note=_reference_note(family, reg)))
    return rows


def _reference_note(family: str, reg: str) -> str:
    if family == "fgsm" and reg in CHEAP:
        return ("2nd-hand notes: cheap regularizers mostly do not help against FGSM; 'inconclusive' or 'did not "
                "hold' here agrees with that.")
    if family == "occlusion" and reg in ("cutmix", "cutout"):
        return "The same group's CutMix paper (ICCV 2019) reports better occlusion robustness for CutMix and Cutout."
    if family == "nll":
        return "NLL is reported as its own row, never folded into the ECE claim."
    return ""


def _table(runs: dict, seeds: list[int], regularizers: tuple[str, ...]) -> dict:
    cols = ["regularizer", "train acc", "val acc", "confidence", "ECE", "NLL", "corruption err", "near-OOD AUROC",
            "far-OOD AUROC", f"FGSM acc ({FGSM_EPS * 255:.0f}/255)", "occl. centre", "occl. boundary"]
    rows = []
    for reg in regularizers:
        def ms(fn):
            m, s = mean_spread([fn(runs[(sd, reg)]) for sd in seeds])
            return f"{m:.3f} ± {s:.3f}"
        sm = lambda key: ms(lambda r: r["summary"][key])  # noqa: E731
        rows.append([reg, ms(lambda r: r["train_acc"]), sm("acc"), sm("confidence"), sm("ece"), sm("nll"),
                     sm("corruption_error"), sm("near_ood_auroc"), sm("far_ood_auroc"), sm("fgsm_acc"),
                     sm("occlusion_center_acc"), sm("occlusion_boundary_acc")])
    return {"columns": cols, "rows": rows}


def _plot_effects(claims: list[dict], regularizers: tuple[str, ...], path: Path) -> str:
    """One panel per metric family: each regularizer's per-seed effects and their mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cuekit.io import save_figure

    regs = [r for r in regularizers if r != "none"]
    by_id = {c["id"]: c for c in claims}
    fig, axes = plt.subplots(1, len(FAMILIES), figsize=(2.6 * len(FAMILIES), 3.2), sharey=False)
    colours = {"held": "#2a9d3a", "did not hold": "#c0392b", "inconclusive": "#888888"}
    for ax, (family, (label, _, _, _, unit)) in zip(axes, FAMILIES.items()):
        for i, reg in enumerate(regs):
            c = by_id[f"{family}_{reg}"]
            eff = c["effects"]
            ax.scatter([i] * len(eff), eff, s=12, color=colours[c["verdict"]], zorder=3)
            ax.bar(i, sum(eff) / len(eff), color=colours[c["verdict"]], alpha=0.35 if c["reference"] else 0.8,
                   edgecolor="black", lw=0.5)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(regs)))
        ax.set_xticklabels(regs, rotation=60, fontsize=7)
        ax.set_title(f"{family} ({unit})", fontsize=8)
    axes[0].set_ylabel("improvement over none (per seed)")
    fig.suptitle("Effect of each regularizer per metric family (bars: mean; faint: reference rows)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    return path.name


def run_experiment(config: ExperimentConfig) -> dict:
    """Train every regularizer for every seed (2 worker processes), evaluate, judge each claim row."""
    from cuekit.parallel import available_cpus, run_jobs, torch_threads
    from cuekit.robustness.benchmark import write_plots

    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = PLANS[bool(config.quick)]
    seeds = list(config.seeds)
    regularizers = tuple(REGULARIZERS)
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    with torch_threads(1 if device == "cpu" else None), tempfile.TemporaryDirectory() as tmp:
        lat = _latent_pool(plan)
        suite = _build_suite(plan, lat, progress=False, device=device)
        suite_path = Path(tmp) / "suite.pt"
        torch.save(suite, suite_path)
        t_data = time.perf_counter() - t0
        jobs = make_jobs(plan, seeds, regularizers, lat["pool"], str(suite_path), device)
        workers = min(2, available_cpus(), len(jobs)) if device == "cpu" else 1
        results = run_jobs(_train_one, jobs, workers=workers, desc="robustness runs", progress=config.progress,
                           threads=1)
    runs = {(r["seed"], r["reg"]): r for r in results}
    n_val = len(suite.labels)
    base = [runs[(s, "none")] for s in seeds]
    regime = (f"Converged, over-confident baseline (checked per seed): SmallConvNet width {plan['width']} with "
              f"global max pooling, {plan['train_size']} Color-dSprites images (square vs ellipse, {IMG_SIZE} px), "
              f"Adam {plan['lr']:g}, cosine, {plan['epochs']} epochs, batch {plan['batch_size']}; baseline training "
              f"accuracy {min(r['train_acc'] for r in base):.3f}+, validation accuracy "
              f"{mean_spread([r['summary']['acc'] for r in base])[0]:.3f}, mean confidence "
              f"{mean_spread([r['summary']['confidence'] for r in base])[0]:.3f}, on {n_val} validation images.")
    claims = build_claims(runs, seeds, regularizers, n_val, regime)
    plots = write_plots({r: runs[(seeds[0], r)]["metrics"] for r in regularizers}, out, prefix="robustness",
                        title_suffix=f" (seed {seeds[0]})")
    plots.append(_plot_effects(claims, regularizers, out / "robustness_effects.png"))
    elapsed, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    head = next(c for c in claims if c["headline"])
    m, s = mean_spread(head["effects"])
    held = [c["id"] for c in claims if not c["reference"] and c["verdict"] == "held"]
    not_held = [c["id"] for c in claims if not c["reference"] and c["verdict"] == "did not hold"]
    failed = sorted({p for c in claims for p in c["failed_preconditions"]})
    measured = (f"Headline (Mixup lowers ECE): ECE(none) - ECE(mixup) = {m:+.2f} ± {s:.2f} points over {len(seeds)} "
                f"seeds -> {head['verdict']}. Paper claims held: {', '.join(held) or 'none'}; did not hold: "
                f"{', '.join(not_held) or 'none'}. "
                + (f"Failed preconditions: {'; '.join(failed)}. " if failed else "All preconditions met. ")
                + f"{'Quick' if config.quick else 'Full'} mode: corruption severities {list(plan['severities'])} "
                f"(CIFAR-C parameters) on {plan['corruption_images']} images, FGSM on {plan['fgsm_images']}, "
                f"occlusion on {plan['occlusion_images']}; ECE, NLL and OOD on all {n_val}.")
    details = {
        "per_seed": {f"{s}/{r}": {**runs[(s, r)]["summary"], "train_acc": runs[(s, r)]["train_acc"],
                                  "train_confidence": runs[(s, r)]["train_confidence"],
                                  "val_curve_first_images": runs[(s, r)]["curve"], "cpu_s": runs[(s, r)]["cpu_s"]}
                     for s in seeds for r in regularizers},
        "fgsm_curves": {f"{s}/{r}": runs[(s, r)]["metrics"]["fgsm"] for s in seeds for r in regularizers},
        "ood_all": {f"{s}/{r}": {k: v["auroc"] for k, v in runs[(s, r)]["metrics"]["ood"].items()}
                    for s in seeds for r in regularizers},
        "plan": {**plan, "img_size": IMG_SIZE, "fgsm_eps": FGSM_EPS, "occlusion": OCCLUSION,
                 "label_smoothing": LABEL_SMOOTHING, "quick": bool(config.quick)},
        "occlusion_fill": [round(float(v), 4) for v in suite.occlusion_fill],
        "time_s": elapsed, "cpu_s": cpu, "data_time_s": t_data, "workers": workers,
        "headline": "ECE(none) - ECE(mixup) in points, expected > 0",
    }
    return make_result(
        area="robustness",
        title="Regularization methods as baselines for robustness and uncertainty",
        claim=("Chun et al. (2019): \"certain regularization methods can serve as strong baseline methods for "
               "robustness and uncertainty estimation\" of converged classifiers; regularizers mostly help on what "
               "they target (e.g. adversarial training helps FGSM but not corruptions). Headline, pre-declared: "
               "Mixup lowers the calibration error of an over-confident baseline."),
        measured=measured, table=_table(runs, seeds, regularizers), claims=claims, regime=regime, plots=plots,
        seeds=seeds, details=details)
