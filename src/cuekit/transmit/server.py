"""HTTP server for progressive packages (aiohttp): many packages, many clients, Range and ETag.

Serves every file below one root folder (`GET /<package>/manifest.json`, `GET /<package>/part-3.bin`)
and a JSON list of the packages at `GET /` (to a browser, `GET /` is the page of
`cuekit.transmit.web`, whose files are under `/_cuekit/`). Paths that leave the root (`..`, symbolic links that
point outside, hidden files) are refused with 403. An optional rate limit (bytes per second per
response) imitates a slow link. Every file-system call (resolving a path, stat, listing, open, read)
runs in a worker thread, so a slow disk never stalls the event loop and the other transfers. The
server does not import torch.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import mimetypes
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import web

from cuekit.errors import UsageError
from cuekit.transmit.web import ORT_DIR_KEY, add_page_routes, install_hint, page_response, wants_page

__all__ = ["RunningServer", "ServerThread", "create_app", "find_packages", "parse_range", "serve_forever",
           "start_server"]

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
DEFAULT_CHUNK = 256 * 1024  # bytes per read (in a worker thread) and write; 64 KiB halved loopback throughput
STATS_KEY = web.AppKey("cuekit_transmit_stats", dict)
ROOT_KEY = web.AppKey("cuekit_transmit_root", Path)
RATE_KEY = web.AppKey("cuekit_transmit_rate", object)     # float bytes/s or None
CHUNK_KEY = web.AppKey("cuekit_transmit_chunk", int)
DELAY_KEY = web.AppKey("cuekit_transmit_delay", float)   # seconds added before each response (a simulated RTT)


def find_packages(root: Path) -> list[str]:
    """Package folders (holding a manifest) under root, relative names; "" for root itself."""
    names = [""] if (root / MANIFEST_NAME).is_file() else []
    try:
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return names
    names += [p.name for p in subdirs if (p / MANIFEST_NAME).is_file()]
    return names


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single HTTP byte range against a file of `size` bytes: (start, end exclusive).

    Returns None when the header is not one simple byte range (the whole file is then sent);
    raises ValueError when the range cannot be satisfied (416).
    """
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                raise ValueError("empty suffix range")
            return max(0, size - n), size
        start = int(first)
        end = size if last == "" else min(size, int(last) + 1)
    except ValueError as e:
        if "empty suffix" in str(e):
            raise
        return None
    if start < 0 or start >= size or end <= start:
        raise ValueError(f"range {header!r} not satisfiable for {size} bytes")
    return start, end


def _safe_target(root: Path, rel: str, raw_path: str) -> Path:
    """The file `rel` names below root, or HTTPForbidden when the path tries to leave root."""
    raw = urllib.parse.unquote(raw_path.split("?", 1)[0])
    for path in (rel, raw):
        segments = path.replace("\\", "/").split("/")
        if any(seg in ("..", ".") or seg.startswith(".") or "\x00" in seg for seg in segments if seg):
            raise web.HTTPForbidden(text="path refused\n")
    target = (root / rel).resolve()
    if target != root and not target.is_relative_to(root):
        raise web.HTTPForbidden(text="path refused\n")
    return target


def _record(request: web.Request, status: int, start: int, sent: int) -> None:
    stats = request.app[STATS_KEY]
    stats["requests"] += 1
    stats["bytes_sent"] += sent
    stats["recent"].append({"path": request.path, "method": request.method, "status": status,
                            "range": request.headers.get("Range"), "start": start, "bytes": sent,
                            "time": time.perf_counter()})


def _lookup(root: Path, rel: str, raw_path: str) -> tuple[str, Any]:
    """What a request names, found with blocking file-system calls (run in a worker thread):
    ("list", package names), ("dir", None), ("missing", None) or ("file", (path, stat))."""
    target = _safe_target(root, rel, raw_path)
    if target == root:
        return "list", find_packages(root)
    if target.is_dir():
        return "dir", None
    try:
        return "file", (target, target.stat())
    except OSError:
        return "missing", None


def _read_at(f: Any, offset: int, size: int) -> bytes:
    """Up to `size` bytes of open file `f` from `offset` (run in a worker thread)."""
    f.seek(offset)
    return f.read(size)


async def _handle(request: web.Request) -> web.StreamResponse:
    if request.app[DELAY_KEY] > 0:  # the request's way in and the first byte's way back
        await asyncio.sleep(request.app[DELAY_KEY])
    root: Path = request.app[ROOT_KEY]
    rel = request.match_info.get("path", "")
    loop = asyncio.get_running_loop()
    kind, found = await loop.run_in_executor(None, _lookup, root, rel, request.raw_path)
    if kind == "list":
        if wants_page(request):  # a browser: the page (cuekit.transmit.web); other clients: the JSON list
            _record(request, 200, 0, 0)
            return page_response()
        body = {"packages": [{"name": name or ".", "url": f"/{name}/" if name else "/",
                              "manifest": f"/{name}/{MANIFEST_NAME}" if name else f"/{MANIFEST_NAME}"}
                             for name in found]}
        _record(request, 200, 0, 0)
        return web.json_response(body)
    if kind == "dir":
        raise web.HTTPNotFound(text="not a file\n")
    if kind == "missing":
        raise web.HTTPNotFound(text="no such file\n")
    target, st = found
    size = st.st_size
    etag = f'"{size:x}-{st.st_mtime_ns:x}"'
    if target.name == SIGNATURE_NAME:
        ctype = "application/json"
    else:
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "no-cache", "Content-Type": ctype}
    inm = request.headers.get("If-None-Match")
    if inm is not None and etag in [t.strip() for t in inm.split(",")]:
        _record(request, 304, 0, 0)
        return web.Response(status=304, headers={"ETag": etag})
    start, end, status = 0, size, 200
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header and (if_range is None or if_range.strip() == etag):
        try:
            rng = parse_range(range_header, size)
        except ValueError:
            _record(request, 416, 0, 0)
            return web.Response(status=416, headers={"Content-Range": f"bytes */{size}", "ETag": etag})
        if rng is not None:
            start, end, status = rng[0], rng[1], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    if request.method != "HEAD":
        # Opened before the headers go out: a file that vanished since its stat is still a 404. The open file is
        # read to the end even when the package is packed again meanwhile (the ETag names this version).
        try:
            f = await loop.run_in_executor(None, open, target, "rb")
        except OSError:
            raise web.HTTPNotFound(text="no such file\n") from None
    resp = web.StreamResponse(status=status, headers=headers)
    resp.content_length = end - start
    sent = 0
    if request.method != "HEAD":
        rate = request.app[RATE_KEY]
        chunk = request.app[CHUNK_KEY] if not rate else max(1024, min(request.app[CHUNK_KEY], int(rate / 50)))
        reading: asyncio.Future | None = None  # the next chunk's read, in a worker thread while this one is sent
        offset, to_read, asked = start, end - start, 0

        def read_next() -> asyncio.Future | None:
            nonlocal offset, to_read, asked
            if to_read <= 0:
                return None
            asked = min(chunk, to_read)
            future = loop.run_in_executor(None, _read_at, f, offset, asked)
            offset += asked
            to_read -= asked
            return future

        try:
            await resp.prepare(request)
            t0 = loop.time()
            reading = read_next()
            while reading is not None:
                data = await asyncio.shield(reading)  # a cancelled handler leaves the read to finish
                complete = len(data) == asked
                reading = read_next() if complete else None  # a short read: the file shrank, stop after it
                if data:
                    await resp.write(data)
                    sent += len(data)
                if rate:
                    delay = t0 + sent / rate - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
        finally:
            _record(request, status, start, sent)
            if reading is not None:  # stopped with a read issued: close the file once that read has returned
                reading.add_done_callback(lambda fut: (fut.cancelled() or fut.exception(), f.close()))
            else:
                f.close()
    else:
        await resp.prepare(request)
        _record(request, status, start, 0)
    await resp.write_eof()
    return resp


def create_app(root: str | Path, rate_limit: float | None = None, chunk_size: int = DEFAULT_CHUNK,
               rtt: float = 0.0) -> web.Application:
    """The aiohttp application serving `root`; rate_limit in bytes per second per response (None: no limit);
    rtt: seconds every response waits before its first byte, to simulate a link's round-trip time."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise UsageError(f"cannot serve {root}: not a folder")
    if rate_limit is not None and rate_limit <= 0:
        raise UsageError(f"the rate limit must be positive, got {rate_limit}")
    if not rtt >= 0:
        raise UsageError(f"the round-trip delay must be 0 or more seconds, got {rtt}")
    app = web.Application()
    app[ROOT_KEY] = root
    app[STATS_KEY] = {"requests": 0, "bytes_sent": 0, "recent": collections.deque(maxlen=10000)}
    app[RATE_KEY] = rate_limit
    app[CHUNK_KEY] = int(chunk_size)
    app[DELAY_KEY] = float(rtt)
    add_page_routes(app)  # the browser client's files under /_cuekit/ (before the catch-all route)
    app.router.add_get("/{path:.*}", _handle)
    return app


@dataclasses.dataclass
class RunningServer:
    """A server started by `start_server` in the current event loop."""

    runner: Any
    app: web.Application
    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL, ending with '/'."""
        return f"http://{self.host}:{self.port}/"

    @property
    def stats(self) -> dict:
        """Counters and recent requests (path, range, start, bytes, status)."""
        return self.app[STATS_KEY]

    async def stop(self) -> None:
        """Close the listening socket and every connection (transfers in progress are cut)."""
        await self.runner.cleanup()


async def start_server(root: str | Path, host: str = "127.0.0.1", port: int = 0, rate_limit: float | None = None,
                       chunk_size: int = DEFAULT_CHUNK, shutdown_timeout: float = 0.5,
                       rtt: float = 0.0) -> RunningServer:
    """Start serving `root` on host:port (port 0: a free port) in the running event loop.

    shutdown_timeout: seconds `stop()` lets transfers in progress go on before cutting them; rtt: seconds
    added before every response (a simulated round trip).
    """
    app = create_app(root, rate_limit=rate_limit, chunk_size=chunk_size, rtt=rtt)
    # aiohttp reads a timeout <= 0 as "wait forever" for transfers in progress
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=max(float(shutdown_timeout), 0.001))
    await runner.setup()
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(256)
        sock.setblocking(False)
    except OSError as e:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    site = web.SockSite(runner, sock, backlog=256)
    await site.start()
    return RunningServer(runner=runner, app=app, host=host, port=sock.getsockname()[1])


class ServerThread:
    """Run the server in a background thread with its own event loop (for scripts and benchmarks).

    with ServerThread(root, rate_limit=125_000) as srv: ... srv.url ...
    """

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0, rate_limit: float | None = None,
                 chunk_size: int = DEFAULT_CHUNK, start_timeout: float = 20.0, rtt: float = 0.0):
        self.root, self.host, self.port, self.rate_limit, self.rtt = root, host, port, rate_limit, rtt
        self.chunk_size, self.start_timeout = chunk_size, start_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: RunningServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(start_server(
                self.root, self.host, self.port, self.rate_limit, self.chunk_size, rtt=self.rtt))
        except BaseException as e:  # reported to the starting thread
            self._error = e
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._server.stop())
            loop.close()

    def start(self) -> "ServerThread":
        """Start the thread and wait until the server listens."""
        self._thread = threading.Thread(target=self._run, name="cuekit-transmit-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            raise RuntimeError("the transmission server did not start in time")
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        """Stop the server and join the thread."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        """Base URL, ending with '/'."""
        assert self._server is not None
        return self._server.url

    @property
    def stats(self) -> dict:
        """The server's counters and recent requests."""
        assert self._server is not None
        return self._server.stats

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(root: str | Path, host: str = "127.0.0.1", port: int = 8000, rate_limit: float | None = None,
                  rtt: float = 0.0) -> None:
    """Serve until interrupted (Ctrl-C), printing the URL of each package."""

    async def main() -> None:
        server = await start_server(root, host, port, rate_limit, rtt=rtt)
        base = server.url
        packages = await asyncio.to_thread(find_packages, Path(root).resolve())
        limit = f", rate limit {rate_limit * 8 / 1e6:g} Mbit/s per transfer" if rate_limit else ""
        limit += f", {rtt * 1000:g} ms added round trip per request" if rtt else ""
        print(f"serving {len(packages)} package(s) from {root} at {base}{limit} (Ctrl-C to stop)", flush=True)
        for name in packages:
            print(f"  {base}{name + '/' if name else ''}", flush=True)
        if not packages:
            print("  (no manifest.json found yet; run `cuekit transmit pack CKPT --out DIR/NAME`)", flush=True)
        print(f"page: open {base} in a browser" + ("" if server.app[ORT_DIR_KEY] else
              f" (it cannot run models yet: ONNX Runtime Web is missing. {install_hint()})"), flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


def stats_json(stats: dict) -> str:
    """The stats as JSON (for debugging)."""
    return json.dumps({**stats, "recent": list(stats["recent"])})
