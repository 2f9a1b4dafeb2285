"""`cuekit reproduce transmit`: approximate models during a progressive download, on loopback.

Per seed: a small CIFAR ResNet is trained on Color-dSprites (scale, 6 classes), packed into eight
2-bit parts (the paper's default) and, as our variant, with 1-D tensors (biases, BatchNorm) sent
whole in part 0; the packages are served by the real server on 127.0.0.1 with a rate limit, and
fetched with the client in overlap mode, predicting one image at each stage. Each stage's weights
are then evaluated on the validation images. Baselines: downloading the whole float32 and float16
safetensors files from the same server, then predicting.

The verdict tests one claim: a usable prediction (accuracy within USABLE_GAP of the float32 model)
arrives sooner than the float32 file's prediction. Effect per seed = t(float32 prediction) -
t(first usable progressive prediction), in seconds, expected > 0. Final-stage accuracy and total
bytes against the float16 file are reported beside it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cuekit.io import save_figure
from cuekit.parallel import torch_threads
from cuekit.report.experiments import ExperimentConfig, make_result, mean_spread, verdict

__all__ = ["USABLE_GAP", "Scale", "run_experiment", "timed_full_download", "timed_progressive_fetch"]

USABLE_GAP = 0.01  # a stage is "usable" when its accuracy is at most 1 point below the float32 model's


@dataclasses.dataclass
class Scale:
    """How big one run is."""

    model: str
    width: int
    train_size: int
    val_size: int
    epochs: int
    batch_size: int
    rate_mbit: float     # the server's rate limit per transfer


QUICK = Scale(model="resnet8", width=8, train_size=1024, val_size=300, epochs=3, batch_size=32, rate_mbit=1.0)
FULL = Scale(model="resnet20", width=16, train_size=8000, val_size=2000, epochs=8, batch_size=64, rate_mbit=1.0)
VARIANTS = {"paper": False, "1d-exact": True}  # name -> full_precision_1d
TASK = "scale"


async def _download(url: str, timeout_s: float = 60.0) -> bytes:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        async with session.get(url) as r:
            r.raise_for_status()
            return await r.read()


def timed_full_download(url: str, build_model: Any, x: Tensor) -> dict:
    """Download a whole safetensors file, load it into `build_model()` and predict x (N, C, H, W).

    Returns time_s (request to prediction), bytes, and the logits (N, classes)."""
    from safetensors.torch import load

    t0 = time.perf_counter()
    data = asyncio.run(_download(url))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load(data).items()}
    model = build_model()
    model.load_state_dict(state)
    with torch.no_grad():
        logits = model.eval()(x)
    return {"time_s": time.perf_counter() - t0, "bytes": len(data), "logits": logits}


def timed_progressive_fetch(url: str, x: Tensor, overlap: bool = True, model: nn.Module | None = None,
                            timeout_s: float = 60.0) -> list[dict]:
    """Fetch a package stage by stage, predicting x at each stage.

    One dict per stage: stage, bits, time_s (from the call to this stage's prediction), bytes
    (received so far), state (the stage's weights)."""
    from cuekit.transmit.client import iter_stages

    out = []
    t0 = time.perf_counter()
    with iter_stages(url, overlap=overlap, model=model, timeout_s=timeout_s) as it:
        for st in it:
            with torch.no_grad():
                st.model.eval()(x)
            out.append({"stage": st.index + 1, "bits": st.bits, "time_s": time.perf_counter() - t0,
                        "bytes": st.bytes_received, "state": st.state_dict})
    return out


def _save_float_file(state: dict[str, Tensor], path: Path, dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    save_file({k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}, str(path))


def _run_seed(seed: int, scale: Scale, work: Path, img_size: int, device: str) -> dict:
    from cuekit.data.registry import create_dataset
    from cuekit.models.registry import create_model, read_state_dict
    from cuekit.train import TrainConfig, evaluate, train
    from cuekit.transmit.package import MANIFEST_NAME, pack
    from cuekit.transmit.server import ServerThread

    data = create_dataset("dsprites", task=TASK, img_size=img_size, train_size=scale.train_size,
                          val_size=scale.val_size, seed=seed)
    run_dir = work / f"train-{seed}"
    cfg = TrainConfig(model=scale.model, data="dsprites", task=TASK, epochs=scale.epochs, batch_size=scale.batch_size,
                      lr=0.1, opt="sgd", weight_decay=5e-4, momentum=0.9, seed=seed, out=str(run_dir),
                      train_size=scale.train_size, val_size=scale.val_size, img_size=img_size, device=device,
                      progress=False, model_kwargs={"width": scale.width})
    train(cfg, data=data)
    ckpt = run_dir / "model.safetensors"
    state, _ = read_state_dict(ckpt)
    root = work / f"serve-{seed}"
    manifests = {name: pack(ckpt, root / name, full_precision_1d=fp1d) for name, fp1d in VARIANTS.items()}
    _save_float_file(state, root / "float32.safetensors", torch.float32)
    _save_float_file(state, root / "float16.safetensors", torch.float16)

    def build() -> nn.Module:
        return create_model(scale.model, num_classes=data.num_classes, img_size=img_size, width=scale.width).to(device)

    def accuracy(weights: dict[str, Tensor]) -> float:
        m = build()
        m.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in weights.items()})
        return float(evaluate(m, data.val, batch_size=256, device=device)["acc"])

    x = data.val[0][0][None].to(device)
    build()  # warm-up: first model creation and forward outside the clock
    rate = scale.rate_mbit * 1e6 / 8
    timings: dict[str, Any] = {}
    with ServerThread(root, rate_limit=rate) as srv:
        for name in VARIANTS:
            timings[name] = timed_progressive_fetch(srv.url + name + "/", x, overlap=True, model=build())
        for name in ("float32", "float16"):
            timings[name] = timed_full_download(srv.url + f"{name}.safetensors", build, x)
    acc32 = accuracy(state)
    acc16 = accuracy({k: (v.half() if v.is_floating_point() else v) for k, v in state.items()})
    stages = {}
    for name in VARIANTS:
        rows = []
        for st in timings[name]:
            rows.append({k: st[k] for k in ("stage", "bits", "time_s", "bytes")} | {"acc": accuracy(st["state"])})
        stages[name] = rows
    manifest_bytes = {name: (root / name / MANIFEST_NAME).stat().st_size for name in VARIANTS}
    result = {
        "seed": seed, "acc_float32": acc32, "acc_float16": acc16, "chance": 1.0 / data.num_classes,
        "t_float32": timings["float32"]["time_s"], "t_float16": timings["float16"]["time_s"],
        "bytes_float32": timings["float32"]["bytes"], "bytes_float16": timings["float16"]["bytes"],
        "stages": stages,
        "package_bytes": {n: manifests[n].total_bytes + manifest_bytes[n] for n in VARIANTS},
        "parts_bytes": {n: manifests[n].total_bytes for n in VARIANTS}, "manifest_bytes": manifest_bytes,
    }
    for name in VARIANTS:
        usable = [r for r in stages[name] if r["acc"] >= acc32 - USABLE_GAP]
        result[f"first_usable_{name}"] = usable[0] if usable else None
    return result


def _plots(out_dir: Path, per_seed: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, marker in zip(VARIANTS, ("o", "s")):
        bits = [r["bits"] for r in per_seed[0]["stages"][name]]
        accs = torch.tensor([[r["acc"] for r in s["stages"][name]] for s in per_seed])
        mean, std = accs.mean(0), accs.std(0) if len(per_seed) > 1 else torch.zeros(len(bits))
        ax.errorbar(bits, mean, yerr=std, marker=marker, capsize=3, label=f"progressive ({name})")
    a32 = [s["acc_float32"] for s in per_seed]
    ax.axhline(sum(a32) / len(a32), color="k", ls="--", label="float32 model")
    ax.axhline(per_seed[0]["chance"], color="gray", ls=":", label="chance")
    ax.set_xlabel("bits per weight received (stage)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(f"Accuracy per stage (mean ± std over {len(per_seed)} seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_dir / "transmit_accuracy_per_stage.png", dpi=110)
    names.append("transmit_accuracy_per_stage.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    s0 = per_seed[0]
    for name in VARIANTS:
        t = [r["time_s"] for r in s0["stages"][name]]
        a = [r["acc"] for r in s0["stages"][name]]
        ax.step(t, a, where="post", marker="o", label=f"progressive ({name})")
    ax.scatter([s0["t_float32"]], [s0["acc_float32"]], marker="*", s=150, color="k", label="float32 file", zorder=5)
    ax.scatter([s0["t_float16"]], [s0["acc_float16"]], marker="^", s=80, color="tab:red", label="float16 file",
               zorder=5)
    ax.set_xlabel("seconds from request to prediction")
    ax.set_ylabel("validation accuracy of the model used")
    ax.set_title(f"Time to prediction (seed {s0['seed']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_dir / "transmit_time_to_prediction.png", dpi=110)
    names.append("transmit_time_to_prediction.png")
    return names


def run_experiment(config: ExperimentConfig, scale: Scale | None = None) -> dict:
    """Train, pack, serve on loopback and fetch per seed; accuracy and time per stage, and the verdict."""
    from tqdm import tqdm

    scale = scale or (QUICK if config.quick else FULL)
    img_size = config.img_size
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cuekit-transmit-"))
    per_seed = []
    try:
        with torch_threads(1 if config.quick else None):  # 2 shared cores: one thread beats two fighting
            for seed in tqdm(list(config.seeds), desc="transmit seeds", unit="seed", leave=False,
                             disable=not config.progress):
                per_seed.append(_run_seed(int(seed), scale, work, img_size, config.device))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    plots = _plots(out_dir, per_seed)

    # NaN (so "inconclusive") for a seed where no stage came within the gap
    effects = [s["t_float32"] - s["first_usable_paper"]["time_s"] if s["first_usable_paper"] else float("nan")
               for s in per_seed]
    v = verdict(effects, +1)
    final_gap = [s["stages"]["paper"][-1]["acc"] - s["acc_float32"] for s in per_seed]
    size_ratio = [s["package_bytes"]["paper"] / s["bytes_float16"] for s in per_seed]
    parts_ratio = [s["parts_bytes"]["paper"] / s["bytes_float16"] for s in per_seed]
    m_eff, sd_eff = mean_spread(effects)
    m_gap, sd_gap = mean_spread(final_gap)

    columns = ["variant", "stage", "bits", "acc (mean)", "acc (std)", "time_s (mean)", "kB received (mean)"]
    rows = []
    for name in VARIANTS:
        for i, r in enumerate(per_seed[0]["stages"][name]):
            accs = [s["stages"][name][i]["acc"] for s in per_seed]
            ts = [s["stages"][name][i]["time_s"] for s in per_seed]
            kb = [s["stages"][name][i]["bytes"] / 1e3 for s in per_seed]
            rows.append([name, r["stage"], r["bits"], *mean_spread(accs), mean_spread(ts)[0], mean_spread(kb)[0]])
    for name in ("float32", "float16"):
        accs = [s[f"acc_{name}"] for s in per_seed]
        rows.append([f"{name} file", "-", 32 if name == "float32" else 16, *mean_spread(accs),
                     mean_spread([s[f"t_{name}"] for s in per_seed])[0],
                     mean_spread([s[f"bytes_{name}"] / 1e3 for s in per_seed])[0]])

    usable_bits = [(s["first_usable_paper"] or {}).get("bits") for s in per_seed]
    usable_bits_1d = [(s["first_usable_1d-exact"] or {}).get("bits") for s in per_seed]
    label = "quick (smoke scale, 32 px)" if config.quick else "full"
    measured = (
        f"[{label}] {scale.model} (width {scale.width}) on Color-dSprites {TASK}, served on 127.0.0.1 at "
        f"{scale.rate_mbit:g} Mbit/s. First usable stage (within {USABLE_GAP * 100:.0f} point of float32) at "
        f"{usable_bits} bits per seed with every tensor quantised (paper), {usable_bits_1d} with 1-D tensors exact "
        f"(ours). Time saved to the first usable prediction vs downloading the float32 file: "
        f"{m_eff:.3f} ± {sd_eff:.3f} s. Final 16-bit stage minus float32 accuracy: {m_gap:+.4f} ± {sd_gap:.4f}. "
        f"Total bytes (parts + manifest) / float16 file: {mean_spread(size_ratio)[0]:.3f} "
        f"(parts alone {mean_spread(parts_ratio)[0]:.3f})."
    )
    for s in per_seed:
        for name in VARIANTS:
            for r in s["stages"][name]:
                r.pop("state", None)
    return make_result(
        area="transmit",
        title="Progressive transmission and inference of deep learning models (Lee et al., ICMLA 2021)",
        claim="Sending a model as most-significant-bit-first parts gives usable approximate models during the "
              "download, without increasing the model size or total transmission time and while preserving the "
              "final accuracy. Verdict on: the first usable prediction comes sooner than with the whole float32 "
              "file.",
        measured=measured, verdict=v, table={"columns": columns, "rows": rows}, plots=plots,
        seeds=list(config.seeds), effects=effects, expected_sign=+1,
        details={"scale": dataclasses.asdict(scale), "usable_gap": USABLE_GAP, "per_seed": per_seed,
                 "final_minus_float32_acc": final_gap, "package_over_float16_bytes": size_ratio,
                 "parts_over_float16_bytes": parts_ratio,
                 "effect": "t_float32_prediction - t_first_usable_prediction (s), paper variant"},
    )
