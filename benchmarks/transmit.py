"""Progressive transmission vs whole-file download, against the real server on loopback.

A small CIFAR ResNet is trained briefly on Color-dSprites (or --ckpt is used), packed into eight
2-bit parts and served by `cuekit.transmit.server` on 127.0.0.1 with its rate limit. For each rate
(1 and 10 Mbit/s by default) the script measures, as the median of interleaved repeats:
  - progressive: time from the request to the first usable prediction (the first stage whose
    validation accuracy is within 1 point of the float32 model's) and to the final stage's prediction;
  - whole file: time to download the float32 (and float16) safetensors file, load it and predict;
and prints the ratios (float32 time / progressive time) and the total bytes against the float16 file.

    .venv/bin/python benchmarks/transmit.py [--rates 1,10] [--repeats 3] [--ckpt model.safetensors]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from cuekit.io import format_table
from cuekit.models.registry import checkpoint_metadata, read_state_dict
from cuekit.train import TrainConfig, evaluate, train
from cuekit.transmit.experiment import USABLE_GAP, timed_full_download, timed_progressive_fetch
from cuekit.transmit.package import MANIFEST_NAME, model_from_manifest, pack
from cuekit.transmit.server import ServerThread


def train_small(out: Path) -> Path:
    """A resnet8 (width 16) trained for two epochs on Color-dSprites scale at 32 px."""
    cfg = TrainConfig(model="resnet8", data="dsprites", task="scale", epochs=2, batch_size=32, lr=0.1,
                      train_size=1536, val_size=500, img_size=32, out=str(out), progress=False, device="cpu",
                      model_kwargs={"width": 16})
    train(cfg)
    return out / "model.safetensors"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1,10", help="server rate limits in Mbit/s, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ckpt", default=None, help="model.safetensors from `cuekit train` (default: train a small one)")
    ap.add_argument("--eval-size", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]

    with tempfile.TemporaryDirectory(prefix="cuekit-bench-transmit-") as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.ckpt) if args.ckpt else train_small(tmp / "train")
        meta = checkpoint_metadata(ckpt)
        state, _ = read_state_dict(ckpt)
        root = tmp / "serve"
        manifest = pack(ckpt, root / "model")
        from safetensors.torch import save_file

        for name, dtype in (("float32", torch.float32), ("float16", torch.float16)):
            save_file({k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()},
                      str(root / f"{name}.safetensors"))

        from cuekit.data.registry import create_dataset

        cfg = meta.get("config") or {}
        val = create_dataset(meta["data"], task=meta.get("task"), img_size=meta.get("img_size"),
                             train_size=cfg.get("train_size"), val_size=args.eval_size, seed=cfg.get("seed", 0),
                             val_split=cfg.get("val_split", 0.1)).val

        def build():
            return model_from_manifest(manifest)

        def accuracy(weights) -> float:
            m = build()
            m.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in weights.items()})
            return float(evaluate(m, val, batch_size=256, device="cpu")["acc"])

        x = val[0][0][None]
        build()(x)  # warm-up outside the clock
        acc32 = accuracy(state)
        rows, ratio_rows, stage_acc = [], [], None
        for rate in rates:
            times = {"first_usable": [], "final": [], "float32": [], "float16": []}
            usable_stage = None
            with ServerThread(root, rate_limit=rate * 1e6 / 8) as srv:
                for _ in range(args.repeats):  # interleaved: each repeat runs every method once
                    stages = timed_progressive_fetch(srv.url + "model/", x, model=build())
                    if stage_acc is None:
                        stage_acc = [accuracy(s["state"]) for s in stages]
                    usable = [i for i, a in enumerate(stage_acc) if a >= acc32 - USABLE_GAP]
                    usable_stage = usable[0] if usable else None
                    if usable_stage is not None:
                        times["first_usable"].append(stages[usable_stage]["time_s"])
                    times["final"].append(stages[-1]["time_s"])
                    for name in ("float32", "float16"):
                        times[name].append(timed_full_download(srv.url + f"{name}.safetensors", build, x)["time_s"])
            med = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
            bits = manifest.stage_bits[usable_stage] if usable_stage is not None else None
            rows.append([f"{rate:g}", bits, med["first_usable"], med["final"], med["float32"], med["float16"]])
            ratio_rows.append([f"{rate:g}", med["float32"] / med["first_usable"], med["float32"] / med["final"],
                               med["float16"] / med["first_usable"], med["float16"] / med["final"]])
        mbytes = (root / "model" / MANIFEST_NAME).stat().st_size
        f16 = (root / "float16.safetensors").stat().st_size
        f32 = (root / "float32.safetensors").stat().st_size

    print(f"model {meta.get('model')} ({sum(v.numel() for v in state.values() if v.is_floating_point())} float "
          f"weights), float32 accuracy {acc32:.4f}; stage accuracies {[round(a, 4) for a in stage_acc]}")
    print(f"median of {args.repeats} interleaved repeats, server rate limit per transfer, 127.0.0.1\n")
    print(format_table(["Mbit/s", "usable at bits", "t first usable (s)", "t final (s)", "t float32 file (s)",
                        "t float16 file (s)"], rows))
    print()
    print(format_table(["Mbit/s", "float32 / first usable", "float32 / final", "float16 / first usable",
                        "float16 / final"], ratio_rows))
    total = manifest.total_bytes + mbytes
    print(f"\nbytes: parts {manifest.total_bytes} + manifest {mbytes} = {total}; float16 file {f16} "
          f"(ratio {total / f16:.3f}, parts alone {manifest.total_bytes / f16:.3f}); float32 file {f32}")
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"\n({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    sys.exit(rc)
