// The page's Web Worker: downloads a package (manifest, optional signature, ONNX graph, parts in order),
// checks each part's size and SHA-256, decodes the bit planes and runs ONNX Runtime Web (WASM backend) after
// every stage, so that the page itself stays responsive. Messages in: init, load, image, cancel, baseline.
// Messages out: ready, progress, manifest, stage, prediction, error, done, debug-weights, baseline-done.

import { StageDecoder, DecodeError, checkManifest } from "./decode.js";
import { sha256Hex, verifyManifestSignature, SignatureError } from "./crypto.js";
import { imageToInput, fromRGBA } from "./preprocess.js";

let ort = null;
let ortError = null;
let job = null; // the current download: {id, manifest, decoder, session, feeds, ...}
let image = null; // {pixels (RGBA), width, height, label}

const post = (msg, transfer) => self.postMessage(msg, transfer || []);

async function loadOrt(base) {
  if (!base) {
    ortError = "ONNX Runtime Web is not installed on the server";
    return;
  }
  try {
    ort = await import(base + "ort.wasm.min.mjs");
    ort.env.wasm.wasmPaths = base;
    ort.env.wasm.numThreads = 1; // one thread: no cross-origin isolation needed, same results every run
    ort.env.logLevel = "error";
  } catch (e) {
    ort = null;
    ortError = String(e && e.message ? e.message : e);
  }
}

// fetch with progress; returns Uint8Array. onProgress(received, total)
async function download(url, expected, onProgress, signal) {
  const resp = await fetch(url, { cache: "no-store", signal });
  if (!resp.ok) {
    const err = new Error(`${url} answered HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  const declared = Number(resp.headers.get("Content-Length") || 0);
  if (expected !== null && declared && declared !== expected) {
    throw new IntegrityError(`${url.split("/").pop()} is ${declared} bytes on the server but ${expected} in the manifest; nothing was loaded from it`);
  }
  const total = expected !== null ? expected : declared;
  const reader = resp.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    if (expected !== null && received > expected) {
      reader.cancel();
      throw new IntegrityError(`${url.split("/").pop()} sent more than the ${expected} bytes the manifest says; nothing was loaded from it`);
    }
    onProgress(received, total);
  }
  const out = new Uint8Array(received);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

class IntegrityError extends Error {
  constructor(message) {
    super(message);
    this.name = "IntegrityError";
  }
}

function softmax(logits) {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const e = Array.from(logits, (v) => Math.exp(v - max));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function classNames(manifest) {
  const meta = manifest.metadata || {};
  return meta.class_names || [];
}

function inputMeta(manifest) {
  const meta = { ...(manifest.metadata || {}) };
  const model = manifest.model || {};
  const graph = model.onnx || {};
  if (graph.input_shape) meta.img_size = graph.input_shape[2];
  else if (!meta.img_size && model.img_size) meta.img_size = model.img_size;
  meta.in_chans = graph.input_shape ? graph.input_shape[1] : Number(meta.in_chans || model.in_chans || 3);
  return meta;
}

// run the current stage's weights on the current image -> {top, probs, input, ms}
async function predict(j) {
  if (!j.session || !image) return null;
  const meta = inputMeta(j.manifest);
  const chans = meta.in_chans;
  const pixels = fromRGBA(image.pixels, image.width, image.height, chans);
  const input = imageToInput(pixels, image.width, image.height, chans, meta);
  const size = Number(meta.img_size);
  const t0 = performance.now();
  const feeds = { ...j.feeds };
  feeds[j.graph.input] = new ort.Tensor("float32", input, [1, chans, size, size]);
  const out = await j.session.run(feeds);
  const logits = out[j.graph.output].data;
  const probs = softmax(logits);
  const names = classNames(j.manifest);
  const order = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  const top = order.slice(0, 5).map(([p, i]) => ({ index: i, name: names[i] !== undefined ? String(names[i]) : String(i), prob: p }));
  return { top, probs, logits: Array.from(logits), input: j.debug ? Array.from(input) : undefined, inferMs: performance.now() - t0 };
}

function setFeeds(j) {
  const feeds = {};
  for (const name of j.graph.weights) {
    const e = j.decoder.entry(name);
    if (!e) throw new DecodeError(`the graph takes weight ${name}, which the manifest does not list`);
    feeds[name] = new ort.Tensor("float32", j.decoder.tensorFloat32(e), e.shape);
  }
  j.feeds = feeds;
}

async function load({ id, url, publicKey, debug }) {
  if (job && job.abort) job.abort.abort();
  const abort = new AbortController();
  const j = { id, abort, debug: !!debug, t0: performance.now(), bytes: 0, stages: 0 };
  job = j;
  const alive = () => job === j;
  const base = url.endsWith("/") ? url : url + "/";
  try {
    // 1. manifest (and its signature when a key is trusted), checked before any part is requested
    post({ type: "progress", id, what: "manifest", received: 0, total: 0 });
    const mbytes = await download(base + "manifest.json", null, (r, t) => post({ type: "progress", id, what: "manifest", received: r, total: t }), abort.signal);
    j.bytes += mbytes.length;
    let signed = false;
    if (publicKey && publicKey.trim()) {
      let sigText = null;
      try {
        const sbytes = await download(base + "manifest.sig", null, () => {}, abort.signal);
        j.bytes += sbytes.length;
        sigText = new TextDecoder().decode(sbytes);
      } catch (e) {
        if (e.status !== 404) throw e;
      }
      await verifyManifestSignature(mbytes, sigText, publicKey);
      signed = true;
    }
    let manifest;
    try {
      manifest = JSON.parse(new TextDecoder().decode(mbytes));
    } catch (e) {
      throw new DecodeError("manifest.json is not valid JSON");
    }
    checkManifest(manifest);
    j.manifest = manifest;
    j.decoder = new StageDecoder(manifest.tensors, manifest.bits);
    j.graph = (manifest.model || {}).onnx || null;
    const graphBytes = j.graph ? j.graph.bytes : 0;
    const totalBytes = mbytes.length + graphBytes + manifest.parts.reduce((a, p) => a + p.bytes, 0);
    post({ type: "manifest", id, signed, name: (manifest.model || {}).name || null, bits: manifest.bits,
      stageBits: manifest.stage_bits, parts: manifest.parts, graph: j.graph ? { file: j.graph.file, bytes: j.graph.bytes } : null,
      totalBytes, manifestBytes: mbytes.length, classNames: classNames(manifest), source: manifest.source || {},
      ort: !!ort, ortError });
    // 2. the ONNX graph (checked against the manifest's SHA-256) and one session for all stages
    if (j.graph && ort) {
      const gbytes = await download(base + j.graph.file, j.graph.bytes, (r, t) => post({ type: "progress", id, what: "graph", received: r, total: t, bytesSoFar: j.bytes + r }), abort.signal);
      const got = await sha256Hex(gbytes);
      if (got !== j.graph.sha256) {
        throw new IntegrityError(`the ONNX graph (${j.graph.file}) failed its SHA-256 check (expected ${j.graph.sha256.slice(0, 16)}..., got ${got.slice(0, 16)}...); nothing was loaded from it`);
      }
      j.bytes += gbytes.length;
      j.session = await ort.InferenceSession.create(gbytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
    }
    // 3. the parts, in order; part s+1 downloads while stage s is decoded and run
    const fetchPart = (s) => {
      const p = manifest.parts[s];
      return download(base + p.file, p.bytes, (r, t) => {
        if (alive()) post({ type: "progress", id, what: "part", index: s, received: r, total: t, bytesSoFar: j.bytes + r });
      }, abort.signal);
    };
    let next = fetchPart(0);
    for (let s = 0; s < manifest.parts.length; s++) {
      const p = manifest.parts[s];
      let data;
      try {
        data = await next;
      } catch (e) {
        if (e.name === "IntegrityError") throw new IntegrityError(`part ${s} (${p.file}): ${e.message}`);
        throw e;
      }
      if (!alive()) return;
      if (s + 1 < manifest.parts.length) next = fetchPart(s + 1);
      next && next.catch(() => {}); // reported when awaited
      if (data.length !== p.bytes) {
        throw new IntegrityError(`part ${s} (${p.file}) has ${data.length} bytes, the manifest says ${p.bytes}; nothing was loaded from it`);
      }
      const got = await sha256Hex(data);
      if (got !== p.sha256) {
        throw new IntegrityError(`part ${s} (${p.file}) failed its SHA-256 check (expected ${p.sha256.slice(0, 16)}..., got ${got.slice(0, 16)}...); nothing was loaded from it`);
      }
      const td = performance.now();
      j.decoder.addPart(data);
      j.bytes += data.length;
      if (j.session) setFeeds(j);
      const decodeMs = performance.now() - td;
      if (j.debug) {
        const tensors = {};
        for (const e of j.decoder.entries) tensors[e.name] = j.decoder.tensorBytes(e).slice();
        post({ type: "debug-weights", id, stage: s, tensors });
      }
      const pred = await predict(j);
      if (!alive()) return;
      j.stages = s + 1;
      post({ type: "stage", id, index: s, bits: manifest.stage_bits ? manifest.stage_bits[s] : j.decoder.knownBits,
        partBytes: p.bytes, bytesReceived: j.bytes, timeMs: performance.now() - j.t0, decodeMs,
        prediction: pred, image: image ? image.label : null });
    }
    post({ type: "done", id, bytesReceived: j.bytes, timeMs: performance.now() - j.t0 });
  } catch (e) {
    if (!alive() || (e && e.name === "AbortError")) return;
    abort.abort(); // a part still downloading ahead is not needed any more
    const kind = e instanceof SignatureError ? "signature" : e instanceof IntegrityError ? "integrity"
      : e instanceof DecodeError ? "format" : "network";
    post({ type: "error", id, kind, message: String(e && e.message ? e.message : e), stagesDone: j.stages });
  }
}

// The baseline of benchmarks/transmit_browser.py: download a whole self-contained ONNX file, open it, predict.
async function baseline({ url }) {
  const t0 = performance.now();
  try {
    const bytes = await download(url, null, () => {}, undefined);
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
    const j = { session, manifest: job && job.manifest ? job.manifest : { metadata: {} }, feeds: {},
      graph: { input: session.inputNames[0], output: session.outputNames[0] }, debug: false };
    const pred = await predict(j);
    post({ type: "baseline-done", timeMs: performance.now() - t0, bytes: bytes.length, prediction: pred });
  } catch (e) {
    post({ type: "baseline-done", error: String(e && e.message ? e.message : e) });
  }
}

async function decodeImage(blob) {
  const bmp = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const canvas = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  const data = ctx.getImageData(0, 0, bmp.width, bmp.height).data;
  return { pixels: new Uint8Array(data.buffer), width: bmp.width, height: bmp.height };
}

self.onmessage = async (ev) => {
  const msg = ev.data;
  try {
    if (msg.type === "init") {
      await loadOrt(msg.ortBase);
      post({ type: "ready", ort: !!ort, ortError });
    } else if (msg.type === "load") {
      await load(msg);
    } else if (msg.type === "cancel") {
      if (job && job.abort) job.abort.abort();
      job = null;
    } else if (msg.type === "image") {
      const dec = await decodeImage(msg.blob);
      image = { ...dec, label: msg.label };
      const j = job;
      if (j && j.session && j.decoder && j.decoder.partsDone > 0 && j.feeds) {
        const pred = await predict(j);
        post({ type: "prediction", id: j.id, stage: j.decoder.partsDone - 1, prediction: pred, image: msg.label });
      } else {
        post({ type: "prediction", id: j ? j.id : 0, stage: -1, prediction: null, image: msg.label });
      }
    } else if (msg.type === "baseline") {
      await baseline(msg);
    }
  } catch (e) {
    post({ type: "error", id: job ? job.id : 0, kind: "page", message: String(e && e.message ? e.message : e) });
  }
};
