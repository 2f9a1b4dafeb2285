"""`cuekit reproduce transmit`: approximate models during a progressive download, on a simulated slow link.

Per seed: a small CIFAR ResNet is trained on Color-dSprites (scale, 6 classes) and packed into eight
2-bit parts (the paper's default: every tensor quantised, MSB first; 16 bits in the end). The package
and the same weights as a float16 safetensors file (the baseline: a 16-bit file without stages, the
size the final stage has) are served by the real server on 127.0.0.1 with a rate limit and an added
round-trip delay per request, and fetched with the client in overlap mode, predicting one image at
each stage. Every model is built inside the clock, the progressive one included. Each stage's
weights are then evaluated on the validation images.

The paper's claims, one row each (Lee et al., ICMLA 2021, abstract): (a, headline) the client infers
with approximate models long before the whole model has arrived; (b) the final accuracy is preserved;
(c) the model size and (d) the total transmission time are not increased.
"""
from __future__ import annotations

import asyncio
import dataclasses
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cuekit.io import save_figure
from cuekit.parallel import available_cpus, run_jobs, torch_threads
from cuekit.report.experiments import ExperimentConfig, claim, make_result, mean_spread, precondition

__all__ = ["USABLE_GAP", "Scale", "run_experiment", "timed_full_download", "timed_progressive_fetch"]

# Fixed before any run of this design (docs/transmit.md):
USABLE_GAP = 0.01        # a stage is "usable" when its accuracy is at most 1 point below the float16 model's
SOONER_FACTOR = 2.0      # "long before": the first usable prediction at least twice as soon as the float16 file's
FINAL_TOLERANCE = 0.005  # "accuracy preserved": the final stage within half a point of the float16 model
BYTES_TOLERANCE = 0.01   # "size not increased": parts + manifest at most 1% larger than the float16 file
TIME_TOLERANCE = 0.05    # "transmission time not increased": the final prediction at most 5% later
MANIFEST_SHARE = 0.05    # regime: the per-tensor metadata is at most 5% of the float16 file
LINK_BOUND = 0.8         # regime: the float16 file's transfer at the rate limit is >= 80% of its time to prediction


@dataclasses.dataclass
class Scale:
    """How big one run is, and the simulated link."""

    model: str
    width: int
    train_size: int
    val_size: int
    epochs: int
    batch_size: int
    rate_mbit: float     # the server's rate limit per transfer
    rtt_ms: float = 0.0  # delay the server adds before every answer (a round trip)


# The paper's setting is a MobileNetV2 (3.5 M parameters, about 7 MB at 16 bits) sent to a browser: the
# per-tensor metadata is well under 1% of the bytes, and a round trip is about 1% of the whole transfer
# (e.g. 50 ms against 5.6 s at 10 Mbit/s). Each mode's model is wide enough for its manifest to be a
# small share (resnet8 at width 32: 0.31 M parameters, 0.62 MB at 16 bits), and the rate makes its
# float16 file take 1.5-3 s, with a round trip about 1% of that.
QUICK = Scale(model="resnet8", width=32, train_size=1024, val_size=600, epochs=3, batch_size=32, rate_mbit=3.2,
              rtt_ms=15.0)
FULL = Scale(model="resnet20", width=16, train_size=8000, val_size=2000, epochs=8, batch_size=64, rate_mbit=1.6,
             rtt_ms=30.0)
VARIANTS = {"paper": False}  # name -> full_precision_1d (ours, `transmit pack --full-precision-1d`, is not timed)
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


def _data(seed: int, scale: Scale, img_size: int, spec: str | None = None):
    """One seed's splits: Color-dSprites, or the dataset `spec` of `cuekit reproduce --data`."""
    from cuekit.report.experiments import experiment_data

    return experiment_data(spec, builtin="dsprites", task=TASK, img_size=img_size, train_size=scale.train_size,
                           val_size=scale.val_size, seed=seed)


def _train_seed(job: tuple) -> str:
    """Train one seed's model (a worker process's job); returns the path of its model.safetensors."""
    from cuekit.data.registry import materialise
    from cuekit.train import TrainConfig, train

    seed, scale, work, img_size, device, *spec = job  # a 6th item: the --data spec (absent or None: built-in)
    spec = spec[0] if spec else None
    run_dir = Path(work) / f"train-{seed}"
    cfg = TrainConfig(model=scale.model, data=spec or "dsprites", task=None if spec else TASK, epochs=scale.epochs,
                      batch_size=scale.batch_size,
                      lr=0.1, opt="sgd", weight_decay=5e-4, momentum=0.9, seed=seed, out=str(run_dir),
                      train_size=scale.train_size, val_size=scale.val_size, img_size=img_size, device=device,
                      progress=False, model_kwargs={"width": scale.width})
    train(cfg, data=materialise(_data(seed, scale, img_size, spec)))
    return str(run_dir / "model.safetensors")


def _measure_seed(seed: int, ckpt: Path, scale: Scale, work: Path, img_size: int, device: str,
                  spec: str | None = None) -> dict:
    """Pack, serve on the simulated link and fetch one seed's model; accuracy of every stage (on `spec`'s
    validation split, None: the built-in data's)."""
    from cuekit.data.registry import materialise
    from cuekit.models.registry import create_model, read_state_dict
    from cuekit.train import evaluate
    from cuekit.transmit.package import MANIFEST_NAME, pack
    from cuekit.transmit.server import ServerThread

    data = materialise(_data(seed, scale, img_size, spec))
    state, _ = read_state_dict(ckpt)
    root = work / f"serve-{seed}"
    manifests = {name: pack(ckpt, root / name, full_precision_1d=fp1d) for name, fp1d in VARIANTS.items()}
    _save_float_file(state, root / "float16.safetensors", torch.float16)

    def build() -> nn.Module:
        return create_model(scale.model, num_classes=data.num_classes, img_size=img_size, width=scale.width).to(device)

    def accuracy(weights: dict[str, Tensor]) -> float:
        m = build()
        m.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in weights.items()})
        return float(evaluate(m, data.val, batch_size=300, device=device)["acc"])

    x = data.val[0][0][None].to(device)
    # Warm-up outside the clock, on an unlimited server: first imports, first model creation and first
    # forward cost every method the same once, and none of them pays it inside the timed runs.
    with ServerThread(root) as srv:
        timed_progressive_fetch(srv.url + "paper/", x, overlap=True)
        timed_full_download(srv.url + "float16.safetensors", build, x)
    rate = scale.rate_mbit * 1e6 / 8
    timings: dict[str, Any] = {}
    with ServerThread(root, rate_limit=rate, rtt=scale.rtt_ms / 1000) as srv:
        for name in VARIANTS:  # the model is built from the manifest inside the clock, as a browser would
            timings[name] = timed_progressive_fetch(srv.url + name + "/", x, overlap=True)
        timings["float16"] = timed_full_download(srv.url + "float16.safetensors", build, x)
    acc16 = accuracy({k: (v.half() if v.is_floating_point() else v) for k, v in state.items()})
    stages = {}
    for name in VARIANTS:
        rows = []
        for st in timings[name]:
            rows.append({k: st[k] for k in ("stage", "bits", "time_s", "bytes")} | {"acc": accuracy(st["state"])})
        stages[name] = rows
    manifest_bytes = {name: (root / name / MANIFEST_NAME).stat().st_size for name in VARIANTS}
    result = {
        "seed": seed, "acc_float16": acc16, "chance": 1.0 / data.num_classes,
        "split_sizes": [len(data.train), len(data.val)],
        "t_float16": timings["float16"]["time_s"], "bytes_float16": timings["float16"]["bytes"],
        "transfer_s_float16": timings["float16"]["bytes"] / rate,
        "stages": stages,
        "package_bytes": {n: manifests[n].total_bytes + manifest_bytes[n] for n in VARIANTS},
        "parts_bytes": {n: manifests[n].total_bytes for n in VARIANTS}, "manifest_bytes": manifest_bytes,
    }
    for name in VARIANTS:
        usable = [r for r in stages[name] if r["acc"] >= acc16 - USABLE_GAP]
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
    a16 = [s["acc_float16"] for s in per_seed]
    ax.axhline(sum(a16) / len(a16), color="tab:red", ls="--", label="float16 model (baseline)")
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
    ax.scatter([s0["t_float16"]], [s0["acc_float16"]], marker="^", s=80, color="tab:red",
               label="float16 file (baseline)", zorder=5)
    ax.set_xlabel("seconds from request to prediction")
    ax.set_ylabel("validation accuracy of the model used")
    ax.set_title(f"Time to prediction (seed {s0['seed']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_dir / "transmit_time_to_prediction.png", dpi=110)
    names.append("transmit_time_to_prediction.png")
    return names


def _sooner(t_baseline: float, first_usable: dict | None) -> float:
    """log2(t baseline / t first usable) - log2(SOONER_FACTOR): > 0 when at least SOONER_FACTOR times as soon."""
    if not first_usable:
        return float("nan")  # no stage came within the gap: the claim cannot be judged for this seed
    return math.log2(t_baseline / first_usable["time_s"]) - math.log2(SOONER_FACTOR)


def _claims(per_seed: list[dict], scale: Scale) -> list[dict]:
    """One row per claim of the paper, the float16 file as the baseline."""
    chance = per_seed[0]["chance"]
    acc16 = [s["acc_float16"] for s in per_seed]
    trained = precondition(
        "the model learned the task: float16 accuracy at least twice chance in every seed",
        all(a >= 2 * chance for a in acc16), ", ".join(f"{a:.3f}" for a in acc16) + f" (chance {chance:.3f})")
    link = [s["transfer_s_float16"] / s["t_float16"] for s in per_seed]
    link_bound = precondition(
        f"the link, not the CPU, sets the time: the float16 file's transfer at the rate limit is at least "
        f"{LINK_BOUND:.0%} of its time to prediction",
        all(r >= LINK_BOUND for r in link), "transfer / time to prediction " + ", ".join(f"{r:.2f}" for r in link))
    meta = [s["manifest_bytes"]["paper"] / s["bytes_float16"] for s in per_seed]
    small_manifest = precondition(
        f"the model is large next to its per-tensor metadata, as in the paper's setting (a MobileNetV2, where it "
        f"is well under 1%): the manifest is at most {MANIFEST_SHARE:.0%} of the float16 file",
        all(m <= MANIFEST_SHARE for m in meta), "manifest / float16 file " + ", ".join(f"{m:.3f}" for m in meta))
    usable_found = precondition(
        f"some stage comes within {USABLE_GAP * 100:g} point of the float16 model in every seed",
        all(s["first_usable_paper"] for s in per_seed),
        "first usable bits " + ", ".join(str((s["first_usable_paper"] or {}).get("bits")) for s in per_seed))
    regime = (f"{scale.model} (width {scale.width}), {scale.rate_mbit:g} Mbit/s with {scale.rtt_ms:g} ms added per "
              "request, loopback; float16 file as the baseline")
    final = [abs(s["stages"]["paper"][-1]["acc"] - s["acc_float16"]) for s in per_seed]
    size = [s["package_bytes"]["paper"] / s["bytes_float16"] - 1 for s in per_seed]
    total = [s["stages"]["paper"][-1]["time_s"] / s["t_float16"] - 1 for s in per_seed]
    return [
        claim(id="usable_sooner", headline=True,
              claim="The server divides the model and sends it progressively; the client infers with approximate "
                    "models in the middle of the transfer, long before the whole model has arrived.",
              measure=f"log2(time to the float16 file's prediction / time to the first usable progressive "
                      f"prediction) - log2({SOONER_FACTOR:g}); usable = accuracy within {USABLE_GAP * 100:g} point "
                      f"of the float16 model; > 0 when at least {SOONER_FACTOR:g}x as soon",
              effects=[_sooner(s["t_float16"], s["first_usable_paper"]) for s in per_seed],
              preconditions=[trained, link_bound, small_manifest, usable_found], regime=regime),
        claim(id="final_accuracy",
              claim="... while preserving the model accuracy: the last stage predicts as well as the whole model.",
              measure=f"{FINAL_TOLERANCE * 100:g} - |accuracy(final 16-bit stage) - accuracy(float16 model)|, "
                      "points; > 0 when within the tolerance",
              effects=[100 * (FINAL_TOLERANCE - f) for f in final], preconditions=[trained], regime=regime),
        claim(id="no_size_increase",
              claim="... without increasing the model size.",
              measure=f"{BYTES_TOLERANCE * 100:g} - 100 x (bytes of parts and manifest / bytes of the float16 "
                      "file - 1), percent; > 0 when at most that much larger",
              effects=[100 * (BYTES_TOLERANCE - r) for r in size], preconditions=[small_manifest], regime=regime),
        claim(id="no_time_increase",
              claim="... without increasing the total transmission time.",
              measure=f"{TIME_TOLERANCE * 100:g} - 100 x (time to the final stage's prediction / time to the "
                      "float16 file's prediction - 1), percent; > 0 when at most that much later",
              effects=[100 * (TIME_TOLERANCE - r) for r in total], preconditions=[trained, link_bound, small_manifest],
              regime=regime),
    ]


def run_experiment(config: ExperimentConfig, scale: Scale | None = None) -> dict:
    """Train, pack, serve on a simulated slow link and fetch per seed; one row per claim of the paper."""
    from tqdm import tqdm

    scale = scale or (QUICK if config.quick else FULL)
    img_size = config.img_size
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cuekit-transmit-"))
    seeds = [int(s) for s in config.seeds]
    cpu = config.device == "cpu"
    per_seed = []
    try:
        # Training is independent per seed: the seeds share the cores as processes. The timed transfers then
        # run one at a time in this process, so that no transfer competes with another for the CPU.
        jobs = [(seed, scale, str(work), img_size, config.device) + ((config.data,) if config.data else ())
                for seed in seeds]
        ckpts = run_jobs(_train_seed, jobs, workers=min(available_cpus(), len(jobs)) if cpu else 1,
                         desc="transmit: training", progress=config.progress, threads=1 if cpu else None)
        with torch_threads(1 if cpu else None):
            for seed, ckpt in tqdm(list(zip(seeds, ckpts)), desc="transmit: transfers", unit="seed", leave=False,
                                   disable=not config.progress):
                per_seed.append(_measure_seed(seed, Path(ckpt), scale, work, img_size, config.device,
                                              config.data))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    plots = _plots(out_dir, per_seed)
    claims = _claims(per_seed, scale)

    columns = ["variant", "stage", "bits", "acc (mean)", "acc (std)", "time_s (mean)", "kB received (mean)"]
    rows = []
    for name in VARIANTS:
        for i, r in enumerate(per_seed[0]["stages"][name]):
            accs = [s["stages"][name][i]["acc"] for s in per_seed]
            ts = [s["stages"][name][i]["time_s"] for s in per_seed]
            kb = [s["stages"][name][i]["bytes"] / 1e3 for s in per_seed]
            rows.append([name, r["stage"], r["bits"], *mean_spread(accs), mean_spread(ts)[0], mean_spread(kb)[0]])
    rows.append(["float16 file (baseline)", "-", 16, *mean_spread([s["acc_float16"] for s in per_seed]),
                 mean_spread([s["t_float16"] for s in per_seed])[0],
                 mean_spread([s["bytes_float16"] / 1e3 for s in per_seed])[0]])

    def first(name: str) -> str:
        return ", ".join(f"{(s[f'first_usable_{name}'] or {}).get('bits')} bits at "
                         f"{(s[f'first_usable_{name}'] or {}).get('time_s', float('nan')):.2f} s" for s in per_seed)

    t16 = mean_spread([s["t_float16"] for s in per_seed])
    t_final = mean_spread([s["stages"]["paper"][-1]["time_s"] for s in per_seed])
    size = mean_spread([s["package_bytes"]["paper"] / s["bytes_float16"] for s in per_seed])
    label = "quick (smoke scale, 32 px)" if config.quick else "full"
    n_train, n_val = per_seed[0]["split_sizes"]
    data = f"Color-dSprites {TASK}" if config.data is None else f"user data {config.data}"
    measured = (
        f"[{label}] {scale.model} (width {scale.width}) on {data}, served on 127.0.0.1 at "
        f"{scale.rate_mbit:g} Mbit/s with {scale.rtt_ms:g} ms added per request. First usable stage (within "
        f"{USABLE_GAP * 100:g} point of the float16 model) per seed: {first('paper')}; the float16 file's prediction "
        f"at {t16[0]:.2f} ± {t16[1]:.2f} s; the final stage's at {t_final[0]:.2f} ± {t_final[1]:.2f} s. Parts and "
        f"manifest / float16 file: {size[0]:.3f} bytes."
    )
    for s in per_seed:
        for name in VARIANTS:
            for r in s["stages"][name]:
                r.pop("state", None)
    return make_result(
        area="transmit",
        title="Progressive transmission and inference of deep learning models (Lee et al., ICMLA 2021)",
        claim="Sending a model as most-significant-bit-first parts gives usable approximate models during the "
              "download, \"computationally efficient without increasing the model size and total transmission "
              "time while preserving the model accuracy\" (abstract).",
        measured=measured, table={"columns": columns, "rows": rows}, plots=plots, claims=claims,
        regime=(f"trained {scale.model} (width {scale.width}); a link of {scale.rate_mbit:g} Mbit/s and "
                f"{scale.rtt_ms:g} ms per request, where a round trip is about 1% of the float16 transfer as for "
                "a MobileNetV2 in a browser; the baseline is the float16 file, the size of the final stage"
                + ("" if config.data is None else
                   f"; trained and evaluated on user data {config.data} (its own train/val split, decoded once: "
                   f"{n_train} training and {n_val} validation images at {img_size} px)")),
        seeds=list(config.seeds),
        details={"scale": dataclasses.asdict(scale), "data": config.data or "dsprites",
                 "split_sizes": {"train": n_train, "val": n_val}, "usable_gap": USABLE_GAP,
                 "sooner_factor": SOONER_FACTOR,
                 "final_tolerance": FINAL_TOLERANCE, "bytes_tolerance": BYTES_TOLERANCE,
                 "time_tolerance": TIME_TOLERANCE, "link_bound": LINK_BOUND, "per_seed": per_seed},
    )
