"""Single-flight renders: in one process (shared task) and across processes (Redis lock)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import redis.asyncio as aioredis

from idrserve.cache import CacheEntry, TieredCache, response_key
from tests.cache.conftest import CacheFactory

KEY = response_key(11, 0, "cold-tile")


class Renderer:
    """Counts calls; each call sleeps `delay` then returns a distinct body (or raises)."""

    def __init__(self, delay: float = 0.0, error: Exception | None = None, size: int = 2000):
        self.delay = delay
        self.error = error
        self.size = size
        self.calls = 0
        self.started = asyncio.Event()

    async def __call__(self) -> CacheEntry:
        self.calls += 1
        self.started.set()
        n = self.calls
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return CacheEntry(bytes([n % 256]) * self.size, "image/jpeg")


async def test_100_concurrent_misses_render_once(make_cache: CacheFactory, redis_url: str) -> None:
    cache = await make_cache(dir=True, redis_url=redis_url)
    render = Renderer(delay=0.05)
    results = await asyncio.gather(*(cache.get_or_render(KEY, render) for _ in range(100)))
    assert render.calls == 1
    assert len({entry.body for entry, _ in results}) == 1
    assert Counter(tier for _, tier in results) == {"miss": 1, "coalesced": 99}
    assert cache.stats()["coalesce"]["renders_coalesced"] == 99
    assert await cache.get_or_render(KEY, render) == (results[0][0], "memory")
    assert render.calls == 1


async def test_two_processes_render_once(make_cache: CacheFactory, redis_url: str) -> None:
    # Two instances = two processes: separate memory, separate disks, one Redis.
    a = await make_cache(dir=True, redis_url=redis_url)
    b = await make_cache(dir=True, redis_url=redis_url)
    render = Renderer(delay=0.2)
    results = await asyncio.gather(
        *(cache.get_or_render(KEY, render) for _ in range(20) for cache in (a, b))
    )
    assert render.calls == 1
    assert len({entry.body for entry, _ in results}) == 1
    tiers = Counter(tier for _, tier in results)
    assert tiers == {"miss": 1, "coalesced": 39}
    # The waiting process stored what it received: its next hit is local.
    other = b if a.stats()["coalesce"]["renders_coalesced"] == 19 else a
    assert (await other.get(KEY))[1] == "memory"
    assert await other.flush(5)
    other.memory.clear()  # type: ignore[union-attr]
    assert (await other.get(KEY))[1] == "disk"


@pytest.mark.parametrize("holder", ["hung process", "crashed process"])
async def test_dead_lock_holder_costs_at_most_lock_wait(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis, holder: str
) -> None:
    a = await make_cache(redis_url=redis_url, lock_wait_s=0.5)
    b = await make_cache(redis_url=redis_url, lock_wait_s=0.5)
    hung = Renderer(delay=3600)
    stuck = None
    if holder == "hung process":
        stuck = asyncio.create_task(a.get_or_render(KEY, hung))
        await hung.started.wait()  # it took the lock, then started rendering
        assert await raw_redis.exists(a.redis.lock_key(KEY))  # type: ignore[union-attr]
    else:  # the holder died after taking the lock: it stays until lock_ttl_ms
        await raw_redis.set(a.redis.lock_key(KEY), "dead", px=5000)  # type: ignore[union-attr]
    render = Renderer()
    t0 = time.monotonic()
    _entry, tier = await b.get_or_render(KEY, render)
    elapsed = time.monotonic() - t0
    assert tier == "miss" and render.calls == 1
    assert 0.45 <= elapsed < 1.5  # waited lock_wait_s (0.5 s), not the 5 s lock TTL
    if stuck is not None:
        assert hung.calls == 1
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        # The cancelled holder releases its lock instead of making others wait for the TTL.
        assert await a.flush(5)
        assert not await raw_redis.exists(a.redis.lock_key(KEY))  # type: ignore[union-attr]


async def test_render_errors_reach_every_waiter_and_are_not_cached(
    make_cache: CacheFactory, redis_url: str
) -> None:
    cache = await make_cache(dir=True, redis_url=redis_url)
    failing = Renderer(delay=0.05, error=RuntimeError("render failed"))
    results = await asyncio.gather(
        *(cache.get_or_render(KEY, failing) for _ in range(10)), return_exceptions=True
    )
    assert failing.calls == 1
    assert all(isinstance(r, RuntimeError) and str(r) == "render failed" for r in results)
    assert await cache.flush(5)
    assert await cache.get(KEY) == (None, "miss")
    ok = Renderer()
    assert (await cache.get_or_render(KEY, ok))[1] == "miss"
    assert ok.calls == 1


async def test_waiters_take_over_quickly_when_the_holder_fails(
    make_cache: CacheFactory, redis_url: str
) -> None:
    a = await make_cache(redis_url=redis_url, lock_wait_s=2.0)
    b = await make_cache(redis_url=redis_url, lock_wait_s=2.0)
    failing = Renderer(delay=0.1, error=ValueError("bad tile"))
    ok = Renderer()
    t0 = time.monotonic()
    first = asyncio.create_task(a.get_or_render(KEY, failing))
    await asyncio.sleep(0.02)
    _entry, tier = await b.get_or_render(KEY, ok)
    with pytest.raises(ValueError, match="bad tile"):
        await first
    assert tier == "miss" and ok.calls == 1
    assert time.monotonic() - t0 < 1.0  # did not wait for lock_wait_s


async def test_too_large_for_redis_releases_the_lock_at_once(
    make_cache: CacheFactory, redis_url: str
) -> None:
    a = await make_cache(redis_url=redis_url, lock_wait_s=2.0, redis_max_value_bytes=1000)
    b = await make_cache(redis_url=redis_url, lock_wait_s=2.0, redis_max_value_bytes=1000)
    big = Renderer(delay=0.1, size=5000)
    t0 = time.monotonic()
    results = await asyncio.gather(a.get_or_render(KEY, big), b.get_or_render(KEY, big))
    assert big.calls == 2  # nothing to share through Redis, but no one waited long
    assert sorted(tier for _, tier in results) == ["miss", "miss"]
    assert time.monotonic() - t0 < 1.0


async def test_cancelled_leader_does_not_fail_the_others(make_cache: CacheFactory) -> None:
    cache: TieredCache = await make_cache()
    render = Renderer(delay=0.1)
    leader = asyncio.create_task(cache.get_or_render(KEY, render))
    await asyncio.sleep(0.01)
    others = [asyncio.create_task(cache.get_or_render(KEY, render)) for _ in range(5)]
    await asyncio.sleep(0.01)
    leader.cancel()  # a viewer panned away
    results = await asyncio.gather(*others)
    assert render.calls == 1
    assert {tier for _, tier in results} == {"coalesced"}
    assert (await cache.get(KEY))[1] == "memory"  # the shared render was still cached
