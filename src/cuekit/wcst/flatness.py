"""Flatness of cue-k solutions: loss increase under random weight perturbations, and the Hessian trace.

A cue-k solution is trained on the diagonal set plus cue k's off-diagonal training samples, so only
cue k explains all its data. The sphere test (public code: `main_sphere_test.py`) moves the weights
to theta* + r u/|u|, u ~ N(0, I) over all parameters, and records the loss increase on the diagonal
set for growing radius r, many directions per radius: a flatter minimum loses less. The Hutchinson
estimate tr(H) ~ mean_v v^T H v (Rademacher v) is a second, local flatness measure (ours).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cuekit.io import save_figure
from cuekit.parallel import run_jobs
from cuekit.report.experiments import mean_spread
from cuekit.wcst.datasets import DIAGONAL, CueConflictData
from cuekit.wcst.runs import FitSettings, batchnorm_layers, fit, new_model


def parameter_norm(model: nn.Module) -> float:
    """Euclidean norm of all trainable parameters, flattened together."""
    return float(torch.sqrt(sum((p.detach().float() ** 2).sum() for p in model.parameters() if p.requires_grad)))


def default_radii(data: CueConflictData, settings: FitSettings, levels: int = 6, seed: int = 0) -> list[float]:
    """Radii 0 .. |theta_init| (the norm of the architecture's seeded initial weights), `levels` steps."""
    top = parameter_norm(new_model(data, settings, seed))
    return [top * i / (levels - 1) for i in range(levels)] if levels > 1 else [top]


@torch.no_grad()
def _loss_acc(model: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> tuple[float, float]:
    loss = correct = 0.0
    for i in range(0, len(y), batch_size):
        logits = model(x[i:i + batch_size]).float()
        loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
        correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    return loss / len(y), correct / len(y)


@torch.no_grad()
def sphere_test(model: nn.Module, x: Tensor, y: Tensor, radii: Sequence[float], samples: int,
                seed: int = 0, batch_size: int = 256, batchnorm: str = "batch") -> dict:
    """Loss increase and accuracy at random points on spheres of radius r around the weights.

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


def flatness_run(data: CueConflictData, settings: FitSettings, cue: str, seed: int, radii: Sequence[float],
                 samples: int = 10, probes: int = 8, max_eval: int = 512, trace_samples: int = 128,
                 progress: bool = False) -> dict:
    """Train the cue-`cue` solution of `seed`, then run the sphere test on (at most `max_eval`
    samples of) the diagonal training split and the Hessian trace on `trace_samples` of them."""
    eval_sets = {c: data.dataset(c, "valid") for c in data.cues}
    model, curves = fit(data, settings, seed, train_set=data.cue_training_set(cue), eval_sets=eval_sets,
                        progress=progress)
    x, y = data.dataset(DIAGONAL, "train").tensors()
    if len(y) > max_eval:
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:max_eval]
        x, y = x[keep], y[keep]
    sphere = sphere_test(model, x, y, radii, samples, seed=seed, batch_size=max(settings.eval_batch_size, max_eval))
    trace = model_hessian_trace(model, x[:trace_samples], y[:trace_samples], probes, seed=seed)
    return {"cue": cue, "seed": seed, "final": {c: curves[c][-1] for c in data.cues},
            "solution_norm": parameter_norm(model), "sphere": sphere,
            "hessian_trace": trace["trace"], "hessian_trace_stderr": trace["stderr"],
            "sharpness": sum(sphere["delta_loss_mean"]) / len(sphere["delta_loss_mean"])}


def _flatness_job(job: tuple) -> dict:
    data, settings, cue, seed, kwargs = job
    return flatness_run(data, settings, cue, seed, **kwargs)


def run_flatness(data: CueConflictData, settings: FitSettings, seeds: Sequence[int], *,
                 cues: Sequence[str] | None = None, radii: Sequence[float] | None = None, radius_levels: int = 6,
                 max_radius_fraction: float = 1.0, samples: int = 10, probes: int = 8, max_eval: int = 512,
                 trace_samples: int = 128, workers: int = 1, progress: bool = True) -> dict:
    """Flatness of every cue's solution over seeds; `sharpness` = loss increase averaged over the
    radii (lower = flatter). Default radii: 0 .. max_radius_fraction * |theta_init| in
    `radius_levels` steps. Returns runs, radii and a per-cue summary with the flatness order."""
    settings.validate()
    cues = tuple(cues or data.cues)
    data.materialize()
    if radii is None:
        radii = [r * max_radius_fraction for r in default_radii(data, settings, radius_levels)]
    radii = [float(r) for r in radii]
    kwargs = dict(radii=radii, samples=samples, probes=probes, max_eval=max_eval, trace_samples=trace_samples)
    kwargs["progress"] = progress and workers == 1   # per-epoch bars only in this process
    jobs = [(data, settings, c, s, kwargs) for c in cues for s in seeds]
    runs = run_jobs(_flatness_job, jobs, workers, desc=f"flatness {settings.model}", progress=progress)
    summary = {}
    for c in cues:
        mine = [r for r in runs if r["cue"] == c]
        summary[c] = {
            "sharpness": mean_spread([r["sharpness"] for r in mine]),
            "hessian_trace": mean_spread([r["hessian_trace"] for r in mine]),
            "own_cue_acc": mean_spread([r["final"][c] for r in mine]),
            "solution_norm": mean_spread([r["solution_norm"] for r in mine]),
        }
    order = sorted(cues, key=lambda c: summary[c]["sharpness"][0])
    return {"model": settings.model, "radii": radii, "runs": runs, "summary": summary,
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
        curves = np.array([r["sphere"]["delta_loss_mean"] for r in result["runs"] if r["cue"] == cue])
        own = result["summary"][cue]["own_cue_acc"][0]
        line, = ax.plot(radii, curves.mean(0), marker="o", ms=3, label=f"{cue} solution (own-cue acc {own:.2f})")
        ax.fill_between(radii, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.2)
    ax.set_xlabel("weight perturbation radius r")
    ax.set_ylabel("loss increase on the diagonal set")
    ax.set_title(title or f"Flatness of cue solutions ({result['model']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = save_figure(fig, path, dpi=110)
    return path
