"""Time to the first prediction in the browser: progressive package vs the whole float16 ONNX model.

A small CIFAR ResNet is trained briefly on Color-dSprites shapes (or --ckpt is used) and packed with
its ONNX graph (`cuekit transmit pack`); the same weights are also written as one self-contained
float16 ONNX file (`cuekit.transmit.onnx_graph.embed_weights`: float16 initializers cast to float32
in the graph). `cuekit.transmit.server` serves both on 127.0.0.1 with its rate limit (each transfer
at --rates Mbit/s; the page's own files, ONNX Runtime Web included, are not limited), and the system
Chromium (headless, through Playwright) opens the page. In the page's worker, for one sample image:
  - progressive: manifest, graph, part 0, decode, open one session, predict: time to the first
    prediction, to the first stage whose top-1 class is the final one's, and to the final stage;
  - float16 ONNX: download the whole file, open a session, predict.
Both run in the same worker with ONNX Runtime Web already loaded (a warm-up of each comes first), as
the median of interleaved repeats; the script prints the times and the ratios
(float16 ONNX time / progressive time). --screenshot PATH saves the page after a last progressive run.

    .venv/bin/python benchmarks/transmit_browser.py [--rates 1,10] [--repeats 3] [--ckpt model.safetensors]
                                                     [--screenshot docs/img/transmit_page.png]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from cuekit.io import format_table

TIMEOUT_MS = 180_000


def train_small(out: Path) -> Path:
    """A resnet8 (width 16) trained for six epochs on 4096 Color-dSprites shapes at 32 px (about 3 minutes on
    two cores; 99.7% validation accuracy in our run)."""
    from cuekit.train import TrainConfig, train

    cfg = TrainConfig(model="resnet8", data="dsprites", task="shape", epochs=6, batch_size=32, lr=0.1,
                      train_size=4096, val_size=300, img_size=32, out=str(out), progress=False, device="cpu",
                      model_kwargs={"width": 16})
    train(cfg)
    return out / "model.safetensors"


def chromium() -> str | None:
    for c in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.access(c, os.X_OK):
            return c
    return shutil.which("chromium")


def progressive_run(page) -> dict:
    page.evaluate("window.cuekit.load()")
    page.wait_for_function("['done', 'error'].includes(window.cuekit.status)", timeout=TIMEOUT_MS)
    if page.evaluate("window.cuekit.status") != "done":
        raise RuntimeError(f"the page failed: {page.evaluate('window.cuekit.messages')}")
    stages = page.evaluate("window.cuekit.stages.map(s => ({t: s.timeMs, bytes: s.bytesReceived, bits: s.bits, "
                           "top: s.prediction.top[0].index, prob: s.prediction.top[0].prob}))")
    final = stages[-1]["top"]
    settled = len(stages) - 1
    while settled > 0 and stages[settled - 1]["top"] == final:
        settled -= 1
    return {"first_s": stages[0]["t"] / 1000, "first_bytes": stages[0]["bytes"], "first_bits": stages[0]["bits"],
            "settled_s": stages[settled]["t"] / 1000, "settled_bits": stages[settled]["bits"],
            "final_s": stages[-1]["t"] / 1000, "final_bytes": stages[-1]["bytes"], "final_top": final}


def baseline_run(page, url: str) -> dict:
    res = page.evaluate(f"window.cuekit.baseline({url!r})")
    if res.get("error"):
        raise RuntimeError(f"the float16 ONNX run failed: {res['error']}")
    return {"time_s": res["timeMs"] / 1000, "bytes": res["bytes"], "top": res["prediction"]["top"][0]["index"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1,10", help="server rate limits in Mbit/s, comma-separated")
    ap.add_argument("--rtt-ms", type=float, default=0.0, help="delay before every answer of the server (ms)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ckpt", default=None, help="model.safetensors from `cuekit train` (default: train a small one)")
    ap.add_argument("--sample", type=int, default=2, help="which of the page's sample images to classify")
    ap.add_argument("--screenshot", default=None, help="save the page after a final progressive run here (PNG)")
    args = ap.parse_args()
    exe = chromium()
    if exe is None:
        print("skipped: no Chromium (apt-get install -y chromium gives /usr/bin/chromium)")
        return 0
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("skipped: playwright is not installed (pip install -e '.[dev]')")
        return 0
    from cuekit.transmit.web import find_ort_dist

    if find_ort_dist() is None:
        print("skipped: ONNX Runtime Web is not installed (run `npm ci` in the checkout)")
        return 0
    import torch

    from cuekit.models.registry import read_state_dict
    from cuekit.transmit.onnx_graph import embed_weights
    from cuekit.transmit.package import MANIFEST_NAME, pack
    from cuekit.transmit.server import ServerThread

    torch.set_num_threads(1)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    with tempfile.TemporaryDirectory(prefix="cuekit-bench-browser-") as tmp:
        tmp = Path(tmp)
        ckpt = Path(args.ckpt) if args.ckpt else train_small(tmp / "train")
        root = tmp / "serve"
        man = pack(ckpt, root / "model", onnx_graph=True)
        if not man.model.get("onnx"):
            print("failed: no ONNX graph could be written for this checkpoint")
            return 1
        state, _ = read_state_dict(ckpt)
        (root / "baseline").mkdir()
        f16_bytes = embed_weights(root / "model" / "model.onnx", state, root / "baseline" / "model-f16.onnx")
        mbytes, gbytes = (root / "model" / MANIFEST_NAME).stat().st_size, man.model["onnx"]["bytes"]
        print(f"model {man.model['name']} {man.model.get('model_kwargs')}, {man.num_parts} parts of "
              f"{list(man.bits)} bits; progressive {(man.total_bytes + mbytes + gbytes) / 1e3:.1f} kB in all "
              f"(manifest {mbytes / 1e3:.1f} kB, graph {gbytes / 1e3:.1f} kB, parts {man.total_bytes / 1e3:.1f} kB), "
              f"float16 ONNX file {f16_bytes / 1e3:.1f} kB")
        rows, ratios = [], []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
            try:
                for rate in rates:
                    with ServerThread(root, rate_limit=rate * 1e6 / 8, rtt=args.rtt_ms / 1000) as srv:
                        page = browser.new_page(viewport={"width": 1280, "height": 900})
                        page.goto(srv.url + "?package=model")
                        page.wait_for_function("window.cuekit && window.cuekit.ready && window.cuekit.packages.length",
                                               timeout=TIMEOUT_MS)
                        page.locator(".samples button").nth(args.sample).click()
                        page.wait_for_function("window.cuekit.imageLabel", timeout=TIMEOUT_MS)
                        base_url = srv.url + "baseline/model-f16.onnx"
                        progressive_run(page)  # warm-up: compiles the runtime's code paths for both
                        baseline_run(page, base_url)
                        prog, base = [], []
                        for _ in range(args.repeats):
                            prog.append(progressive_run(page))
                            base.append(baseline_run(page, base_url))
                        med = {k: statistics.median(r[k] for r in prog) for k in ("first_s", "settled_s", "final_s")}
                        tb = statistics.median(r["time_s"] for r in base)
                        same = all(r["final_top"] == b["top"] for r, b in zip(prog, base))
                        rows.append([f"{rate:g}", f"{med['first_s']:.3f} s ({prog[0]['first_bits']} bits)",
                                     f"{med['settled_s']:.3f} s ({prog[0]['settled_bits']} bits)",
                                     f"{med['final_s']:.3f} s", f"{tb:.3f} s", f"{tb / med['first_s']:.2f}x",
                                     f"{tb / med['final_s']:.2f}x", "yes" if same else "NO"])
                        ratios.append(tb / med["first_s"])
                        if args.screenshot and rate == rates[-1]:
                            progressive_run(page)
                            Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
                            page.screenshot(path=args.screenshot, full_page=True)
                            print(f"screenshot -> {args.screenshot}")
                        page.close()
            finally:
                browser.close()
    cols = ["Mbit/s", "first prediction", "final class from", "final stage", "float16 ONNX", "ratio first",
            "ratio final", "same class"]
    print(format_table(cols, rows))
    for rate, r in zip(rates, ratios):
        print(f"ratio at {rate:g} Mbit/s: float16 ONNX time / progressive first-prediction time = {r:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
