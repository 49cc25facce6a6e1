"""http/server.py: requests aiohttp's parser refuses get idrserve's JSON error body and CORS.

The app runs on a real socket through `JsonErrorAppRunner` (aiohttp's test client would use
the stock connection handler), and the requests are raw bytes, since no HTTP client sends
them malformed on purpose. `serve()` itself (signals, graceful stop) runs in
tests/integration/test_cli.py, which starts `idrserve serve`.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from idrserve.app import create_app
from idrserve.http.server import JsonErrorAppRunner
from idrserve.settings import load_settings


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start(app: web.Application, cors_origin: str) -> tuple[JsonErrorAppRunner, int]:
    runner = JsonErrorAppRunner(app, cors_origin=cors_origin, handle_signals=False)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


@pytest.fixture
async def idrserve_port(tmp_path: Path) -> AsyncIterator[int]:
    settings = load_settings(
        {"source": {"zarr_root": str(tmp_path)}, "server": {"cors_origin": "https://a.example"}}
    )
    runner, port = await _start(create_app(settings), "https://a.example")
    try:
        yield port
    finally:
        await runner.cleanup()


async def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw`, read until the server closes; (status, headers, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(-1), 10)  # the error response closes
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


MALFORMED = {
    "header over 8190 bytes": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    + b"a" * 9000
    + b"\r\n\r\n",
    "Content-Length not a number": b"GET /healthz HTTP/1.1\r\nContent-Length: ab\r\n\r\n",
    "control character in the method": b"GE\x01T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
    "unknown HTTP version": b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    "space in a header name": b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",
    "request line over the limit": b"GET /iiif/3/" + b"1" * 70000 + b" HTTP/1.1\r\n\r\n",
}


@pytest.mark.parametrize("raw", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_requests_get_a_json_400_with_cors(idrserve_port: int, raw: bytes) -> None:
    status, headers, body = await _exchange(idrserve_port, raw)
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert headers["access-control-allow-origin"] == "https://a.example"
    assert headers["x-request-id"]
    assert headers.get("connection", "close").lower() == "close"
    doc = json.loads(body)
    assert doc["error"] == "bad_request"
    assert doc["detail"].startswith("malformed HTTP request: ")
    assert doc["request_id"] == headers["x-request-id"]


async def test_well_formed_requests_are_untouched(idrserve_port: int) -> None:
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    status, headers, body = await _exchange(idrserve_port, raw)
    assert status == 200
    assert json.loads(body)["status"] == "ok"
    # The app's own on_response_prepare still runs for routed requests.
    assert headers["access-control-allow-origin"] == "https://a.example"


async def test_an_unhandled_exception_is_a_json_500_without_the_traceback() -> None:
    """Outside idrserve's error middleware (a bare app): aiohttp's last-resort 500."""

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals")

    app = web.Application()
    app.router.add_get("/boom", boom)
    runner, port = await _start(app, "*")
    try:
        status, headers, body = await _exchange(
            port, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    finally:
        await runner.cleanup()
    assert status == 500
    assert headers["access-control-allow-origin"] == "*"
    doc = json.loads(body)
    assert doc["error"] == "internal_error"
    assert "secret" not in body.decode()
