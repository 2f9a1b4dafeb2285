"""The browser client of progressive transmission (src/cuekit/transmit/web/).

Two layers:
- Node (no browser): the page's decoder (decode.js) equals the Python StageDecoder bit for bit on every
  dtype and bit-width pattern, and its preprocessing (preprocess.js) equals load_image_tensor bit for bit.
- Chromium (headless, the system's /usr/bin/chromium through Playwright; never a downloaded browser): the page
  served by a live `cuekit transmit serve` downloads a package, and every stage's decoded weights equal the
  Python decoder's bit for bit, every stage's top-1 class and probabilities equal PyTorch's within 1e-4, the
  table shows each stage, a tampered part and a bad signature are refused with a visible message.
Each layer skips with its reason where its tool is missing (node; chromium, playwright, `npm ci`).
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cuekit.transmit.codec import StageDecoder
from cuekit.transmit.package import MANIFEST_NAME, load_manifest, pack_state_dict, read_package_stage

WEB = Path(__file__).resolve().parents[2] / "src" / "cuekit" / "transmit" / "web"
SAMPLES = WEB / "samples"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
PAGE_TIMEOUT_MS = 60_000


def tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous()
    return b"" if t.numel() == 0 else t.reshape(-1).view(torch.uint8).numpy().tobytes()


# ---------------------------------------------------------------------------------------------
# Node: decode.js and preprocess.js against Python, without a browser

NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed (Node 20 runs the page's modules)")

_NODE_DECODE = """
import { StageDecoder } from %(decode)s;
import { readFileSync } from "node:fs";
const dir = process.argv[1];
const m = JSON.parse(readFileSync(dir + "/manifest.json", "utf8"));
const dec = new StageDecoder(m.tensors, m.bits);
const out = [];
for (let s = 0; s < m.parts.length; s++) {
  dec.addPart(new Uint8Array(readFileSync(dir + "/" + m.parts[s].file)));
  const st = {}, f32 = {};
  for (const e of dec.entries) {
    st[e.name] = Buffer.from(dec.tensorBytes(e)).toString("base64");
    if (["float32", "float16", "bfloat16", "float64"].includes(e.dtype)) {
      const v = dec.tensorFloat32(e);
      f32[e.name] = Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("base64");
    }
  }
  out.push({ bytes: st, float32: f32 });
}
process.stdout.write(JSON.stringify(out));
"""

_NODE_PREPROCESS = """
import { imageToInput, fromRGBA } from %(pre)s;
import { readFileSync } from "node:fs";
const cases = JSON.parse(readFileSync(process.argv[1], "utf8"));
const out = cases.map((c) => {
  const rgba = Uint8Array.from(Buffer.from(c.rgba, "base64"));
  const px = fromRGBA(rgba, c.w, c.h, c.meta.in_chans);
  const x = imageToInput(px, c.w, c.h, c.meta.in_chans, c.meta);
  return Buffer.from(x.buffer).toString("base64");
});
process.stdout.write(JSON.stringify(out));
"""


def run_node(script: str, arg: str) -> object:
    res = subprocess.run([NODE, "--input-type=module", "-e", script, arg], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def mixed_state() -> dict[str, torch.Tensor]:
    """Every dtype the page decodes, values near float16/bfloat16 rounding ties, a constant, a scalar, an empty
    and an integer tensor."""
    g = torch.Generator().manual_seed(3)
    ties = 1 + (torch.arange(64, dtype=torch.float64) * 2 + 1) * 2.0 ** -11  # half-way between float16 values
    return {
        "w32": torch.randn(7, 5, 3, generator=g),
        "w16": (torch.randn(300, generator=g) * 3).half(),
        "ties16": torch.cat([ties, ties * -7.25]).half(),
        "wbf": (torch.randn(11, 13, generator=g) * 1e-3).bfloat16(),
        "w64": torch.randn(9, generator=g, dtype=torch.float64) * 1e6,
        "tiny16": (torch.rand(50, generator=g) * 1e-6).half(),  # float16 subnormals
        "const": torch.full((4, 4), 0.3125),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "count": torch.tensor(123456789012, dtype=torch.int64),
    }


@needs_node
@pytest.mark.parametrize("bits", [(2,) * 8, (3, 5, 7, 17), (1, 1, 2, 4, 8, 16), (8, 8), (32,), (6, 10)])
@pytest.mark.parametrize("fp1d", [False, True])
def test_js_decoder_equals_python_bit_for_bit(tmp_path, bits, fp1d):
    state = mixed_state()
    man = pack_state_dict(state, tmp_path, bits, full_precision_1d=fp1d)
    script = _NODE_DECODE % {"decode": json.dumps((WEB / "decode.js").as_uri())}
    got = run_node(script, str(tmp_path))
    dec = StageDecoder(man.tensors, man.bits)
    for s, part in enumerate(man.parts):
        dec.add_part((tmp_path / part.file).read_bytes())
        want = dec.tensors()
        assert set(got[s]["bytes"]) == set(want)
        for name, t in want.items():
            assert base64.b64decode(got[s]["bytes"][name]) == tensor_bytes(t), (s, name)
            if t.is_floating_point():  # what the ONNX graph is fed: the dtype's value as float32
                assert base64.b64decode(got[s]["float32"][name]) == tensor_bytes(t.float()), (s, name)


_NODE_CAST = """
import { castFloat64, halfToFloat, bfloat16ToFloat } from %(decode)s;
import { readFileSync } from "node:fs";
const b = Buffer.from(readFileSync(process.argv[1], "utf8"), "base64");
const v = new Float64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
const out = {};
for (const d of ["float32", "float16", "bfloat16"]) {
  const a = castFloat64(v, d);
  out[d] = Buffer.from(a.buffer).toString("base64");
  if (d === "float32") continue;
  const back = Float32Array.from(a, d === "float16" ? halfToFloat : bfloat16ToFloat);
  out[d + "_back"] = Buffer.from(back.buffer).toString("base64");
}
process.stdout.write(JSON.stringify(out));
"""


@needs_node
def test_js_float_casts_round_like_torch(tmp_path):
    """double -> float32 / float16 / bfloat16 exactly as torch's .to(dtype) (which rounds through float32), on
    rounding ties and values a hair beside them, subnormals, overflow, zeros and random values."""
    g = torch.Generator().manual_seed(0)
    base = torch.cat([torch.tensor([1.0, -1.0, 65504.0, 65520.0, 7e4, 1e-8, 6e-8, 3e-8, 2.98e-8, 0.0, -0.0, 3.4e38]),
                      torch.randn(2000, generator=g, dtype=torch.float64) * 10.0 ** torch.randint(-9, 5, (2000,),
                                                                                             generator=g)])
    ties = torch.cat([1 + (2 * torch.arange(40, dtype=torch.float64) + 1) * 2.0 ** -11,  # float16 ties in [1, 2)
                      1 + (2 * torch.arange(40, dtype=torch.float64) + 1) * 2.0 ** -8])   # bfloat16 ties
    nudged = torch.cat([ties, ties + 2.0 ** -40, ties - 2.0 ** -40, -ties + 2.0 ** -40, ties * 2.0 ** -20])
    v = torch.cat([base, nudged])
    (tmp_path / "v.b64").write_text(base64.b64encode(v.numpy().tobytes()).decode())
    got = run_node(_NODE_CAST % {"decode": json.dumps((WEB / "decode.js").as_uri())}, str(tmp_path / "v.b64"))
    for name, dtype in (("float32", torch.float32), ("float16", torch.float16), ("bfloat16", torch.bfloat16)):
        assert base64.b64decode(got[name]) == tensor_bytes(v.to(dtype)), name
        if dtype != torch.float32:
            assert base64.b64decode(got[name + "_back"]) == tensor_bytes(v.to(dtype).float()), name


@needs_node
def test_js_preprocessing_equals_load_image_tensor(tmp_path):
    import PIL
    from PIL import Image

    from cuekit.data.preprocess import load_image_tensor

    rng = np.random.default_rng(0)
    cases, want = [], []
    shapes = [(64, 64, 32, 1.0), (37, 53, 32, 1.14), (100, 31, 24, 1.0), (20, 20, 32, 1.0), (45, 45, 16, 1.5),
              (7, 90, 5, 1.0), (13, 108, 4, 1.0), (89, 62, 9, 1.0), (33, 93, 40, 1.0)]
    for i, (w, h, size, ratio) in enumerate(shapes):
        for chans in (3, 1):
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            arr[: h // 2, : w // 3] = 0  # flat regions and edges, not only noise
            path = tmp_path / f"img{i}.png"
            Image.fromarray(arr, "RGB").save(path)
            meta = {"img_size": size, "resize_ratio": ratio, "in_chans": chans, "mean": [0.485, 0.456, 0.406],
                    "std": [0.229, 0.224, 0.225]}
            rgba = np.concatenate([arr, np.full((h, w, 1), 255, np.uint8)], axis=2)
            cases.append({"w": w, "h": h, "meta": meta, "rgba": base64.b64encode(rgba.tobytes()).decode()})
            want.append(load_image_tensor(path, meta))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = _NODE_PREPROCESS % {"pre": json.dumps((WEB / "preprocess.js").as_uri())}
    got = run_node(script, str(tmp_path / "cases.json"))
    # preprocess.js follows Pillow 13's order of resampling passes; older Pillow may differ by one level (1/255)
    exact = int(PIL.__version__.split(".")[0]) >= 13
    for i, (g, w) in enumerate(zip(got, want)):
        x = np.frombuffer(base64.b64decode(g), dtype=np.float32).reshape(w.shape)
        if exact:
            assert np.array_equal(x, w.numpy()), (i, cases[i]["w"], cases[i]["h"], np.abs(x - w.numpy()).max())
        else:
            assert np.abs(x - w.numpy()).max() <= 1.01 / 255 / 0.224, i


# ---------------------------------------------------------------------------------------------
# The ONNX graph `transmit pack` writes (no browser)

def test_weights_as_inputs_graph_runs_like_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from cuekit.models import create_model
    from cuekit.transmit.onnx_graph import embed_weights, write_package_graph

    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=5, width=4).eval()
    state = model.state_dict()
    info = write_package_graph(state, {"name": "resnet8", "num_classes": 5, "in_chans": 3, "img_size": 16,
                                       "model_kwargs": {"width": 4}}, tmp_path)
    data = (tmp_path / "model.onnx").read_bytes()
    assert info["bytes"] == len(data) and info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["input_shape"] == [1, 3, 16, 16] and info["input"] == "images" and info["output"] == "logits"
    assert set(info["weights"]) <= set(state) and "conv1.weight" in info["weights"]
    assert not [n for n in info["weights"] if "num_batches_tracked" in n]
    assert b"stack_trace" not in data and str(Path.cwd()).encode() not in data  # debugging records stripped
    x = torch.randn(1, 3, 16, 16)
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"))
    for scale in (1.0, 0.5):  # the same session takes any weights
        w = {k: (v * scale if v.is_floating_point() else v) for k, v in state.items()}
        got = sess.run(None, {"images": x.numpy(), **{n: w[n].numpy() for n in info["weights"]}})[0]
        model.load_state_dict(w)
        with torch.no_grad():
            assert np.abs(got - model(x).numpy()).max() < 1e-5
    n = embed_weights(tmp_path / "model.onnx", state, tmp_path / "f16.onnx")
    assert n == (tmp_path / "f16.onnx").stat().st_size
    got = ort.InferenceSession(str(tmp_path / "f16.onnx")).run(None, {"images": x.numpy()})[0]
    model.load_state_dict({k: (v.half().float() if v.is_floating_point() else v) for k, v in state.items()})
    with torch.no_grad():
        assert np.abs(got - model(x).numpy()).max() < 1e-5


def test_pack_without_graph(tmp_path):
    from safetensors.torch import save_file

    from cuekit.cli import main
    from cuekit.transmit.package import pack

    save_file({"w": torch.randn(3, 3)}, str(tmp_path / "plain.safetensors"))  # no architecture named
    with pytest.warns(UserWarning, match="names no model architecture"):
        man = pack(tmp_path / "plain.safetensors", tmp_path / "p", (8, 8), onnx_graph=True)
    assert "onnx" not in man.model and not (tmp_path / "p" / "model.onnx").exists()
    _make_checkpoint(tmp_path / "model.safetensors")
    assert main(["transmit", "pack", str(tmp_path / "model.safetensors"), "--bits", "8,8", "--no-onnx",
                 "--out", str(tmp_path / "q")]) == 0
    assert "onnx" not in load_manifest(tmp_path / "q").model and not (tmp_path / "q" / "model.onnx").exists()


# ---------------------------------------------------------------------------------------------
# The server's side of the page (no browser)

def test_server_answers_page_to_browsers_and_json_to_clients(tmp_path, monkeypatch):
    import urllib.request

    from cuekit.transmit.server import ServerThread

    monkeypatch.setenv("CUEKIT_ORT_WEB_DIR", str(tmp_path / "nothing-here"))  # assets missing
    pack_state_dict({"w": torch.randn(4, 4)}, tmp_path / "pk" / "a", (4, 4))

    def get(srv, path, accept=None):
        req = urllib.request.Request(srv.url + path.lstrip("/"), headers={"Accept": accept} if accept else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers.get("Content-Type"), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type"), e.read()

    with ServerThread(tmp_path / "pk") as srv:
        status, ctype, body = get(srv, "/")
        assert status == 200 and json.loads(body)["packages"][0]["name"] == "a"
        status, ctype, body = get(srv, "/", "text/html,application/xhtml+xml,*/*;q=0.8")
        assert status == 200 and ctype.startswith("text/html") and b"/_cuekit/app.js" in body
        status, _, body = get(srv, "/_cuekit/status.json")
        info = json.loads(body)
        assert info["ort"] is False and "npm ci" in info["hint"]
        assert [s["file"] for s in info["samples"]] and all((SAMPLES / s["file"]).is_file() for s in info["samples"])
        status, ctype, _ = get(srv, "/_cuekit/worker.js")
        assert status == 200 and ctype.startswith("text/javascript")
        status, _, body = get(srv, "/_cuekit/ort/ort.wasm.min.mjs")
        assert status == 404 and b"npm ci" in body
        for bad in ("/_cuekit/../a/manifest.json", "/_cuekit/ort/../../x.js", "/_cuekit/samples/..%2fapp.js",
                    "/_cuekit/__init__.py", "/_cuekit/samples/samples.json"):
            assert get(srv, bad)[0] in (403, 404), bad
        assert get(srv, "/a/manifest.json")[0] == 200  # packages are served as before


# ---------------------------------------------------------------------------------------------
# Chromium

def _chromium() -> str | None:
    for c in CHROMIUM_CANDIDATES:
        if os.access(c, os.X_OK):
            return c
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def chromium():
    """The system Chromium, headless, through Playwright (skips with the reason where either is missing)."""
    exe = _chromium()
    if exe is None:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium gives /usr/bin/chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def browser(chromium):
    """Chromium, where ONNX Runtime Web is installed for the page (skips otherwise)."""
    from cuekit.transmit.web import find_ort_dist

    if find_ort_dist() is None:
        pytest.skip("ONNX Runtime Web is not installed: run `npm ci` in the checkout (make test does)")
    return chromium


def _make_checkpoint(path: Path) -> dict:
    """resnet8 width 16 at 32 px for dsprites shapes, with non-trivial BatchNorm statistics."""
    from cuekit.models import create_model
    from cuekit.train.checkpoint import save_weights

    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=3, width=16)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    meta = {"model": "resnet8", "num_classes": 3, "in_chans": 3, "img_size": 32,
            "class_names": ["square", "ellipse", "heart"], "mean": [0.1, 0.1, 0.1], "std": [0.3, 0.3, 0.3],
            "resize_ratio": 1.0, "data": "dsprites", "task": "shape", "config": {"model_kwargs": {"width": 16}}}
    save_weights(path, model, meta)
    return meta


def _sign(package: Path, private_key, public_hex: str) -> None:
    """manifest.sig by the contract: Ed25519 over the exact bytes of manifest.json."""
    sig = private_key.sign((package / MANIFEST_NAME).read_bytes())
    (package / "manifest.sig").write_text(json.dumps({"alg": "Ed25519", "public_key": public_hex,
                                                      "signature": sig.hex()}))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Packages (plain, tampered, signed, badly signed, unsigned) behind a live `cuekit transmit serve`."""
    ed = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519",
                             reason="cryptography is not installed")
    from cryptography.hazmat.primitives import serialization

    from cuekit.cli import main

    root = tmp_path_factory.mktemp("browser")
    meta = _make_checkpoint(root / "model.safetensors")
    pkgs = root / "pkgs"
    assert main(["transmit", "pack", str(root / "model.safetensors"), "--out", str(pkgs / "r8")]) == 0
    man = json.loads((pkgs / "r8" / MANIFEST_NAME).read_text())
    assert man["model"]["onnx"]["file"] == "model.onnx" and (pkgs / "r8" / "model.onnx").is_file()
    for name in ("tampered", "signed", "badsig", "unsigned"):
        shutil.copytree(pkgs / "r8", pkgs / name)
    part = pkgs / "tampered" / "part-3.bin"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x10
    part.write_bytes(bytes(data))
    key = ed.Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    other = ed.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    _sign(pkgs / "signed", key, pub)
    _sign(pkgs / "badsig", key, pub)
    sig = json.loads((pkgs / "badsig" / "manifest.sig").read_text())
    sig["signature"] = sig["signature"][:-2] + format(int(sig["signature"][-2:], 16) ^ 1, "02x")
    (pkgs / "badsig" / "manifest.sig").write_text(json.dumps(sig))
    (pkgs / "unsigned" / "manifest.sig").unlink(missing_ok=True)
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cuekit.cli", "transmit", "serve", str(pkgs), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        _wait_listening(port, proc)
        yield {"url": f"http://127.0.0.1:{port}/", "root": pkgs, "meta": meta, "public": pub, "other": other}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`cuekit transmit serve` exited: {proc.stdout.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("`cuekit transmit serve` did not start listening within 60 s")


def open_and_load(browser, url: str, package: str, public_key: str = "", debug: bool = True):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.requested = []  # every URL the page and its worker asked for
    page.on("request", lambda r: page.requested.append(r.url))
    page.goto(url + ("?debug=1" if debug else ""))
    page.wait_for_function("window.cuekit && window.cuekit.ready && window.cuekit.packages.length > 0",
                           timeout=PAGE_TIMEOUT_MS)
    assert page.evaluate("window.cuekit.ort"), "ONNX Runtime Web did not load in the page's worker"
    page.select_option("#package", label=package)
    if public_key:
        page.fill("#pubkey", public_key)
    page.click("#load")
    try:
        page.wait_for_function("['done', 'error'].includes(window.cuekit.status)", timeout=PAGE_TIMEOUT_MS)
    except Exception:
        state = page.evaluate("JSON.stringify({s: window.cuekit.status, m: window.cuekit.messages})")
        raise AssertionError(f"the page did not finish: {state}; page errors: {errors}") from None
    assert not errors, errors
    return page


_WEIGHTS_AS_BASE64 = """(s) => {
  const w = window.cuekit.weights[s], o = {};
  for (const k in w) {
    let b = "";
    for (let i = 0; i < w[k].length; i += 8192) b += String.fromCharCode.apply(null, w[k].subarray(i, i + 8192));
    o[k] = btoa(b);
  }
  return o;
}"""


def _python_stage_probs(root: Path, meta: dict, stages: int, x: torch.Tensor) -> list[torch.Tensor]:
    from cuekit.models import create_model

    model = create_model("resnet8", num_classes=3, width=16).eval()
    out = []
    for s in range(1, stages + 1):
        model.load_state_dict(read_package_stage(root, s))
        with torch.no_grad():
            out.append(model(x).softmax(-1)[0].double())
    return out


def test_page_weights_and_predictions_equal_python(browser, served):
    from cuekit.data.preprocess import load_image_tensor

    page = open_and_load(browser, served["url"], "r8")
    try:
        state = page.evaluate("window.cuekit.status")
        assert state == "done", page.evaluate("window.cuekit.messages")
        pkg = served["root"] / "r8"
        man = load_manifest(pkg)
        stages = page.evaluate("window.cuekit.stages.map(s => ({bits: s.bits, bytes: s.bytesReceived, "
                               "image: s.image, top: s.prediction.top, probs: s.prediction.probs, "
                               "input: s.prediction.input}))")
        assert [s["bits"] for s in stages] == man.stage_bits
        # every stage's weights, decoded in the browser's worker, equal the Python decoder's bit for bit
        for s in range(man.num_parts):
            got = page.evaluate(_WEIGHTS_AS_BASE64, s)
            want = read_package_stage(pkg, s + 1)
            assert set(got) == set(want)
            for name, t in want.items():
                assert base64.b64decode(got[name]) == tensor_bytes(t), f"stage {s + 1}, tensor {name}"
        # the input the page built from the first sample equals Python's preprocessing bit for bit
        sample = json.loads((SAMPLES / "samples.json").read_text())[0]
        assert stages[0]["image"] == f"sample: {sample['label']}"
        x = load_image_tensor(SAMPLES / sample["file"], served["meta"])
        assert np.array_equal(np.asarray(stages[0]["input"], np.float32), x.numpy().reshape(-1))
        # every stage's probabilities equal PyTorch's within 1e-4, and the same top-1 class
        want_probs = _python_stage_probs(pkg, served["meta"], man.num_parts, x)
        for s, (st, want) in enumerate(zip(stages, want_probs)):
            got = torch.tensor(st["probs"], dtype=torch.float64)
            assert (got - want).abs().max().item() < 1e-4, (s, got, want)
            assert st["top"][0]["index"] == int(want.argmax()), s
            assert [t["index"] for t in st["top"]] == want.argsort(descending=True)[:5].tolist()
        # the page shows every stage's prediction
        rows = page.locator("#stages tbody tr")
        assert rows.count() == man.num_parts
        names = ["square", "ellipse", "heart"]
        for s, st in enumerate(stages):
            text = rows.nth(s).inner_text()
            top = st["top"][0]
            assert names[top["index"]] in text and f"{top['prob'] * 100:.2f}%" in text, text
        assert "All 8 stages received" in page.inner_text("#message")
        # an image the user picks (not square, so both resampling passes run) reruns the final stage
        from PIL import Image

        rng = np.random.default_rng(1)
        pick = served["root"].parent / "picked.png"
        Image.fromarray(rng.integers(0, 256, (41, 57, 3), dtype=np.uint8), "RGB").save(pick)
        page.set_input_files("#file", str(pick))
        page.wait_for_function("window.cuekit.predictions.some(p => p.image === 'picked.png' && p.prediction)",
                               timeout=PAGE_TIMEOUT_MS)
        pred = page.evaluate("window.cuekit.predictions.find(p => p.image === 'picked.png')")
        assert pred["stage"] == man.num_parts - 1
        x2 = load_image_tensor(pick, served["meta"])
        assert np.array_equal(np.asarray(pred["prediction"]["input"], np.float32), x2.numpy().reshape(-1))
        want = _python_stage_probs(pkg, served["meta"], man.num_parts, x2)[-1]
        got = torch.tensor(pred["prediction"]["probs"], dtype=torch.float64)
        assert (got - want).abs().max().item() < 1e-4 and pred["prediction"]["top"][0]["index"] == int(want.argmax())
        last = rows.nth(man.num_parts - 1).inner_text()
        assert "picked.png" in last and f"{pred['prediction']['top'][0]['prob'] * 100:.2f}%" in last
    finally:
        page.close()


def test_tampered_part_is_refused_visibly(browser, served):
    page = open_and_load(browser, served["url"], "tampered", debug=False)
    try:
        assert page.evaluate("window.cuekit.status") == "error"
        msg = page.locator("#message")
        assert msg.is_visible() and "error" in msg.get_attribute("class")
        text = msg.inner_text()
        assert "part 3 (part-3.bin) failed its SHA-256 check" in text and "nothing was loaded from it" in text, text
        assert "stays at stage 3" in text
        assert page.evaluate("window.cuekit.stages.length") == 3  # stages 1-3 were shown, part 3 was not used
        assert page.locator("#stages tbody tr").count() == 3
    finally:
        page.close()


@pytest.mark.parametrize("package,key,expect", [
    ("signed", "public", None),
    ("signed", "other", "not the trusted key"),
    ("badsig", "public", "does not verify"),
    ("unsigned", "public", "has no manifest.sig"),
])
def test_signature_checked_before_any_part(browser, served, package, key, expect):
    page = open_and_load(browser, served["url"], package, public_key=served[key], debug=False)
    try:
        text = page.inner_text("#message")
        if expect is None:
            assert page.evaluate("window.cuekit.status") == "done", text
            assert page.evaluate("window.cuekit.manifest.signed") is True
            assert page.evaluate("window.cuekit.stages.length") == 8
            return
        assert page.evaluate("window.cuekit.status") == "error"
        assert page.locator("#message").is_visible() and "Signature refused" in text and expect in text, text
        assert page.evaluate("window.cuekit.stages.length") == 0
        assert page.evaluate("window.cuekit.manifest") is None  # refused before the manifest was used
        asked = [u for u in page.requested if f"/{package}/" in u]
        assert any(u.endswith("/manifest.json") for u in asked)
        assert not [u for u in asked if u.endswith(".bin") or u.endswith(".onnx")], asked  # nothing downloaded
    finally:
        page.close()


def test_page_without_onnx_runtime_says_how_to_install(chromium, tmp_path, monkeypatch):
    from cuekit.transmit.server import ServerThread

    monkeypatch.setenv("CUEKIT_ORT_WEB_DIR", str(tmp_path / "missing"))
    pack_state_dict({"w": torch.randn(4, 4)}, tmp_path / "pk" / "a", (4, 4))
    with ServerThread(tmp_path / "pk") as srv:
        page = chromium.new_page()
        try:
            page.goto(srv.url)
            page.wait_for_function("window.cuekit && window.cuekit.ready", timeout=PAGE_TIMEOUT_MS)
            notice = page.locator("#notice")
            assert notice.is_visible() and "npm ci" in notice.inner_text()
            page.click("#load")  # the page still downloads and decodes without the runtime
            page.wait_for_function("['done', 'error'].includes(window.cuekit.status)", timeout=PAGE_TIMEOUT_MS)
            assert page.evaluate("window.cuekit.status") == "done"
            assert page.evaluate("window.cuekit.stages.length") == 2
        finally:
            page.close()
