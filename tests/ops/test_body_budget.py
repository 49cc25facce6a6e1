"""Large response bodies are bounded by `limits.max_inflight_body_bytes`, whatever clients do.

Clients that ask for a large body and never read it used to keep it in the server's memory
for ever, after their admission slot had been released (12 of them took one worker from
189 MB to 2.59 GB). Now a body over 1 MiB keeps its request's slot and its bytes charged until
it is written, is written in pieces, and a client that takes nothing for
`limits.send_timeout_s` is disconnected (`idrserve/http/bodies.py`, `http/server.py`).
The live tests open raw sockets with a small receive window that read only the response head.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from idrserve.admission import Admission
from idrserve.errors import Overloaded
from tests.ops.conftest import Server, get
from tests.sources.conftest import multiscales, write_v2

MIB = 1024 * 1024
# One channel of demo image 1001 at full resolution: 4096 × 2048 uint16, 16 MiB.
REGION = "/api/v1/images/1001/region?level=0&c=0&y=0:2048&format=npy"
REGION_BYTES = 4096 * 2048 * 2
# A rendered PNG of 6.2 MiB: small enough for the memory tier (≤ 8 MiB), so a fast-path hit,
# and larger than the kernel's socket buffers can take for a client that does not read
# (tcp_wmem's 4 MiB: a 1.5 MiB body went out whole).
BIG_RENDER = "/webgateway/render_image_region/1001/0/0/?region=0,0,2048,2048&format=png"
# An image whose stored chunks are 2 MiB (1024² uint16, noise: Blosc cannot shrink it).
BIG_CHUNKS = 2001


# --- the accounting ---------------------------------------------------------------------------


def test_body_budget_accounting() -> None:
    admission = Admission(max_requests=10, max_renders=2, max_body_bytes=100)
    first = admission.reserve_body(60)
    second = admission.reserve_body(40)
    assert admission.body_bytes == 100  # exactly the budget is allowed
    with pytest.raises(Overloaded) as info:
        admission.reserve_body(1)
    assert info.value.status == 503 and info.value.retry_after_s == 1
    assert "limits.max_inflight_body_bytes" in info.value.detail
    assert admission.refused_bytes == 1 and admission.body_bytes == 100  # nothing charged
    first.resize(30)  # a reservation made before the read, charged its real size
    assert admission.body_bytes == 70
    third = admission.reserve_body(30)
    second.release()
    second.release()  # idempotent
    third.release()
    first.release()
    assert admission.body_bytes == 0
    # Larger than the whole budget: only while nothing else is held, so it can be served.
    alone = admission.reserve_body(150)
    with pytest.raises(Overloaded):
        admission.reserve_body(1)
    alone.release()
    snapshot = admission.snapshot()
    assert snapshot["inflight_body_bytes"] == 0
    assert snapshot["max_inflight_body_bytes"] == 100
    assert snapshot["refused_bytes"] == 2


# --- helpers ----------------------------------------------------------------------------------


class Stalled:
    """A connection that sent a GET and read the response head, and then reads nothing."""

    def __init__(self, port: int, path: str, method: str = "GET") -> None:
        self.sock = socket.socket()
        # A small receive window, so the kernel cannot absorb the body for the client.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.sock.settimeout(60)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: idrserve\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            more = self.sock.recv(4096)
            assert more, f"connection closed before the head: {data!r}"
            data += more
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}

    def read_all(self) -> bytes:
        """The rest of the body (for the small error answers)."""
        n = int(self.headers["content-length"])
        while len(self.body) < n:
            more = self.sock.recv(65536)
            if not more:
                break
            self.body += more
        return self.body

    def closed_by_server(self, timeout_s: float = 10) -> bool:
        """Whether the server has closed the connection (read what is left to find out)."""
        self.sock.settimeout(timeout_s)
        try:
            while self.sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


def _admission(server: Server) -> dict[str, Any]:
    ready = server.readyz()
    assert ready["http_status"] == 200, ready
    admission: dict[str, Any] = ready["admission"]
    return admission


def _wait_idle(server: Server, timeout_s: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        admission = _admission(server)
        idle = admission["requests_in_progress"] == 0 and admission["inflight_body_bytes"] == 0
        if idle or time.monotonic() > deadline:
            return admission
        time.sleep(0.1)


def _metric(server: Server, line_start: str) -> float:
    text = get(server.base + "/metrics")[2].decode()
    (line,) = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    return float(line.split()[-1])


def _expected_region(demo_data: Path) -> np.ndarray:
    level0 = zarr.open_array(str(demo_data / "1001.zarr" / "0"), mode="r")
    return np.asarray(level0[0, 0:2048, :])


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """The demo image 1001, and image 2001 stored in 2 MiB chunks."""
    root = tmp_path_factory.mktemp("body-budget")
    (root / "1001.zarr").symlink_to(demo_data / "1001.zarr")
    noise = np.random.default_rng(2001).integers(0, 65535, (1, 2048, 2048), dtype=np.uint16)
    attrs = {"multiscales": [multiscales("cyx", 1, version="0.4")]}
    write_v2(root / f"{BIG_CHUNKS}.zarr", [noise], attrs, chunks=[(1, 1024, 1024)])
    return root


@pytest.fixture(scope="module")
def server(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with the defaults (512 MiB budget, 60 s send timeout)."""
    srv = Server(str(data_root), tmp_path_factory.mktemp("body-budget-server")).start()
    try:
        yield srv
    finally:
        srv.stop()


# --- large bodies still arrive whole ----------------------------------------------------------


def test_large_region_arrives_whole_and_exact(server: Server, demo_data: Path) -> None:
    status, headers, body = get(server.base + REGION)
    assert status == 200 and len(body) > REGION_BYTES
    assert int(headers["Content-Length"]) == len(body)
    assert headers["X-Request-ID"] and headers["Access-Control-Allow-Origin"] == "*"
    got = np.load(io.BytesIO(body), allow_pickle=False)
    assert got.shape == (1, 1, 2048, 4096) and got.dtype == np.dtype("<u2")  # t, z, y, x
    np.testing.assert_array_equal(got[0, 0], _expected_region(demo_data))
    raw_status, _, raw = get(server.base + REGION.replace("format=npy", "format=raw"))
    assert raw_status == 200 and raw == got.tobytes()
    assert _wait_idle(server)["inflight_body_bytes"] == 0
    time.sleep(0.3)  # access-log lines are written in batches every 100 ms
    logged = {(r["status"], r["bytes"]) for r in server.access_lines()}
    assert {(200, len(body)), (200, len(raw))} <= logged


def test_head_of_a_large_region(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("HEAD", REGION)
        resp = conn.getresponse()
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == REGION_BYTES + 128  # npy header
        assert resp.read() == b""
        conn.request("GET", "/healthz")  # the connection is still in step: nothing was sent
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert _wait_idle(server)["inflight_body_bytes"] == 0


def test_range_and_304_on_a_large_zarr_chunk(server: Server, data_root: Path) -> None:
    path = f"/zarr/{BIG_CHUNKS}.zarr/0/0/1/1"
    stored = (data_root / f"{BIG_CHUNKS}.zarr" / "0" / "0" / "1" / "1").read_bytes()
    assert len(stored) > 2 * MIB
    status, headers, body = get(server.base + path)
    assert status == 200 and body == stored
    n = len(stored)
    for header, (start, stop) in {
        "bytes=100-1500099": (100, 1500100),
        "bytes=-1200000": (n - 1200000, n),
        "bytes=5-": (5, n),
    }.items():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            conn.request("GET", path, headers={"Range": header})
            resp = conn.getresponse()
            part = resp.read()
        finally:
            conn.close()
        assert resp.status == 206, header
        assert part == stored[start:stop], header
        assert resp.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{n}"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("GET", path, headers={"If-None-Match": headers["ETag"]})
        resp = conn.getresponse()
        assert resp.status == 304 and resp.read() == b""
    finally:
        conn.close()


# --- stalled readers --------------------------------------------------------------------------


@pytest.mark.slow
def test_stalled_readers_are_bounded_by_the_budget(make_server: Any, data_root: Path) -> None:
    budget = 64 * MIB
    server: Server = make_server(
        data_root,
        IDRSERVE_LIMITS__MAX_CONCURRENT_RENDERS="2",
        IDRSERVE_LIMITS__MAX_INFLIGHT_BODY_BYTES=str(budget),
    )
    status, _, whole = get(server.base + REGION)  # warm-up: imports, compiled loops, heap
    assert status == 200
    time.sleep(0.5)
    rss_before = server.rss_bytes()
    clients = [Stalled(server.port, REGION) for _ in range(12)]
    try:
        admitted = [c for c in clients if c.status == 200]
        refused = [c for c in clients if c.status != 200]
        peak = rss_before
        for _ in range(8):  # two seconds of the stall
            time.sleep(0.25)
            peak = max(peak, server.rss_bytes())
        growth = peak - rss_before
        print(
            f"12 stalled readers of {len(whole)} B: {len(admitted)} admitted, "
            f"{len(refused)} refused; RSS {rss_before / MIB:.0f} MiB -> {peak / MIB:.0f} MiB "
            f"(+{growth / MIB:.1f} MiB)"
        )
        # An /api/v1 region is charged twice its size from before its read until encoded.
        assert 1 <= len(admitted) <= budget // len(whole)
        for client in refused:
            assert client.status == 503
            assert client.headers["retry-after"] == "1"
            doc = json.loads(client.read_all())
            assert doc["error"] == "overloaded" and doc["request_id"]
            assert "limits.max_inflight_body_bytes" in doc["detail"]
        # The budget, plus what encoding the admitted bodies took; far below 12 bodies.
        assert growth < budget + 32 * MIB, growth
        admission = _admission(server)
        assert admission["requests_in_progress"] == len(admitted), admission
        assert admission["inflight_body_bytes"] == len(admitted) * len(whole), admission
        assert admission["max_inflight_body_bytes"] == budget
        assert admission["refused_bytes"] == len(refused)
        assert _metric(server, "idrserve_inflight_body_bytes") == len(admitted) * len(whole)
        refused_metric = 'idrserve_admission_refused_total{bound="bytes"}'
        assert _metric(server, refused_metric) == len(refused)
    finally:
        for client in clients:
            client.close()
    admission = _wait_idle(server)
    assert admission["requests_in_progress"] == 0 and admission["inflight_body_bytes"] == 0
    assert admission["cancelled"] == len(admitted)  # logged as 499, as the client left
    status, _, again = get(server.base + REGION)
    assert status == 200 and again == whole
    gone = [r for r in server.access_lines() if r["status"] == 499]
    assert len(gone) == len(admitted) and all(0 < r["bytes"] < len(whole) for r in gone)


@pytest.mark.slow
def test_a_reader_that_stalls_past_the_send_timeout_is_disconnected(
    make_server: Any, data_root: Path
) -> None:
    server: Server = make_server(data_root, IDRSERVE_LIMITS__SEND_TIMEOUT_S="2")
    status, _, png = get(server.base + BIG_RENDER)
    assert status == 200 and 4 * MIB < len(png) <= 8 * MIB
    # Memory hits over 1 MiB leave the fast path: budgeted and written in pieces too.
    clients = [Stalled(server.port, BIG_RENDER) for _ in range(2)]
    clients += [Stalled(server.port, REGION)]
    started = time.monotonic()
    try:
        assert [c.status for c in clients] == [200, 200, 200]
        assert clients[0].headers["x-cache"] == "memory"
        admission = _admission(server)
        assert admission["requests_in_progress"] == 3, admission
        assert admission["inflight_body_bytes"] == 2 * len(png) + REGION_BYTES + 128
        # Nobody reads: after the send timeout the server lets go of all three.
        admission = _wait_idle(server)
        waited = time.monotonic() - started
        assert admission["requests_in_progress"] == 0 and admission["inflight_body_bytes"] == 0
        assert admission["send_timeouts"] == 3, admission
        assert waited > 1.5, waited  # not before the timeout
        assert all(c.closed_by_server() for c in clients)
    finally:
        for client in clients:
            client.close()
    assert _metric(server, "idrserve_send_timeouts_total") == 3
    assert get(server.base + BIG_RENDER)[2] == png  # and the server answers normally
