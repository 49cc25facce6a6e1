"""Background writes: bounded, drained on close, not cancelled with the request."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from idrserve.cache import CacheEntry, response_key
from tests.cache.conftest import CacheFactory

ENTRY = CacheEntry(b"t" * 3000, "image/jpeg")


async def test_pending_writes_are_capped_and_counted(
    make_cache: CacheFactory, redis_url: str
) -> None:
    cache = await make_cache(dir=True, redis_url=redis_url, max_pending_writes=4)
    for i in range(40):
        cache.put(response_key(1, 0, str(i)), ENTRY)  # never raises, never blocks
    assert cache.stats()["coalesce"]["pending_writes"] == 4
    assert await cache.flush(5)
    stats = cache.stats()
    assert stats["memory"]["writes"] == 40  # memory is written synchronously
    written = stats["disk"]["writes"] + stats["redis"]["writes"]
    dropped = stats["disk"]["dropped_writes"] + stats["redis"]["dropped_writes"]
    assert written == 4 and dropped == 76


async def test_close_drains_pending_writes(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    # What is tested is the drain, not Redis timeouts: a generous command timeout, so a busy
    # CI machine cannot open the breaker mid-drain (it once did at FAST's 0.2 s: 32 of 50).
    cache = await make_cache(
        memory_max_bytes=0, redis_url=redis_url, max_pending_writes=64, redis_timeout_s=5.0
    )
    keys = [response_key(2, 0, str(i)) for i in range(50)]
    for key in keys:
        cache.put(key, ENTRY)
    await cache.aclose()
    assert cache.redis is not None
    assert await raw_redis.exists(*(cache.redis.value_key(k) for k in keys)) == 50
    cache.put(response_key(2, 0, "late"), ENTRY)  # after close: dropped, still no error


async def test_a_cancelled_request_still_caches_its_render(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    cache = await make_cache(memory_max_bytes=0, dir=True, redis_url=redis_url, redis_timeout_s=5.0)
    key = response_key(3, 0, "t")
    rendered = asyncio.Event()

    async def render() -> CacheEntry:
        rendered.set()
        return ENTRY

    async def request() -> None:
        await cache.get_or_render(key, render)
        await asyncio.sleep(10)  # the response is being sent when the client goes away

    task = asyncio.create_task(request())
    await rendered.wait()
    await asyncio.sleep(0)
    task.cancel()
    assert await cache.flush(5)
    assert cache.redis is not None
    assert await raw_redis.exists(cache.redis.value_key(key))
    assert (await cache.get(key))[1] == "disk"


async def test_a_cold_render_costs_two_round_trips_to_redis(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    # Each redis-py command costs the event loop about 90 µs of CPU: a cold render looks the
    # value up and takes the lock in one script, and stores the value and releases the lock
    # in another (docs/redis.md#what-a-cold-tile-costs).
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_url, redis_timeout_s=5.0)
    tier = cache.redis
    assert tier is not None
    key = response_key(4, 0, "cold")
    calls: list[object] = []
    real_call = tier._call

    async def counted(fn: Any, **kw: Any) -> Any:  # every round trip goes through _call
        calls.append(fn)
        return await real_call(fn, **kw)

    tier._call = counted  # type: ignore[method-assign]

    async def render() -> CacheEntry:
        assert await raw_redis.get(tier.lock_key(key)) is not None  # held while rendering
        return ENTRY

    assert await cache.get_or_render(key, render) == (ENTRY, "miss")
    assert await cache.flush(5)
    assert len(calls) == 2
    # The value stored with its TTL, the lock gone.
    assert await raw_redis.get(tier.lock_key(key)) is None
    assert await raw_redis.ttl(tier.value_key(key)) > 0
    assert (await cache.get(key))[0] == ENTRY


async def test_a_store_leaves_a_lock_taken_over_by_another_process(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    # Our lock expired and another process took it: storing our value must not release theirs.
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_url, redis_timeout_s=5.0)
    assert cache.redis is not None
    key = response_key(4, 0, "taken")
    lock = cache.redis.lock_key(key)
    assert await cache.redis.set_and_release(key, ENTRY, "mine")
    await raw_redis.set(lock, "theirs", px=5000)
    assert await cache.redis.set_and_release(key, ENTRY, "mine")
    assert await raw_redis.get(lock) == b"theirs"
    assert await cache.redis.set_and_release(key, ENTRY, "theirs")
    assert await raw_redis.get(lock) is None
