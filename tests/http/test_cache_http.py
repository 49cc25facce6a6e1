"""The cache tier seen through HTTP: X-Cache, shared keys, ETags, restarts, purge, failures."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from idrserve.http.keys import DEPS
from tests.cache.conftest import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.http.conftest import P, S

RI = "/webgateway/render_image_region"
MakeClient = Callable[..., Any]


async def fetch(client: TestClient, url: str, **kw: Any) -> tuple[int, str, bytes, str]:
    resp = await client.get(url, **kw)
    body = await resp.read()
    return resp.status, resp.headers.get("X-Cache", ""), body, resp.headers.get("ETag", "")


async def test_miss_then_memory_hit_with_and_without_the_url_index(
    make_client: MakeClient,
) -> None:
    for entries in (100, 0):
        client = await make_client(cache__url_index_entries=entries)
        url = f"{RI}/{S}/0/0/?region=0,0,100,100&c=1|0:200$FF0000"
        first = await fetch(client, url)
        second = await fetch(client, url)
        assert first[0] == second[0] == 200
        assert (first[1], second[1]) == ("miss", "memory")
        assert first[2] == second[2] and first[3] == second[3]


async def test_equivalent_urls_share_one_entry(make_client: MakeClient) -> None:
    client = await make_client()
    maps16 = quote(json.dumps([{"inverted": {"enabled": False}}] * 2 + [{}]))
    maps18 = quote(json.dumps([{"inverted": {"enabled": False}}] * 2))
    base16 = (
        f"{RI}/{P}/0/0/?tile=1,1,1,256,256&c=1|110:1800$0000FF,2|200:2500$00FF00,"
        f"-3|0:900$FF0000&m=c&p=normal&maps={maps16}"
    )
    variants = [
        base16,
        f"{RI}/{P}/0/0/?m=c&c=1|110:1800$0000FF,2|200:2500$00FF00&maps={maps18}&tile=1,1,1,256,256",
        f"{RI}/{P}/0/0/?tile=1,1,1,256,256&_=1700000000000",
        f"{RI}/{P}/0/0/?tile=1,1,1&q=0.85",
    ]
    results = [await fetch(client, url) for url in variants]
    assert results[0][1] == "miss"
    assert all(r[1] == "memory" for r in results[1:]), [r[1] for r in results]
    assert len({r[3] for r in results}) == 1
    other = await fetch(client, f"{RI}/{P}/0/0/?tile=1,1,1,256,256&q=0.9")
    assert other[1] == "miss" and other[3] != results[0][3]


async def test_if_none_match_on_the_fast_path(make_client: MakeClient) -> None:
    client = await make_client()
    url = f"{RI}/{S}/0/0/?region=0,0,64,64"
    _, _, _, etag = await fetch(client, url)
    await fetch(client, url)  # now indexed
    resp = await client.get(url, headers={"If-None-Match": etag})
    assert resp.status == 304
    assert resp.headers["ETag"] == etag
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_disk_tier_survives_a_restart(make_client: MakeClient, tmp_path: Path) -> None:
    settings = {"cache__memory_max_bytes": 0, "cache__dir": str(tmp_path / "disk")}
    url = f"/webgateway/render_thumbnail/{S}/"
    first = await make_client(**settings)
    miss = await fetch(first, url)
    assert miss[1] == "miss"
    await first.app[DEPS].cache.flush()
    second = await make_client(**settings)  # a new process, the same directory
    hit = await fetch(second, url)
    assert hit[1] == "disk"
    assert hit[2] == miss[2]


async def test_redis_tier_shared_between_servers(
    make_client: MakeClient,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    settings = {"cache__memory_max_bytes": 0, "cache__redis_url": redis_server.url}
    a = await make_client(**settings)
    b = await make_client(**settings)
    url = f"{RI}/{P}/0/0/?tile=2,0,0"
    assert (await fetch(a, url))[1] == "miss"
    deps = a.app[DEPS]
    await deps.cache.flush()
    assert (await fetch(b, url))[1] == "redis"


async def test_single_flight_over_http(make_client: MakeClient) -> None:
    client = await make_client()
    url = f"{RI}/{P}/0/0/?tile=0,2,2,512,512"
    results = await asyncio.gather(*(fetch(client, url) for _ in range(50)))
    assert all(r[0] == 200 for r in results)
    tiers = Counter(r[1] for r in results)
    assert tiers["miss"] == 1, tiers
    assert len({r[2] for r in results}) == 1


async def test_redis_killed_mid_run_every_request_succeeds(
    make_client: MakeClient,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    client = await make_client(cache__redis_url=redis_server.url, cache__redis_timeout_s=0.2)
    urls = [f"{RI}/{P}/0/0/?tile=1,{x},{y},128,128" for x in range(4) for y in range(4)]

    async def storm() -> list[int]:
        return [r[0] for r in await asyncio.gather(*(fetch(client, u) for u in urls))]

    assert set(await storm()) == {200}
    redis_server.kill()
    assert set(await storm()) == {200}
    urls = [u + "&q=0.5" for u in urls]  # new keys: must render without Redis
    assert set(await storm()) == {200}
    redis_server.start()
    assert set(await storm()) == {200}


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "idrserve", "cache", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **env},
    )  # fmt: skip


async def test_purge_from_the_cli(make_client: MakeClient, tmp_path: Path) -> None:
    cache_dir = tmp_path / "disk"
    client = await make_client(cache__dir=str(cache_dir), cache__generation_ttl_s=0.0)
    url = f"{RI}/{S}/0/0/?region=0,0,32,32"
    first = await fetch(client, url)
    assert (await fetch(client, url))[1] == "memory"
    done = run_cli("purge", "--image", str(S), env={"IDRSERVE_CACHE_DIR": str(cache_dir)})
    assert done.returncode == 0, done.stderr
    assert "generation now 1" in done.stdout
    after = await fetch(client, url)
    assert after[1] == "miss"  # the URL index and memory both honour the new generation
    assert after[3] != first[3] and after[2] == first[2]
    stats = run_cli("stats", env={"IDRSERVE_CACHE_DIR": str(cache_dir)})
    assert stats.returncode == 0, stats.stderr
    assert "disk" in json.loads(stats.stdout)["tiers"]
    nothing = run_cli("purge", "--image", "1", env={})
    assert nothing.returncode == 2


async def test_metrics_count_tiers(make_client: MakeClient) -> None:
    client = await make_client()
    url = f"/webgateway/render_thumbnail/{P}/"
    await fetch(client, url)
    await fetch(client, url)
    resp = await client.get("/metrics")
    text = await resp.text()
    assert resp.status == 200
    assert 'idrserve_cache_requests_total{result="hit",tier="memory"}' in text
    line = next(
        ln for ln in text.splitlines()
        if ln.startswith('idrserve_cache_requests_total{result="hit",tier="memory"}')
    )  # fmt: skip
    assert float(line.split()[-1]) >= 1


@pytest.mark.parametrize("path", [f"{RI}/{S}/0/0/?region=0,0,10,10", "/webgateway/imgData/7002/"])
async def test_errors_and_json_are_not_cached_as_images(make_client: MakeClient, path: str) -> None:
    client = await make_client()
    status, tier, _, _ = await fetch(client, path)
    assert status == 200
    assert tier in ("miss", "")  # imgData carries no X-Cache
    bad = await fetch(client, f"{RI}/{S}/0/0/?region=0,0,0,10")
    assert bad[0] == 400 and bad[1] == ""
