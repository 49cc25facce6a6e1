"""Direct hits: memory hits answered by the connection handler as their request is parsed.

`DirectHits` (http/fastpath.py) and `JsonErrorRequestHandler.data_received` (http/server.py)
skip aiohttp's per-request machinery for the plainest memory hit. A client must not be able to
tell: same bytes, same headers in the same order, the same access-log line and /metrics counts
as the middleware path, and every request it does not take (conditional, HTTP/1.0, closing,
pipelined, with a body, a purged image) answered by the usual path. These tests run the real
server (`start_server`, real sockets) on the fixture images of tests/http/conftest.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from idrserve.http.fastpath import DirectHit
from idrserve.http.keys import DEPS
from idrserve.http.server import DIRECT_MAX_BUFFERED, Outbox
from tests.http.conftest import P, S
from tests.http.live import Conn, value, without
from tests.http.test_cold_path import PER_ANSWER, URLS

Headers = list[tuple[str, str]]
TILE = f"/webgateway/render_image_region/{P}/0/0/?tile=0,1,1,256,256"


async def test_direct_hits_same_bytes_and_headers_as_the_middleware_path(
    serve: Callable[..., Any],
) -> None:
    direct = await serve()
    usual = await serve(server__direct_hits=False, server__direct_renders=False)
    assert usual.direct is None
    a, b = await Conn.open(direct.port), await Conn.open(usual.port)
    for url in URLS:
        cold = await a.get(url)
        await b.get(url)  # rendered, remembered
        before = direct.answered
        hit, via_middleware = await a.get(url), await b.get(url)
        assert direct.answered == before + 1, url  # answered directly
        assert cold[0] == hit[0] == via_middleware[0] == 200, url
        assert value(cold[1], "X-Cache") == "miss", url
        assert value(hit[1], "X-Cache") == value(via_middleware[1], "X-Cache") == "memory"
        assert cold[2] == hit[2] == via_middleware[2], url
        # Same headers in the same order; only the per-answer values differ.
        per_request = {"Date", "X-Request-ID"}
        assert without(hit[1], per_request) == without(via_middleware[1], per_request), url
        assert without(hit[1], PER_ANSWER) == without(cold[1], PER_ANSWER), url
    a.close()
    b.close()


async def test_iiif_urls_keep_their_own_link_header(serve: Callable[..., Any]) -> None:
    served = await serve()
    conn = await Conn.open(served.port)
    url = f"/iiif/3/{P}/0,0,512,512/256,/0/default.jpg"
    cold = await conn.get(url)
    hit = await conn.get(url)
    assert served.answered == 1
    assert value(hit[1], "Link") == value(cold[1], "Link") is not None
    conn.close()


async def test_the_client_request_id_is_echoed_and_logged(serve: Callable[..., Any]) -> None:
    served = await serve()
    conn = await Conn.open(served.port)
    await conn.get(TILE)
    status, headers, body = await conn.get(TILE, "X-Request-ID: abc-123\r\n")
    assert served.answered == 1 and status == 200
    assert value(headers, "X-Request-ID") == "abc-123"
    _, headers, _ = await conn.get(TILE, "X-Request-ID: not a token\r\n")
    assert served.answered == 2
    generated = value(headers, "X-Request-ID")
    assert generated is not None and generated != "not a token"
    records = served.log_records()
    assert [r["cache"] for r in records] == ["miss", "memory", "memory"]
    line = records[1]
    assert line["request_id"] == "abc-123"
    assert line["route"] == "/webgateway/render_image_region/{iid}/{z}/{t}/"
    assert (line["method"], line["status"], line["bytes"]) == ("GET", 200, len(body))
    assert line["client"] == "127.0.0.1" and line["duration_ms"] >= 0
    assert records[2]["request_id"] == generated
    conn.close()


async def test_metrics_count_direct_hits(serve: Callable[..., Any]) -> None:
    served = await serve()
    conn = await Conn.open(served.port)
    for _ in range(3):
        await conn.get(TILE)
    assert served.answered == 2
    _, _, text = await conn.get("/metrics")
    metrics = text.decode()
    family = 'family="tile"'
    assert f'idrserve_http_cache_answers_total{{{family},tier="memory"}} 2.0' in metrics
    assert f'idrserve_http_cache_answers_total{{{family},tier="miss"}} 1.0' in metrics
    assert f'idrserve_http_requests_total{{code="200",{family}}} 3.0' in metrics
    conn.close()


NOT_DIRECT = {
    "HTTP/1.0": ("", "1.0"),
    "Connection: close": ("Connection: close\r\n", "1.1"),
    "a body": ("Content-Length: 2\r\n\r\nab", "1.1"),
    "If-None-Match that differs": ('If-None-Match: "other"\r\n', "1.1"),
}


@pytest.mark.parametrize(("extra", "version"), NOT_DIRECT.values(), ids=NOT_DIRECT.keys())
async def test_other_requests_take_the_usual_path(
    serve: Callable[..., Any], extra: str, version: str
) -> None:
    served = await serve()
    conn = await Conn.open(served.port)
    cold = await conn.get(TILE)
    if "Content-Length" in extra:  # the body follows the blank line
        await conn.send(f"GET {TILE} HTTP/1.1\r\nHost: t\r\n{extra}".encode())
        hit = await conn.response()
    else:
        hit = await conn.get(TILE, extra, version)
    assert served.answered == 0
    assert hit[0] == 200 and hit[2] == cold[2]
    assert value(hit[1], "X-Cache") == "memory"  # the middleware fast path
    conn.close()


async def test_if_none_match_gets_its_304_from_the_usual_path(serve: Callable[..., Any]) -> None:
    served = await serve()
    conn = await Conn.open(served.port)
    _, headers, _ = await conn.get(TILE)
    status, _, body = await conn.get(TILE, f"If-None-Match: {value(headers, 'ETag')}\r\n")
    assert (status, body, served.answered) == (304, b"", 0)
    conn.close()


async def test_pipelined_hits_are_answered_in_order(serve: Callable[..., Any]) -> None:
    served = await serve()
    conn = await Conn.open(served.port)
    urls = URLS[:3]
    first = [(await conn.get(url))[2] for url in urls]
    await conn.send(b"".join(f"GET {u} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for u in urls))
    again = [(await conn.response())[2] for _ in urls]
    assert again == first
    conn.close()


async def test_a_purged_image_is_rendered_again(serve: Callable[..., Any]) -> None:
    served = await serve()
    conn = await Conn.open(served.port)
    await conn.get(TILE)
    await conn.get(TILE)
    assert served.answered == 1
    app = served.server._runner.app
    await app[DEPS].cache.purge_image(P)
    _, headers, _ = await conn.get(TILE)
    assert value(headers, "X-Cache") == "miss" and served.answered == 1
    conn.close()


async def test_other_images_and_errors_are_untouched(serve: Callable[..., Any]) -> None:
    served = await serve()
    conn = await Conn.open(served.port)
    status, headers, body = await conn.get(f"/webgateway/render_image_region/{S}/0/0/?tile=9,0,0")
    assert status == 400 and json.loads(body)["error"] == "bad_request"
    assert value(headers, "Access-Control-Allow-Origin") == "*"
    assert served.answered == 0
    conn.close()


async def test_direct_hits_keep_the_connection_alive(serve: Callable[..., Any]) -> None:
    """A direct hit resets the keep-alive timer (aiohttp's handler task never sees it) and
    starts no request-head timer."""
    served = await serve(limits__keepalive_timeout_s=0.6, limits__header_timeout_s=0.3)
    conn = await Conn.open(served.port)
    await conn.get(TILE)
    for _ in range(4):  # 1.2 s of direct hits, twice the keep-alive timeout
        await asyncio.sleep(0.3)
        status, _, _ = await conn.get(TILE)
        assert status == 200
    assert served.answered == 4
    assert not await conn.closed(0.4)  # no 408 for a head that never started
    assert await conn.closed(1.0)  # idle: closed by the keep-alive timeout
    conn.close()


async def test_a_client_slow_to_read_gets_the_usual_path(serve: Callable[..., Any]) -> None:
    """With more than `DIRECT_MAX_BUFFERED` bytes still waiting for the client, the usual
    path answers (its writer waits for the client to take them); below it, the direct one."""
    served = await serve()
    conn = await Conn.open(served.port)
    await conn.get(TILE)
    handler = next(iter(served.server._runner.server.connections))  # type: ignore[union-attr]
    transport = handler.transport
    real = transport.get_write_buffer_size
    transport.get_write_buffer_size = lambda: DIRECT_MAX_BUFFERED + 1
    try:
        _, headers, _ = await conn.get(TILE)
    finally:
        transport.get_write_buffer_size = real
    assert value(headers, "X-Cache") == "memory" and served.answered == 0
    await conn.get(TILE)
    assert served.answered == 1
    conn.close()


async def test_a_failing_direct_hit_is_answered_by_the_usual_path(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    served = await serve()
    conn = await Conn.open(served.port)
    _, _, body = await conn.get(TILE)

    def broken(message: Any) -> DirectHit | None:
        raise RuntimeError("boom")

    assert served.direct is not None
    served.direct.answer = broken  # type: ignore[method-assign]
    status, headers, again = await conn.get(TILE)
    assert (status, again, value(headers, "X-Cache")) == (200, body, "memory")
    assert "direct hit failed" in caplog.text
    conn.close()


async def test_a_held_back_hit_is_written_before_the_connections_next_answer(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Direct hits are written together at the start of the next loop iteration (`Outbox`).
    Should that flush come late, the connection still writes its held hit before anything it
    answers next, so a client never sees its responses out of order or one lost."""
    served = await serve()
    conn = await Conn.open(served.port)
    cold = await conn.get(TILE)
    monkeypatch.setattr(Outbox, "add", lambda self, handler: None)  # the shared flush never comes
    await conn.send(f"GET {TILE} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await asyncio.sleep(0.05)  # the hit is answered and held, unsent
    assert served.answered == 1
    await conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    hit = await asyncio.wait_for(conn.response(), 5)
    health = await asyncio.wait_for(conn.response(), 5)
    assert hit[0] == 200 and hit[2] == cold[2] and value(hit[1], "X-Cache") == "memory"
    assert health[0] == 200 and json.loads(health[2])["status"]
    conn.close()
