"""Hits, misses and promotion across memory, disk and a real Redis; restart; purge."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from idrserve.cache import CacheEntry, TieredCache, response_key
from idrserve.cache.entry import pack_value
from tests.cache.conftest import CacheFactory

JPEG = CacheEntry(b"\xff\xd8" + bytes(range(256)) * 120 + b"\xff\xd9", "image/jpeg")
PNG = CacheEntry(b"\x89PNG" + b"p" * 5000, "image/png")


def counts(cache: TieredCache, tier: str) -> tuple[int, int]:
    s = cache.stats()[tier]
    return s["hits"], s["misses"]


async def test_each_tier_alone(make_cache: CacheFactory, redis_url: str) -> None:
    for settings in (
        {},
        {"memory_max_bytes": 0, "dir": True},
        {"memory_max_bytes": 0, "redis_url": redis_url},
    ):
        cache = await make_cache(**settings)
        (tier,) = cache.tiers
        key = response_key(1, 0, f"only-{tier}")
        assert await cache.get(key) == (None, "miss")
        cache.put(key, JPEG)
        assert await cache.flush(5)
        assert await cache.get(key) == (JPEG, tier)
        assert counts(cache, tier) == (1, 1)
        assert cache.stats()[tier]["writes"] == 1


async def test_lower_hits_fill_upper_tiers(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    cache = await make_cache(dir=True, redis_url=redis_url)
    assert cache.tiers == ("memory", "disk", "redis")
    key = response_key(7, 0, "abc")
    # Only in Redis (written by another host): a Redis hit fills memory and disk.
    await raw_redis.set(cache.redis.value_key(key), pack_value(JPEG))  # type: ignore[union-attr]
    assert await cache.get(key) == (JPEG, "redis")
    assert await cache.flush(5)
    assert await cache.get(key) == (JPEG, "memory")
    cache.memory.clear()  # type: ignore[union-attr]
    await raw_redis.flushall()
    assert await cache.get(key) == (JPEG, "disk")  # the promotion reached the disk
    assert await cache.get(key) == (JPEG, "memory")  # and the disk hit filled memory
    assert counts(cache, "redis") == (1, 0)
    assert counts(cache, "disk") == (1, 1)


async def test_new_instance_keeps_disk_and_redis_hits(
    make_cache: CacheFactory, redis_url: str
) -> None:
    first = await make_cache(dir=True, redis_url=redis_url)
    k1, k2 = response_key(1, 0, "a"), response_key(2, 0, "b")
    first.put(k1, JPEG)
    first.put(k2, PNG)
    await first.aclose()
    # A restarted process: empty memory, same disk dir and Redis.
    second = await make_cache(dir=first.settings.dir, redis_url=redis_url)
    assert await second.get(k1) == (JPEG, "disk")
    # Without the disk, Redis still has it.
    third = await make_cache(redis_url=redis_url)
    assert await third.get(k2) == (PNG, "redis")


async def test_oversized_values_stay_out_of_redis_and_memory(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    cache = await make_cache(
        redis_url=redis_url, redis_max_value_bytes=10_000, memory_max_item_bytes=10_000
    )
    big, small = response_key(1, 0, "big"), response_key(1, 0, "small")
    cache.put(big, CacheEntry(b"b" * 20_000, "image/png"))
    cache.put(small, CacheEntry(b"s" * 9_000, "image/png"))
    assert await cache.flush(5)
    assert not await raw_redis.exists(cache.redis.value_key(big))  # type: ignore[union-attr]
    assert await raw_redis.exists(cache.redis.value_key(small))  # type: ignore[union-attr]
    assert await raw_redis.ttl(cache.redis.value_key(small)) > 0  # type: ignore[union-attr]
    assert await cache.get(big) == (None, "miss")
    stats = cache.stats()
    assert stats["redis"]["skipped_writes"] == 1
    assert stats["memory"]["skipped_writes"] == 1


async def test_corrupt_redis_value_is_a_miss_and_removed(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_url)
    key = response_key(3, 0, "junk")
    redis_key = cache.redis.value_key(key)  # type: ignore[union-attr]
    await raw_redis.set(redis_key, b"\x07garbage")
    assert await cache.get(key) == (None, "miss")
    assert not await raw_redis.exists(redis_key)

    async def render() -> CacheEntry:
        return PNG

    await raw_redis.set(redis_key, b"\x01\xffshort")
    assert await cache.get_or_render(key, render) == (PNG, "miss")
    assert cache.stats()["redis"]["errors"] == 2


async def test_purge_is_seen_by_another_process(make_cache: CacheFactory, redis_url: str) -> None:
    server = await make_cache(dir=True, redis_url=redis_url)
    other_host = await make_cache(dir=True, redis_url=redis_url)  # shares only Redis
    gen = await server.generation(42)
    assert gen == 0 and await other_host.generation(42) == 0
    assert server.fresh_generation(42) == 0  # trusted without I/O for generation_ttl_s
    old_key = response_key(42, gen, "tile")
    server.put(old_key, JPEG)
    server.put(response_key(43, 0, "tile"), PNG)
    assert await server.flush(5)
    assert (await server.get(old_key))[1] == "memory"

    # The CLI: a separate instance on the same disk dir and Redis.
    cli = await make_cache(dir=server.settings.dir, redis_url=redis_url, start=False)
    assert await cli.purge_image(42) == 1
    assert await cli.purge_image(42) == 2
    await cli.aclose()

    await asyncio.sleep(server.settings.generation_ttl_s + 0.05)
    assert server.fresh_generation(42) is None  # expired: the next generation() asks again
    assert await server.generation(42) == 2
    assert server.fresh_generation(42) == 2
    assert await other_host.generation(42) == 2
    assert await server.generation(43) == 0

    # Purging in-process drops memory entries of that image at once, and only of that image.
    assert await server.purge_image(42) == 3
    assert server.memory is not None and old_key not in server.memory
    assert response_key(43, 0, "tile") in server.memory
    assert await server.generation(42) == 3


async def test_generation_survives_redis_data_loss(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    cache = await make_cache(dir=True, redis_url=redis_url)
    assert await cache.purge_image(9) == 1
    await raw_redis.flushall()  # a restarted or evicting Redis
    fresh = await make_cache(dir=cache.settings.dir, redis_url=redis_url)
    assert await fresh.generation(9) == 1  # from the disk copy
    assert await fresh.flush(5)
    # ... and written back to Redis for the hosts without that disk.
    assert cache.redis is not None
    assert await raw_redis.get(cache.redis.generation_key(9)) == b"1"


async def test_concurrent_redis_lookups_share_one_mget(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    """Lookups made in the same event-loop iteration cost Redis one command, not one each."""
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_url)
    keys = [response_key(9, 0, f"batch-{i}") for i in range(100)]
    for key in keys[:70]:
        await raw_redis.set(cache.redis.value_key(key), pack_value(PNG))  # type: ignore[union-attr]
    await raw_redis.config_resetstat()
    results = await asyncio.gather(*(cache.get(key) for key in keys))
    assert results == [(PNG, "redis")] * 70 + [(None, "miss")] * 30
    stats = await raw_redis.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 2  # 100 keys, at most 64 per MGET
    assert "cmdstat_get" not in stats
    assert counts(cache, "redis") == (70, 30)


async def test_a_cancelled_lookup_leaves_its_batch_intact(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_url)
    key = response_key(9, 0, "kept")
    await raw_redis.set(cache.redis.value_key(key), pack_value(PNG))  # type: ignore[union-attr]
    doomed = asyncio.create_task(cache.get(key))
    kept = asyncio.create_task(cache.get(key))
    await asyncio.sleep(0)  # both have joined the batch
    doomed.cancel()
    assert await kept == (PNG, "redis")
    assert doomed.cancelled()
