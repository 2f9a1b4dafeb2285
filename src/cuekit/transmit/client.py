"""Client of progressive transmission: an approximate model after each part.

`ProgressiveClient(url).stages()` is an async generator of `Stage`s (weights after 1, 2, ... parts).
With `trust=PUBKEY` the manifest must carry a valid Ed25519 signature (`manifest.sig`) by that key,
checked before any part is requested (SignatureError otherwise); a manifest that carries its own hash
(`manifest_sha256`) is checked against it. Every part is checked against the manifest's SHA-256 before
anything is decoded from it; a broken
download is resumed with an HTTP Range request (If-Range on the ETag); in overlap mode the parts
keep downloading while the caller runs inference on the stage it holds. `iter_stages(url)` is the
same as a plain (synchronous) iterator: the download runs in a background thread, so inference in
the caller's thread overlaps with it.

Async callers in overlap mode should run inference off the event loop
(`await asyncio.to_thread(model, x)`), otherwise the loop, and so the download, waits for it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import queue
import re
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator

import torch
from torch import Tensor, nn

from cuekit.errors import CheckpointError, DataError, UsageError
from cuekit.transmit.package import (
    MANIFEST_NAME,
    IntegrityError,
    Manifest,
    ProgressiveDecoder,
    check_manifest_model,
    model_from_manifest,
    parse_manifest,
)
from cuekit.transmit.signing import MAX_SIGNATURE_BYTES, SIGNATURE_NAME, TrustedKey, parse_public_key, verify_signature

__all__ = ["ProgressiveClient", "Stage", "StageIterator", "image_tensor", "iter_stages", "package_base_url",
           "retry_delays"]

MAX_MANIFEST_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass
class Stage:
    """The approximate model after `index + 1` parts."""

    index: int                        # 0-based: parts 0..index received
    num_parts: int
    bits: int                         # bits per quantised weight at this stage
    state_dict: dict[str, Tensor]     # fresh tensors, original shapes and dtypes
    model: nn.Module | None           # the model with these weights loaded (None if the package names none)
    part_bytes: int                   # bytes of parts 0..index
    bytes_received: int               # all bytes received so far (manifest and retries included)
    elapsed_s: float                  # seconds from the start of the fetch until this stage was decoded
    manifest: Manifest

    @property
    def is_last(self) -> bool:
        """True for the final stage."""
        return self.index == self.num_parts - 1


def package_base_url(url: str) -> str:
    """Normalise a package URL ('.../pkg', '.../pkg/', '.../pkg/manifest.json') to '.../pkg/'."""
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"a package URL must start with http:// or https://, got {url!r}")
    if url.endswith("/" + MANIFEST_NAME):
        return url[: -len(MANIFEST_NAME)]
    return url if url.endswith("/") else url + "/"


DEFAULT_RETRIES = 8              # retries in a row without progress before giving up
DEFAULT_RETRY_DELAY_S = 0.25     # the first back-off; it doubles after each retry without progress ...
DEFAULT_MAX_RETRY_DELAY_S = 4.0  # ... up to this: 0.25 + 0.5 + 1 + 2 + 4 x 4 = 19.75 s, longer than a server restart
DEFAULT_MAX_TOTAL_RETRIES = 50   # retries over the whole transfer (manifest and every part), progress or not

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")


def retry_delays(retries: int = DEFAULT_RETRIES, first_delay_s: float = DEFAULT_RETRY_DELAY_S,
                 max_delay_s: float = DEFAULT_MAX_RETRY_DELAY_S) -> list[float]:
    """Seconds waited before retry 1, 2, ..., `retries` in a row without progress (doubling, capped)."""
    return [min(first_delay_s * 2 ** k, max_delay_s) for k in range(max(0, retries))]


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}".rstrip(": ")


class _Retry(Exception):
    """A transient failure: try again (resuming)."""


class _Absent(DataError):
    """The server has no such file (HTTP 404 or 410)."""


class ProgressiveClient:
    """Async client for one package URL; use as `async with ProgressiveClient(url) as c:`.

    A download that fails is retried, resuming where it broke; the waits follow `retry_delays(retries,
    retry_delay_s, max_retry_delay_s)` and start again from the first after a retry that brought new bytes.
    The client gives up after `retries` retries in a row without new bytes, or after `max_total_retries`
    retries over the whole transfer. A server whose sizes (Content-Length, Content-Range) disagree with the
    manifest is an error at once, never retried.

    trust: a public key (64 hex characters, the path of a `.pub` file, or 32 bytes); the manifest is then
    accepted only with a valid signature by that key (`manifest.sig`), checked before any part is requested.
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0, retries: int = DEFAULT_RETRIES,
                 retry_delay_s: float = DEFAULT_RETRY_DELAY_S, max_retry_delay_s: float = DEFAULT_MAX_RETRY_DELAY_S,
                 max_total_retries: int = DEFAULT_MAX_TOTAL_RETRIES, chunk_size: int = 64 * 1024,
                 device: str | torch.device = "cpu", session: Any = None, trust: TrustedKey | None = None):
        self.base_url = package_base_url(url)
        self.trusted_key = parse_public_key(trust) if trust is not None else None
        self.signed_by: str | None = None        # hex of the trusted key once the manifest's signature is verified
        if retries < 0 or max_total_retries < 0 or not retry_delay_s >= 0 or not max_retry_delay_s >= 0:
            raise UsageError("retries and retry delays must be 0 or more")
        self.timeout_s, self.retries, self.max_total_retries = float(timeout_s), int(retries), int(max_total_retries)
        self.retry_delays = retry_delays(self.retries, float(retry_delay_s), float(max_retry_delay_s))
        self.chunk_size, self.device = int(chunk_size), torch.device(device)
        self._session, self._own_session = session, session is None
        self.manifest: Manifest | None = None
        self.bytes_received = 0
        self.retries_used = 0                    # over the whole transfer
        self.part_received: dict[int, int] = {}  # bytes received per part, re-downloads included
        self.timeline: list[dict] = []      # {"event", "part", "time" (perf_counter), ...}
        self.t_start: float | None = None

    # -- plumbing -------------------------------------------------------------------------------
    def _event(self, event: str, part: int | None = None, **kw: Any) -> None:
        self.timeline.append({"event": event, "part": part, "time": time.perf_counter(), **kw})

    def events(self, event: str) -> dict[int, float]:
        """{part: time} of the first `event` per part ("request", "first_byte", "arrived", "ready", "retry")."""
        out: dict[int, float] = {}
        for e in self.timeline:
            if e["event"] == event and e["part"] is not None and e["part"] not in out:
                out[e["part"]] = e["time"]
        return out

    async def _ensure_session(self) -> Any:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.timeout_s, sock_read=self.timeout_s))
        return self._session

    async def close(self) -> None:
        """Close the HTTP session (if this client opened it)."""
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> "ProgressiveClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _size_mismatch(self, url: str, part: int | None, server_bytes: int, expected: int) -> IntegrityError:
        what = f"part {part} ({url.rsplit('/', 1)[-1]})" if part is not None else url.rsplit("/", 1)[-1]
        return IntegrityError(f"{what} of {self.base_url} is {server_bytes} bytes on the server but "
                              f"{expected} in the manifest: the server's files do not match its manifest "
                              "(pack the package again, or copy all of it); nothing was loaded from it")

    def _check_sizes(self, r: Any, url: str, part: int | None, have: int, expected: int | None, limit: int) -> bool:
        """Check a response's sizes against the manifest before reading it; True to keep the bytes held.

        Raises IntegrityError (a DataError) when the server states a size that disagrees with the manifest,
        DataError for an oversized manifest, and _Retry for a transient refusal.
        """
        if r.status == 200:
            length = None if r.headers.get("Content-Encoding", "identity") != "identity" else r.content_length
            if length is not None:
                if expected is not None and length != expected:
                    raise self._size_mismatch(url, part, length, expected)
                if expected is None and length > limit:
                    raise DataError(f"{url} is larger than {limit} bytes")
            return False
        if r.status == 206:
            m = _CONTENT_RANGE.fullmatch(r.headers.get("Content-Range", "").strip())
            total = int(m.group(3)) if m and m.group(3) != "*" else None
            if total is not None and expected is not None and total != expected:
                raise self._size_mismatch(url, part, total, expected)
            if total is not None and expected is None and total > limit:
                raise DataError(f"{url} is larger than {limit} bytes")
            if m is None or int(m.group(1)) != have:
                raise _Retry(f"unexpected Content-Range {r.headers.get('Content-Range')!r}")
            return True
        if r.status in (404, 410):
            raise _Absent(f"GET {url}: HTTP {r.status} {r.reason}")
        if r.status in (400, 401, 403, 405):
            raise DataError(f"GET {url}: HTTP {r.status} {r.reason}")
        if r.status == 416:  # the bytes we hold reach the end of the file the server has
            m = _UNSATISFIED_RANGE.fullmatch(r.headers.get("Content-Range", "").strip())
            if m is not None and expected is not None and int(m.group(1)) != expected:
                raise self._size_mismatch(url, part, int(m.group(1)), expected)
            raise _Retry(f"HTTP 416 {r.reason} for bytes {have}-", "restart")
        raise _Retry(f"HTTP {r.status} {r.reason}")

    async def _get(self, url: str, expected: int | None, part: int | None, limit: int) -> bytes:
        """GET url into memory, resuming with Range after a broken connection (see the class docstring)."""
        import aiohttp

        session = await self._ensure_session()
        buf = bytearray()
        etag: str | None = None
        failures = 0     # retries in a row without new bytes
        most_held = 0    # the most bytes of this file held at once: re-downloading bytes already seen is no progress
        first_byte = False
        self._event("request", part)
        while True:
            headers = {}
            if buf:
                headers["Range"] = f"bytes={len(buf)}-"
                if etag:
                    headers["If-Range"] = etag
            try:
                async with session.get(url, headers=headers) as r:
                    if not self._check_sizes(r, url, part, len(buf), expected, limit):
                        buf.clear()
                    etag = r.headers.get("ETag") or etag
                    async for chunk in r.content.iter_chunked(self.chunk_size):
                        if not first_byte:
                            first_byte = True
                            self._event("first_byte", part)
                        buf += chunk
                        self.bytes_received += len(chunk)
                        if part is not None:
                            self.part_received[part] = self.part_received.get(part, 0) + len(chunk)
                        if len(buf) > (expected if expected is not None else limit):
                            if expected is not None:
                                raise IntegrityError(f"{url} is longer than the {expected} bytes the manifest says; "
                                                     "nothing was loaded from it")
                            raise DataError(f"{url} is larger than {limit} bytes")
                    framed = "chunked" in r.headers.get("Transfer-Encoding", "").lower()
                if expected is None or len(buf) == expected:
                    return bytes(buf)
                if framed:  # a chunked body that ended cleanly is the whole file the server has
                    raise self._size_mismatch(url, part, len(buf), expected)
                raise _Retry(f"connection ended after {len(buf)} of {expected} bytes")
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError, _Retry) as e:
                if isinstance(e, _Retry) and e.args[1:] == ("restart",):
                    buf.clear()
                failures = 0 if len(buf) > most_held else failures + 1
                most_held = max(most_held, len(buf))
                self.retries_used += 1
                if failures > self.retries:
                    raise DataError(f"download of {url} failed: {failures} attempts in a row brought no new bytes "
                                    f"(waited {sum(self.retry_delays):.1f} s in all); last error: {_one_line(e)}") \
                        from None
                if self.retries_used > self.max_total_retries:
                    raise DataError(f"download of {self.base_url} gave up after {self.max_total_retries} retries over "
                                    f"the whole transfer (the connection keeps breaking); last error at {url}: "
                                    f"{_one_line(e)}") from None
                self._event("retry", part, have=len(buf), error=_one_line(e))
                if self.retry_delays:
                    await asyncio.sleep(self.retry_delays[max(failures, 1) - 1])

    # -- public API -----------------------------------------------------------------------------
    async def fetch_manifest(self) -> Manifest:
        """Download and parse the manifest (once)."""
        if self.manifest is None:
            if self.t_start is None:
                self.t_start = time.perf_counter()
            url = self.base_url + MANIFEST_NAME
            raw = await self._get(url, None, None, MAX_MANIFEST_BYTES)
            if self.trusted_key is not None:
                try:
                    sig = await self._get(self.base_url + SIGNATURE_NAME, None, None, MAX_SIGNATURE_BYTES)
                except _Absent:
                    sig = None
                self.signed_by = verify_signature(raw, sig, self.trusted_key, url)
                self._event("verified", None, public_key=self.signed_by)
            self.manifest = parse_manifest(raw, url)
        return self.manifest

    async def download_part(self, index: int) -> bytes:
        """The bytes of part `index`, size and SHA-256 verified (IntegrityError otherwise)."""
        manifest = await self.fetch_manifest()
        info = manifest.parts[index]
        data = await self._get(self.base_url + info.file, info.bytes, index, info.bytes)
        ProgressiveDecoder(manifest).verify(index, data)
        self._event("arrived", index, bytes=len(data))
        return data

    async def download_parts(self) -> list[bytes]:
        """Every part, verified, one after another."""
        manifest = await self.fetch_manifest()
        return [await self.download_part(s) for s in range(manifest.num_parts)]

    async def stage_states(self, overlap: bool = True,
                           max_parts: int | None = None) -> AsyncIterator[tuple[int, dict[str, Tensor], float]]:
        """(part index, state dict, time ready) after each part, without building a model.

        overlap=True: a background task downloads the parts one after another without waiting
        for the caller; overlap=False: part s+1 is requested only when the caller asks for it.
        """
        if self.t_start is None:
            self.t_start = time.perf_counter()
        manifest = await self.fetch_manifest()
        n = manifest.num_parts if max_parts is None else max(1, min(int(max_parts), manifest.num_parts))
        decoder = ProgressiveDecoder(manifest)

        def merge(s: int, data: bytes) -> dict[str, Tensor]:
            decoder.add_part(s, data)
            return decoder.state_dict()

        if not overlap:
            for s in range(n):
                data = await self.download_part(s)
                state = await asyncio.to_thread(merge, s, data)
                self._event("ready", s)
                yield s, state, time.perf_counter()
            return
        parts: asyncio.Queue = asyncio.Queue()

        async def producer() -> None:
            try:
                for s in range(n):
                    await parts.put((s, await self.download_part(s)))
            except BaseException as e:  # handed to the consumer, which raises it
                await parts.put((-1, e))

        task = asyncio.create_task(producer())
        try:
            for s in range(n):
                idx, data = await parts.get()
                if idx < 0:
                    raise data
                state = await asyncio.to_thread(merge, idx, data)
                self._event("ready", idx)
                yield idx, state, time.perf_counter()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _make_stage(self, s: int, state: dict[str, Tensor], t_ready: float, model: nn.Module | None) -> Stage:
        manifest = self.manifest
        assert manifest is not None and self.t_start is not None
        if model is not None:
            try:
                with torch.no_grad():
                    model.load_state_dict(state)
            except RuntimeError as e:
                lines = str(e).strip().splitlines()
                raise CheckpointError(f"the weights of {self.base_url} do not fit the model: "
                                      f"{' '.join(x.strip() for x in lines[:3])}") from None
        return Stage(index=s, num_parts=manifest.num_parts, bits=manifest.stage_bits[s], state_dict=state,
                     model=model, part_bytes=sum(p.bytes for p in manifest.parts[: s + 1]),
                     bytes_received=self.bytes_received, elapsed_s=t_ready - self.t_start, manifest=manifest)

    async def stages(self, overlap: bool = True, model: nn.Module | None = None, build_model: bool = True,
                     max_parts: int | None = None) -> AsyncIterator[Stage]:
        """Yield a `Stage` after each part; its weights are loaded into `model` (or into one model
        built from the manifest when build_model; the same model object is updated stage by stage).
        The manifest's model arguments are checked before any part is requested."""
        if model is None and build_model:
            check_manifest_model(await self.fetch_manifest())
        async for s, state, t_ready in self.stage_states(overlap, max_parts):
            if model is None and build_model:
                model = model_from_manifest(self.manifest, self.device)
            yield self._make_stage(s, state, t_ready, model)


_DONE = object()


class StageIterator:
    """Synchronous iterator over stages: the download runs in a background thread's event loop.

    Use as a context manager (`with iter_stages(url) as it: for stage in it: ...`) so the thread
    is always stopped. `client.timeline` holds the download events.
    """

    def __init__(self, url: str, *, overlap: bool = True, model: nn.Module | None = None, build_model: bool = True,
                 max_parts: int | None = None, wait_timeout_s: float = 300.0, **client_kwargs: Any):
        self.client = ProgressiveClient(url, **client_kwargs)
        self.overlap, self.model, self.build_model, self.max_parts = overlap, model, build_model, max_parts
        self.wait_timeout_s = wait_timeout_s
        self._items: queue.Queue = queue.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._want_next: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cuekit-transmit-client", daemon=True)
        self._yielded = 0
        self._finished = False

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop

        async def drive() -> None:
            self._want_next = asyncio.Event()
            self._started.set()
            try:
                async with self.client:
                    if self.model is None and self.build_model:  # refuse unknown model arguments before any part
                        check_manifest_model(await self.client.fetch_manifest())
                    async for item in self.client.stage_states(self.overlap, self.max_parts):
                        self._items.put(item)
                        if not self.overlap:
                            await self._want_next.wait()
                            self._want_next.clear()
            except asyncio.CancelledError:
                pass
            except BaseException as e:  # handed to the consumer thread
                self._items.put(e)
            finally:
                self._items.put(_DONE)

        try:
            self._task = loop.create_task(drive())
            loop.run_until_complete(self._task)
        finally:
            self._started.set()
            loop.close()

    def __iter__(self) -> "StageIterator":
        if self._thread.ident is None and not self._finished:
            self._thread.start()
            self._started.wait(30)
        return self

    def __next__(self) -> Stage:
        if self._finished:
            raise StopIteration
        if self._thread.ident is None:
            iter(self)
        if not self.overlap and self._yielded > 0 and self._loop is not None and self._want_next is not None:
            self._loop.call_soon_threadsafe(self._want_next.set)
        deadline = time.monotonic() + self.wait_timeout_s
        while True:
            try:
                item = self._items.get(timeout=0.2)
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    self.close()
                    raise DataError(f"no progress from {self.client.base_url} in {self.wait_timeout_s:.0f} s") \
                        from None
                if not self._thread.is_alive() and self._items.empty():
                    self._finished = True
                    raise StopIteration from None
        if item is _DONE:
            self._finished = True
            self._thread.join(timeout=10)
            raise StopIteration
        if isinstance(item, BaseException):
            self._finished = True
            self._thread.join(timeout=10)
            raise item
        s, state, t_ready = item
        if self.model is None and self.build_model:
            self.model = model_from_manifest(self.client.manifest, self.client.device)
        self._yielded += 1
        return self.client._make_stage(s, state, t_ready, self.model)

    def close(self) -> None:
        """Stop the download thread (idempotent)."""
        self._finished = True
        if self._thread.is_alive() and self._loop is not None and self._task is not None:
            try:
                self._loop.call_soon_threadsafe(self._task.cancel)
            except RuntimeError:  # loop already closed
                pass
            self._thread.join(timeout=10)

    def __enter__(self) -> "StageIterator":
        return iter(self)

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_stages(url: str, *, overlap: bool = True, model: nn.Module | None = None, build_model: bool = True,
                max_parts: int | None = None, **client_kwargs: Any) -> StageIterator:
    """Synchronous iterator of `Stage`s for a package URL (see `StageIterator`)."""
    return StageIterator(url, overlap=overlap, model=model, build_model=build_model, max_parts=max_parts,
                         **client_kwargs)


def image_tensor(path: str | Path, metadata: dict) -> Tensor:
    """An image file as the model's input (1, C, H, W), preprocessed as the checkpoint's metadata says."""
    from cuekit.data.preprocess import load_image_tensor

    return load_image_tensor(path, metadata)
