"""The cold path and the fast paths answer the same request with the same bytes and headers.

A cold tile can be answered three ways: rendered inline on the event loop (small tiles on a
one-thread server, `server.inline_render_pixels`), rendered in the CPU pool, and, once
rendered, from the memory tier through the URL index (http/fastpath.py). A client must not be
able to tell which one answered except by `X-Cache` and `Server-Timing`, which say exactly that.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from idrserve.app import freeze_heap_when_warm
from idrserve.http.keys import DEPS, STATE
from tests.http.conftest import P, S, Z

MakeClient = Callable[..., Any]
# What may differ between two answers of one URL: when, which request, and how it was found.
PER_ANSWER = {"Date", "X-Request-ID", "X-Cache", "Server-Timing"}
URLS = [
    f"/webgateway/render_image_region/{P}/0/0/?tile=0,1,1,256,256",
    f"/webgateway/render_image_region/{P}/0/0/?tile=0,0,0,256,256&c=1|0:3000$FF00FF,-2,3|9:900$00FFFF",
    f"/webgateway/render_image_region/{S}/0/0/?region=10,20,200,100&format=png",
    f"/webgateway/render_image_region/{Z}/2/0/?tile=0,1,0,256,256&q=0.5",
    f"/iiif/3/{P}/0,0,512,512/256,/0/default.jpg",
]


async def answer(client: TestClient, url: str) -> tuple[int, bytes, dict[str, str], str]:
    resp = await client.get(url)
    body = await resp.read()
    headers = {k: v for k, v in resp.headers.items() if k not in PER_ANSWER}
    return resp.status, body, headers, resp.headers.get("X-Cache", "")


@pytest.mark.parametrize("inline_pixels", [3 * 256 * 256, 0], ids=["inline", "pool"])
async def test_cold_then_fast_path_same_bytes_and_headers(
    make_client: MakeClient, inline_pixels: int
) -> None:
    client = await make_client(server__cpu_threads=1, server__inline_render_pixels=inline_pixels)
    for url in URLS:
        cold = await answer(client, url)
        warm = await answer(client, url)
        assert cold[0] == warm[0] == 200, url
        assert (cold[3], warm[3]) == ("miss", "memory"), url
        assert cold[1] == warm[1], url
        assert cold[2] == warm[2], url


async def test_inline_and_pool_renders_are_identical(make_client: MakeClient) -> None:
    inline = await make_client(server__cpu_threads=1, server__inline_render_pixels=3 * 256 * 256)
    pool = await make_client(server__cpu_threads=1, server__inline_render_pixels=0)
    for url in URLS:
        a, b = await answer(inline, url), await answer(pool, url)
        assert a[0] == b[0] == 200
        assert a[1] == b[1], url
        assert a[2] == b[2], url


async def test_heap_is_frozen_once_the_kernels_are_warm(make_client: MakeClient) -> None:
    client = await make_client(server__cpu_threads=1)
    try:
        await freeze_heap_when_warm(client.app)
        await client.app[STATE]["freeze"]
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("per_turn", [1, 3])
async def test_concurrent_inline_renders_take_turns(make_client: MakeClient, per_turn: int) -> None:
    """A burst of cold tiles on a one-thread server renders a few per loop iteration
    (idrserve/turns.py) and every one of them still answers, with the same bytes as alone."""
    client = await make_client(
        server__cpu_threads=1,
        server__inline_render_pixels=3 * 256 * 256,
        server__inline_renders_per_turn=per_turn,
    )
    assert client.app[DEPS].inline_turns.per_turn == per_turn
    urls = [
        f"/webgateway/render_image_region/{P}/0/0/?tile=0,{x},{y},256,256&q=0.7"
        for x in range(2)
        for y in range(2)
    ]
    answers = await asyncio.gather(*(answer(client, url) for url in urls))
    assert [a[0] for a in answers] == [200] * len(urls)
    assert client.app[DEPS].inline_turns.queued >= 1
    alone = await make_client(server__cpu_threads=1, server__inline_render_pixels=3 * 256 * 256)
    for url, together in zip(urls, answers, strict=True):
        assert (await answer(alone, url))[1] == together[1], url


@pytest.mark.parametrize("nice", [0, 4])
async def test_pool_renders_run_below_the_loop(make_client: MakeClient, nice: int) -> None:
    def own_nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    client = await make_client(server__cpu_threads=1, server__cpu_thread_nice=nice)
    loop_nice = own_nice()
    pool_nice = await asyncio.get_running_loop().run_in_executor(
        client.app[DEPS].cpu_pool, own_nice
    )
    assert pool_nice == min(19, loop_nice + nice)
    resp = await client.get(URLS[0])  # and a pool render still answers
    assert resp.status == 200
