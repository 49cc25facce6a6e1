"""http/server.py: JSON for requests aiohttp's parser refuses, the head and send time limits.

`test_aiohttp_private_api_relied_on` names the aiohttp internals the module relies on and
fails first when an aiohttp release changes them; the behaviour tests below it show what
would be lost (docs/operations.md#the-aiohttp-seam). The app runs on a real socket through
`start_server` (aiohttp's test client would use the stock connection handler), and the
requests are raw bytes, since no HTTP client sends them malformed on purpose. `serve()`
itself (signals, graceful stop) runs in tests/integration/test_cli.py, which starts
`idrserve serve`.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http_parser import HttpRequestParser
from aiohttp.web_protocol import RequestHandler

from idrserve.app import create_app
from idrserve.http.server import HttpServer, JsonErrorRequestHandler, start_server
from idrserve.settings import load_settings


async def test_aiohttp_private_api_relied_on() -> None:
    """Exactly what http/server.py takes from aiohttp beyond its documented API.

    When this fails after an aiohttp upgrade, adapt JsonErrorRequestHandler (or, once aiohttp
    has the hooks in docs/operations.md#the-aiohttp-seam, shrink it), then this test.
    """
    version = f"aiohttp {aiohttp.__version__}"
    # 1. The handler is built as web.Server.__call__ builds aiohttp's own: the Server as the
    #    positional manager, the loop and the per-connection options as keywords.
    params = inspect.signature(RequestHandler.__init__).parameters
    assert list(params)[:2] == ["self", "manager"], version
    for name in (
        "loop",
        "keepalive_timeout",
        "access_log_class",
        "access_log",
        "access_log_format",
    ):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, (name, version)
    # 2. aiohttp answers a request its parser refused (and an exception that escaped the app)
    #    with the response handle_error returns; the override replaces its body and headers.
    assert list(inspect.signature(RequestHandler.handle_error).parameters) == [
        "self",
        "request",
        "status",
        "exc",
        "message",
    ], version
    # 3. The head timer reads, after data_received: `_messages`, the requests parsed and not
    #    yet handled (empty while a head is incomplete), and `_request_in_progress`.
    assert {"_messages", "_request_in_progress"} <= set(RequestHandler.__slots__), version
    # 4. Direct hits (http/fastpath.py) are answered in data_received: it queues parsed
    #    requests without waking the handler task (`_waiter`, the future it awaits, is set
    #    aside meanwhile), takes one from `_messages` as the task would (with the parser's
    #    `message_consumed` where it has one), and pushes the keep-alive deadline
    #    (`_next_keepalive_close_time`, `_keepalive_timeout`) as an answered request does.
    direct_state = {
        "_waiter",
        "_parser",
        "_manager",
        "_loop",
        "_keepalive_timeout",
        "_next_keepalive_close_time",
        "access_logger",
    }
    slots = {name for cls in RequestHandler.__mro__ for name in getattr(cls, "__slots__", ())}
    assert direct_state <= slots, version
    assert hasattr(web.Server(lambda r: None), "requests_count"), version  # type: ignore[arg-type,return-value]
    assert callable(RequestHandler.force_close), version
    # 5. Cold tiles (http/coldpath.py) are rendered in a task of the handler's own while the
    #    handler task (`_task_handler`) sleeps: the request factory (`_request_factory`,
    #    called as the task takes a request) and `_handle_request` (a coroutine, ending
    #    when its response is sent) bracket the usual path's requests, so none is overtaken;
    #    `_process_keepalive` (the idle check) and `shutdown(timeout)` are extended, and
    #    connection_lost reads the Server's `handler_cancellation`.
    assert {"_request_factory", "_task_handler"} <= slots, version
    assert inspect.iscoroutinefunction(RequestHandler._handle_request), version
    assert list(inspect.signature(RequestHandler._handle_request).parameters) == [
        "self",
        "request",
        "start_time",
        "request_handler",
    ], version
    assert list(inspect.signature(RequestHandler._process_keepalive).parameters) == ["self"]
    assert list(inspect.signature(RequestHandler.shutdown).parameters) == ["self", "timeout"]
    assert hasattr(web.Server(lambda r: None), "handler_cancellation"), version  # type: ignore[arg-type,return-value]
    # 6. Plain heads read by idrserve (http/plainhead.py) are counted in `_request_count` as
    #    the parser counts those it reads; one handed back to the usual path is read by an
    #    `HttpRequestParser` of its own (protocol, loop, limit, line and field sizes), whose
    #    `feed_data` returns the messages, the upgrade flag and the tail.
    assert "_request_count" in slots, version
    own = HttpRequestParser(
        None, asyncio.get_running_loop(), 2**16, max_line_size=8190, max_field_size=8190
    )
    messages, upgraded, tail = own.feed_data(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [m.path for m, _ in messages] == ["/a?b=1"] and not upgraded and not tail, version

    async def ok(request: web.BaseRequest) -> web.Response:
        return web.Response()

    loop = asyncio.get_running_loop()
    handler = JsonErrorRequestHandler(
        web.Server(ok), loop=loop, cors_origin="*", header_timeout_s=60
    )
    assert handler.transport is None and handler._request_in_progress is False
    handler.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert not handler._messages and handler._head_timer is not None  # a partial head: timed
    handler.data_received(b"\r\n")
    assert len(handler._messages) == 1 and handler._head_timer is None  # complete: not timed


async def _start(app: web.Application, cors_origin: str, **kwargs: Any) -> tuple[HttpServer, int]:
    server = await start_server(app, "127.0.0.1", 0, cors_origin=cors_origin, **kwargs)
    return server, server.port


@pytest.fixture
async def idrserve_port(tmp_path: Path) -> AsyncIterator[int]:
    settings = load_settings(
        {"source": {"zarr_root": str(tmp_path)}, "server": {"cors_origin": "https://a.example"}}
    )
    server, port = await _start(create_app(settings), "https://a.example")
    try:
        yield port
    finally:
        await server.close()


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
    server, port = await _start(app, "*")
    try:
        status, headers, body = await _exchange(
            port, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
    finally:
        await server.close()
    assert status == 500
    assert headers["access-control-allow-origin"] == "*"
    doc = json.loads(body)
    assert doc["error"] == "internal_error"
    assert "secret" not in body.decode()


# ---- time limits on the request head and on idle connections -------------------------------


async def _slow_app() -> web.Application:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(float(request.query.get("s", "0")))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/slow", slow)
    return app


@pytest.fixture
async def timed_port() -> AsyncIterator[int]:
    server, port = await _start(await _slow_app(), "*", header_timeout_s=0.4, keepalive_timeout=1.5)
    try:
        yield port
    finally:
        await server.close()


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        int(v) for k, _, v in (ln.partition(":") for ln in lines) if k.lower() == "content-length"
    )
    return int(lines[0].split()[1]), await reader.readexactly(length)


async def test_a_trickled_request_head_gets_a_json_408_and_the_connection_closes(
    timed_port: int,
) -> None:
    """A client sending its header a few bytes at a time (slowloris) is cut off after
    header_timeout_s from the head's first byte, however steadily it keeps sending."""
    reader, writer = await asyncio.open_connection("127.0.0.1", timed_port)
    started = time.monotonic()
    writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
    data = b""
    try:
        for _ in range(40):  # 2 s of trickling, five times the limit
            writer.write(b"X")
            await writer.drain()
            try:
                data += await asyncio.wait_for(reader.read(65536), 0.05)
            except TimeoutError:
                continue
            if data:
                break
        data += await asyncio.wait_for(reader.read(-1), 5)  # then the server closes
    finally:
        writer.close()
    elapsed = time.monotonic() - started
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b"Content-Type: application/json" in head and b"Access-Control-Allow-Origin: *" in head
    doc = json.loads(body)
    assert doc["error"] == "request_timeout" and "0.4 s" in doc["detail"]
    assert doc["request_id"] and f"X-Request-ID: {doc['request_id']}".encode() in head
    assert 0.35 < elapsed < 1.5


async def test_heads_within_the_limit_and_slow_handlers_are_untouched(timed_port: int) -> None:
    """The limit covers only the head's arrival: a head completed in time, a handler slower
    than the limit, pipelined requests and a keep-alive pause longer than the limit all work on
    one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", timed_port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\n")
        await asyncio.sleep(0.2)
        writer.write(b"Host: x\r\n\r\n")
        assert (await _response(reader))[0] == 200
        await asyncio.sleep(0.6)  # idle past header_timeout_s, within keepalive_timeout
        writer.write(b"GET /slow?s=0.7 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _response(reader))[0] == 200  # the handler took longer than the limit
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert [(await _response(reader))[0] for _ in range(2)] == [200, 200]
    finally:
        writer.close()


async def test_idle_keep_alive_connections_close_after_keepalive_timeout(timed_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", timed_port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await _response(reader))[0] == 200
        idle = time.monotonic()
        assert await asyncio.wait_for(reader.read(1), 10) == b""  # closed by the server
        assert 1.0 < time.monotonic() - idle < 5
    finally:
        writer.close()


async def test_close_stops_listening_and_lets_in_flight_requests_finish() -> None:
    """The connections are the runner's own: its graceful shutdown covers them."""
    server, port = await _start(await _slow_app(), "*")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /slow?s=0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)  # the request is in its handler
        closing = asyncio.ensure_future(server.close())
        await asyncio.sleep(0.1)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        assert (await _response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(1), 5) == b""  # then the connection closes
        await asyncio.wait_for(closing, 5)
    finally:
        writer.close()


# ---- clients that stop reading: TCP_USER_TIMEOUT ---------------------------------------------


@pytest.fixture
async def send_timeout_port() -> AsyncIterator[tuple[int, list[float]]]:
    """A server with a 0.5 s send timeout; the list gets the time of each send timeout."""

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.query["n"]))

    app = web.Application()
    app.router.add_get("/big", big)
    timeouts: list[float] = []
    server, port = await _start(
        app, "*", send_timeout_s=0.5, on_send_timeout=lambda: timeouts.append(time.monotonic())
    )
    try:
        yield port, timeouts
    finally:
        await server.close()


async def _ask(port: int, n: int) -> socket.socket:
    """A raw connection with a small receive window that sent GET /big?n= and read 4 KiB."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, f"GET /big?n={n} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert (await loop.sock_recv(sock, 4096)).startswith(b"HTTP/1.1 200 ")
    return sock


async def _reset_by_server(sock: socket.socket) -> bool:
    """Read what is left: True if the server reset the connection."""
    loop = asyncio.get_running_loop()
    try:
        while await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 5):
            pass
    except ConnectionResetError:
        return True
    return False


# 16 MiB stays mostly in the server's write buffer; 1 MiB (a one-shot write) fits in the
# kernel's socket buffers, so the process never sees it wait: the kernel cuts both.
@pytest.mark.parametrize("n", [16 << 20, 1 << 20], ids=["16 MiB", "1 MiB"])
async def test_a_client_that_stops_reading_is_reset_after_the_send_timeout(
    send_timeout_port: tuple[int, list[float]], n: int
) -> None:
    port, timeouts = send_timeout_port
    sock = await _ask(port, n)
    stopped = time.monotonic()
    try:
        for _ in range(60):
            if timeouts:
                break
            await asyncio.sleep(0.1)
        assert len(timeouts) == 1
        assert 0.4 < timeouts[0] - stopped < 4, timeouts[0] - stopped
        assert await _reset_by_server(sock)
    finally:
        sock.close()


async def test_a_slow_steady_reader_is_not_cut_off(
    send_timeout_port: tuple[int, list[float]],
) -> None:
    """The limit is on taking no data at all, as nginx's send_timeout, not on a rate."""
    port, timeouts = send_timeout_port
    loop = asyncio.get_running_loop()
    sock = await _ask(port, 16 << 20)
    try:
        got, started = 0, time.monotonic()
        while time.monotonic() - started < 2:  # four times the limit
            got += len(await asyncio.wait_for(loop.sock_recv(sock, 64 * 1024), 5))
            await asyncio.sleep(0.15)
        assert 0 < got < 16 << 20 and timeouts == []
    finally:
        sock.close()


async def test_a_port_taken_cleans_the_app_up_and_raises() -> None:
    first, port = await _start(await _slow_app(), "*")
    cleaned: list[web.Application] = []
    app = await _slow_app()
    app.on_cleanup.append(lambda a: _note(cleaned, a))
    try:
        with pytest.raises(OSError, match="address already in use"):
            await start_server(app, "127.0.0.1", port, send_timeout_s=1)
        assert cleaned == [app]
    finally:
        await first.close()


async def _note(seen: list[web.Application], app: web.Application) -> None:
    seen.append(app)
