"""Redis killed, restarted, hung or absent: every call still succeeds, bounded in time."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest
import redis.asyncio as aioredis

from idrserve.cache import CacheEntry, CachePurgeError, TieredCache, response_key
from tests.cache.conftest import CacheFactory, RedisServer, free_port


def entry_for(i: int) -> CacheEntry:
    return CacheEntry(i.to_bytes(4, "big") * 500, "image/jpeg")


async def load(cache: TieredCache, stop: asyncio.Event, worker: int) -> tuple[int, int]:
    """Mixed traffic until `stop`: returns (calls, calls that raised)."""
    calls = failures = 0
    i = 0
    while not stop.is_set():
        i += 1
        key = response_key(worker, 0, str(i % 50))
        n = i

        async def render(n: int = n) -> CacheEntry:
            await asyncio.sleep(0.001)
            return entry_for(n)

        try:
            if i % 3 == 0:
                await cache.get(key)
            elif i % 3 == 1:
                await cache.get_or_render(key, render)
            else:
                cache.put(response_key(worker, 1, str(i)), entry_for(i))
            await cache.generation(worker)
        except Exception:
            failures += 1
        calls += 1
        await asyncio.sleep(0.001)
    return calls, failures


async def test_redis_killed_mid_run_serves_everything_and_recovers(
    make_cache: CacheFactory, redis_server: RedisServer, raw_redis: aioredis.Redis
) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_server.url)
    stop = asyncio.Event()
    workers = [asyncio.create_task(load(cache, stop, w)) for w in range(16)]
    for _ in range(100):  # traffic reaches Redis within 0.4 s on a quiet machine; allow load
        await asyncio.sleep(0.1)
        if cache.stats()["redis"]["hits"] > 0:
            break
    assert cache.stats()["redis"]["hits"] > 0
    redis_server.kill()
    await asyncio.sleep(0.8)
    down = cache.stats()["redis"]
    assert down["breaker_open"] == 1 or down["breaker_opened"] >= 1
    await asyncio.to_thread(redis_server.restart)
    await asyncio.sleep(1.0)  # > breaker_backoff_max_s: a probe has closed the breaker
    stop.set()
    results = await asyncio.gather(*workers)
    assert sum(f for _, f in results) == 0  # no call ever raised
    assert sum(c for c, _ in results) > 500
    stats = cache.stats()["redis"]
    assert stats["breaker_opened"] >= 1
    assert stats["breaker_open"] == 0
    # Errors are bounded: the breaker stops calls after a few failures per backoff period.
    assert 0 < stats["errors"] + stats["write_errors"] < 200
    assert stats["skipped"] > 0
    # Redis is used again after the restart (it lost its data: a restart is just misses).
    key = response_key(99, 0, "after-restart")
    cache.put(key, entry_for(1))
    assert await cache.flush(5)
    assert await raw_redis.exists(cache.redis.value_key(key))  # type: ignore[union-attr]
    assert await cache.get(key) == (entry_for(1), "redis")


async def test_hung_redis_costs_at_most_the_timeout(
    make_cache: CacheFactory, redis_server: RedisServer
) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_server.url)
    cache.put(response_key(1, 0, "x"), entry_for(1))
    assert await cache.flush(5)
    redis_server.pause()
    try:
        timeout = cache.settings.redis_timeout_s
        durations = []
        for i in range(6):
            t0 = time.monotonic()
            _entry, tier = await cache.get_or_render(
                response_key(1, 0, str(i)), partial(_render, entry_for(i))
            )
            durations.append(time.monotonic() - t0)
            assert tier == "miss"
        # The first calls time out; once the breaker is open, calls skip Redis entirely.
        assert max(durations) < timeout + 0.15
        assert durations[-1] < 0.05  # well under the 0.25 s timeout: Redis is skipped
        t0 = time.monotonic()
        results = await asyncio.gather(*(cache.get(response_key(1, 0, "x")) for _ in range(50)))
        assert all(r == (None, "miss") for r in results)
        assert time.monotonic() - t0 < timeout + 0.15
    finally:
        redis_server.resume()
    await asyncio.sleep(cache.settings.breaker_backoff_max_s + 0.05)
    for _ in range(3):  # a probe goes through, the breaker closes
        if await cache.get(response_key(1, 0, "x")) == (entry_for(1), "redis"):
            break
        await asyncio.sleep(0.2)
    assert cache.stats()["redis"]["breaker_open"] == 0
    assert (await cache.get(response_key(1, 0, "x")))[1] == "redis"


async def _render(entry: CacheEntry) -> CacheEntry:
    return entry


async def test_redis_absent_from_the_start(make_cache: CacheFactory) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens here
    cache = await make_cache(dir=True, redis_url=url)  # start() does not raise
    key = response_key(5, 0, "t")
    assert await cache.get(key) == (None, "miss")
    assert await cache.get_or_render(key, lambda: _render(entry_for(5))) == (entry_for(5), "miss")
    cache.put(response_key(5, 0, "u"), entry_for(6))
    assert await cache.generation(5) == 0
    assert await cache.flush(5)
    # The purge reaches memory and the disk, and says that Redis was not reached.
    with pytest.raises(CachePurgeError, match="redis") as info:
        await cache.purge_image(5)
    assert info.value.generation == 1
    assert await cache.generation(5) == 1
    assert cache.stats()["redis"]["errors"] >= 1
    stats = await cache.redis_stats()
    assert "error" in stats


async def test_stats_commands(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    cache = await make_cache(dir=True, redis_url=redis_url)
    for i in range(5):
        cache.put(response_key(1, 0, str(i)), entry_for(i))
    assert await cache.flush(5)
    disk = await cache.disk_stats()
    assert disk["entries"] == 5 and disk["bytes"] == 5 * 4096
    redis = await cache.redis_stats(count_keys=True)
    assert redis["prefix_keys"] == 5
    assert redis["maxmemory_policy"] == "allkeys-lru"
    assert redis["dbsize"] >= 5
