"""The README's first command, for real: `idrserve demo` writes the data and serves it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited early"
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
    raise AssertionError("server did not become ready")


def fetch(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


# What `idrserve demo` printed before serving (filled by the demo_server fixture).
DEMO_BANNER: list[str] = []


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data_dir = tmp_path_factory.mktemp("demo")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "idrserve",
            "demo",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert proc.stdout is not None
        banner = []
        for raw in iter(proc.stdout.readline, b""):
            banner.append(raw.decode())
            if raw.startswith(b"serving on "):
                break
        DEMO_BANNER[:] = banner
        wait_ready(base, proc)
        yield base, str(data_dir)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        print(out.decode(errors="replace"))


def test_demo_serves_every_image(demo_server: tuple[str, str]) -> None:
    base, data_dir = demo_server
    listing = json.loads(fetch(base + "/")[2])
    ids = [image["id"] for image in listing["images"]]
    assert len(ids) >= 5
    for iid in ids:
        status, ctype, body = fetch(f"{base}/webgateway/imgData/{iid}/")
        assert status == 200, (iid, body[:200])
        doc = json.loads(body)
        assert doc["id"] == iid
        status, ctype, body = fetch(f"{base}/webgateway/render_thumbnail/{iid}/")
        assert (status, ctype) == (200, "image/jpeg"), iid
        assert body[:2] == b"\xff\xd8"
        status, ctype, _ = fetch(
            f"{base}/webgateway/render_image_region/{iid}/0/0/?tile={doc.get('levels', 1) - 1},0,0"
        )
        assert status == 200, iid
    assert Path(data_dir, "1001.zarr").exists() or any(Path(data_dir).rglob("1001.zarr"))


def test_every_url_the_demo_prints_answers(demo_server: tuple[str, str]) -> None:
    """A newcomer copies URLs from the banner: each must work as printed (port swapped)."""
    base, _ = demo_server
    port = base.rsplit(":", 1)[1]
    urls = [m.group(0) for line in DEMO_BANNER for m in re.finditer(r"http://\S+", line)]
    assert any("/iiif/3/" in u for u in urls) and any(u.endswith(".dzi") for u in urls)
    assert any(u.endswith("/api/v1/images/1001") for u in urls)
    assert any(u.endswith("/zarr/1001.zarr/") for u in urls)
    assert len(urls) >= 20, DEMO_BANNER
    # Each URL stands alone or after a label, so a double-click or a terminal link takes it
    # whole: never inside parentheses, never followed by more text.
    for line in DEMO_BANNER:
        for m in re.finditer(r"http://\S+", line):
            assert line[m.end() :].strip() in ("", "(Ctrl-C to stop)"), line
            assert not line[: m.start()].rstrip().endswith("("), line
    for url in urls:
        assert url.startswith(f"http://localhost:{port}/"), url
        local = url.replace("http://localhost:", "http://127.0.0.1:", 1)
        quoted = urllib.parse.quote(local, safe=":/?&=,!$|;%")
        status, _, body = fetch(quoted)
        assert status == 200, (url, body[:200])
        assert body, url


def test_demo_big_pyramid(demo_server: tuple[str, str]) -> None:
    base, _ = demo_server
    doc = json.loads(fetch(f"{base}/webgateway/imgData/1001/")[2])
    assert doc["size"]["width"] >= 4096 and doc["size"]["c"] == 3
    assert doc["levels"] >= 4 and doc["meta"]["pixelsType"] == "uint16"
    status, ctype, _body = fetch(
        f"{base}/webgateway/render_image_region/1001/0/0/?tile=0,3,3&c=1|0:8000$0000FF,"
        "2|0:8000$00FF00,-3&m=c"
    )
    assert (status, ctype) == (200, "image/jpeg")


def test_serve_requires_a_source() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "idrserve", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")},
    )
    assert proc.returncode == 2
    assert "--zarr-root" in proc.stderr


def test_serve_with_two_workers(demo_server: tuple[str, str]) -> None:
    _, data_dir = demo_server
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "idrserve",
            "serve",
            "--zarr-root",
            data_dir,
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # The connection time limits reach every worker from the settings.
        env={
            **os.environ,
            "IDRSERVE_LIMITS__HEADER_TIMEOUT_S": "0.5",
            "IDRSERVE_LIMITS__KEEPALIVE_TIMEOUT_S": "1",
        },
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        for _ in range(20):
            assert fetch(f"{base}/webgateway/render_thumbnail/1003/")[0] == 200
        for _ in range(4):  # connections land on either worker
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                started = time.monotonic()
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never completed
                data = b"".join(iter(lambda: sock.recv(65536), b""))
                assert data.startswith(b"HTTP/1.1 408 "), data[:200]
                assert json.loads(data.partition(b"\r\n\r\n")[2])["error"] == "request_timeout"
                assert time.monotonic() - started < 3
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
                idle = time.monotonic()
                assert sock.recv(1) == b""  # the idle keep-alive connection is closed
                assert 0.5 < time.monotonic() - idle < 4
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode is not None


def test_config_show_redacts_nothing_secret_and_is_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "idrserve", "config", "show"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    doc = json.loads(out)
    assert doc["limits"]["max_tile_length"] == 2048


def test_cache_warm_fills_a_running_server(demo_server: tuple[str, str], tmp_path: Path) -> None:
    base, _ = demo_server
    log = tmp_path / "access.log"
    log.write_text(
        '127.0.0.1 - - [25/Nov/2026:10:00:00 +0000] "GET /webgateway/render_thumbnail/1002/ '
        'HTTP/1.1" 200 5120 "-" "Mozilla/5.0"\n'
        '127.0.0.1 - - [25/Nov/2026:10:00:01 +0000] "GET /static/app.js HTTP/1.1" 200 10 "-" "-"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "idrserve", "cache", "warm", "--server", base, "--image", "1001",
         "--max-side", "300", "--access-log", str(log), "--concurrency", "4"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # 1 thumbnail from the log; 3 thumbnail shapes + the tiles of 1001's levels ≤ 300 px.
    assert report["urls"] > 4
    assert report["failed"] == 0
    with urllib.request.urlopen(f"{base}/webgateway/render_thumbnail/1002/") as resp:
        assert resp.headers["X-Cache"] == "memory"
    doc = json.loads(fetch(f"{base}/webgateway/imgData/1001/")[2])
    smallest = doc["levels"] - 1
    with urllib.request.urlopen(
        f"{base}/webgateway/render_image_region/1001/0/0/?tile={smallest},0,0,256,256"
    ) as resp:
        assert resp.headers["X-Cache"] == "memory"


async def _until_all_admitted(
    session: aiohttp.ClientSession, base: str, tasks: list[asyncio.Task[int]], workers: int
) -> None:
    """Return once every request has been answered or admitted by some worker process.

    Graceful shutdown promises to finish the requests a server has taken; a connection
    still in the kernel's accept queue, or one whose request the server has not read yet,
    is reset when the listener closes (nginx does the same), and the client's retry is then
    refused. A fixed sleep before the signal raced that on a loaded 2-core CI machine, so
    the test asks the workers: answered (counted on the client before the round) plus in
    progress (each worker's `/readyz` admission count, read after) covers disjoint requests,
    and reaching the total means none is left unaccepted.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        answered = sum(t.done() for t in tasks)
        in_progress: dict[int, int] = {}
        for _ in range(50 * workers):  # connections spread over the workers by the kernel
            async with session.get(f"{base}/readyz", headers={"Connection": "close"}) as resp:
                doc = await resp.json()
            if "admission" not in doc:  # this worker is still starting
                continue
            in_progress[doc["pid"]] = doc["admission"]["requests_in_progress"]
            if len(in_progress) == workers:
                break
        if len(in_progress) == workers and answered + sum(in_progress.values()) >= len(tasks):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the requests were never all admitted")


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_requests(
    demo_server: tuple[str, str], workers: int, tmp_path: Path
) -> None:
    """In-flight requests finish, and so do the cache writes they scheduled (disk tier)."""
    import signal

    import aiohttp

    _, data_dir = demo_server
    port = free_port()
    cache_dir = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-m", "idrserve", "serve", "--zarr-root", data_dir, "--port", str(port),
         "--workers", str(workers), "--cache-dir", str(cache_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "IDRSERVE_CACHE__MEMORY_MAX_BYTES": "0"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    # PNG, each a render of its own (its window): long enough that the requests are still
    # in flight once the test has seen them all admitted, on a loaded machine too (as JPEGs
    # of one core's worth, they were once all answered by then).
    n = 30
    done_before_signal = []

    async def storm() -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> int:
                url = (f"{base}/webgateway/render_image/1002/0/0/?p=intmax&format=png"
                       f"&c=1|0:{3000 + i}$FF0000,2|0:2000$00FF00")  # fmt: skip
                async with session.get(url) as resp:
                    await resp.read()
                    return resp.status

            tasks = [asyncio.create_task(one(i)) for i in range(n)]
            await _until_all_admitted(session, base, tasks, workers)
            done_before_signal.append(sum(t.done() for t in tasks))
            proc.send_signal(signal.SIGTERM)
            return list(await asyncio.gather(*tasks))

    try:
        wait_ready(base, proc)
        assert asyncio.run(storm()) == [200] * n  # nothing cut off
        assert done_before_signal[0] < n  # and the signal did arrive mid-storm
        assert proc.wait(30) == 0  # then a clean exit
        # Every response rendered during the drain was also written to the disk tier (30
        # distinct keys: one file each, outside the generations and temporary files).
        entries = [
            p for p in cache_dir.rglob("*")
            if p.is_file() and "generations" not in p.parts and not p.name.endswith(".tmp")
        ]  # fmt: skip
        assert len(entries) == n
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_with_a_drain_grace_keeps_serving_while_readyz_says_draining(
    demo_server: tuple[str, str], workers: int
) -> None:
    """server.drain_grace_s: after SIGTERM, /readyz fails at once (a load balancer stops
    sending) while requests, new connections included, are still served until the grace ends;
    then a clean exit. A second SIGTERM is not needed, and none is sent."""
    import signal

    _, data_dir = demo_server
    port = free_port()
    grace = 2.0
    proc = subprocess.Popen(
        [sys.executable, "-m", "idrserve", "serve", "--zarr-root", data_dir, "--port", str(port),
         "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "IDRSERVE_SERVER__DRAIN_GRACE_S": str(grace)},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        # /readyz says "warming" for about a second while the kernels load (ops._readiness).
        deadline = time.monotonic() + 30
        while fetch(f"{base}/readyz")[0] != 200:
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        draining = 0
        while time.monotonic() - signalled < grace - 0.5:
            status, _, body = fetch(f"{base}/readyz")  # a new connection each time
            if status == 503:
                assert json.loads(body)["status"] == "draining"
                draining += 1
            tile = fetch(f"{base}/webgateway/render_image_region/1003/0/0/?tile=0,0,0")
            assert tile[0] == 200, tile[2][:200]
            time.sleep(0.1)
        assert draining >= 3  # every worker reports draining within moments of the signal
        assert proc.wait(30) == 0
        assert time.monotonic() - signalled >= grace - 0.1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_config_show_redacts_the_redis_password() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "idrserve", "config", "show"],
        capture_output=True, text=True, timeout=60, check=True,
        env={**os.environ, "IDRSERVE_REDIS_URL": "redis://:s3cret@10.0.0.5:6379/0"},
    ).stdout  # fmt: skip
    assert "s3cret" not in out
    assert json.loads(out)["cache"]["redis_url"] == "redis://:***@10.0.0.5:6379/0"
