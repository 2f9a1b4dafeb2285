"""Server and client on loopback: Range/ETag, path traversal, 50 clients, tamper, resume, overlap.

Every server is started on a free 127.0.0.1 port and stopped in a `finally`; every test runs under
`asyncio.wait_for` (or the client's own timeouts), so none can hang.
"""
from __future__ import annotations

import asyncio
import time

import pytest
import torch
from transmit_helpers import SmallNet, run_async, small_state

from cuekit.errors import DataError
from cuekit.transmit.client import ProgressiveClient, iter_stages
from cuekit.transmit.package import IntegrityError, pack_state_dict, read_package_stage
from cuekit.transmit.server import ServerThread, parse_range, start_server


async def raw_get(port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request over a plain socket, the path sent exactly as given (no normalisation)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), hdrs, body


@pytest.fixture
def packages(tmp_path):
    """root/small: a 2-bit x 8 package of SmallNet; a secret file beside root."""
    root = tmp_path / "root"
    pack_state_dict(small_state(), root / "small", (2,) * 8)
    (tmp_path / "secret.txt").write_text("TOP-SECRET")
    return root


def test_parse_range():
    assert parse_range("bytes=0-9", 100) == (0, 10)
    assert parse_range("bytes=90-", 100) == (90, 100)
    assert parse_range("bytes=-10", 100) == (90, 100)
    assert parse_range("bytes=95-200", 100) == (95, 100)
    assert parse_range("bytes=0-1,5-6", 100) is None  # multi-range: whole file
    with pytest.raises(ValueError):
        parse_range("bytes=100-", 100)


def test_path_traversal_is_refused(packages):
    async def main():
        srv = await start_server(packages)
        try:
            for path in ("/../secret.txt", "/small/../../secret.txt", "/%2e%2e/secret.txt",
                         "/small/%2e%2e/%2e%2e/secret.txt", "/small/..%2f..%2fsecret.txt", "/..%5csecret.txt",
                         "/small/.hidden", "/%2fetc%2fpasswd"):
                status, _, body = await raw_get(srv.port, path)
                assert status in (403, 404), (path, status)
                assert b"TOP-SECRET" not in body and b"root:" not in body
            (packages / "small" / "link").symlink_to(packages.parent / "secret.txt")
            status, _, body = await raw_get(srv.port, "/small/link")
            assert status == 403 and b"TOP-SECRET" not in body
            status, _, _ = await raw_get(srv.port, "/small/manifest.json")
            assert status == 200
        finally:
            await srv.stop()

    run_async(main(), 30)


def test_range_etag_and_listing(packages):
    data = (packages / "small" / "part-0.bin").read_bytes()

    async def main():
        srv = await start_server(packages)
        try:
            status, h, body = await raw_get(srv.port, "/small/part-0.bin")
            assert status == 200 and body == data and h["accept-ranges"] == "bytes"
            etag = h["etag"]
            status, h, body = await raw_get(srv.port, "/small/part-0.bin", {"Range": "bytes=10-19"})
            assert status == 206 and body == data[10:20]
            assert h["content-range"] == f"bytes 10-19/{len(data)}"
            status, _, body = await raw_get(srv.port, "/small/part-0.bin", {"Range": "bytes=5-", "If-Range": etag})
            assert status == 206 and body == data[5:]
            status, _, body = await raw_get(srv.port, "/small/part-0.bin", {"Range": "bytes=5-", "If-Range": '"x"'})
            assert status == 200 and body == data  # stale validator: the whole file
            status, h, _ = await raw_get(srv.port, "/small/part-0.bin", {"Range": f"bytes={len(data)}-"})
            assert status == 416 and h["content-range"] == f"bytes */{len(data)}"
            status, _, body = await raw_get(srv.port, "/small/part-0.bin", {"If-None-Match": etag})
            assert status == 304 and body == b""
            status, _, body = await raw_get(srv.port, "/")
            assert status == 200 and b'"small"' in body
            status, _, _ = await raw_get(srv.port, "/small/part-99.bin")
            assert status == 404
        finally:
            await srv.stop()

    run_async(main(), 30)


def test_fifty_concurrent_clients_receive_identical_bytes(packages):
    files = {p.name: p.read_bytes() for p in (packages / "small").glob("part-*.bin")}

    async def main():
        srv = await start_server(packages)
        try:
            async def one() -> list[bytes]:
                async with ProgressiveClient(srv.url + "small/", timeout_s=20) as c:
                    return await c.download_parts()

            results = await asyncio.gather(*[one() for _ in range(50)])
        finally:
            await srv.stop()
        return results

    results = run_async(main(), 60)
    assert len(results) == 50
    expected = [files[f"part-{s}.bin"] for s in range(8)]
    assert all(r == expected for r in results)


def test_tampered_part_over_the_network_is_refused(packages, state):
    part = packages / "small" / "part-3.bin"
    data = bytearray(part.read_bytes())
    data[0] ^= 0x01
    part.write_bytes(bytes(data))

    async def main():
        srv = await start_server(packages)
        seen = []
        try:
            async with ProgressiveClient(srv.url + "small/", retries=1) as c:
                with pytest.raises(IntegrityError, match=r"part 3 \(part-3.bin\) failed its SHA-256"):
                    async for stage in c.stages(overlap=False, model=SmallNet()):
                        seen.append((stage.index, {k: v.clone() for k, v in stage.model.state_dict().items()}))
        finally:
            await srv.stop()
        return seen

    seen = run_async(main(), 30)
    assert [s for s, _ in seen] == [0, 1, 2]
    # the model still holds stage 2 (6 bits), which equals the local decode of 3 genuine parts
    expected = read_package_stage(packages / "small", 3)
    assert all(torch.equal(seen[-1][1][k], expected[k]) for k in expected)


def test_server_stopped_mid_transfer_then_restarted(tmp_path):
    torch.manual_seed(0)
    state = {"big": torch.randn(100_000), "small": torch.randn(10)}
    root = tmp_path / "root"
    pack_state_dict(state, root / "big", (16, 16))  # part 0: 200 kB
    part0 = (root / "big" / "part-0.bin").stat().st_size

    async def main():
        srv = await start_server(root, rate_limit=250_000, shutdown_timeout=0.01)  # stop() cuts transfers
        port = srv.port
        client = ProgressiveClient(srv.url + "big/", retries=10, retry_delay_s=0.05, timeout_s=10)
        stages = []

        async def consume():
            async for st in client.stages(overlap=False, build_model=False):
                stages.append(st)

        task = asyncio.create_task(consume())
        srv2 = None
        try:
            for _ in range(400):  # wait until part 0 is a quarter done (bounded: 20 s)
                if client.part_received.get(0, 0) > part0 // 4:
                    break
                await asyncio.sleep(0.05)
            assert 0 < client.part_received.get(0, 0) < part0, "the transfer was not caught mid-way"
            await srv.stop()
            await asyncio.sleep(0.3)  # the client now sees refused connections and retries
            srv2 = await start_server(root, port=port)
            await asyncio.wait_for(task, 30)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()
            if srv2 is not None:
                await srv2.stop()
        return stages, client, srv2.stats

    stages, client, stats2 = run_async(main(), 60)
    assert [s.index for s in stages] == [0, 1]
    resumed = [r for r in stats2["recent"] if r["path"].endswith("part-0.bin")]
    assert resumed and resumed[0]["status"] == 206 and resumed[0]["start"] > 0
    assert any(e["event"] == "retry" for e in client.timeline)
    final = stages[-1].state_dict
    expected = read_package_stage(root / "big")
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    # the resumed download did not start over: part 0 was received exactly once
    assert client.part_received[0] == part0


def test_unknown_package_is_a_clear_error(packages):
    async def main():
        srv = await start_server(packages)
        try:
            async with ProgressiveClient(srv.url + "nope/") as c:
                with pytest.raises(DataError, match="HTTP 404"):
                    await c.fetch_manifest()
        finally:
            await srv.stop()

    run_async(main(), 30)


def _consume_with_inference(url: str, overlap: bool, infer_s: float):
    """Run the sync iterator; per stage record when inference starts and ends."""
    x = torch.rand(4, 3, 8, 8)
    starts: dict[int, float]
    starts, ends = {}, {}
    with iter_stages(url, overlap=overlap, model=SmallNet(width=64), timeout_s=20) as it:
        for stage in it:
            starts[stage.index] = time.perf_counter()
            with torch.no_grad():
                stage.model(x)
            time.sleep(infer_s)  # a slower model
            ends[stage.index] = time.perf_counter()
        client = it.client
    return starts, ends, client


def test_overlap_mode_infers_on_stage_s_before_part_s1_arrives(tmp_path):
    root = tmp_path / "root"
    pack_state_dict(small_state(width=64), root / "m", (2,) * 8)  # about 530 bytes per part
    with ServerThread(root, rate_limit=3_000) as srv:  # about 0.18 s per part
        starts, ends, client = _consume_with_inference(srv.url + "m/", overlap=True, infer_s=0.05)
        requested, arrived = client.events("request"), client.events("arrived")
        assert sorted(starts) == list(range(8))
        for s in range(7):
            assert requested[s + 1] < starts[s] < arrived[s + 1], s  # part s+1 in flight during inference on s
        starts_n, ends_n, client_n = _consume_with_inference(srv.url + "m/", overlap=False, infer_s=0.05)
        requested_n = client_n.events("request")
        for s in range(7):
            assert requested_n[s + 1] >= ends_n[s]  # without overlap: strictly after inference


def test_round_trip_delay_is_added_to_every_request(packages):
    async def main():
        timings = {}
        for rtt in (0.0, 0.15):
            srv = await start_server(packages, rtt=rtt)
            try:
                t0 = time.perf_counter()
                for _ in range(2):
                    status, _, _ = await raw_get(srv.port, "/small/manifest.json")
                    assert status == 200
                timings[rtt] = time.perf_counter() - t0
            finally:
                await srv.stop()
        return timings

    timings = run_async(main(), 30)
    assert timings[0.15] >= 2 * 0.15  # two requests, two round trips
    assert timings[0.0] < timings[0.15]


def test_a_negative_round_trip_delay_is_refused(packages):
    from cuekit.errors import UsageError
    from cuekit.transmit.server import create_app

    with pytest.raises(UsageError, match="round-trip"):
        create_app(packages, rtt=-1.0)


def test_slow_disk_reads_do_not_block_the_event_loop(packages, monkeypatch):
    """Every read of a file runs in a worker thread: with each read made to take 0.3 s (a slow disk), the
    event loop keeps ticking, another client's listing is answered meanwhile, and the bytes arrive intact."""
    import cuekit.transmit.server as server

    real_read = server._read_at
    reads = []

    def slow_read(f, offset, size):
        reads.append((offset, size))
        time.sleep(0.3)
        return real_read(f, offset, size)

    monkeypatch.setattr(server, "_read_at", slow_read)
    expected = (packages / "small" / "part-0.bin").read_bytes()

    async def main():
        srv = await start_server(packages, chunk_size=max(1, len(expected) // 3 + 1))
        loop = asyncio.get_running_loop()
        worst_lag = 0.0
        stop = asyncio.Event()

        async def ticker():
            nonlocal worst_lag
            while not stop.is_set():
                t = loop.time()
                await asyncio.sleep(0.01)
                worst_lag = max(worst_lag, loop.time() - t - 0.01)

        tick = asyncio.create_task(ticker())
        try:
            transfer = asyncio.create_task(raw_get(srv.port, "/small/part-0.bin"))
            await asyncio.sleep(0.1)  # the transfer is inside its first slow read
            t0 = time.perf_counter()
            status, _, _ = await raw_get(srv.port, "/")
            listing_s = time.perf_counter() - t0
            assert status == 200
            status, _, body = await transfer
            return status, body, worst_lag, listing_s
        finally:
            stop.set()
            await tick
            await srv.stop()

    status, body, worst_lag, listing_s = run_async(main(), 30)
    assert status == 200 and body == expected and len(reads) >= 3
    assert worst_lag < 0.2, f"the event loop stalled {worst_lag:.2f} s"
    assert listing_s < 0.25, f"the listing waited {listing_s:.2f} s behind a slow read"


def test_a_file_replaced_mid_transfer_is_sent_as_it_was(packages):
    """A transfer reads through the handle opened for it: a file packed again (atomically replaced) meanwhile does
    not mix into it."""
    import os

    old, new = os.urandom(200_000), os.urandom(200_000)
    (packages / "small" / "big.bin").write_bytes(old)

    async def main():
        srv = await start_server(packages, rate_limit=400_000)
        try:
            transfer = asyncio.create_task(raw_get(srv.port, "/small/big.bin"))
            await asyncio.sleep(0.15)
            (packages / "small" / "big.bin.new").write_bytes(new)
            os.replace(packages / "small" / "big.bin.new", packages / "small" / "big.bin")
            first = await transfer
            second = await raw_get(srv.port, "/small/big.bin")
            return first, second
        finally:
            await srv.stop()

    (status, hdrs, body), (_, hdrs2, body2) = run_async(main(), 30)
    assert status == 200 and body == old and body2 == new and hdrs["etag"] != hdrs2["etag"]
