"""Faults injected into real processes while the server is under load.

Every test runs `idrserve serve` as a subprocess and drives it with a concurrent aiohttp
client. Faults are real: redis-server killed with SIGKILL and restarted, storage answering
slowly or with 500s (an HTTP object store stand-in, `storage_server.py`), a cache directory
on a full or read-only file system, admission bounds exceeded tenfold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.cache.conftest import RedisServer
from tests.ops.conftest import Server, StorageServer, get, tile_urls


async def _fetch(
    session: aiohttp.ClientSession, url: str
) -> tuple[int, dict[str, str], bytes, float]:
    t0 = time.monotonic()
    async with session.get(url) as resp:
        body = await resp.read()
        return resp.status, dict(resp.headers), body, time.monotonic() - t0


async def _burst(
    urls: list[str], timeout_s: float = 60
) -> list[tuple[int, dict[str, str], bytes, float]]:
    """All `urls` at once, each on its own connection."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return list(await asyncio.gather(*(_fetch(session, u) for u in urls)))


def _is_json_error(body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and "error" in doc and "detail" in doc


# --- Redis ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_redis_killed_and_restarted_under_load(
    make_server: Any, demo_data: Path, redis_server: RedisServer
) -> None:
    server: Server = make_server(
        demo_data,
        IDRSERVE_REDIS_URL=redis_server.url,
        IDRSERVE_CACHE__MEMORY_MAX_BYTES="0",  # every request goes to Redis (or renders)
        IDRSERVE_CACHE__REDIS_TIMEOUT_S="0.2",
        IDRSERVE_CACHE__BREAKER_BACKOFF_S="0.2",
        IDRSERVE_CACHE__BREAKER_BACKOFF_MAX_S="0.5",
        IDRSERVE_CACHE__LOCK_WAIT_S="0.5",
    )
    urls = tile_urls(server.base, 64, level=2, per_row=4)

    async def load() -> Counter[int]:
        statuses: Counter[int] = Counter()
        stop = time.monotonic() + 8

        async def user(i: int) -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
                n = i
                while time.monotonic() < stop:
                    status, *_ = await _fetch(s, urls[n % len(urls)])
                    statuses[status] += 1
                    n += 7

        async def chaos() -> None:
            await asyncio.sleep(2)
            await asyncio.to_thread(redis_server.kill)
            await asyncio.sleep(2.5)
            await asyncio.to_thread(redis_server.start)

        await asyncio.gather(chaos(), *(user(i) for i in range(16)))
        return statuses

    statuses = asyncio.run(load())
    print("redis chaos:", dict(statuses))
    assert set(statuses) == {200}, statuses
    assert sum(statuses.values()) > 200
    # Redis is back in use: the breaker closed again.
    for _ in range(50):
        ready = server.readyz()
        if ready["dependencies"]["redis"]["status"] == "ok":
            break
        time.sleep(0.2)
    assert ready["dependencies"]["redis"]["status"] == "ok", ready


# --- storage ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_slow_storage_gives_504_within_the_deadline_and_no_queue(
    make_server: Any, storage: StorageServer
) -> None:
    server: Server = make_server(
        storage.url,
        IDRSERVE_LIMITS__REQUEST_TIMEOUT_S="1",
        IDRSERVE_LIMITS__MAX_CONCURRENT_RENDERS="8",
        IDRSERVE_CACHE__MEMORY_MAX_BYTES="0",
    )
    assert get(server.base + "/webgateway/imgData/1001/")[0] == 200  # metadata loaded
    storage.control(delay_s=3.0)
    urls = tile_urls(server.base, 40, level=1, per_row=8)
    t0 = time.monotonic()
    results = asyncio.run(_burst(urls))
    elapsed = time.monotonic() - t0
    split = Counter(r[0] for r in results)
    print("slow storage:", dict(split), f"in {elapsed:.2f} s")
    assert set(split) <= {503, 504}, split
    assert split[504] == 8  # the admitted renders hit the deadline...
    assert split[503] == 32  # ...the rest were refused at once, not queued
    for status, headers, body, seconds in results:
        assert _is_json_error(body)
        if status == 504:
            assert 0.9 <= seconds < 2.0  # within the deadline (+ scheduling)
        else:
            assert headers["Retry-After"] == "1" and seconds < 1.0
    # Cancelled reads release their slots: nothing left running once the deadline passed.
    ready = server.readyz()
    assert ready["admission"]["renders_in_progress"] == 0, ready
    assert ready["admission"]["timeouts"] == 8
    storage.control(delay_s=0)
    assert get(urls[0])[0] == 200


@pytest.mark.slow
def test_failing_storage_fails_only_the_affected_image(
    make_server: Any, storage: StorageServer
) -> None:
    server: Server = make_server(storage.url, IDRSERVE_CACHE__MEMORY_MAX_BYTES="0")
    for iid in (1001, 1003):
        assert get(f"{server.base}/webgateway/imgData/{iid}/")[0] == 200
    storage.control(fail=[1003])
    good = [
        f"{server.base}/webgateway/render_image_region/1001/0/0/?tile=3,{i},0" for i in range(2)
    ]
    bad = [f"{server.base}/webgateway/render_image/1003/?q=0.{50 + i}" for i in range(4)] + [
        f"{server.base}/webgateway/render_image_region/1003/0/0/?tile=0,0,0&q=0.7"
    ]
    results = asyncio.run(_burst(good + bad))
    for status, *_ in results[: len(good)]:
        assert status == 200
    for status, headers, body, _ in results[len(good) :]:
        assert 500 <= status < 600 and status != 500, status  # a deliberate 502/503, no crash
        assert _is_json_error(body), body[:200]
        assert headers["Content-Type"].startswith("application/json")
    storage.control(fail=[])
    assert get(bad[0])[0] == 200  # recovers as soon as storage does


# --- disk cache -------------------------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tiny tmpfs at `path` (the test runs as root in CI; `mount` must work)."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(
            "cannot mount a tmpfs for the disk-full test (needs root with CAP_SYS_ADMIN, as in "
            f"CI): {result.stderr.strip()}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_disk_cache_full_or_read_only_still_serves(
    make_server: Any, demo_data: Path, tmp_path: Path, fault: str
) -> None:
    with _tmpfs(tmp_path / "cache", "256k") as cache_dir:
        if fault == "full":
            # Leave a few KB: the first writes succeed, then ENOSPC.
            with open(cache_dir / "ballast", "wb") as f, contextlib.suppress(OSError):
                f.write(b"\0" * (256 * 1024 - 24 * 1024))
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(cache_dir)], check=True)
        server: Server = make_server(
            demo_data,
            IDRSERVE_CACHE_DIR=str(cache_dir),
            IDRSERVE_CACHE__MEMORY_MAX_BYTES="0",
        )
        urls = tile_urls(server.base, 24, level=1, per_row=8)  # within the render bound
        results = asyncio.run(_burst(urls)) + asyncio.run(_burst(urls))
        assert [r[0] for r in results] == [200] * len(results)
        disk = server.readyz()["dependencies"]["disk_cache"]
        print(f"disk {fault}:", disk)
        assert server.readyz()["http_status"] == 200
        assert disk["status"] == "degraded" and disk["writes_paused"] is True
        errors = server.stderr.read_text()
        assert "Traceback" not in errors
        server.terminate()


# --- admission --------------------------------------------------------------------------------


@pytest.mark.slow
def test_overload_renders_tenfold(make_server: Any, storage: StorageServer) -> None:
    bound = 4
    server: Server = make_server(
        storage.url,
        IDRSERVE_LIMITS__MAX_CONCURRENT_RENDERS=str(bound),
        IDRSERVE_LIMITS__REQUEST_TIMEOUT_S="5",
        IDRSERVE_CACHE__MEMORY_MAX_BYTES="0",
    )
    assert get(server.base + "/webgateway/imgData/1001/")[0] == 200
    storage.control(delay_s=0.5)  # each render holds its slot for ≥ 0.5 s
    urls = tile_urls(server.base, 10 * bound, level=1, per_row=8)
    results = asyncio.run(_burst(urls))
    split = Counter(r[0] for r in results)
    print("overload (renders):", dict(split))
    assert set(split) == {200, 503}, split
    assert split[200] == bound
    for status, headers, body, seconds in results:
        if status == 200:
            assert seconds < 5  # within the deadline
        else:
            assert headers["Retry-After"] == "1"
            assert json.loads(body)["error"] == "overloaded"
            assert seconds < 0.5  # refused at once, never queued
    assert server.readyz()["admission"]["refused_renders"] == 9 * bound
    metrics = get(server.base + "/metrics")[2].decode()
    assert f'idrserve_admission_refused_total{{bound="renders"}} {9 * bound}.0' in metrics
    assert "idrserve_renders_in_progress 0.0" in metrics


@pytest.mark.slow
def test_overload_requests_tenfold(make_server: Any, storage: StorageServer) -> None:
    bound = 6
    server: Server = make_server(
        storage.url,
        IDRSERVE_LIMITS__MAX_CONCURRENT_REQUESTS=str(bound),
        IDRSERVE_LIMITS__REQUEST_TIMEOUT_S="5",
        IDRSERVE_CACHE__MEMORY_MAX_BYTES="0",
    )
    assert get(server.base + "/webgateway/imgData/1001/")[0] == 200
    storage.control(delay_s=0.5)
    results = asyncio.run(_burst(tile_urls(server.base, 10 * bound, level=1, per_row=8)))
    split = Counter(r[0] for r in results)
    print("overload (requests):", dict(split))
    assert split == Counter({200: bound, 503: 9 * bound}), split
    for status, headers, body, _ in results:
        if status == 503:
            assert headers["Retry-After"] == "1" and _is_json_error(body)
    # Probes are never refused, even at the bound.
    assert server.readyz()["http_status"] == 200


@pytest.mark.slow
def test_client_gone_cancels_the_render(make_server: Any, storage: StorageServer) -> None:
    server: Server = make_server(storage.url, IDRSERVE_CACHE__MEMORY_MAX_BYTES="0")
    assert get(server.base + "/webgateway/imgData/1001/")[0] == 200
    storage.control(delay_s=5.0)

    async def hang_up() -> None:
        timeout = aiohttp.ClientTimeout(total=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with contextlib.suppress(asyncio.TimeoutError):
                await _fetch(session, tile_urls(server.base, 1, level=1)[0])

    asyncio.run(hang_up())
    time.sleep(0.3)
    admission = server.readyz()["admission"]
    # Abandoned at once, not after the 5 s read: the slot is free again.
    assert admission["cancelled"] == 1 and admission["renders_in_progress"] == 0, admission
    lines = server.access_lines()
    assert any(line["status"] == 499 for line in lines)
    storage.control(delay_s=0)


def test_access_log_lines_survive_sigterm(make_server: Any, demo_data: Path) -> None:
    """Lines are batched (≤ 100 ms per connection, so lines of different connections may
    appear up to that much out of order: `ts` orders them); SIGTERM right after a request
    still writes its line."""
    server: Server = make_server(demo_data)
    status, headers, _ = get(server.base + "/webgateway/imgData/1001/")
    assert status == 200
    assert server.terminate() == 0
    lines = server.access_lines()
    assert [line["request_id"] for line in lines if line["route"] != "/healthz"] == [
        headers["X-Request-ID"]
    ]
    (line,) = [line for line in lines if line["route"] == "/webgateway/imgData/{iid}/"]
    assert line["status"] == 200 and line["bytes"] > 0


@pytest.mark.slow
def test_overload_raw_regions_take_render_slots(make_server: Any, storage: StorageServer) -> None:
    """/api/v1 region reads compute pixels too: they share the render bound with tiles."""
    bound = 3
    server: Server = make_server(
        storage.url,
        IDRSERVE_LIMITS__MAX_CONCURRENT_RENDERS=str(bound),
        IDRSERVE_LIMITS__REQUEST_TIMEOUT_S="5",
        IDRSERVE_CACHE__MEMORY_MAX_BYTES="0",
    )
    assert get(server.base + "/api/v1/images/1001")[0] == 200
    storage.control(delay_s=0.5)
    region = "{}/api/v1/images/1001/region?level=1&c=0&y={}:{}&x={}:{}&format=npy"
    urls = [
        region.format(
            server.base, 64 * (i // 8), 64 * (i // 8) + 64, 64 * (i % 8), 64 * (i % 8) + 64
        )
        for i in range(10 * bound)
    ]
    results = asyncio.run(_burst(urls))
    split = Counter(r[0] for r in results)
    assert set(split) == {200, 503}, split
    assert split[200] == bound
    assert all(_is_json_error(body) for status, _, body, _ in results if status == 503)


@pytest.mark.slow
def test_redis_killed_and_restarted_during_a_locust_run(
    make_server: Any, demo_data: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The issue's own shape of the Redis chaos: real viewer sessions (bench/locustfile.py),
    Redis SIGKILLed and restarted mid-run, and locust counts 0 failures."""
    import csv
    import os
    import sys

    server: Server = make_server(
        demo_data,
        IDRSERVE_REDIS_URL=redis_server.url,
        IDRSERVE_CACHE__MEMORY_MAX_BYTES="0",
        IDRSERVE_CACHE__REDIS_TIMEOUT_S="0.2",
        IDRSERVE_CACHE__BREAKER_BACKOFF_S="0.2",
        IDRSERVE_CACHE__BREAKER_BACKOFF_MAX_S="0.5",
        IDRSERVE_CACHE__LOCK_WAIT_S="0.5",
    )
    locustfile = Path(__file__).resolve().parents[2] / "bench" / "locustfile.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-u", "8",
         "-r", "8", "-t", "10s", "--host", server.base, "--csv", str(tmp_path / "chaos"),
         "--only-summary"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(3)
        redis_server.kill()
        time.sleep(3)
        redis_server.start()
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with (tmp_path / "chaos_stats.csv").open(newline="") as fh:
        total = {row["Name"]: row for row in csv.DictReader(fh)}["Aggregated"]
    log = out.decode(errors="replace")[-3000:]
    assert int(total["Request Count"]) > 100, log
    assert int(total["Failure Count"]) == 0, log
