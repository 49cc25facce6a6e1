"""Cold tiles planned and rendered by the connection handler (http/coldpath.py).

`ColdRenders` and `JsonErrorRequestHandler._start_cold` (http/server.py) answer a cold
webgateway or IIIF tile without aiohttp's request, middlewares and response. A client must
not be able to tell: same bytes, same headers in the same order, the same log line and
/metrics counts; every request it does not take answered by the usual path; a failed or
overdue render handed back to it; pipelined requests answered in order; the keep-alive timer,
graceful shutdown and the request bound kept. The real server on real sockets, the fixture
images of conftest.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from idrserve.http.coldpath import ColdAnswer, ColdJob
from idrserve.http.keys import ADMISSION, DEPS
from tests.cache.conftest import redis_server, redis_url  # noqa: F401 (fixtures)
from tests.http.conftest import P, S, Z
from tests.http.live import Conn, Served, value
from tests.http.test_cold_path import URLS

Headers = list[tuple[str, str]]
# One URL per image, fetched first so its metadata is loaded (`fresh_meta`).
WARM = {
    P: f"/webgateway/render_image_region/{P}/0/0/?tile=0,2,2,256,256",
    S: f"/webgateway/render_image_region/{S}/0/0/?tile=0,0,0,64,64",
    Z: f"/webgateway/render_image_region/{Z}/0/0/?tile=0,0,0,64,64",
}
TILE = f"/webgateway/render_image_region/{P}/0/0/?tile=0,1,1,256,256"
OTHER = f"/webgateway/render_image_region/{P}/0/0/?tile=0,0,1,256,256"


def _comparable(headers: Headers) -> Headers:
    """Headers in order, with the per-answer values blanked (Server-Timing keeps its names)."""
    out = []
    for name, text in headers:
        if name in ("Date", "X-Request-ID"):
            text = "…"
        elif name == "Server-Timing":
            text = re.sub(r"dur=[0-9.]+", "dur=…", text)
        out.append((name, text))
    return out


async def _warmed(served: Served) -> Conn:
    conn = await Conn.open(served.port)
    for url in WARM.values():
        status, _, _ = await conn.get(url)
        assert status == 200
    return conn


async def test_cold_tiles_same_bytes_and_headers_as_the_usual_path(
    serve: Callable[..., Any],
) -> None:
    direct = await serve()
    usual = await serve(server__direct_hits=False, server__direct_renders=False)
    assert usual.cold is None and direct.cold is not None
    a, b = await _warmed(direct), await _warmed(usual)
    taken = direct.cold_taken
    assert any(u.startswith("/iiif/") for u in URLS)  # with its own Link header
    for url in URLS:
        mine, theirs = await a.get(url), await b.get(url)
        assert direct.cold_taken == taken + 1, url
        taken = direct.cold_taken
        assert mine[0] == theirs[0] == 200, url
        assert mine[2] == theirs[2], url
        assert value(mine[1], "X-Cache") == "miss", url
        assert _comparable(mine[1]) == _comparable(theirs[1]), url
    a.close()
    b.close()


async def test_a_cold_answer_is_remembered_for_direct_hits(serve: Callable[..., Any]) -> None:
    served = await serve()
    conn = await _warmed(served)
    cold = await conn.get(TILE)
    assert served.cold_taken == 1 and served.answered == 0
    hit = await conn.get(TILE)
    assert served.answered == 1 and value(hit[1], "X-Cache") == "memory"
    assert hit[2] == cold[2]
    conn.close()


async def test_log_line_and_metrics_of_a_cold_answer(serve: Callable[..., Any]) -> None:
    served = await serve()
    conn = await _warmed(served)
    _, headers, body = await conn.get(TILE, "X-Request-ID: cold-1\r\n")
    assert served.cold_taken == 1
    assert value(headers, "X-Request-ID") == "cold-1"
    line = served.log_records()[-1]
    assert line["request_id"] == "cold-1"
    assert line["route"] == "/webgateway/render_image_region/{iid}/{z}/{t}/"
    assert (line["method"], line["status"], line["bytes"], line["cache"]) == (
        "GET",
        200,
        len(body),
        "miss",
    )
    assert {"source_ms", "render_ms", "encode_ms"} <= set(line)
    _, _, text = await conn.get("/metrics")
    metrics = text.decode()
    family = 'family="tile"'
    # The three warm-up tiles went the usual way, this one the cold path: counted alike.
    assert f'idrserve_http_cache_answers_total{{{family},tier="miss"}} 4.0' in metrics
    assert f'idrserve_http_requests_total{{code="200",{family}}} 4.0' in metrics
    conn.close()


NOT_COLD = {
    "HTTP/1.0": ("", "1.0"),
    "Connection: close": ("Connection: close\r\n", "1.1"),
    "If-None-Match": ('If-None-Match: "other"\r\n', "1.1"),
}


@pytest.mark.parametrize(("extra", "version"), NOT_COLD.values(), ids=NOT_COLD.keys())
async def test_other_requests_take_the_usual_path(
    serve: Callable[..., Any], extra: str, version: str
) -> None:
    served = await serve()
    conn = await _warmed(served)
    status, headers, _ = await conn.get(TILE, extra, version)
    assert status == 200 and value(headers, "X-Cache") == "miss"
    assert served.cold_taken == 0
    conn.close()


DECLINED = {
    # no metadata loaded (here: no such image): the usual path looks it up
    "unknown image": ("/webgateway/render_image_region/999/0/0/?tile=0,0,0,256,256", 404),
    "bad parameter": (f"/webgateway/render_image_region/{P}/0/0/?tile=abc", 400),
    "no such plane": (f"/webgateway/render_image_region/{P}/9/0/?tile=0,0,0,256,256", 404),
    "output over 512²": (f"/webgateway/render_image_region/{P}/0/0/?region=0,0,600,600", 200),
    "webclient alias": (f"/webclient/render_image_region/{P}/0/0/?tile=0,1,1,256,256", 200),
    "missing slash": (f"/webgateway/render_image_region/{P}/0/0?tile=0,1,1,256,256", 301),
    "IIIF info.json": (f"/iiif/3/{P}/info.json", 200),
    "IIIF bad region": (f"/iiif/3/{P}/0,0,-5,512/256,/0/default.jpg", 400),
    "IIIF over 512²": (f"/iiif/3/{P}/0,0,2048,2048/1024,/0/default.jpg", 200),
    "_rdef route": (f"/webgateway/render_image_region_rdef/{P}/0/0/?tile=0,1,1,256,256", 400),
}


@pytest.mark.parametrize(("url", "status"), DECLINED.values(), ids=DECLINED.keys())
async def test_requests_it_cannot_plan_take_the_usual_path(
    serve: Callable[..., Any], url: str, status: int
) -> None:
    served = await serve()
    conn = await _warmed(served)
    got, headers, body = await conn.get(url)
    assert got == status, body[:200]
    assert served.cold_taken == 0
    if status >= 400:
        assert json.loads(body)["error"] and value(headers, "X-Request-ID")
    conn.close()


async def test_a_failing_render_is_handed_back(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    reference = await serve(server__direct_renders=False)
    ref = await _warmed(reference)
    expected = (await ref.get(TILE))[2]
    served = await serve()
    conn = await _warmed(served)
    assert served.cold is not None

    async def broken(job: ColdJob) -> ColdAnswer | None:
        raise RuntimeError("boom")

    served.cold.render = broken  # type: ignore[method-assign]
    status, headers, body = await conn.get(TILE)
    assert served.cold_taken == 1  # planned, failed, answered the usual way
    assert status == 200 and body == expected and value(headers, "X-Cache") == "miss"
    assert "cold tile failed" in caplog.text
    assert served.app is not None and served.app[ADMISSION].requests == 0
    ref.close()
    conn.close()


def _slowed(served: Served, seconds: float) -> None:
    """The cold renders of `served` start `seconds` late."""
    assert served.cold is not None
    render = served.cold.render

    async def slow(job: ColdJob) -> ColdAnswer | None:
        await asyncio.sleep(seconds)
        return await render(job)

    served.cold.render = slow  # type: ignore[method-assign]


async def test_an_overdue_render_is_handed_back_at_the_deadline(
    serve: Callable[..., Any],
) -> None:
    served = await serve(limits__request_timeout_s=0.5)
    conn = await _warmed(served)
    _slowed(served, 30)
    t0 = time.monotonic()
    status, headers, _ = await conn.get(TILE)
    took = time.monotonic() - t0
    assert served.cold_taken == 1
    assert status == 200 and value(headers, "X-Cache") == "miss"  # the usual path's render
    assert 0.5 <= took < 5
    assert served.app is not None and served.app[ADMISSION].requests == 0
    conn.close()


async def test_requests_pipelined_behind_a_cold_tile_are_answered_in_order(
    serve: Callable[..., Any],
) -> None:
    served = await serve()
    conn = await _warmed(served)
    urls = [TILE, OTHER, f"/webgateway/render_image_region/{S}/0/0/?tile=0,1,0,64,64", "/healthz"]
    _slowed(served, 0.3)
    await conn.send(f"GET {urls[0]} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await asyncio.sleep(0.1)  # the first is rendering now
    await conn.send("".join(f"GET {u} HTTP/1.1\r\nHost: t\r\n\r\n" for u in urls[1:]).encode())
    await asyncio.sleep(0.05)
    # Held aside while the first renders: the handler task, which may be about to look at
    # its queue (between two requests, before it waits), must find nothing to take there.
    handler = next(iter(served.server._runner.server.connections))  # type: ignore[union-attr]
    assert handler._cold_task is not None and not handler._messages
    assert len(handler._held) == len(urls) - 1
    answers = [await conn.response() for _ in urls]
    assert served.cold_taken == 1
    assert [a[0] for a in answers] == [200] * len(urls)
    assert json.loads(answers[-1][2])["status"] == "ok"
    other = await Conn.open(served.port)
    for url, (_, _, body) in zip(urls[:-1], answers, strict=False):
        assert (await other.get(url))[2] == body, url  # each answer is its own URL's
    other.close()
    conn.close()


async def test_a_client_gone_mid_render_releases_its_slot(serve: Callable[..., Any]) -> None:
    served = await serve()
    conn = await _warmed(served)
    _slowed(served, 0.2)
    await conn.send(f"GET {TILE} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await asyncio.sleep(0.05)
    conn.close()
    await asyncio.sleep(0.4)
    assert served.cold_taken == 1
    assert served.app is not None and served.app[ADMISSION].requests == 0
    again = await Conn.open(served.port)
    assert (await again.get(OTHER))[0] == 200
    again.close()


async def test_a_full_request_bound_is_refused_once_by_the_usual_path(
    serve: Callable[..., Any],
) -> None:
    served = await serve()
    conn = await _warmed(served)
    assert served.app is not None
    admission = served.app[ADMISSION]
    refused = admission.refused_requests
    admission.requests = admission.max_requests  # as if every slot were taken
    try:
        status, headers, body = await conn.get(TILE)
    finally:
        admission.requests = 0
    assert status == 503 and json.loads(body)["error"] and value(headers, "Retry-After")
    assert served.cold_taken == 0 and admission.refused_requests == refused + 1
    conn.close()


async def test_a_long_render_is_not_cut_by_the_keepalive_timer(
    serve: Callable[..., Any],
) -> None:
    served = await serve(limits__keepalive_timeout_s=0.3)
    conn = await _warmed(served)
    _slowed(served, 0.8)  # longer than the keep-alive timeout
    status, _, body = await conn.get(TILE)
    assert served.cold_taken == 1 and status == 200 and body
    assert await conn.closed(1.5)  # then idle: closed by the keep-alive timeout
    conn.close()


async def test_graceful_shutdown_waits_for_a_cold_tile(serve: Callable[..., Any]) -> None:
    served = await serve()
    conn = await _warmed(served)
    _slowed(served, 0.3)
    await conn.send(f"GET {TILE} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(served.server.close())
    status, _, body = await conn.response()
    assert served.cold_taken == 1 and status == 200 and body
    await closing
    conn.close()


@pytest.mark.parametrize("tier", ["disk", "redis"])
async def test_a_lower_tier_hit_is_read_plainly_with_the_usual_headers(
    serve: Callable[..., Any], tier: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A URL answered before whose entry is only in the disk or Redis tier: the cold path
    reads it with a plain lookup (no single-flight, no Redis render lock) and answers as the
    URL index's middleware does."""

    def where(name: str) -> dict[str, str]:
        if tier == "disk":
            return {"cache__dir": str(tmp_path / name)}
        return {"cache__redis_url": request.getfixturevalue("redis_url")}

    direct = await serve(cache__memory_max_bytes=0, **where("direct"))
    usual = await serve(
        cache__memory_max_bytes=0,
        server__direct_hits=False,
        server__direct_renders=False,
        **where("usual"),
    )
    answers = []
    for served in (direct, usual):
        conn = await _warmed(served)
        first = await conn.get(TILE)
        assert first[0] == 200 and value(first[1], "X-Cache") == "miss"
        assert await served.app[DEPS].cache.flush(10)  # the tier write is in the background
        taken = served.cold_taken
        again = await conn.get(TILE)
        assert again[0] == 200 and value(again[1], "X-Cache") == tier
        assert again[2] == first[2]
        answers.append((served.cold_taken - taken, again))
        conn.close()
        if tier == "redis":  # one Redis (one database): the next server starts it empty
            client = aioredis.Redis.from_url(request.getfixturevalue("redis_url"))
            await client.flushdb()
            await client.aclose()
    (direct_taken, mine), (usual_taken, theirs) = answers
    assert direct_taken == 1 and usual_taken == 0
    assert _comparable(mine[1]) == _comparable(theirs[1])
    assert mine[2] == theirs[2]
