"""The browser client of progressive transmission, served by `cuekit transmit serve`.

`GET /` from a browser (an `Accept` header naming text/html) answers the page; other clients still get
the JSON list of packages there. The page's own files live under `/_cuekit/`: the page's scripts
(this folder), the sample images (`samples/`), `status.json` (whether ONNX Runtime Web is installed)
and ONNX Runtime Web itself (`/_cuekit/ort/`), served from the npm package installed by `npm ci`
(`node_modules/onnxruntime-web/dist`), never from a CDN. Without it the server still runs and the
page says how to install it. The page's files are not rate-limited or delayed by `--rate-mbit` /
`--rtt-ms`, which simulate the link the *model* comes over.

Where ONNX Runtime Web is looked for: `$CUEKIT_ORT_WEB_DIR` (a `dist` folder) when set, else
`node_modules/onnxruntime-web/dist` in the cuekit checkout (editable install) or the current folder.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from aiohttp import web

__all__ = ["ORT_ENV", "PREFIX", "WEB_DIR", "add_page_routes", "find_ort_dist", "install_hint", "page_response",
           "wants_page"]

WEB_DIR = Path(__file__).resolve().parent
PREFIX = "/_cuekit"
ORT_ENV = "CUEKIT_ORT_WEB_DIR"
ORT_PACKAGE = "onnxruntime-web"
PAGE_FILES = frozenset({"index.html", "app.js", "worker.js", "decode.js", "crypto.js", "preprocess.js", "style.css"})
_ORT_FILE = re.compile(r"^ort[\w.-]*\.(?:mjs|js|wasm)$")
_SAMPLE_FILE = re.compile(r"^[\w-]+\.(?:png|jpg|jpeg)$")
_TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
          ".wasm": "application/wasm", ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
          ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".json": "application/json"}
ORT_DIR_KEY = web.AppKey("cuekit_transmit_ort_dir", object)  # Path or None


def _checkout_root() -> Path:
    return WEB_DIR.parents[3]  # src/cuekit/transmit/web -> the checkout (editable install)


def find_ort_dist() -> Path | None:
    """The installed ONNX Runtime Web `dist` folder, or None (see the module docstring for where it looks)."""
    env = os.environ.get(ORT_ENV)
    candidates = [Path(env)] if env else [_checkout_root() / "node_modules" / ORT_PACKAGE / "dist",
                                          Path.cwd() / "node_modules" / ORT_PACKAGE / "dist"]
    for d in candidates:
        if (d / "ort.wasm.min.mjs").is_file() and (d / "ort-wasm-simd-threaded.wasm").is_file():
            return d.resolve()
    return None


def ort_version(dist: Path | None) -> str | None:
    """The installed package's version (from its package.json), or None."""
    if dist is None:
        return None
    try:
        return str(json.loads((dist.parent / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def install_hint() -> str:
    """What to run to install ONNX Runtime Web (shown on the page and by `transmit serve`)."""
    if (_checkout_root() / "package-lock.json").is_file():
        where = f"in {_checkout_root()}"
    else:
        where = "in the cuekit source checkout (where package-lock.json is)"
    return (f"Run `npm ci` {where} (or `make test`, which runs it) and reload the page; or point "
            f"{ORT_ENV} at an installed onnxruntime-web/dist folder before starting the server.")


def wants_page(request: web.Request) -> bool:
    """Whether a request for `/` comes from a browser navigating (Accept names text/html)."""
    return request.method == "GET" and "text/html" in request.headers.get("Accept", "")


def _file_response(path: Path) -> web.FileResponse:
    ctype = _TYPES.get(path.suffix.lower(), "application/octet-stream")
    return web.FileResponse(path, headers={"Content-Type": ctype, "Cache-Control": "no-cache",
                                           "X-Content-Type-Options": "nosniff"})


def page_response() -> web.FileResponse:
    """The page itself."""
    return _file_response(WEB_DIR / "index.html")


def _samples() -> list[dict]:
    try:
        items = json.loads((WEB_DIR / "samples" / "samples.json").read_text())
    except (OSError, ValueError):
        return []
    return [s for s in items if isinstance(s, dict) and _SAMPLE_FILE.match(str(s.get("file", "")))
            and (WEB_DIR / "samples" / s["file"]).is_file()]


async def _asset(request: web.Request) -> web.StreamResponse:
    path = request.match_info.get("path", "")
    if path in ("", "index.html"):
        return page_response()
    if path == "status.json":
        dist = request.app[ORT_DIR_KEY]
        return web.json_response({"ort": dist is not None, "ort_version": ort_version(dist),
                                  "hint": None if dist is not None else install_hint(), "samples": _samples()},
                                 headers={"Cache-Control": "no-cache"})
    if path in PAGE_FILES:
        return _file_response(WEB_DIR / path)
    folder, _, name = path.partition("/")
    if folder == "samples" and _SAMPLE_FILE.match(name) and (WEB_DIR / "samples" / name).is_file():
        return _file_response(WEB_DIR / "samples" / name)
    if folder == "ort" and _ORT_FILE.match(name):
        dist = request.app[ORT_DIR_KEY]
        if dist is None:
            raise web.HTTPNotFound(text=f"ONNX Runtime Web is not installed. {install_hint()}\n")
        if (dist / name).is_file():
            return _file_response(dist / name)
    raise web.HTTPNotFound(text="no such page file\n")


def add_page_routes(app: web.Application) -> None:
    """Serve the page's files under /_cuekit/ (call before the catch-all package route)."""
    app[ORT_DIR_KEY] = find_ort_dist()
    app.router.add_get(PREFIX + "/{path:.*}", _asset)
