"""The client under faulty servers: sizes that disagree with the manifest, restarts, connections that keep breaking.

`ScriptedServer` is a raw HTTP/1.1 server whose answers each test writes, so that every way a server can
state (or not state) a file's size is exercised, and every request is counted. Back-off waits are scaled
down (x 1/10) so the tests stay fast; the default schedule is checked by arithmetic.
"""
from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Callable

import pytest
from transmit_helpers import run_async, small_state

from cuekit.errors import DataError
from cuekit.transmit.client import ProgressiveClient, retry_delays
from cuekit.transmit.package import pack_state_dict
from cuekit.transmit.server import start_server

SCALE = 0.1  # back-off waits and the server outage, both scaled by this in the tests
FAST = {"retry_delay_s": inspect.signature(ProgressiveClient).parameters["retry_delay_s"].default * SCALE,
        "max_retry_delay_s": inspect.signature(ProgressiveClient).parameters["max_retry_delay_s"].default * SCALE}

# (status line, headers, body, bytes of the body sent before the connection is cut; None: all)
Answer = tuple[str, dict, bytes, int | None]


class ScriptedServer:
    """A raw HTTP server on 127.0.0.1: `answer(path, headers, n)` (n: 1-based request count for that path)
    gives each response; the body is close-delimited unless the headers give a length or chunking."""

    def __init__(self, answer: Callable[[str, dict, int], Answer]):
        self.answer = answer
        self.requests: dict[str, int] = {}
        self.server: asyncio.AbstractServer | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode().split("\r\n")
            path = request_line.split()[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
            self.requests[path] = self.requests.get(path, 0) + 1
            status, out_headers, body, cut = self.answer(path, headers, self.requests[path])
            text = "".join(f"{k}: {v}\r\n" for k, v in {**out_headers, "Connection": "close"}.items())
            writer.write(f"HTTP/1.1 {status}\r\n{text}\r\n".encode() + body[:cut])
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> "ScriptedServer":
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"


def whole(body: bytes) -> Answer:
    return "200 OK", {"Content-Length": str(len(body))}, body, None


def chunked(body: bytes) -> bytes:
    return (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"


@pytest.fixture
def package(tmp_path) -> Path:
    """root/small: a 2-bit x 8 package of SmallNet."""
    pack_state_dict(small_state(), tmp_path / "root" / "small", (2,) * 8)
    return tmp_path / "root" / "small"


@pytest.mark.parametrize("change", [-10, +10])
def test_real_server_part_of_the_wrong_size_fails_at_once(package, change):
    part = package / "part-2.bin"
    genuine = part.read_bytes()
    part.write_bytes(genuine[:change] if change < 0 else genuine + b"x" * change)

    async def main():
        srv = await start_server(package.parent)
        try:
            async with ProgressiveClient(srv.url + "small/", retries=2, **FAST) as c:
                with pytest.raises(DataError) as caught:
                    await c.download_parts()
        finally:
            await srv.stop()
        return caught.value, [r for r in srv.stats["recent"] if r["path"].endswith("part-2.bin")], srv.stats

    error, part_requests, stats = run_async(main(), 30)
    message = str(error)
    assert "\n" not in message and "part 2 (part-2.bin)" in message
    assert f"{len(genuine) + change} bytes on the server" in message and f"{len(genuine)} in the manifest" in message
    assert len(part_requests) == 1  # the Content-Length was enough: no retry, no re-download
    assert stats["requests"] == 4   # manifest, parts 0, 1, 2


@pytest.mark.parametrize("mode", ["chunked", "close-then-416", "cut-then-206", "close-no-range"])
def test_scripted_server_with_a_short_part_fails_after_a_few_requests(package, mode):
    files = {f"/small/{p.name}": p.read_bytes() for p in package.iterdir()}
    genuine = files["/small/part-2.bin"]
    short = genuine[:-10]

    def answer(path: str, headers: dict, n: int) -> Answer:
        if path != "/small/part-2.bin":
            return whole(files[path])
        resume = headers.get("range")
        if mode == "chunked":  # the size is stated only by the chunked body's clean end; Range ignored
            return "200 OK", {"Transfer-Encoding": "chunked"}, chunked(short), None
        if mode == "close-no-range":  # no size stated at all, Range ignored: only the retry limit stops it
            return "200 OK", {}, short, None
        if mode == "close-then-416":  # close-delimited, then the resume is refused with the real size
            if resume:
                return "416 Range Not Satisfiable", {"Content-Range": f"bytes */{len(short)}"}, b"", None
            return "200 OK", {}, short, None
        if resume:  # cut-then-206: the first answer breaks off; the resume states the real size
            start = int(resume.split("=")[1].rstrip("-"))
            return ("206 Partial Content", {"Content-Range": f"bytes {start}-{len(short) - 1}/{len(short)}",
                                            "Content-Length": str(len(short) - start)}, short[start:], None)
        return "200 OK", {"Content-Length": str(len(genuine))}, genuine, 20

    async def main():
        async with ScriptedServer(answer) as srv:
            async with ProgressiveClient(srv.url + "small/", retries=2, **FAST) as c:
                with pytest.raises(DataError) as caught:
                    await c.download_parts()
        return str(caught.value), srv.requests["/small/part-2.bin"]

    message, requests = run_async(main(), 30)
    assert "\n" not in message and "part-2.bin" in message
    if mode == "close-no-range":  # the first full read is progress, then 3 reads in a row bring nothing new
        assert requests == 1 + 3 and "3 attempts in a row brought no new bytes" in message
        assert f"{len(short)} of {len(genuine)} bytes" in message
    else:
        assert requests == (1 if mode == "chunked" else 2)
        assert "part 2 (part-2.bin)" in message and f"{len(short)} bytes on the server" in message
        assert f"{len(genuine)} in the manifest" in message


def _flaky_part_server(package: Path, new_bytes_per_request: int) -> ScriptedServer:
    """Every answer for part-2.bin states the right size and breaks off after a few new bytes."""
    files = {f"/small/{p.name}": p.read_bytes() for p in package.iterdir()}

    def answer(path: str, headers: dict, n: int) -> Answer:
        body = files[path]
        if path != "/small/part-2.bin":
            return whole(body)
        start = int(headers["range"].split("=")[1].rstrip("-")) if "range" in headers else 0
        return ("206 Partial Content" if start else "200 OK",
                {"Content-Length": str(len(body) - start), "ETag": '"v1"',
                 **({"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"} if start else {})},
                body[start:], new_bytes_per_request)

    return ScriptedServer(answer)


@pytest.mark.parametrize("max_total_retries", [3, 10])
def test_retries_over_the_whole_transfer_are_bounded(package, max_total_retries):
    size = (package / "part-2.bin").stat().st_size
    step = 16
    needed = -(-size // step) - 1  # retries the flaky part needs, each one bringing new bytes

    async def main():
        async with _flaky_part_server(package, step) as srv:
            async with ProgressiveClient(srv.url + "small/", max_total_retries=max_total_retries, **FAST) as c:
                try:
                    parts = await c.download_parts()
                except DataError as e:
                    return e, srv.requests["/small/part-2.bin"], c
        return parts, srv.requests["/small/part-2.bin"], c

    result, requests, client = run_async(main(), 30)
    if max_total_retries < needed:
        assert isinstance(result, DataError)
        assert f"gave up after {max_total_retries} retries over the whole transfer" in str(result)
        assert requests == max_total_retries + 1
    else:
        assert result[2] == (package / "part-2.bin").read_bytes() and requests == needed + 1
        assert client.retries_used == needed


def test_default_back_off_outlasts_a_server_restart():
    defaults = ProgressiveClient("http://127.0.0.1:1/")
    assert sum(defaults.retry_delays) >= 10.0  # a restart takes a few seconds; the client waits longer
    assert sum(retry_delays(6, 0.1, 2.0)) < 7.0  # the old schedule (6 retries, 0.1 s doubling to 2 s) did not
    assert defaults.retry_delays == sorted(defaults.retry_delays)  # backs off, never speeds up


def test_fetch_command_defaults_are_the_clients():
    import argparse

    from cuekit.transmit.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["transmit", "fetch", "http://x/"])
    params = inspect.signature(ProgressiveClient).parameters
    assert args.retries == params["retries"].default
    assert args.total_retries == params["max_total_retries"].default
    assert args.timeout == params["timeout_s"].default


def test_client_survives_a_server_down_for_seven_seconds_scaled(tmp_path):
    """A 7 s restart, scaled by 1/10 with the default back-off: the default client resumes and completes."""
    import torch

    outage_s = 7.0 * SCALE
    assert sum(retry_delays(6, 0.1 * SCALE, 2.0 * SCALE)) < outage_s  # the old default would have given up
    torch.manual_seed(0)
    root = tmp_path / "root"
    pack_state_dict({"big": torch.randn(50_000), "small": torch.randn(10)}, root / "big", (16, 16))
    part0 = (root / "big" / "part-0.bin").stat().st_size  # 100 kB

    async def main():
        srv = await start_server(root, rate_limit=250_000, shutdown_timeout=0.01)
        port = srv.port
        client = ProgressiveClient(srv.url + "big/", timeout_s=10, **FAST)
        task = asyncio.create_task(client.download_parts())
        srv2 = None
        try:
            for _ in range(400):  # until part 0 is under way (bounded: 20 s)
                if client.part_received.get(0, 0) > part0 // 4:
                    break
                await asyncio.sleep(0.05)
            assert 0 < client.part_received.get(0, 0) < part0, "the transfer was not caught mid-way"
            await srv.stop()
            await asyncio.sleep(outage_s)
            assert not task.done(), "the client gave up during the outage"
            srv2 = await start_server(root, port=port)
            parts = await asyncio.wait_for(task, 30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
            if srv2 is not None:
                await srv2.stop()
        return parts, client

    parts, client = run_async(main(), 60)
    assert parts == [(root / "big" / f"part-{s}.bin").read_bytes() for s in range(2)]
    assert sum(e["event"] == "retry" for e in client.timeline) >= 3  # it did wait through the outage
    assert client.part_received[0] == part0  # resumed, not restarted
