// The page's main thread: lists the packages, shows progress, predictions and the chart. All downloading,
// checking, decoding and inference happen in worker.js. `window.cuekit` exposes the page's state (stages,
// errors) for tests and benchmarks; with ?debug=1 the worker also sends every stage's decoded weights.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const debug = params.get("debug") === "1";

const state = {
  status: "starting", ready: false, ort: false, packages: [], stages: [], errors: [], messages: [],
  weights: {}, manifest: null, predictions: [], job: 0, baselineResolve: null,
};
window.cuekit = state;

const fmtBytes = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB` : `${n} B`);
const fmtMs = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`);

function setMessage(text, kind) {
  const el = $("message");
  el.textContent = text;
  el.className = "message" + (kind ? " " + kind : "");
  state.messages.push({ text, kind });
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "style") e.style.cssText = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// ---- worker ----
const worker = new Worker("/_cuekit/worker.js", { type: "module" });
worker.onerror = (e) => {
  setMessage(`The page's worker failed to start: ${e.message || e}`, "error");
  state.status = "error";
};

worker.onmessage = (ev) => {
  const m = ev.data;
  if (m.id !== undefined && m.id !== 0 && m.id !== state.job && m.type !== "ready" && m.type !== "baseline-done") return;
  switch (m.type) {
    case "ready": onReady(m); break;
    case "manifest": onManifest(m); break;
    case "progress": onProgress(m); break;
    case "debug-weights": state.weights[m.stage] = m.tensors; break;
    case "stage": onStage(m); break;
    case "prediction": onPrediction(m); break;
    case "done": onDone(m); break;
    case "error": onError(m); break;
    case "baseline-done": if (state.baselineResolve) { state.baselineResolve(m); state.baselineResolve = null; } break;
    default: break;
  }
};

let statusInfo = {};

async function start() {
  try {
    statusInfo = await (await fetch("/_cuekit/status.json", { cache: "no-store" })).json();
  } catch (e) {
    statusInfo = { ort: false, hint: "the server did not answer /_cuekit/status.json" };
  }
  if (!statusInfo.ort) {
    const n = $("notice");
    n.hidden = false;
    n.innerHTML = "";
    n.append(el("strong", {}, "ONNX Runtime Web is not installed on this server, so the page can download and decode "
      + "models but not run them. "), el("span", {}, statusInfo.hint || "Run `npm ci` in the cuekit checkout."));
    worker.postMessage({ type: "init", ortBase: null });
  } else {
    $("runtime").textContent = `ONNX Runtime Web ${statusInfo.ort_version || ""} (WASM).`;
    worker.postMessage({ type: "init", ortBase: new URL("/_cuekit/ort/", location.href).href });
  }
  loadSamples(statusInfo.samples || []);
  await listPackages();
}

function onReady(m) {
  state.ready = true;
  state.ort = m.ort;
  if (statusInfo.ort && !m.ort) {
    const n = $("notice");
    n.hidden = false;
    n.textContent = `ONNX Runtime Web failed to load in the worker: ${m.ortError}`;
  }
  state.status = "idle";
  $("load").disabled = !state.packages.length;
  if (params.get("package") !== null && params.get("autoload") === "1") startLoad();
}

async function listPackages() {
  const sel = $("package");
  try {
    const resp = await fetch("/", { headers: { Accept: "application/json" }, cache: "no-store" });
    const body = await resp.json();
    state.packages = body.packages || [];
  } catch (e) {
    state.packages = [];
    setMessage(`Cannot list the packages: ${e.message}`, "error");
  }
  sel.innerHTML = "";
  if (!state.packages.length) {
    sel.append(el("option", { value: "" }, "(no packages: run cuekit transmit pack CKPT --out DIR/NAME)"));
  }
  for (const p of state.packages) sel.append(el("option", { value: p.url }, p.name));
  const want = params.get("package");
  if (want !== null) {
    const hit = state.packages.find((p) => p.name === want || p.url === want);
    if (hit) sel.value = hit.url;
  }
  $("load").disabled = !state.ready || !state.packages.length;
}

// ---- images ----
let currentImage = null;

function loadSamples(samples) {
  const box = $("samples");
  box.innerHTML = "";
  samples.forEach((s, i) => {
    const b = el("button", { type: "button", title: s.label, "data-file": s.file }, el("img", { src: `/_cuekit/samples/${s.file}`, alt: s.label }));
    b.onclick = () => chooseSample(s, b);
    box.append(b);
    if (i === 0) chooseSample(s, b);
  });
}

async function chooseSample(s, button) {
  document.querySelectorAll(".samples button").forEach((b) => b.classList.toggle("sel", b === button));
  const blob = await (await fetch(`/_cuekit/samples/${s.file}`)).blob();
  setImage(blob, `sample: ${s.label}`);
}

async function setImage(blob, label) {
  currentImage = { blob, label };
  try {
    const bmp = await createImageBitmap(blob);
    const c = $("preview");
    const ctx = c.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.clearRect(0, 0, c.width, c.height);
    const k = Math.min(c.width / bmp.width, c.height / bmp.height);
    ctx.drawImage(bmp, (c.width - bmp.width * k) / 2, (c.height - bmp.height * k) / 2, bmp.width * k, bmp.height * k);
  } catch (e) {
    setMessage(`Cannot read that image: ${e.message}`, "error");
    return;
  }
  $("imagelabel").textContent = label;
  state.imageLabel = label;
  worker.postMessage({ type: "image", blob, label });
}

$("file").onchange = (e) => {
  const f = e.target.files && e.target.files[0];
  if (f) {
    document.querySelectorAll(".samples button").forEach((b) => b.classList.remove("sel"));
    setImage(f, f.name);
  }
};
const drop = $("drop");
drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const f = e.dataTransfer.files && e.dataTransfer.files[0];
  if (f) {
    document.querySelectorAll(".samples button").forEach((b) => b.classList.remove("sel"));
    setImage(f, f.name);
  }
};

// ---- download ----
let partBars = [];
let totalBytes = 0;
let manifestInfo = null;

function startLoad() {
  const url = $("package").value;
  if (!url) return;
  state.job += 1;
  state.stages = [];
  state.errors = [];
  state.weights = {};
  state.manifest = null;
  state.status = "loading";
  state.t0 = performance.now();
  manifestInfo = null;
  $("parts").innerHTML = "";
  $("stages").tBodies[0].innerHTML = "";
  $("chart").innerHTML = "";
  setBar($("wholebar").parentElement, 0, "starting…");
  $("load").disabled = true;
  $("stop").disabled = false;
  setMessage("Downloading the manifest…");
  worker.postMessage({ type: "load", id: state.job, url: new URL(url, location.href).href, publicKey: $("pubkey").value.trim(), debug });
}

$("load").onclick = startLoad;
$("stop").onclick = () => {
  worker.postMessage({ type: "cancel" });
  state.job += 1;
  state.status = "stopped";
  $("stop").disabled = true;
  $("load").disabled = false;
  setMessage("Stopped.");
};

function setBar(bar, frac, text, cls) {
  bar.querySelector(".fill").style.width = `${Math.max(0, Math.min(1, frac)) * 100}%`;
  bar.querySelector("span").textContent = text;
  bar.classList.remove("done", "failed");
  if (cls) bar.classList.add(cls);
}

function onManifest(m) {
  manifestInfo = m;
  state.manifest = m;
  totalBytes = m.totalBytes;
  const box = $("parts");
  box.innerHTML = "";
  partBars = [];
  const rows = [];
  if (m.graph && m.ort) rows.push(["graph", `ONNX graph · ${fmtBytes(m.graph.bytes)}`]);
  m.parts.forEach((p, s) => rows.push([`part${s}`, `part ${s} · ${m.stageBits ? m.stageBits[s] : "?"} bits · ${fmtBytes(p.bytes)}`]));
  for (const [key, label] of rows) {
    const bar = el("div", { class: "bar", "data-key": key }, el("div", { class: "fill" }), el("span", {}, ""));
    box.append(el("span", {}, label), bar);
    partBars[key] = bar;
  }
  const sig = m.signed ? "signature verified · " : "";
  setMessage(`${sig}${m.name || "model"}: ${m.parts.length} parts, ${fmtBytes(m.totalBytes)} in all`
    + (m.graph ? "" : " (the package has no ONNX graph: decoding only)"), m.signed ? "ok" : "");
  setBar($("wholebar").parentElement, m.manifestBytes / totalBytes, `${fmtBytes(m.manifestBytes)} of ${fmtBytes(totalBytes)}`);
}

function onProgress(m) {
  if (!manifestInfo) return;
  const key = m.what === "graph" ? "graph" : m.what === "part" ? `part${m.index}` : null;
  if (key && partBars[key]) setBar(partBars[key], m.total ? m.received / m.total : 0, `${fmtBytes(m.received)} / ${fmtBytes(m.total)}`);
  if (m.bytesSoFar !== undefined) {
    setBar($("wholebar").parentElement, m.bytesSoFar / totalBytes, `${fmtBytes(m.bytesSoFar)} of ${fmtBytes(totalBytes)} · ${fmtMs(performance.now() - state.t0)}`);
  }
}

function top5Cell(pred) {
  if (!pred) return el("span", { class: "muted" }, state.ort ? "(no image)" : "(no ONNX Runtime: not run)");
  const g = el("div", { class: "top5" });
  pred.top.forEach((t, i) => {
    g.append(el("span", { class: i === 0 ? "first" : "" }, t.name),
      el("div", { class: "p" }, el("div", { style: `width:${(t.prob * 100).toFixed(1)}%` })),
      el("span", { class: "num" }, `${(t.prob * 100).toFixed(2)}%`));
  });
  return g;
}

function onStage(m) {
  const rec = { index: m.index, bits: m.bits, partBytes: m.partBytes, bytesReceived: m.bytesReceived, timeMs: m.timeMs,
    decodeMs: m.decodeMs, image: m.image, prediction: m.prediction };
  state.stages.push(rec);
  const bar = partBars[`part${m.index}`];
  if (bar) setBar(bar, 1, `${fmtBytes(m.partBytes)} · checked · decoded`, "done");
  if (partBars.graph) setBar(partBars.graph, 1, "checked · loaded", "done");
  setBar($("wholebar").parentElement, m.bytesReceived / totalBytes, `${fmtBytes(m.bytesReceived)} of ${fmtBytes(totalBytes)} · ${fmtMs(m.timeMs)}`);
  const tr = el("tr", { "data-stage": m.index },
    el("td", { class: "num" }, `${m.index + 1}`), el("td", { class: "num" }, `${m.bits}`),
    el("td", { class: "num" }, fmtBytes(m.bytesReceived)), el("td", { class: "num" }, fmtMs(m.timeMs)),
    el("td", { class: "img" }, m.image || ""), el("td", {}, top5Cell(m.prediction)));
  $("stages").tBodies[0].append(tr);
  drawChart();
}

function onPrediction(m) {
  state.predictions.push(m);
  if (!m.prediction || m.stage < 0) return;
  const tr = document.querySelector(`#stages tr[data-stage="${m.stage}"]`);
  if (tr) {
    tr.lastChild.innerHTML = "";
    tr.lastChild.append(top5Cell(m.prediction));
    tr.querySelector("td.img").textContent = m.image || "";
  }
  const rec = state.stages.find((r) => r.index === m.stage);
  if (rec) {
    rec.prediction = m.prediction;
    rec.image = m.image;
  }
  drawChart();
}

function onDone(m) {
  state.status = "done";
  state.doneMs = m.timeMs;
  $("load").disabled = false;
  $("stop").disabled = true;
  setBar($("wholebar").parentElement, 1, `${fmtBytes(m.bytesReceived)} · complete · ${fmtMs(m.timeMs)}`, "done");
  const last = state.stages[state.stages.length - 1];
  const top = last && last.prediction ? ` Final prediction: ${last.prediction.top[0].name} (${(last.prediction.top[0].prob * 100).toFixed(1)}%).` : "";
  setMessage(`All ${state.stages.length} stages received, checked and decoded in ${fmtMs(m.timeMs)}.${top}`, "ok");
}

function onError(m) {
  state.errors.push(m);
  state.status = "error";
  $("load").disabled = false;
  $("stop").disabled = true;
  const kept = m.stagesDone > 0 ? ` The model stays at stage ${m.stagesDone}.` : "";
  const title = m.kind === "signature" ? "Signature refused: " : m.kind === "integrity" ? "Refused: " : "Error: ";
  setMessage(title + m.message + kept, "error");
  const failing = m.kind === "integrity" ? `part${m.stagesDone}` : null;
  if (failing && partBars[failing]) setBar(partBars[failing], 1, "refused", "failed");
  setBar($("wholebar").parentElement, parseFloat($("wholebar").style.width) / 100 || 0, "stopped", "failed");
}

// confidence (top-1 probability) against bytes received
function drawChart() {
  const svg = $("chart");
  const W = 460, H = 200, L = 44, R = 30, T = 12, B = 34;
  const pts = state.stages.filter((r) => r.prediction).map((r) => [r.bytesReceived, r.prediction.top[0].prob, r.prediction.top[0].name, r.bits]);
  const xmax = Math.max(totalBytes || 1, ...pts.map((p) => p[0]));
  const x = (v) => L + (v / xmax) * (W - L - R);
  const y = (p) => T + (1 - p) * (H - T - B);
  const parts = [];
  for (const p of [0, 0.25, 0.5, 0.75, 1]) {
    parts.push(`<line x1="${L}" x2="${W - R}" y1="${y(p)}" y2="${y(p)}" stroke="#e5e7eb"/>`,
      `<text x="${L - 6}" y="${y(p) + 4}" font-size="10" text-anchor="end" fill="#6b7280">${p.toFixed(2)}</text>`);
  }
  for (let i = 0; i <= 4; i++) {
    const v = (xmax * i) / 4;
    parts.push(`<text x="${x(v)}" y="${H - B + 14}" font-size="10" text-anchor="middle" fill="#6b7280">${fmtBytes(Math.round(v))}</text>`);
  }
  parts.push(`<text x="${(L + W - R) / 2}" y="${H - 4}" font-size="11" text-anchor="middle" fill="#374151">bytes received</text>`,
    `<text x="12" y="${(T + H - B) / 2}" font-size="11" text-anchor="middle" fill="#374151" transform="rotate(-90 12 ${(T + H - B) / 2})">top-1 probability</text>`);
  if (pts.length) {
    parts.push(`<polyline fill="none" stroke="#2563eb" stroke-width="2" points="${pts.map((p) => `${x(p[0])},${y(p[1])}`).join(" ")}"/>`);
    for (const p of pts) {
      const label = String(p[2]).replace(/[<>&"]/g, "");
      parts.push(`<circle cx="${x(p[0])}" cy="${y(p[1])}" r="3.5" fill="#2563eb"><title>${p[3]} bits: ${label} ${(p[1] * 100).toFixed(2)}%</title></circle>`);
    }
  }
  svg.innerHTML = parts.join("");
}

// For benchmarks: download a whole self-contained ONNX file in the worker and predict the current image.
state.baseline = (url) => new Promise((resolve) => {
  state.baselineResolve = resolve;
  worker.postMessage({ type: "baseline", url: new URL(url, location.href).href });
});
state.load = startLoad;

drawChart();
start();
