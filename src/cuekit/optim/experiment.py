"""`cuekit reproduce adamp`: the three claims of AdamP / SGDP (Heo et al., ICLR 2021), one row each.

1. Momentum makes the norm of scale-invariant weights grow, more with larger momentum (a sweep of the
   momentum 0 / 0.9 / 0.99 without projection, at one learning rate).
2. That growth shrinks the effective step (the angle a weight turns per step) early in training
   (momentum SGD vs SGDP, AdamW vs AdamP, same learning rate, first quarter of the steps).
3. Projection removes the growth (final norm; nearly true by construction, so never the headline) and
   improves accuracy: SGDP vs SGD (the headline) and AdamP vs AdamW, each optimizer at its own best
   learning rate of the same small sweep, picked on a selection split and reported on a separate test split.

The network is a small BatchNorm CNN whose every conv is bias-free and followed by BN (so its weights are
scale-invariant per output channel), trained on Color-dSprites (sprite scale, 6 classes) with a cosine
schedule to zero. The control of every comparison is the same optimizer with its projection switched off
(`delta=0`): AdamP then is AdamW exactly, SGDP momentum SGD with decoupled weight decay. Every run of a
seed starts from the same initialisation and sees the same data order; only the method differs.
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from cuekit.io import save_figure
from cuekit.report.experiments import ExperimentConfig, claim, make_result, mean_spread, precondition

__all__ = ["FAMILIES", "MOMENTA", "Family", "Run", "Scale", "ScaleInvariantNet", "WeightTracker", "analyse",
           "plan_runs", "run_experiment", "train_run"]

# The dSprites latent to classify: sprite scale, 6 classes.
TASK = "scale"
CHANCE = 1 / 6


@dataclasses.dataclass(frozen=True)
class Family:
    """An optimizer and its projected twin, with the learning-rate sweep both share."""

    name: str                 # "sgd" / "adam"
    baseline: str             # label of the control (projection off)
    projected: str            # label of the method
    opt: str                  # factory name; the control is the same optimizer with delta=0
    lrs: tuple[float, ...]    # the sweep, the same for both optimizers of the family
    reference_lr: float       # where the norm and effective-step claims are measured (the README's lr)
    weight_decay: float


# Fixed before any projected run: each sweep is x3 steps centred on the lr where the *baseline* did best when
# the run was sized (SGD 0.1-0.3 of 0.03-1.0; AdamW 0.03-0.1 of 3e-4-0.1: this small BN net wants far more
# than the README's 1e-3), and its middle is the reference lr of the norm and effective-step claims. SGD's
# weight decay is the paper's ImageNet 1e-4 (SGDP divides it by 1 - momentum, as L2 through momentum does),
# AdamP's the README's 1e-2. Heavy-ball momentum 0.9 (no Nesterov), as in the paper's analysis.
FAMILIES = (
    Family("sgd", "SGD", "SGDP", "sgdp", (0.1, 0.3, 1.0), 0.3, 1e-4),
    Family("adam", "AdamW", "AdamP", "adamp", (1e-2, 3e-2, 1e-1), 3e-2, 1e-2),
)
MOMENTUM = 0.9            # SGD's momentum, AdamW's beta1 (its betas stay (0.9, 0.999))
MOMENTA = (0.0, 0.9, 0.99)  # the momentum sweep of claim 1 (SGD without projection, reference lr)
EARLY_FRACTION = 0.25     # "early": the first quarter of the steps (cosine lr still >= 85% of its peak)
HEADLINE = "acc_sgdp_vs_sgd"

# Thresholds of the preconditions, fixed before any run.
ABOVE_CHANCE = 0.25       # the baseline's test accuracy exceeds chance (1/6) by this much
CEILING = 0.97            # ... and stays at or below this, so a gain is possible
CONVERGED_RISE = 0.02     # the baseline's selection accuracy rose less than this over the last quarter of epochs
MOVED_RAD = 0.1           # momentum-free SGD turned its conv channels by this much (mean, rad) in the early window


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big one run is."""

    train_size: int
    selection_size: int   # held-out split that picks the learning rate
    test_size: int        # held-out split that the accuracy claim is reported on
    batch_size: int
    epochs: int
    width: int


# Quick: 42 runs of 256 steps fit about a minute of two cores. Full (64 px): 42 runs of 1200 steps, about
# 20-25 minutes of two cores.
QUICK = Scale(train_size=4096, selection_size=1024, test_size=4096, batch_size=64, epochs=4, width=12)
FULL = Scale(train_size=12800, selection_size=2048, test_size=8192, batch_size=128, epochs=12, width=16)


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: the seed fixes data, initialisation and data order; the rest is the method."""

    seed: int
    family: str
    projected: bool
    lr: float
    momentum: float = MOMENTUM


class ScaleInvariantNet(nn.Module):
    """Three bias-free stride-2 conv -> BN -> ReLU stages (widths w, 2w, 4w), global average pooling and a
    linear classifier.

    The conv weights are scale-invariant per output channel (`scale_invariant()` lists them). Strided convs
    instead of max-pooling: on one CPU thread max-pooling cost more than the convs.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 8):
        super().__init__()
        chans = [in_chans, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(3):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(chans[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) -> logits (N, num_classes)."""
        return self.fc(self.features(x).mean((2, 3)))

    def scale_invariant(self) -> list[Tensor]:
        """The conv weights, each followed by a BatchNorm."""
        return [m.weight for m in self.features if isinstance(m, nn.Conv2d)]


def _unit_rows(w: Tensor) -> Tensor:
    """(C_out, ...) weight -> (C_out, fan_in) rows of unit length."""
    rows = w.detach().reshape(w.size(0), -1)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _mean_angle(a: list[Tensor], b: list[Tensor]) -> float:
    """Mean over all rows of the angle (rad) between matching unit rows of a and b."""
    cos = torch.cat([(x * y).sum(1) for x, y in zip(a, b)]).clamp(-1.0, 1.0)
    return float(cos.acos().mean())


class WeightTracker:
    """step_callback for `cuekit.train.train`: norm and angular step of scale-invariant weights.

    After each step `norms` gets sqrt(sum ||w||^2) over the tensors and `angles` the mean over all output
    channels of the angle (rad) between the channel's weight before and after the step (the effective step),
    `losses` the step's training loss.
    `turned_early` is the mean angle between each channel's initial weight and its weight after `early_steps`.
    `optimizer` is the last optimizer seen (for its `projection_kinds()` after training).
    """

    def __init__(self, weights: list[Tensor], early_steps: int = 0):
        self.weights = weights
        self.early_steps = early_steps
        self.initial = [_unit_rows(w) for w in weights]
        self.previous = list(self.initial)
        self.initial_norm = self._norm()
        self.norms: list[float] = []
        self.angles: list[float] = []
        self.losses: list[float] = []
        self.turned_early = float("nan")
        self.optimizer: torch.optim.Optimizer | None = None

    def _norm(self) -> float:
        return math.sqrt(sum(float(w.detach().square().sum()) for w in self.weights))

    def __call__(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, loss: float) -> None:
        units = [_unit_rows(w) for w in self.weights]
        self.angles.append(_mean_angle(units, self.previous))
        self.previous = units
        self.norms.append(self._norm())
        self.losses.append(float(loss))
        self.optimizer = optimizer
        if len(self.norms) == self.early_steps:
            self.turned_early = _mean_angle(units, self.initial)


def early_steps(total_steps: int) -> int:
    """Number of steps in the early window (at least one)."""
    return max(1, round(EARLY_FRACTION * total_steps))


def _family(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


def plan_runs(seeds: list[int]) -> list[Run]:
    """Every run of the experiment: both optimizers of each family at every lr of its sweep (momentum 0.9),
    plus momentum SGD without projection at the other momenta of the sweep, at the reference lr."""
    runs = []
    for seed in seeds:
        for fam in FAMILIES:
            runs += [Run(seed, fam.name, projected, lr) for projected in (False, True) for lr in fam.lrs]
        sgd = _family("sgd")
        runs += [Run(seed, "sgd", False, sgd.reference_lr, m) for m in MOMENTA if m != MOMENTUM]
    return runs


_SPLITS: dict[tuple, tuple] = {}  # per process: (seed, scale, img_size) -> (train/selection bundle, test set)


def _splits(seed: int, scale: Scale, img_size: int, data: str | None = None):
    """Train and selection splits (a DataBundle, val = selection) and the test split, rendered once per process.

    data: a dataset spec (`cuekit reproduce --data`) whose own validation split is cut into selection and test
    in the proportion of the scale's sizes; None: the built-in Color-dSprites.
    """
    key = (seed, scale, img_size, data)
    if key not in _SPLITS:
        from torch.utils.data import TensorDataset

        from cuekit.errors import DataError
        from cuekit.report.experiments import experiment_data

        bundle = experiment_data(data, builtin="dsprites", task=TASK, img_size=img_size, train_size=scale.train_size,
                                 val_size=scale.selection_size + scale.test_size, seed=seed)
        x, y = bundle.val.tensors
        if len(x) < 2 or len(bundle.train) < scale.batch_size:
            raise DataError(f"{data}: {len(bundle.train)} training and {len(x)} validation images; adamp needs at "
                            f"least a batch ({scale.batch_size}) to train on and 2 to select and test on")
        n = max(1, min(len(x) - 1, len(x) * scale.selection_size // (scale.selection_size + scale.test_size)))
        _SPLITS.clear()  # one seed at a time is enough; keeps a worker's memory flat
        _SPLITS[key] = (dataclasses.replace(bundle, val=TensorDataset(x[:n], y[:n])), TensorDataset(x[n:], y[n:]))
    return _SPLITS[key]


def train_run(job: tuple[Run, Scale, int, str]) -> dict:
    """Train one run (a worker's job) and measure it.

    Returns norms and angles per step, the initial norm, the early rotation, the selection accuracy per epoch,
    the test accuracy, what the optimizer did to each conv weight at the last step, and where it diverged.
    """
    from cuekit.errors import TrainingDiverged
    from cuekit.train import TrainConfig, train
    from cuekit.train.engine import evaluate

    run, scale, img_size, device, *spec = job  # a 5th item: the --data spec (absent or None: built-in)
    spec = spec[0] if spec else None
    fam = _family(run.family)
    data, test = _splits(run.seed, scale, img_size, spec)
    torch.manual_seed(run.seed)  # the same initialisation for every run of a seed
    model = ScaleInvariantNet(data.num_classes, data.in_chans, scale.width)
    model.to(memory_format=torch.channels_last)  # about 15% faster steps on one CPU thread (measured)
    total = len(data.train) // scale.batch_size * scale.epochs
    tracker = WeightTracker(model.scale_invariant(), early_steps(total))
    cfg = TrainConfig(model="scale_invariant_net", data=spec or "dsprites", task=None if spec else TASK,
                      epochs=scale.epochs, batch_size=scale.batch_size, lr=run.lr, opt=fam.opt,
                      weight_decay=fam.weight_decay,
                      momentum=run.momentum, nesterov=False, schedule="cosine", warmup_epochs=0.0, amp="off",
                      seed=run.seed, progress=False, device=device, eval_batch_size=1024,
                      opt_kwargs={} if run.projected else {"delta": 0.0})
    out = {"run": dataclasses.asdict(run), "diverged_at": None, "selection_acc": [], "test_acc": 0.0,
           "num_classes": data.num_classes, "split_sizes": [len(data.train), len(data.val), len(test)]}
    try:
        res = train(cfg, model=model, data=data, step_callback=tracker)
        out["selection_acc"] = [h["val_acc"] for h in res.history]
        out["test_acc"] = evaluate(res.model, test, 1024, device)["acc"]
    except TrainingDiverged:
        out["diverged_at"] = len(tracker.norms)
    conv = {id(w) for w in model.scale_invariant()}
    kinds = []
    if tracker.optimizer is not None:
        params = [p for g in tracker.optimizer.param_groups for p in g["params"]]
        kinds = [k for p, k in zip(params, tracker.optimizer.projection_kinds()) if id(p) in conv]
    out.update(norms=tracker.norms, angles=tracker.angles, losses=tracker.losses, initial_norm=tracker.initial_norm,
               turned_early=tracker.turned_early, conv_kinds=kinds, steps=total)
    return out


def scale_invariance_error(seed: int, width: int, img_size: int) -> float:
    """Largest change of the (training-mode) logits when every conv weight is doubled, relative to their scale."""
    torch.manual_seed(seed)
    net = ScaleInvariantNet(6, 3, width).train()
    x = torch.rand(32, 3, img_size, img_size)
    with torch.no_grad():
        before = net(x)
        for w in net.scale_invariant():
            w.mul_(2.0)
        after = net(x)
    return float((after - before).abs().max() / before.abs().max().clamp_min(1e-12))


def _log_growth(r: dict, step: int) -> float:
    """log(||w_step|| / ||w_0||), the step counted from 1; NaN where the run stopped before it."""
    return math.log(r["norms"][step - 1] / r["initial_norm"]) if len(r["norms"]) >= step else float("nan")


def _early_angle(r: dict) -> float:
    k = early_steps(r["steps"])
    return statistics.fmean(r["angles"][:k]) if len(r["angles"]) >= k else float("nan")


def _fmt(values: list[float], digits: int = 3) -> str:
    m, sd = mean_spread(values)
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def _best_lr(runs: dict, seed: int, fam: Family, projected: bool) -> float:
    """The lr of the sweep with the best final selection accuracy (a diverged run scores 0; ties: smaller lr)."""
    def score(lr: float) -> float:
        r = runs[Run(seed, fam.name, projected, lr)]
        return r["selection_acc"][-1] if r["diverged_at"] is None and r["selection_acc"] else 0.0

    return max(fam.lrs, key=lambda lr: (score(lr), -lr))


def analyse(runs: dict[Run, dict], seeds: list[int], invariance_error: float) -> dict:
    """The claims rows, the table and the headline numbers from the runs (keyed by Run)."""
    sgd = _family("sgd")
    steps = next(iter(runs.values()))["steps"]
    classes = next(iter(runs.values())).get("num_classes", round(1 / CHANCE))  # chance is 1/classes
    early = early_steps(steps)
    invariant = precondition(
        "every conv weight is scale-invariant (doubling all conv weights leaves the training-mode logits "
        "unchanged, relative change < 1e-4)", invariance_error < 1e-4, f"relative change {invariance_error:.1e}")

    def detected(fam: Family) -> dict:
        kinds = [k for s in seeds for lr in fam.lrs for k in runs[Run(s, fam.name, True, lr)]["conv_kinds"]]
        n_ok = sum(k == "channel" for k in kinds)
        return precondition(f"{fam.projected} projected every conv weight channel-wise at the last step of every run",
                            bool(kinds) and n_ok == len(kinds), f"{n_ok} of {len(kinds)} conv weights")

    def control(fam: Family) -> dict:
        kinds = [k for r, v in runs.items() if r.family == fam.name and not r.projected for k in v["conv_kinds"]]
        n_none = sum(k == "none" for k in kinds)
        return precondition(f"the control ({fam.baseline}: {fam.opt} with delta=0) projected no conv weight",
                            bool(kinds) and n_none == len(kinds), f"{n_none} of {len(kinds)} not projected")

    claims, details = [], {"early_steps": early, "steps": steps}

    # Claim 1: momentum grows the norm, more with larger momentum.
    sweep = {m: [runs[Run(s, "sgd", False, sgd.reference_lr, m)] for s in seeds] for m in MOMENTA}
    growth = {m: [_log_growth(r, early) for r in sweep[m]] for m in MOMENTA}
    steps_up = [[growth[b][i] - growth[a][i] for i in range(len(seeds))] for a, b in zip(MOMENTA, MOMENTA[1:])]
    monotone = [min(d[i] for d in steps_up) for i in range(len(seeds))]
    finite = all(r["diverged_at"] is None for m in MOMENTA for r in sweep[m])
    moved = [r["turned_early"] for r in sweep[0.0]]
    pre1 = [invariant, control(sgd),
            precondition(f"training moves the weights: momentum-free SGD turned its conv channels by > {MOVED_RAD} "
                         "rad (mean) in the early window, every seed", all(t > MOVED_RAD for t in moved),
                         ", ".join(f"{t:.3f}" for t in moved) + " rad"),
            precondition("every run of the momentum sweep finished (no divergence)", finite,
                         "all finished" if finite else "a run diverged")]
    claims.append(claim(
        id="norm_growth_momentum",
        claim=("Momentum induces an excessive growth of the weight norms of scale-invariant weights, and a larger "
               "momentum induces faster norm increases (project page, 2D toy with momentum 0.9 / 0.99; ResNet-18 "
               "on ImageNet, vanilla vs momentum SGD)."),
        measure=(f"g(m) = log(||w|| / ||w_0||) of the conv weights after the early window ({early} steps), "
                 "momentum SGD without projection at lr "
                 f"{sgd.reference_lr}; effect = min(g(0.9) - g(0), g(0.99) - g(0.9)) per seed, > 0 iff the growth "
                 "increases strictly with momentum"),
        effects=monotone, expected_sign=1, preconditions=pre1,
        regime=f"the same lr {sgd.reference_lr} for every momentum (as the paper compares them), early window",
        note="g(0), g(0.9), g(0.99) per seed: " + "; ".join(
            ", ".join(f"{growth[m][i]:.3f}" for m in MOMENTA) for i in range(len(seeds)))))
    details["momentum_sweep_log_growth"] = {str(m): growth[m] for m in MOMENTA}

    # Claims 2 and 3 at the reference lr, claim 4 at each optimizer's own best lr.
    for fam in FAMILIES:
        pair = [(runs[Run(s, fam.name, False, fam.reference_lr)], runs[Run(s, fam.name, True, fam.reference_lr)])
                for s in seeds]
        ok_pair = all(b["diverged_at"] is None and p["diverged_at"] is None for b, p in pair)
        finished = precondition(f"both reference-lr runs ({fam.baseline}, {fam.projected} at lr {fam.reference_lr}) "
                                "finished", ok_pair, "yes" if ok_pair else "a run diverged")
        early_gap = [_log_growth(b, early) - _log_growth(p, early) for b, p in pair]
        angle_gain = [math.log(_early_angle(p) / _early_angle(b)) for b, p in pair]
        power = 2 if fam.name == "sgd" else 1  # an SGD step scales with 1/||w||, an Adam step does not
        predicted = [power * g for g in early_gap]
        claims.append(claim(
            id=f"effective_step_{fam.projected.lower()}",
            claim=("The momentum-induced norm growth shrinks the effective step size of scale-invariant weights "
                   "prematurely, early in training; projection keeps it at a larger value (effective step ∝ "
                   "lr / ||w||^2; project page, ResNet-18 on ImageNet)."),
            measure=(f"log(mean angle per step of {fam.projected} / of {fam.baseline}) over the early window "
                     f"({early} steps); the angle is the mean over conv output channels of the angle the channel's "
                     "weight turns in one step"),
            effects=angle_gain, expected_sign=1,
            preconditions=[invariant, detected(fam), control(fam), finished,
                           precondition(f"{fam.baseline}'s norm grew more than {fam.projected}'s by the end of the "
                                        "early window, every seed (the growth the claim is about exists)",
                                        all(g > 0 for g in early_gap), ", ".join(f"{g:.3f}" for g in early_gap)
                                        + " (log norm ratio)")],
            regime=f"lr {fam.reference_lr}, momentum / beta1 {MOMENTUM}, the first quarter of a cosine schedule",
            note=(f"the norm alone predicts log(angle ratio) = {power} log(||w_base|| / ||w_proj||) at the window's "
                  "end (effective step ∝ lr/||w||^2 for SGD, lr/||w|| for Adam, whose update does not scale with "
                  "the gradient): "
                  + ", ".join(f"{x:.3f}" for x in predicted))))
        final_gap = [math.log(b["norms"][-1] / p["norms"][-1]) if ok_pair else float("nan") for b, p in pair]
        claims.append(claim(
            id=f"norm_lower_{fam.projected.lower()}",
            claim=(f"Projection removes the momentum-induced norm growth: {fam.projected} keeps the norm of the "
                   f"scale-invariant weights lower than {fam.baseline} (project page)."),
            measure=f"log(final ||w|| of {fam.baseline} / final ||w|| of {fam.projected}) of the conv weights",
            effects=final_gap, expected_sign=1, preconditions=[invariant, detected(fam), control(fam), finished],
            regime=f"lr {fam.reference_lr}, momentum / beta1 {MOMENTUM}, end of a cosine schedule",
            note=("nearly true by construction (the projection removes the radial part of every update), "
                  "so this row is a check of the mechanism, never the headline")))

        chosen = {proj: [_best_lr(runs, s, fam, proj) for s in seeds] for proj in (False, True)}
        best = {proj: [runs[Run(s, fam.name, proj, lr)] for s, lr in zip(seeds, chosen[proj])] for proj in chosen}
        base_test = [r["test_acc"] for r in best[False]]
        gain = [100 * (p["test_acc"] - b["test_acc"]) for b, p in zip(best[False], best[True])]
        rises = [r["selection_acc"][-1] - r["selection_acc"][max(0, round(0.75 * len(r["selection_acc"])) - 1)]
                 for r in best[False] if r["selection_acc"]]
        base_mean = statistics.fmean(base_test)
        all_finished = all(r["diverged_at"] is None for r in best[False] + best[True])
        pre4 = [invariant, detected(fam), control(fam),
                precondition(f"the baseline ({fam.baseline}, its best lr) beats chance well: mean test accuracy > "
                             f"1/{classes} + {ABOVE_CHANCE}", base_mean > 1 / classes + ABOVE_CHANCE,
                             f"{base_mean:.3f}"),
                precondition(f"the task is not saturated: the baseline's mean test accuracy <= {CEILING}",
                             base_mean <= CEILING, f"{base_mean:.3f}"),
                precondition(f"the baseline converged: its selection accuracy rose < {CONVERGED_RISE} over the last "
                             "quarter of the epochs (mean over seeds)",
                             bool(rises) and statistics.fmean(rises) < CONVERGED_RISE,
                             f"{statistics.fmean(rises):+.3f}" if rises else "no epochs"),
                precondition("the chosen runs finished (no divergence)", all_finished,
                             "yes" if all_finished else "a chosen run diverged")]
        head = fam.name == "sgd"
        edges = sum(lr in (fam.lrs[0], fam.lrs[-1]) for lrs in chosen.values() for lr in lrs)
        claims.append(claim(
            id=f"acc_{fam.projected.lower()}_vs_{fam.baseline.lower()}",
            claim=(f"{fam.projected} improves accuracy over {fam.baseline} (ImageNet ResNet-18: "
                   + ("SGD 70.28 -> SGDP 70.73; project page: momentum SGD 66.6% vs SGDP 69.0%)" if head else
                      "AdamW 70.41 -> AdamP 70.81)")),
            measure=(f"test accuracy of {fam.projected} minus {fam.baseline}, points, each at its own best lr of the "
                     f"sweep {list(fam.lrs)} (picked per seed on the selection split, reported on the test split)"),
            effects=gain, expected_sign=1, headline=head, preconditions=pre4,
            regime=(f"cosine schedule to zero, {steps} steps; momentum / beta1 {MOMENTUM}, weight decay "
                    f"{fam.weight_decay}"),
            note=(f"chosen lr per seed: {fam.baseline} {chosen[False]}, {fam.projected} {chosen[True]}"
                  + (f" (at an end of the sweep in {edges} of {2 * len(seeds)} choices: the best lr may lie "
                     "outside it)" if edges else "") + f"; {fam.baseline} test accuracy {_fmt(base_test)}")))
        details[fam.name] = {"chosen_lr": {fam.baseline: chosen[False], fam.projected: chosen[True]},
                             "early_log_norm_gap": early_gap, "early_log_angle_gain": angle_gain,
                             "final_log_norm_gap": final_gap, "accuracy_gain_points": gain,
                             "baseline_selection_rise": rises}
    return {"claims": claims, "details": details}


def _table(runs: dict[Run, dict], seeds: list[int]) -> dict:
    """One row per optimizer, lr and momentum: accuracies, how often chosen, norms and effective steps."""
    rows = []
    for fam in FAMILIES:
        for projected in (False, True):
            chosen = [_best_lr(runs, s, fam, projected) for s in seeds]
            settings = [(lr, MOMENTUM) for lr in fam.lrs]
            if fam.name == "sgd" and not projected:
                settings += [(fam.reference_lr, m) for m in MOMENTA if m != MOMENTUM]
            for lr, m in settings:
                rs = [runs[Run(s, fam.name, projected, lr, m)] for s in seeds]
                done = [r for r in rs if r["diverged_at"] is None]
                early = early_steps(rs[0]["steps"])
                cell = (lambda f: _fmt([f(r) for r in done])) if done else (lambda f: "diverged")  # noqa: E731
                rows.append([
                    fam.projected if projected else fam.baseline, f"{lr:g}", f"{m:g}",
                    cell(lambda r: r["selection_acc"][-1]), cell(lambda r: r["test_acc"]),
                    str(sum(c == lr for c in chosen)) if m == MOMENTUM else "-",
                    cell(lambda r: math.exp(_log_growth(r, early))), cell(lambda r: r["norms"][-1] / r["initial_norm"]),
                    cell(lambda r: 1000 * _early_angle(r)),
                    f"{len(rs) - len(done)}" if len(done) < len(rs) else "0"])
    return {"columns": ["optimizer", "lr", "momentum / beta1", "selection acc", "test acc", "chosen (seeds)",
                        "||w||/||w0|| early", "||w||/||w0|| final", "early angle/step (mrad)", "diverged"],
            "rows": rows}


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _band(ax, curves: list[list[float]], color: str, label: str) -> None:
    """Mean over seeds with a min-max band (curves cut to the shortest, e.g. after a divergence)."""
    n = min(len(c) for c in curves)
    if n == 0:
        return
    values = torch.tensor([c[:n] for c in curves])
    steps = torch.arange(1, n + 1)
    ax.plot(steps, values.mean(0), color=color, label=label)
    ax.fill_between(steps, values.min(0).values, values.max(0).values, color=color, alpha=0.2)


def _plots(runs: dict[Run, dict], seeds: list[int], out_dir: Path, data_label: str = f"Color-dSprites {TASK}"
           ) -> list[str]:
    """Norms and effective steps over training at the reference lr, and accuracy over the lr sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    early = early_steps(next(iter(runs.values()))["steps"])
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    sgd = _family("sgd")
    for row, fam in enumerate(FAMILIES):
        lines = [(f"{fam.baseline}", Run(0, fam.name, False, fam.reference_lr), "tab:blue"),
                 (f"{fam.projected}", Run(0, fam.name, True, fam.reference_lr), "tab:red")]
        if fam is sgd:
            lines = [(f"SGD, momentum {m:g}", Run(0, "sgd", False, sgd.reference_lr, m), color)
                     for m, color in zip(MOMENTA, ("tab:gray", "tab:blue", "tab:purple"))] + lines[1:]
        for label, key, color in lines:
            rs = [runs[dataclasses.replace(key, seed=s)] for s in seeds]
            _band(axes[row, 0], [[n / r["initial_norm"] for n in r["norms"]] for r in rs], color, label)
            _band(axes[row, 1], [_smooth(r["angles"], 10) for r in rs], color, label)
        axes[row, 0].set(ylabel="||w|| / ||w_0||  (conv weights)", yscale="log",
                         title=f"{fam.baseline} family at lr {fam.reference_lr:g}: weight norm")
        axes[row, 1].set(ylabel="effective step: angle per step (rad)", yscale="log",
                         title=f"{fam.baseline} family at lr {fam.reference_lr:g}: effective step (10-step mean)")
        for ax in axes[row]:
            ax.axvline(early, color="black", lw=0.8, ls=":")
            ax.set_xlabel("step (dotted: end of the early window)")
            ax.legend(fontsize=8)
    fig.suptitle(f"Scale-invariant weights: norm and effective step ({len(seeds)} seeds: mean, min-max)")
    fig.tight_layout()
    save_figure(fig, out_dir / "adamp_norms.png", dpi=110)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, fam in zip(axes, FAMILIES):
        for projected, color in ((False, "tab:blue"), (True, "tab:red")):
            name = fam.projected if projected else fam.baseline
            for split, style in (("selection_acc", "-"), ("test_acc", "--")):
                vals = []
                for lr in fam.lrs:
                    rs = [runs[Run(s, fam.name, projected, lr)] for s in seeds]
                    vals.append(statistics.fmean(r[split][-1] if split == "selection_acc" and r[split] else
                                                 (r[split] if split == "test_acc" else 0.0) for r in rs))
                ax.plot(fam.lrs, vals, style, marker="o", color=color,
                        label=f"{name} ({'selection' if split == 'selection_acc' else 'test'})")
        ax.set(xscale="log", xlabel="learning rate", ylabel="accuracy (mean over seeds)",
               title=f"{fam.baseline} vs {fam.projected}: the lr sweep")
        ax.legend(fontsize=8)
    fig.suptitle(f"{data_label}: the lr is picked on the selection split, the claim read on the test split")
    fig.tight_layout()
    save_figure(fig, out_dir / "adamp_accuracy.png", dpi=110)
    return ["adamp_norms.png", "adamp_accuracy.png"]


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_experiment(config: ExperimentConfig) -> dict:
    """The momentum sweep, and SGD vs SGDP and AdamW vs AdamP over an lr sweep; writes plots, returns the result."""
    from cuekit.parallel import available_cpus, run_jobs, torch_threads

    scale = QUICK if config.quick else FULL
    seeds = list(config.seeds)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cpu = device == "cpu"
    plan = plan_runs(seeds)
    # Seed-major order: a worker mostly reuses the splits it rendered for the previous job.
    jobs = [(r, scale, config.img_size, device) + ((config.data,) if config.data else ()) for r in plan]
    workers = min(2, available_cpus(), len(jobs)) if cpu else 1
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    # Small networks run fastest, and steadiest on a busy machine, on one thread per process.
    with torch_threads(1 if cpu else None):
        results = run_jobs(train_run, jobs, workers=workers, desc="adamp runs", progress=config.progress, threads=1)
        invariance = max(scale_invariance_error(s, scale.width, config.img_size) for s in seeds)
    runs = dict(zip(plan, results))
    found = analyse(runs, seeds, invariance)
    plots = _plots(runs, seeds, out_dir, *([config.data] if config.data else []))
    elapsed, cpu_time = time.perf_counter() - start, _cpu_seconds() - cpu_start

    rows = {c["id"]: c for c in found["claims"]}
    head = rows[HEADLINE]
    steps = found["details"]["steps"]

    def said(cid: str, unit: str = "") -> str:
        c = rows[cid]
        m, sd = mean_spread(c["effects"])
        return f"{cid} {m:+.3f}{unit} ± {sd:.3f} ({c['verdict']})"

    label = "quick (smoke scale, 32 px)" if config.quick else f"full ({config.img_size} px)"
    measured = (f"{label}: {len(plan)} runs of {steps} steps, {len(seeds)} seeds. "
                + "; ".join(said(c["id"], " points" if c["id"].startswith("acc_") else "")
                            for c in found["claims"]) + ".")
    n_train, n_selection, n_test = results[0]["split_sizes"]
    classes = results[0]["num_classes"]
    data = (f"Color-dSprites {TASK} (6 classes)" if config.data is None else
            f"user data {config.data} ({classes} classes, its own train/val split decoded once, the val split cut "
            "into selection and test)")
    regime = (f"ScaleInvariantNet (3 x bias-free conv-BN-ReLU, width {scale.width}, GAP, fc) on {data} at "
              f"{config.img_size} px; {n_train} training images, batch "
              f"{scale.batch_size}, {scale.epochs} epochs ({steps} steps) of a cosine schedule to zero without "
              f"warm-up (the paper's schedule style, scaled down); lr picked on {n_selection} selection "
              f"images, accuracy read on {n_test} test images; control = the same optimizer with its "
              "projection off (delta=0), same initialisation and data order per seed.")
    return make_result(
        area="adamp",
        title="AdamP / SGDP: momentum, norm growth of scale-invariant weights, and projection",
        claim=("Momentum makes the norm of scale-invariant weights (e.g. conv before BN) grow, more with larger "
               "momentum; the growth shrinks their effective step prematurely; removing the radial part of each "
               "update (SGDP, AdamP) removes the growth and improves accuracy (Heo et al., ICLR 2021)."),
        measured=measured,
        table=_table(runs, seeds),
        claims=found["claims"],
        regime=regime,
        plots=plots,
        seeds=seeds,
        details={**found["details"], "scale": dataclasses.asdict(scale), "img_size": config.img_size,
                 "data": config.data or "dsprites", "num_classes": classes,
                 "split_sizes": {"train": n_train, "selection": n_selection, "test": n_test},
                 "headline": head["id"], "families": [dataclasses.asdict(f) for f in FAMILIES],
                 "momenta": list(MOMENTA), "invariance_error": invariance, "worker_processes": workers,
                 "time_s": elapsed, "cpu_time_s": cpu_time,
                 "runs": [{**dataclasses.asdict(r), "selection_acc": v["selection_acc"], "test_acc": v["test_acc"],
                           "initial_norm": v["initial_norm"], "norms": v["norms"][::max(1, steps // 100)],
                           "turned_early": v["turned_early"], "diverged_at": v["diverged_at"]}
                          for r, v in runs.items()]},
    )
