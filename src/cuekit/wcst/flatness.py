"""Flatness of cue-k solutions: loss increase along filter-normalised random directions, and the Hessian trace.

A cue-k solution is trained on the diagonal set plus cue k's off-diagonal training samples, so only
cue k explains all its data. Its flatness is the loss increase on the diagonal set when the weights
move to theta* + r d for radii r > 0, d a random direction normalised filter by filter (Li et al.
2018, "Visualizing the Loss Landscape of Neural Nets", and their public loss-landscape code): each
output filter of a conv or linear weight gets the norm of the same filter of theta*, and 1-D
parameters (BatchNorm weights and biases, biases) do not move ("biasbn" ignored). Radii are then
relative to each solution's own weights, so the same r means the same thing for every solution,
whatever its weight scale (BatchNorm makes the scale of the filters before it arbitrary).
Evaluation is in eval mode with the solution's BatchNorm statistics, as in that code.

`sphere_test` is the public WCST-ML code's isotropic probe (u ~ N(0, I) over all parameters, absolute
radius), kept for comparison. The Hutchinson estimate tr(H) ~ mean_v v^T H v (Rademacher v) is a
second, local flatness measure (ours).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cuekit.errors import UsageError
from cuekit.io import save_figure
from cuekit.parallel import run_jobs
from cuekit.report.experiments import mean_spread
from cuekit.wcst.datasets import DIAGONAL, CueConflictData
from cuekit.wcst.runs import FitSettings, batchnorm_layers, fit


def parameter_norm(model: nn.Module) -> float:
    """Euclidean norm of all trainable parameters, flattened together."""
    return float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in model.parameters() if p.requires_grad)))


DEFAULT_RADII = (0.1, 0.25, 0.5)   # filter-normalised radii


def filter_normalized_direction(model: nn.Module, seed: int) -> list[Tensor]:
    """A random direction over the trainable parameters of `model`, normalised filter by filter.

    One tensor per trainable parameter (same shapes): Gaussian, then every slice along dim 0 (an
    output filter / unit) rescaled to the norm of the same slice of the weights; zero for 1-D
    parameters (biases, BatchNorm). The Gaussian draws depend only on `seed` and the shapes, so two
    solutions of one architecture get the same raw draws.
    """
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        w = p.detach().float().cpu()
        d = torch.randn(w.shape, generator=gen)
        if w.dim() <= 1:
            d.zero_()
        else:
            w_norm = w.flatten(1).norm(dim=1)
            d_norm = d.flatten(1).norm(dim=1)
            d.mul_((w_norm / (d_norm + 1e-10)).view(-1, *([1] * (w.dim() - 1))))
        out.append(d.to(p.device, p.dtype))
    return out


@torch.no_grad()
def _loss_acc(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[float, float]:
    loss = correct = 0.0
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size]).float()
        loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    return loss / len(y), correct / len(y)


@torch.no_grad()
def loss_increase(model: nn.Module, x: Tensor, y: Tensor, radii: Sequence[float], directions: int,
                  seed: int = 0, batch_size: int = 512) -> dict:
    """Loss increase of `model` on (x, y) at theta* + r d for filter-normalised random directions d.

    x: (N, C, H, W) float, y: (N,) long; radii: each > 0; `directions` directions d_j (seeds seed+j, the
    same for every radius). Eval mode (the model's BatchNorm statistics). Weights are restored
    afterwards. Returns "radii", "base_loss", "base_acc", per radius "delta_loss_mean" / "_std"
    (over directions), "acc_mean", and "delta_loss_all" [radius][direction].
    """
    radii = [float(r) for r in radii]
    if not radii or min(radii) <= 0:
        raise UsageError(f"flatness radii must all be > 0 (r = 0 measures nothing), got {radii}")
    if directions < 1:
        raise UsageError(f"need at least 1 direction, got {directions}")
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    device = params[0].device
    x, y = x.to(device), y.to(device)
    center = [p.detach().clone() for p in params]
    base_loss, base_acc = _loss_acc(model, x, y, batch_size)
    dirs = [filter_normalized_direction(model, seed + j) for j in range(directions)]
    out = {"radii": radii, "base_loss": base_loss, "base_acc": base_acc, "directions": directions,
           "delta_loss_mean": [], "delta_loss_std": [], "acc_mean": [], "delta_loss_all": []}
    try:
        for r in radii:
            deltas, accs = [], []
            for d in dirs:
                for p, c, t in zip(params, center, d):
                    p.copy_(c + r * t)
                loss, acc = _loss_acc(model, x, y, batch_size)
                deltas.append(loss - base_loss)
                accs.append(acc)
            m, sd = mean_spread(deltas)
            out["delta_loss_mean"].append(m)
            out["delta_loss_std"].append(sd)
            out["acc_mean"].append(mean_spread(accs)[0])
            out["delta_loss_all"].append(deltas)
    finally:
        for p, c in zip(params, center):
            p.copy_(c)
        model.train(was_training)
    out["sharpness"] = mean_spread(out["delta_loss_mean"])[0]
    return out


@torch.no_grad()
def sphere_test(model: nn.Module, x: Tensor, y: Tensor, radii: Sequence[float], samples: int,
                seed: int = 0, batch_size: int = 256, batchnorm: str = "batch") -> dict:
    """The public code's isotropic probe: loss increase and accuracy on spheres of radius r around the weights.

    x: (N, C, H, W) float, y: (N,) long. For each r, `samples` directions u ~ N(0, I) over all
    trainable parameters; theta = theta* + r u / |u|. batchnorm="batch" normalises with the
    statistics of each evaluated batch (as the public code, which evaluated in train mode), so
    BatchNorm follows the perturbed weights; "running" uses the stored statistics of theta*.
    Weights and buffers are restored afterwards. Returns per-radius mean / std of the loss
    increase ("delta_loss_*") and accuracy ("acc_*"), plus the unperturbed "base_loss", "base_acc".
    """
    if batchnorm not in ("batch", "running"):
        raise ValueError(f"batchnorm must be 'batch' or 'running', got {batchnorm!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    buffers = {k: v.clone() for k, v in model.state_dict().items() if k not in dict(model.named_parameters())}
    bns = batchnorm_layers(model)
    momenta = [m.momentum for m in bns]
    if batchnorm == "batch" and bns:
        model.train()
        for m in bns:
            m.momentum = 0.0      # batch statistics, running statistics left as they are
    else:
        model.eval()
    device = params[0].device
    x, y = x.to(device), y.to(device)
    center = [p.detach().clone() for p in params]
    base_loss, base_acc = _loss_acc(model, x, y, batch_size)
    gen = torch.Generator().manual_seed(seed)
    out = {"radii": [float(r) for r in radii], "base_loss": base_loss, "base_acc": base_acc,
           "delta_loss_mean": [], "delta_loss_std": [], "acc_mean": [], "acc_std": [], "delta_loss_all": []}
    try:
        for r in radii:
            deltas, accs = [], []
            for _ in range(samples):
                u = [torch.randn(c.shape, generator=gen, dtype=torch.float32).to(device) for c in center]
                norm = torch.sqrt(sum((t ** 2).sum() for t in u))
                for p, c, t in zip(params, center, u):
                    p.copy_(c + (r / norm) * t.to(c.dtype))
                loss, acc = _loss_acc(model, x, y, batch_size)
                deltas.append(loss - base_loss)
                accs.append(acc)
            m, s = mean_spread(deltas)
            out["delta_loss_mean"].append(m)
            out["delta_loss_std"].append(s)
            m, s = mean_spread(accs)
            out["acc_mean"].append(m)
            out["acc_std"].append(s)
            out["delta_loss_all"].append(deltas)
    finally:
        for p, c in zip(params, center):
            p.copy_(c)
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.load_state_dict(buffers, strict=False)
        model.train(was_training)
    return out


def hutchinson_trace(loss_fn: Callable[[], Tensor], params: Sequence[Tensor], probes: int,
                     seed: int = 0) -> dict:
    """Hutchinson estimate of the trace of the Hessian of `loss_fn()` w.r.t. `params`.

    tr(H) = E[v^T H v] for Rademacher v; each probe costs one Hessian-vector product (double
    backward). Returns {"trace": mean, "stderr": std / sqrt(probes), "samples": [...]}.
    """
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    params = list(params)
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(probes):
        vs = [(torch.randint(0, 2, p.shape, generator=gen) * 2 - 1).to(p.device, p.dtype) for p in params]
        gv = sum((g * v).sum() for g, v in zip(grads, vs))
        hv = torch.autograd.grad(gv, params, retain_graph=i < probes - 1)
        samples.append(float(sum((h * v).sum() for h, v in zip(hv, vs))))
    mean, std = mean_spread(samples)
    return {"trace": mean, "stderr": std / len(samples) ** 0.5, "samples": samples}


def model_hessian_trace(model: nn.Module, x: Tensor, y: Tensor, probes: int, seed: int = 0) -> dict:
    """Hutchinson trace of the mean cross-entropy of `model` (eval mode) on (x, y) w.r.t. its weights."""
    was_training = model.training
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    x, y = x.to(device), y.to(device)
    try:
        return hutchinson_trace(lambda: F.cross_entropy(model(x).float(), y), params, probes, seed)
    finally:
        model.train(was_training)


def cue_solution(data: CueConflictData, settings: FitSettings, cue: str, seed: int, *,
                 diagonal_per_class: int | None = None, progress: bool = False) -> tuple[nn.Module, dict]:
    """Train the cue-`cue` solution of `seed` on the diagonal train split (or a seeded subset of
    `diagonal_per_class` per class) plus D_cue's train split, labelled by cue's level.

    Returns the model and its final accuracies {"diagonal": on the diagonal valid split, cue: on every
    cue's off-diagonal valid split}.
    """
    eval_sets = {c: data.dataset(c, "valid") for c in data.cues}
    train_set = data.cue_training_set(cue, diagonal_per_class=diagonal_per_class, seed=seed)
    model, curves = fit(data, settings, seed, train_set=train_set, eval_sets=eval_sets, progress=progress,
                        record="final")
    return model, {name: c[-1] for name, c in curves.items()}


def diagonal_probe_set(data: CueConflictData, max_eval: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """At most `max_eval` images of the diagonal train split (a seeded subset): (n, C, H, W), (n,)."""
    x, y = data.dataset(DIAGONAL, "train").tensors()
    if len(y) > max_eval:
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:max_eval]
        x, y = x[keep], y[keep]
    return x, y


def flatness_run(data: CueConflictData, settings: FitSettings, cue: str, seed: int, radii: Sequence[float],
                 directions: int = 5, probes: int = 8, max_eval: int = 512, trace_samples: int = 128,
                 progress: bool = False) -> dict:
    """Train the cue-`cue` solution of `seed`, then measure its loss increase along filter-normalised
    directions on (at most `max_eval` samples of) the diagonal training split, and the Hessian
    trace on `trace_samples` of them (probes = 0 skips it)."""
    model, final = cue_solution(data, settings, cue, seed, progress=progress)
    x, y = diagonal_probe_set(data, max_eval, seed=0)
    flat = loss_increase(model, x, y, radii, directions, seed=1000 * seed,
                         batch_size=max(settings.eval_batch_size, max_eval))
    out = {"cue": cue, "seed": seed, "final": {c: final[c] for c in data.cues}, "diagonal_acc": final[DIAGONAL],
           "solution_norm": parameter_norm(model), "loss_increase": flat, "sharpness": flat["sharpness"]}
    if probes > 0:
        trace = model_hessian_trace(model, x[:trace_samples], y[:trace_samples], probes, seed=seed)
        out.update(hessian_trace=trace["trace"], hessian_trace_stderr=trace["stderr"])
    return out


def _flatness_job(job: tuple) -> dict:
    data, settings, cue, seed, kwargs = job
    return flatness_run(data, settings, cue, seed, **kwargs)


def run_flatness(data: CueConflictData, settings: FitSettings, seeds: Sequence[int], *,
                 cues: Sequence[str] | None = None, radii: Sequence[float] | None = None, directions: int = 5,
                 probes: int = 8, max_eval: int = 512, trace_samples: int = 128, workers: int = 1,
                 progress: bool = True) -> dict:
    """Flatness of every cue's solution over seeds; `sharpness` = loss increase averaged over the
    filter-normalised radii (default DEFAULT_RADII; each > 0; lower = flatter). Returns runs, radii
    and a per-cue summary with the flatness order (flattest first)."""
    settings.validate()
    cues = tuple(cues or data.cues)
    radii = [float(r) for r in (radii or DEFAULT_RADII)]
    if min(radii) <= 0:
        raise UsageError(f"flatness radii must all be > 0 (r = 0 measures nothing), got {radii}")
    data.materialize()
    kwargs = dict(radii=radii, directions=directions, probes=probes, max_eval=max_eval, trace_samples=trace_samples)
    kwargs["progress"] = progress and workers == 1   # per-epoch bars only in this process
    jobs = [(data, settings, c, s, kwargs) for c in cues for s in seeds]
    runs = run_jobs(_flatness_job, jobs, workers, desc=f"flatness {settings.model}", progress=progress)
    summary = {}
    for c in cues:
        mine = [r for r in runs if r["cue"] == c]
        summary[c] = {
            "sharpness": mean_spread([r["sharpness"] for r in mine]),
            "own_cue_acc": mean_spread([r["final"][c] for r in mine]),
            "solution_norm": mean_spread([r["solution_norm"] for r in mine]),
        }
        if probes > 0:
            summary[c]["hessian_trace"] = mean_spread([r["hessian_trace"] for r in mine])
    order = sorted(cues, key=lambda c: summary[c]["sharpness"][0])
    return {"model": settings.model, "radii": radii, "directions": directions, "runs": runs, "summary": summary,
            "flatness_order": order}


def plot_flatness(result: dict, path: str | Path, title: str | None = None) -> Path:
    """Loss increase vs perturbation radius, one line per cue solution (mean over seeds and
    directions, band = min-max of the per-seed means)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    radii = np.asarray(result["radii"])
    for cue in result["summary"]:
        curves = np.array([r["loss_increase"]["delta_loss_mean"] for r in result["runs"] if r["cue"] == cue])
        own = result["summary"][cue]["own_cue_acc"][0]
        line, = ax.plot(radii, curves.mean(0), marker="o", ms=3, label=f"{cue} solution (own-cue acc {own:.2f})")
        ax.fill_between(radii, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("radius r (filter-normalised direction)")
    ax.set_ylabel("loss increase on the diagonal set")
    ax.set_title(title or f"Flatness of cue solutions ({result['model']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=110)
    return path
