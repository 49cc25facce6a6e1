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
import inspect
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

import idrserve.service as service
from idrserve.cache import TieredCache
from idrserve.http import coldpath
from idrserve.http.bodies import LARGE_BODY_BYTES
from idrserve.http.coldpath import ColdAnswer, ColdJob
from idrserve.http.keys import ADMISSION, DEPS
from idrserve.http.params import last
from idrserve.http.webgateway import OUTPUT_PARAMS
from idrserve.turns import InlineTurns
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
# JPEG outputs up to 1024² (the tile of bioformats2raw's default chunk) take the cold path too.
LARGE_JPEG = [
    f"/webgateway/render_image_region/{P}/0/0/?region=0,0,1024,1024",
    f"/iiif/3/{P}/0,0,2048,2048/1024,/0/default.jpg",
]
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
    tasks = _tasks_of(direct)
    assert any(u.startswith("/iiif/") for u in URLS)  # with its own Link header
    for url in [*URLS, *LARGE_JPEG]:
        mine, theirs = await a.get(url), await b.get(url)
        assert direct.cold_taken == taken + 1, url
        taken = direct.cold_taken
        assert mine[0] == theirs[0] == 200, url
        assert mine[2] == theirs[2], url
        assert value(mine[1], "X-Cache") == "miss", url
        assert _comparable(mine[1]) == _comparable(theirs[1]), url
    assert tasks == []  # all rendered in the pool without a task (ColdRenders.pool)
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
    "JPEG over 1024²": (f"/webgateway/render_image_region/{P}/0/0/?region=0,0,1100,1024", 200),
    "PNG over 512²": (
        f"/webgateway/render_image_region/{P}/0/0/?region=0,0,600,600&format=png",
        200,
    ),
    "webclient alias": (f"/webclient/render_image_region/{P}/0/0/?tile=0,1,1,256,256", 200),
    "missing slash": (f"/webgateway/render_image_region/{P}/0/0?tile=0,1,1,256,256", 301),
    "IIIF info.json": (f"/iiif/3/{P}/info.json", 200),
    "IIIF bad region": (f"/iiif/3/{P}/0,0,-5,512/256,/0/default.jpg", 400),
    "IIIF PNG over 512²": (f"/iiif/3/{P}/0,0,2048,2048/1024,/0/default.png", 200),
    "IIIF over 1024²": (f"/iiif/3/{P}/0,0,4096,4096/2048,/0/default.jpg", 200),
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


async def test_a_body_over_one_write_is_handed_back_and_sent_whole(
    serve: Callable[..., Any],
) -> None:
    # A 1024² JPEG at quality 1.0 of this noisy image is over LARGE_BODY_BYTES: planned and
    # rendered here, then answered by the usual path, which writes it in pieces: from the
    # memory tier the render filled, not by rendering it again.
    url = f"/webgateway/render_image_region/{P}/0/0/?region=0,0,1024,1024&q=1.0"
    reference = await serve(server__direct_hits=False, server__direct_renders=False)
    ref = await _warmed(reference)
    expected = await ref.get(url)
    served = await serve()
    conn = await _warmed(served)
    status, headers, body = await conn.get(url)
    assert len(body) > LARGE_BODY_BYTES
    assert served.cold_taken == 1
    assert status == 200 and body == expected[2]
    assert value(headers, "X-Cache") == "memory"
    assert value(expected[1], "X-Cache") == "miss"

    def rest(headers: Headers) -> Headers:
        return [h for h in _comparable(headers) if h[0] not in ("X-Cache", "Server-Timing")]

    assert rest(headers) == rest(expected[1])
    assert served.app is not None and served.app[ADMISSION].requests == 0
    ref.close()
    conn.close()


# How a cold tile renders when `now` does not take it (these servers have two CPU threads, so
# none renders inline): in the pool without a task (`ColdRenders.pool`), or in a task
# (`ColdRenders.render`), as when its cache needs I/O.
PATHS = ["pool", "task"]


def _on_path(served: Served, path: str) -> None:
    """Send `served`'s cold renders down `path` only."""
    assert served.cold is not None
    if path == "task":
        served.cold.pool_job = lambda job: None  # type: ignore[method-assign]


def _wrapped(served: Served, path: str, before: Callable[[], object]) -> None:
    """Cold renders of `served` take `path`, and call `before()` first: in the pool thread
    (pool) or in the task (task, awaited when it returns an awaitable)."""
    assert served.cold is not None
    _on_path(served, path)
    if path == "pool":
        pool_job = served.cold.pool_job

        def job_of(job: ColdJob) -> Any:
            call = pool_job(job)
            if call is None:
                return None

            def run() -> Any:
                before()
                return call()

            return run

        served.cold.pool_job = job_of  # type: ignore[method-assign]
        return
    render = served.cold.render

    async def rendered(job: ColdJob) -> ColdAnswer | None:
        waited = before()
        if inspect.isawaitable(waited):
            await waited
        return await render(job)

    served.cold.render = rendered  # type: ignore[method-assign]


@pytest.mark.parametrize("path", PATHS)
async def test_a_failing_render_is_handed_back(
    serve: Callable[..., Any], caplog: pytest.LogCaptureFixture, path: str
) -> None:
    reference = await serve(server__direct_renders=False)
    ref = await _warmed(reference)
    expected = (await ref.get(TILE))[2]
    served = await serve()
    conn = await _warmed(served)

    def boom() -> None:
        raise RuntimeError("boom")

    _wrapped(served, path, boom)
    status, headers, body = await conn.get(TILE)
    assert served.cold_taken == 1  # planned, failed, answered the usual way
    assert status == 200 and body == expected and value(headers, "X-Cache") == "miss"
    assert "cold tile failed" in caplog.text and "boom" in caplog.text
    assert served.app is not None and served.app[ADMISSION].requests == 0
    assert served.app[ADMISSION].renders == 0
    ref.close()
    conn.close()


def _slowed(served: Served, seconds: float, path: str = "pool") -> None:
    """The cold renders of `served` take `path` and start `seconds` late."""
    if path == "pool":
        _wrapped(served, path, lambda: time.sleep(seconds))
    else:
        _wrapped(served, path, lambda: asyncio.sleep(seconds))


@pytest.mark.parametrize("path", PATHS)
async def test_an_overdue_render_is_handed_back_at_the_deadline(
    serve: Callable[..., Any], path: str
) -> None:
    served = await serve(limits__request_timeout_s=0.5)
    conn = await _warmed(served)
    # A pool thread cannot be stopped: it sleeps 1.5 s, the deadline is at 0.5.
    _slowed(served, 1.5 if path == "pool" else 30, path)
    t0 = time.monotonic()
    status, headers, _ = await conn.get(TILE)
    took = time.monotonic() - t0
    assert served.cold_taken == 1
    assert status == 200 and value(headers, "X-Cache") == "miss"  # the usual path's render
    assert 0.5 <= took < 1.4
    assert served.app is not None and served.app[ADMISSION].requests == 0
    await asyncio.sleep(1.5 - took + 0.2)  # the overdue render is back: nothing more sent
    assert served.app[ADMISSION].renders == 0
    again = await conn.get("/healthz")
    assert again[0] == 200 and json.loads(again[2])["status"] == "ok"
    conn.close()


@pytest.mark.parametrize("path", PATHS)
async def test_requests_pipelined_behind_a_cold_tile_are_answered_in_order(
    serve: Callable[..., Any], path: str
) -> None:
    served = await serve()
    conn = await _warmed(served)
    urls = [TILE, OTHER, f"/webgateway/render_image_region/{S}/0/0/?tile=0,1,0,64,64", "/healthz"]
    _slowed(served, 0.3, path)
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


@pytest.mark.parametrize("path", PATHS)
async def test_a_client_gone_mid_render_releases_its_slot(
    serve: Callable[..., Any], path: str
) -> None:
    served = await serve()
    conn = await _warmed(served)
    _slowed(served, 0.2, path)
    await conn.send(f"GET {TILE} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await asyncio.sleep(0.05)
    conn.close()
    await asyncio.sleep(0.4)
    assert served.cold_taken == 1
    assert served.app is not None and served.app[ADMISSION].requests == 0
    assert served.app[ADMISSION].renders == 0
    again = await Conn.open(served.port)
    assert (await again.get(OTHER))[0] == 200
    again.close()


@pytest.mark.parametrize("path", PATHS)
async def test_a_long_render_is_not_cut_by_the_keepalive_timer(
    serve: Callable[..., Any], path: str
) -> None:
    served = await serve(limits__keepalive_timeout_s=0.3)
    conn = await _warmed(served)
    _slowed(served, 0.8, path)  # longer than the keep-alive timeout
    status, _, body = await conn.get(TILE)
    assert served.cold_taken == 1 and status == 200 and body
    assert await conn.closed(1.5)  # then idle: closed by the keep-alive timeout
    conn.close()


@pytest.mark.parametrize("path", PATHS)
async def test_graceful_shutdown_waits_for_a_cold_tile(
    serve: Callable[..., Any], path: str
) -> None:
    served = await serve()
    conn = await _warmed(served)
    _slowed(served, 0.3, path)
    await conn.send(f"GET {TILE} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(served.server.close())
    status, _, body = await conn.response()
    assert served.cold_taken == 1 and status == 200 and body
    await closing
    conn.close()


async def test_concurrent_requests_for_a_pooled_tile_share_one_render(
    serve: Callable[..., Any],
) -> None:
    """Requests for a tile rendering in the pool join it, as `cached_render`'s single flight
    does: one render, the others answered "coalesced" with the same bytes and headers
    otherwise, and every slot given back."""
    served = await serve()
    reference = await serve(server__direct_hits=False, server__direct_renders=False)
    first = await _warmed(served)
    conns = [first] + [await Conn.open(served.port) for _ in range(3)]
    assert served.app is not None and served.cold is not None
    deps, admission = served.app[DEPS], served.app[ADMISSION]
    assert deps.cache is not None
    renders, coalesced = deps.cache.renders, deps.cache.coalesced
    started = []
    _wrapped(served, "pool", lambda: (started.append(1), time.sleep(0.3)))
    await first.send(f"GET {TILE} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await asyncio.sleep(0.1)  # rendering now
    for conn in conns[1:]:
        conn.writer.write(f"GET {TILE} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    answers = [await conn.response() for conn in conns]
    assert started == [1] and deps.cache.renders == renders + 1
    assert deps.cache.coalesced == coalesced + 3
    assert [value(h, "X-Cache") for _, h, _ in answers] == ["miss"] + ["coalesced"] * 3
    expected = await (await _warmed(reference)).get(TILE)
    for status, headers, body in answers:
        assert status == 200 and body == expected[2]
        assert (
            "cache;dur=" in value(headers, "Server-Timing") or value(headers, "X-Cache") == "miss"
        )
    assert (admission.requests, admission.renders) == (0, 0)
    for conn in conns:
        conn.close()


@pytest.mark.parametrize("bound", ["requests", "renders"])
async def test_a_full_bound_is_refused_once_by_the_usual_path(
    serve: Callable[..., Any], bound: str
) -> None:
    """With every request slot, or every render slot (cold renders take one, as
    `render_region` does), taken, the cold path leaves the request to the usual path's 503,
    counted once."""
    served = await serve()
    conn = await _warmed(served)
    assert served.app is not None
    admission = served.app[ADMISSION]
    refused = getattr(admission, f"refused_{bound}")
    setattr(admission, bound, getattr(admission, f"max_{bound}"))  # as if all were taken
    try:
        status, headers, body = await conn.get(TILE)
    finally:
        setattr(admission, bound, 0)
    assert status == 503 and json.loads(body)["error"] and value(headers, "Retry-After")
    assert served.cold_taken == 0 and getattr(admission, f"refused_{bound}") == refused + 1
    assert (admission.requests, admission.renders) == (0, 0)
    conn.close()


@pytest.mark.parametrize("cancelled", [True, False], ids=["cancelled", "not-cancelled"])
async def test_a_client_gone_from_a_pooled_render_is_logged_once(
    serve: Callable[..., Any], cancelled: bool
) -> None:
    """With aiohttp's handler_cancellation the request ends as a 499 when its render comes
    back (a pool thread cannot be stopped); without it the tile is rendered and stored for
    nobody. The render's slot is held until the thread is done, in both cases."""
    served = await serve()
    served.server._runner.server.handler_cancellation = cancelled  # type: ignore[union-attr]
    conn = await _warmed(served)
    assert served.app is not None
    admission = served.app[ADMISSION]
    gone, lines = admission.cancelled, len(served.log_records())
    _slowed(served, 0.3)
    await conn.send(f"GET {TILE} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await asyncio.sleep(0.1)
    conn.close()
    await asyncio.sleep(0.05)
    assert admission.renders == 1  # still rendering
    await asyncio.sleep(0.4)
    assert (admission.requests, admission.renders) == (0, 0)
    assert admission.cancelled == gone + cancelled
    records = served.log_records()[lines:]
    assert [r["status"] for r in records] == ([499] if cancelled else [])
    again = await Conn.open(served.port)
    hit = await again.get(TILE)  # stored all the same
    assert hit[0] == 200 and value(hit[1], "X-Cache") == "memory"
    again.close()


async def test_a_large_tile_over_the_inline_bound_renders_in_the_pool(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    """One CPU thread renders tiles up to 3 × 512² inline; a 1024² tile goes to the pool
    without a task, or in a task when a cache tier needs I/O (a disk here)."""
    for tier in ({}, {"cache__dir": str(tmp_path / "c")}):
        usual = await serve(server__direct_hits=False, server__direct_renders=False, **INLINE)
        ref = await _warmed(usual)
        served = await serve(**INLINE, **tier)
        conn = await _warmed(served)
        tasks = _tasks_of(served)
        for url in LARGE_JPEG:
            mine, theirs = await conn.get(url), await ref.get(url)
            assert mine[0] == theirs[0] == 200 and mine[2] == theirs[2], url
            assert _comparable(mine[1]) == _comparable(theirs[1]), url
        assert tasks == ([] if not tier else LARGE_JPEG)
        conn.close()
        ref.close()


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


async def test_urls_answered_before_skip_the_plain_read_while_redis_forgets_them(
    serve: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    """A URL answered before is read plainly (an MGET) before the lookup that takes the
    render lock, while the lower tiers mostly still have such entries. When Redis keeps
    forgetting them the plain read is skipped (one round trip less a cold tile), and when
    its entries come back so does the plain read (`LowerHits`)."""
    url = request.getfixturevalue("redis_url")
    served = await serve(cache__memory_max_bytes=0, cache__redis_url=url)
    conn = await _warmed(served)
    assert served.cold is not None
    lower = served.cold.lower
    client = aioredis.Redis.from_url(url)
    tiles = [
        f"/webgateway/render_image_region/{P}/0/0/?tile=0,{x},{y},64,64"
        for x in range(10)
        for y in range(8)
    ]

    async def mgets() -> int:
        stats = await client.info("commandstats")
        return int(stats.get("cmdstat_mget", {}).get("calls", 0))

    async def fetch_all(tier: str) -> None:
        for tile in tiles:
            status, headers, _ = await conn.get(tile)
            assert status == 200 and value(headers, "X-Cache") == tier, tile

    await fetch_all("miss")  # answered once: indexed from now on
    assert served.app is not None and await served.app[DEPS].cache.flush(10)
    assert lower.plain_first and lower.share == 1.0
    await client.flushdb()  # Redis forgets them all
    await fetch_all("miss")
    assert not lower.plain_first  # about 58 plain reads missed: the rest went without
    assert await served.app[DEPS].cache.flush(10)
    await client.flushdb()
    before = await mgets()
    await fetch_all("miss")
    assert await mgets() == before  # no plain read: the locking lookup alone
    assert await served.app[DEPS].cache.flush(10)
    await fetch_all("redis")  # stored again: the locking lookup finds them
    assert lower.plain_first
    before = await mgets()
    await fetch_all("redis")
    assert await mgets() > before  # read plainly again
    await client.aclose()
    conn.close()


def test_the_share_of_lower_tier_hits_moves_with_the_lookups() -> None:
    lower = coldpath.LowerHits()
    assert lower.plain_first
    for _ in range(58):
        lower.saw(False)
    assert lower.plain_first  # (63/64)^58 ≈ 0.401
    lower.saw(False)
    assert not lower.plain_first  # 0.395
    for _ in range(20):  # mostly misses, a few hits: it stays off
        lower.saw(_ % 4 == 0)
    assert not lower.plain_first
    for _ in range(10):
        lower.saw(True)
    assert lower.plain_first


# One CPU thread: tiles up to 3 × 256² render inline, so a cold tile is answered in its loop
# turn by a plain call (service.render_now, InlineTurns.defer), with no task at all.
INLINE = {"server__cpu_threads": 1}
BURST = [
    f"/webgateway/render_image_region/{P}/0/0/?tile=0,{x},{y},256,256"
    for x in (3, 4)
    for y in range(4)
]


def _tasks_of(served: Served) -> list[str]:
    """The URLs `served` renders in a task (ColdRenders.render), recorded as they start."""
    assert served.cold is not None
    render, urls = served.cold.render, []

    async def counted(job: ColdJob) -> ColdAnswer | None:
        urls.append(job.url)
        return await render(job)

    served.cold.render = counted  # type: ignore[method-assign]
    return urls


async def test_tiles_answered_in_their_turn_match_the_usual_path(
    serve: Callable[..., Any],
) -> None:
    direct = await serve(**INLINE)
    usual = await serve(server__direct_hits=False, server__direct_renders=False, **INLINE)
    a, b = await _warmed(direct), await _warmed(usual)
    tasks = _tasks_of(direct)
    renders = direct.app[DEPS].cache.renders  # type: ignore[index]
    for url in URLS:
        mine, theirs = await a.get(url), await b.get(url)
        assert mine[0] == theirs[0] == 200, url
        assert mine[2] == theirs[2], url
        assert value(mine[1], "X-Cache") == "miss", url
        assert _comparable(mine[1]) == _comparable(theirs[1]), url
    assert direct.cold_taken == len(URLS)
    # All read at most 3 × 256² (the IIIF one from level 1): none needed a task.
    assert tasks == []
    assert direct.app[DEPS].cache.renders == renders + len(URLS)  # type: ignore[index]
    hit = await a.get(URLS[0])  # stored as cached_render stores: a memory hit now
    assert value(hit[1], "X-Cache") == "memory"
    a.close()
    b.close()


# Over service.ONE_TURN_PIXELS (3 × 256²) and up to the one-thread default (3 × 512²): each
# renders inline in two loop turns, read and decode, then render and encode.
TWO_TURNS = [
    f"/webgateway/render_image_region/{P}/0/0/?tile=0,0,0,512,512",  # two active channels
    f"/webgateway/render_image_region/{P}/0/0/?tile=0,1,0,512,512"
    "&c=1|0:3000$FF00FF,2|9:900$00FFFF,3|0:900$FF0000",  # three
    f"/webgateway/render_image_region/{Z}/2/0/?tile=0,0,0,512,512",  # one, greyscale
    f"/iiif/3/{P}/512,512,512,512/max/0/default.jpg",
]


@pytest.mark.parametrize("path", ["call", "task"])
async def test_larger_tiles_render_in_two_turns_and_match_the_usual_path(
    serve: Callable[..., Any], tmp_path: Path, path: str
) -> None:
    """A lone cold tile over one turn's pixels: its first part renders at once, its second
    waits for the next turn (one queued turn a tile), as a plain call without a task or, when
    a cache tier needs I/O (a disk here), in its task; same bytes and headers as the usual
    path either way."""
    tier = {"cache__dir": str(tmp_path / "c")} if path == "task" else {}
    direct = await serve(**INLINE, **tier)
    usual = await serve(server__direct_hits=False, server__direct_renders=False, **INLINE)
    a, b = await _warmed(direct), await _warmed(usual)
    tasks = _tasks_of(direct)
    turns = direct.app[DEPS].inline_turns  # type: ignore[index]
    for url in TWO_TURNS:
        queued = turns.queued
        mine, theirs = await a.get(url), await b.get(url)
        assert mine[0] == theirs[0] == 200, url
        assert mine[2] == theirs[2], url
        assert value(mine[1], "X-Cache") == "miss", url
        assert _comparable(mine[1]) == _comparable(theirs[1]), url
        assert turns.queued == queued + 1, url  # the second part waited for its turn
    assert tasks == ([] if path == "call" else TWO_TURNS)
    a.close()
    b.close()


async def test_a_burst_of_cold_tiles_waits_for_its_turns_without_tasks(
    serve: Callable[..., Any],
) -> None:
    served = await serve(server__inline_renders_per_turn=1, **INLINE)
    reference = await serve(server__direct_renders=False)
    first = await _warmed(served)
    conns = [first] + [await Conn.open(served.port) for _ in BURST[1:]]
    tasks = _tasks_of(served)
    assert served.app is not None
    turns = served.app[DEPS].inline_turns
    queued = turns.queued
    for conn, url in zip(conns, BURST, strict=True):  # sent together: one loop iteration
        conn.writer.write(f"GET {url} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    answers = [await conn.response() for conn in conns]
    assert tasks == []
    assert turns.queued > queued  # most waited for a later iteration's turn
    ref = await _warmed(reference)
    for url, (status, headers, body) in zip(BURST, answers, strict=True):
        assert status == 200 and value(headers, "X-Cache") == "miss", url
        assert body == (await ref.get(url))[2], url
    assert served.app[ADMISSION].requests == 0
    for conn in [*conns, ref]:
        conn.close()


@pytest.mark.parametrize("direct", [True, False])
async def test_a_burst_under_a_time_budget_is_answered_and_timed(
    serve: Callable[..., Any], direct: bool
) -> None:
    """`server.inline_turn_budget_ms` reaches the turns, and every inline render, from the
    connection handler or from a request's task, reports its duration for the budget."""
    served = await serve(
        server__inline_renders_per_turn=8,
        server__inline_turn_budget_ms=1.4,
        server__direct_renders=direct,
        **INLINE,
    )
    reference = await serve(server__direct_renders=False)
    assert served.app is not None
    turns = served.app[DEPS].inline_turns
    assert (turns.per_turn, turns.budget_s) == (8, 0.0014)
    first = await _warmed(served)
    conns = [first] + [await Conn.open(served.port) for _ in BURST[1:]]
    turns.estimate_s = 0.0  # what the burst's renders report, not the warm-up's
    for conn, url in zip(conns, BURST, strict=True):
        conn.writer.write(f"GET {url} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    answers = [await conn.response() for conn in conns]
    assert turns.estimate_s > 0
    ref = await _warmed(reference)
    for url, (status, headers, body) in zip(BURST, answers, strict=True):
        assert status == 200 and value(headers, "X-Cache") == "miss", url
        assert body == (await ref.get(url))[2], url
    for conn in [*conns, ref]:
        conn.close()


@pytest.mark.parametrize("cancelled", [True, False], ids=["cancelled", "not-cancelled"])
async def test_a_client_gone_before_its_turn_releases_its_slot(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, cancelled: bool
) -> None:
    """A deferred tile whose client left: with aiohttp's handler_cancellation its turn is
    skipped (a 499 in the log, counted as cancelled), without it the tile is rendered for
    nobody; either way its request slot is released and the server serves on."""
    served = await serve(**INLINE)
    served.server._runner.server.handler_cancellation = cancelled  # type: ignore[union-attr]
    conn = await _warmed(served)
    held: list[Callable[[], bool]] = []
    monkeypatch.setattr(InlineTurns, "take_now", lambda self: False)
    monkeypatch.setattr(InlineTurns, "defer", lambda self, job, first=False: held.append(job))
    await conn.send(f"GET {TILE} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    for _ in range(100):
        if held:
            break
        await asyncio.sleep(0.01)
    handler = next(iter(served.server._runner.server.connections))  # type: ignore[union-attr]
    assert handler._cold_task is not None  # the request is in progress
    await _leave_then_turn(served, conn, held[0], cancelled, monkeypatch)


async def _leave_then_turn(
    served: Served,
    conn: Conn,
    turn: Callable[[], bool],
    cancelled: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client of the request `turn` would go on with leaves; then its turn comes: skipped
    (with handler cancellation), or rendered for nobody. Its slot must be free after, and the
    server serve on."""
    assert served.app is not None
    admission = served.app[ADMISSION]
    gone = admission.cancelled
    conn.close()
    await asyncio.sleep(0.1)
    assert turn() is not cancelled
    assert admission.requests == 0
    assert admission.cancelled == gone + cancelled
    if cancelled:
        assert served.log_records()[-1]["status"] == 499
    monkeypatch.undo()
    again = await Conn.open(served.port)
    assert (await again.get(OTHER))[0] == 200
    again.close()


async def test_a_deferred_tile_in_two_turns_is_answered_after_both(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both parts from the queue (its loop turn was taken when it arrived): the first queues
    the second ahead of the rest, the answer is the usual path's, and its slot is released
    once."""
    served = await serve(**INLINE)
    usual = await serve(server__direct_hits=False, server__direct_renders=False, **INLINE)
    conn, ref = await _warmed(served), await _warmed(usual)
    assert served.app is not None
    turns, admission = served.app[DEPS].inline_turns, served.app[ADMISSION]
    monkeypatch.setattr(InlineTurns, "take_now", lambda self: False)
    queued = turns.queued
    mine = await conn.get(TWO_TURNS[1])
    assert turns.queued == queued + 2  # deferred, then its second part
    theirs = await ref.get(TWO_TURNS[1])
    assert mine[0] == theirs[0] == 200 and mine[2] == theirs[2]
    assert _comparable(mine[1]) == _comparable(theirs[1])
    assert admission.requests == 0
    conn.close()
    ref.close()


@pytest.mark.parametrize("cancelled", [True, False], ids=["cancelled", "not-cancelled"])
async def test_a_client_gone_between_two_turns_releases_its_slot(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, cancelled: bool
) -> None:
    """A tile in two turns whose client leaves after the first (read and decode, at once):
    its second turn is skipped (with aiohttp's handler_cancellation) or renders for nobody;
    either way its request slot is released and the server serves on."""
    served = await serve(**INLINE)
    served.server._runner.server.handler_cancellation = cancelled  # type: ignore[union-attr]
    conn = await _warmed(served)
    held: list[Callable[[], bool]] = []
    monkeypatch.setattr(
        InlineTurns, "defer", lambda self, job, first=False: held.append(job) if first else None
    )
    await conn.send(f"GET {TWO_TURNS[0]} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    for _ in range(100):
        if held:
            break
        await asyncio.sleep(0.01)
    assert len(held) == 1  # the first part ran at once; the rest waits, ahead of the queue
    assert served.app is not None and served.app[ADMISSION].requests == 1
    await _leave_then_turn(served, conn, held[0], cancelled, monkeypatch)


@pytest.mark.parametrize("deferred", [False, True], ids=["at-once", "deferred"])
async def test_a_render_failing_in_its_turn_is_handed_back(
    serve: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    deferred: bool,
) -> None:
    reference = await serve(server__direct_renders=False)
    expected = (await (await _warmed(reference)).get(TILE))[2]
    served = await serve(**INLINE)
    conn = await _warmed(served)
    real, failed = service._read_render_encode, []

    def fails_once(*args: Any) -> Any:
        if not failed:
            failed.append(True)
            raise RuntimeError("boom")
        return real(*args)

    monkeypatch.setattr(service, "_read_render_encode", fails_once)
    if deferred:
        monkeypatch.setattr(InlineTurns, "take_now", lambda self: False)
    status, headers, body = await conn.get(TILE)
    assert failed and served.cold_taken == 1  # planned, failed, answered the usual way
    assert status == 200 and body == expected and value(headers, "X-Cache") == "miss"
    assert "cold tile failed" in caplog.text
    assert served.app is not None and served.app[ADMISSION].requests == 0
    conn.close()


@pytest.mark.parametrize("why", ["disk tier", "in flight"])
async def test_a_tile_that_may_need_io_or_a_join_takes_a_task(
    serve: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    """A lower cache tier must be looked up (I/O) before a render, and a render of the same
    key already under way must be joined: both take the task path (`cached_render`), never
    the plain call."""
    settings: dict[str, Any] = dict(INLINE)
    if why == "disk tier":
        settings["cache__dir"] = str(tmp_path / "tiles")
    else:
        monkeypatch.setattr(TieredCache, "rendering", lambda self, key: True)
    served = await serve(**settings)
    conn = await _warmed(served)
    tasks = _tasks_of(served)
    status, headers, _ = await conn.get(TILE)
    assert status == 200 and value(headers, "X-Cache") == "miss"
    assert tasks == [TILE]
    conn.close()


async def test_a_memory_hit_on_the_cold_path_waits_for_no_turn(
    serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without direct hits (or for a URL the URL index does not know) a memory hit is planned
    as a cold tile: it is answered at once, never queued behind renders for a turn (that
    held hits to three per loop iteration: bench_cache.py without direct hits at 0.75x)."""
    served = await serve(server__direct_hits=False, **INLINE)
    conn = await _warmed(served)
    first = await conn.get(TILE)
    assert value(first[1], "X-Cache") == "miss"
    deferred: list[object] = []
    monkeypatch.setattr(InlineTurns, "take_now", lambda self: False)  # every turn taken
    monkeypatch.setattr(InlineTurns, "defer", lambda self, job, first=False: deferred.append(job))
    tasks = _tasks_of(served)
    again = await conn.get(TILE)
    assert again[0] == 200 and value(again[1], "X-Cache") == "memory"
    assert again[2] == first[2]
    assert deferred == [] and tasks == []
    conn.close()


def _stage_seconds(metrics: str, family: str) -> dict[str, float]:
    found = re.findall(
        rf'idrserve_http_render_stage_seconds_total\{{family="{family}",stage="(\w+)"\}} (\S+)',
        metrics,
    )
    return {stage: float(text) for stage, text in found}


@pytest.mark.parametrize("direct", [True, False], ids=["cold path", "usual path"])
async def test_stage_seconds_on_metrics_are_those_of_the_log_line(
    serve: Callable[..., Any], direct: bool
) -> None:
    # Each stage's time, as the access log reports it, is added to the family's counter:
    # what bench/bench_http.py divides by the renders to split a cold tile's time.
    served = await (serve() if direct else serve(server__direct_renders=False))
    conn = await _warmed(served)
    _, _, text = await conn.get("/metrics")
    before = _stage_seconds(text.decode(), "tile")
    assert {"source", "render", "encode"} <= set(before)  # the warm-up tiles rendered
    taken = served.cold_taken
    status, headers, _ = await conn.get(TILE)
    assert status == 200 and value(headers, "X-Cache") == "miss"
    assert served.cold_taken == taken + direct
    line = served.log_records()[-1]
    _, _, text = await conn.get("/metrics")
    after = _stage_seconds(text.decode(), "tile")
    for stage in ("source", "render", "encode"):
        spent_ms = (after[stage] - before[stage]) * 1000
        assert spent_ms > 0
        assert spent_ms == pytest.approx(line[f"{stage}_ms"], abs=0.002), stage
    conn.close()


def _message_kinds(served: Served) -> list[str]:
    """The type of each message the cold path is asked to plan, in order, from now on."""
    assert served.cold is not None
    kinds: list[str] = []
    plan = served.cold.plan

    def recording(message: Any) -> Any:
        kinds.append(type(message).__name__)
        return plan(message)

    served.cold.plan = recording  # type: ignore[method-assign]
    return kinds


async def test_plain_heads_are_read_by_idrserve_and_the_rest_by_aiohttp(
    serve: Callable[..., Any],
) -> None:
    """http/plainhead.py: a whole plain GET head is read without aiohttp's parser, a cold
    tile, a direct hit and a tile handed back to the usual path alike; a head that arrives
    in two reads goes to aiohttp, which reads that connection from then on."""
    served = await serve()
    kinds = _message_kinds(served)
    conn = await _warmed(served)
    handler = next(iter(served.server._runner.server.connections))  # type: ignore[union-attr]
    assert handler._own_heads and set(kinds) == {"PlainGet"}
    cold, hit = await conn.get(TILE), await conn.get(TILE)
    assert cold[0] == hit[0] == 200 and cold[2] == hit[2]
    assert [value(cold[1], "X-Cache"), value(hit[1], "X-Cache")] == ["miss", "memory"]
    big = f"/webgateway/render_image_region/{P}/0/0/?region=0,0,1024,1024&q=1.0"
    status, headers, body = await conn.get(big)  # handed back: aiohttp reads its head then
    assert status == 200 and len(body) > LARGE_BODY_BYTES
    assert value(headers, "X-Cache") == "memory" and kinds[-1] == "PlainGet"
    assert handler._own_heads
    await conn.send(f"GET {OTHER} HTTP/1.1\r\nHo".encode())
    await asyncio.sleep(0.05)
    await conn.send(b"st: t\r\n\r\n")
    split = await conn.response()
    assert split[0] == 200 and value(split[1], "X-Cache") == "miss"
    assert not handler._own_heads and kinds[-1] == "RawRequestMessage"
    again = await conn.get(f"/webgateway/render_image_region/{P}/0/0/?tile=0,2,1,256,256")
    assert again[0] == 200 and kinds[-1] == "RawRequestMessage"
    reference = await serve(server__direct_hits=False, server__direct_renders=False)
    ref = await _warmed(reference)
    for url, answer in ((TILE, cold), (big, (status, headers, body)), (OTHER, split)):
        assert (await ref.get(url))[2] == answer[2], url
    ref.close()
    conn.close()
    # `server.plain_heads=false`: aiohttp's parser reads every request.
    off = await serve(server__plain_heads=False)
    kinds = _message_kinds(off)
    conn = await _warmed(off)
    assert (await conn.get(TILE))[2] == cold[2]
    assert kinds and set(kinds) == {"RawRequestMessage"}
    conn.close()


# --- a tile's query read as written (coldpath.tile_and_rest) ----------------------------------

_QUERY = st.lists(
    st.sampled_from(
        [
            "tile=0,1,2,256,256",
            "tile=",
            "tile",
            "tiles=1",
            "region=0,0,9,9",
            "regionx=1",
            "c=1|0:9",
            "m=g",
            "q=0.5",
            "",
            "flip=h",
            "format=png",
            "maps=[]",
            "tile=1,0,0",
            "a=b=c",
            "%7C=1",
            "m=c+x",
            "%74ile=1,0,0",
            "%72egion=0,0,9,9",
            "tile=1,0%2C0",
            "tile=1+0",
            "maps=%5B%7B%22inverted%22%3A%7B%7D%7D%5D",
            "c=1%7C0:9$FF0000",
            "q=0%2E5",
        ]
    ),
    max_size=6,
).map("&".join)


@given(_QUERY)
def test_a_tile_query_read_as_written_gives_what_its_multidict_gives(text: str) -> None:
    query = URL.build(path="/", query_string=text, encoded=True).query
    split = coldpath.tile_and_rest(text)
    if split is None:
        return  # read as a multidict, as before
    tile, rest = split
    assert query.get("tile") == tile and tile and "region" not in query
    kept = URL.build(path="/", query_string=rest, encoded=True).query
    for name in OUTPUT_PARAMS:  # what the output kept by `rest` is parsed from
        assert last(kept, name) == last(query, name)
    assert "tile" not in kept


def test_tile_queries_the_memo_leaves_to_the_multidict() -> None:
    for text in ("tile=1&tile=2", "tile=&region=0,0,1,1", "tile=1&region=0,0,1,1", "c=%7C",
                 "%74ile=1&tile=2", "tile=1%2C2", "tile=1+2", "tile", "tile=", "q=1"):  # fmt: skip
        assert coldpath.tile_and_rest(text) is None, text
    assert coldpath.tile_and_rest("c=1|0:9&tile=0,1,2&m=g") == ("0,1,2", "c=1|0:9&m=g")
    # OMERO.iviewer's query: escapes in the rest's values stay, as a key.
    assert coldpath.tile_and_rest("m=c+x&tile=1&maps=%5B%5D") == ("1", "m=c+x&maps=%5B%5D")
