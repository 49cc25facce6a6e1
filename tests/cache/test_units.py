"""Units without I/O: keys, value codecs, the memory LRU, the breaker, single-flight, metrics."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from idrserve.cache import CacheEntry, TieredCache, response_key
from idrserve.cache.breaker import CircuitBreaker
from idrserve.cache.entry import image_of_key, pack_value, unpack_value
from idrserve.cache.files import CorruptEntry, pack_file, unpack_file
from idrserve.cache.memory import MemoryTier, memory_cost
from idrserve.cache.metrics import TierStats
from idrserve.flight import SingleFlight
from idrserve.settings import CacheSettings

key_parts = st.tuples(st.integers(min_value=-(2**63), max_value=2**63), st.integers(), st.text())


@given(key_parts, key_parts)
def test_response_key_is_one_to_one(a: tuple[int, int, str], b: tuple[int, int, str]) -> None:
    assert (response_key(*a) == response_key(*b)) == (a == b)


@given(st.integers(min_value=0), st.integers(min_value=0), st.text(min_size=1))
def test_image_of_key(image_id: int, generation: int, digest: str) -> None:
    assert image_of_key(response_key(image_id, generation, digest)) == image_id


@given(st.binary(), st.sampled_from(["image/jpeg", "image/png", "image/tiff", "x/y"]))
def test_redis_value_roundtrip(body: bytes, media_type: str) -> None:
    entry = CacheEntry(body, media_type)
    assert unpack_value(pack_value(entry)) == entry


@pytest.mark.parametrize("value", [b"", b"\x01", b"\x02\x03abc", b"\x01\x09image", b"\x01\x00x"])
def test_redis_value_garbage_is_none(value: bytes) -> None:
    assert unpack_value(value) is None


@given(st.binary(max_size=2000), st.text(max_size=80))
def test_disk_file_roundtrip(body: bytes, key: str) -> None:
    entry = CacheEntry(body, "image/png")
    data = pack_file(key, entry)
    assert unpack_file(data, key) == entry
    assert unpack_file(data, key + "x") is None  # another key in the same slot


@given(st.binary(min_size=1, max_size=500), st.data())
def test_disk_file_any_damage_is_detected(body: bytes, data: st.DataObject) -> None:
    packed = pack_file("1:0:abc", CacheEntry(body, "image/jpeg"))
    i = data.draw(st.integers(0, len(packed) - 1))
    flipped = packed[:i] + bytes([packed[i] ^ data.draw(st.integers(1, 255))]) + packed[i + 1 :]
    cut = data.draw(st.integers(0, len(packed) - 1))
    for damaged in (flipped, packed[:cut]):
        with pytest.raises(CorruptEntry):
            unpack_file(damaged, "1:0:abc")


def test_memory_lru_respects_byte_budget() -> None:
    body = b"x" * 1000
    cost = memory_cost("1:0:a", CacheEntry(body, "image/jpeg"))
    stats = TierStats()
    mem = MemoryTier(max_bytes=3 * cost, max_item_bytes=10_000, stats=stats)
    for name in "abc":
        mem.put(f"1:0:{name}", CacheEntry(body, "image/jpeg"))
    assert mem.get("1:0:a") is not None  # a is now the most recently used
    mem.put("1:0:d", CacheEntry(body, "image/jpeg"))
    assert "1:0:b" not in mem  # b was the least recently used
    assert all(k in mem for k in ("1:0:a", "1:0:c", "1:0:d"))
    assert stats.bytes == 3 * cost <= mem.max_bytes
    assert stats.entries == 3
    assert not mem.put("1:0:big", CacheEntry(b"y" * 10_001, "image/jpeg"))
    assert "1:0:big" not in mem and stats.skipped_writes == 1
    mem.put("2:0:a", CacheEntry(body, "image/jpeg"))
    assert mem.drop_image(1) == 2
    assert len(mem) == 1 and stats.bytes == cost and stats.entries == 1


def test_memory_replacing_a_key_keeps_accounting() -> None:
    stats = TierStats()
    mem = MemoryTier(max_bytes=1 << 20, max_item_bytes=1 << 20, stats=stats)
    mem.put("1:0:a", CacheEntry(b"x" * 10, "image/png"))
    mem.put("1:0:a", CacheEntry(b"x" * 20, "image/png"))
    assert stats.entries == 1
    assert stats.bytes == memory_cost("1:0:a", CacheEntry(b"x" * 20, "image/png"))


def test_breaker_opens_probes_and_backs_off() -> None:
    now = [0.0]
    b = CircuitBreaker(failures=3, backoff_s=1.0, backoff_max_s=4.0, clock=lambda: now[0])
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert b.state == "open" and not b.allow()
    for _ in range(10):  # in-flight calls failing late do not lengthen the backoff
        b.record_failure()
    now[0] = 1.0
    assert b.allow()  # the probe
    assert not b.allow()  # only one probe at a time
    b.record_failure()
    assert b.backoff_s == 2.0 and not b.allow()
    now[0] = 3.0
    assert b.allow()
    b.record_failure()
    now[0] = 7.0
    assert b.allow()
    b.record_failure()
    assert b.backoff_s == 4.0  # capped
    now[0] = 11.0
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.backoff_s == 1.0 and b.allow()


def test_breaker_trip_opens_at_once() -> None:
    b = CircuitBreaker(failures=5, backoff_s=1.0, backoff_max_s=2.0)
    b.trip()
    assert b.is_open and b.opened == 1


async def test_single_flight_shares_one_call_and_cancels_when_abandoned() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    tasks = [asyncio.create_task(flights.run("k", work)) for _ in range(10)]
    await asyncio.sleep(0)
    tasks[0].cancel()  # one viewer leaves; the others still get the result
    gate.set()
    results = await asyncio.gather(*tasks[1:])
    assert calls == 1
    assert [r for r, _ in results] == [42] * 9
    assert all(joined for _, joined in results)  # tasks[0] started it, then left
    assert len(flights) == 0

    gate.clear()
    started = asyncio.Event()
    cancelled = False

    async def abandoned() -> int:
        nonlocal cancelled
        started.set()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cancelled = True
            raise
        return 1

    waiters = [asyncio.create_task(flights.run("k2", abandoned)) for _ in range(3)]
    await started.wait()
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await asyncio.sleep(0)
    assert cancelled  # every caller left: the work stops too
    assert len(flights) == 0


async def test_prometheus_metrics_names() -> None:
    registry = CollectorRegistry()
    cache = TieredCache(CacheSettings(memory_max_bytes=1 << 20), registry=registry)
    try:
        await cache.get("1:0:a")
        cache.put("1:0:a", CacheEntry(b"abc", "image/png"))
        await cache.get("1:0:a")
        await cache.get_or_render("1:0:b", partial(_entry, b"b"))
        text = generate_latest(registry).decode()
    finally:
        await cache.aclose()
    assert 'idrserve_cache_requests_total{result="hit",tier="memory"} 1.0' in text
    assert 'idrserve_cache_requests_total{result="miss",tier="memory"} 2.0' in text
    assert 'idrserve_cache_writes_total{result="ok",tier="memory"} 2.0' in text
    assert 'idrserve_cache_bytes{tier="memory"}' in text
    assert "idrserve_cache_renders_coalesced_total 0.0" in text
    assert "idrserve_cache_renders_total 1.0" in text
    # Closing unregisters, so an app can build a new cache on the same registry.
    assert "idrserve_cache_requests_total" not in generate_latest(registry).decode()
    TieredCache(CacheSettings(), registry=registry)


async def test_memory_only_cache_generations_are_process_local() -> None:
    cache = TieredCache(CacheSettings(memory_max_bytes=1 << 20))
    try:
        assert cache.tiers == ("memory",)
        assert cache.fresh_generation(5) == 0
        assert await cache.generation(5) == 0
        cache.put(response_key(5, 0, "d"), CacheEntry(b"1", "image/png"))
        assert await cache.purge_image(5) == 1
        assert await cache.generation(5) == 1 == cache.fresh_generation(5)
        assert (await cache.get(response_key(5, 0, "d")))[1] == "miss"
    finally:
        await cache.aclose()


async def test_a_cache_with_every_tier_disabled_still_coalesces() -> None:
    cache = TieredCache(CacheSettings(memory_max_bytes=0))
    calls = 0

    async def render() -> CacheEntry:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return CacheEntry(b"x", "image/png")

    try:
        assert cache.tiers == ()
        results = await asyncio.gather(*(cache.get_or_render("1:0:a", render) for _ in range(5)))
        assert calls == 1 and sorted(t for _, t in results) == ["coalesced"] * 4 + ["miss"]
        cache.put("1:0:a", CacheEntry(b"x", "image/png"))
        assert await cache.get("1:0:a") == (None, "miss")
        assert set(cache.stats()) == {"coalesce"}
    finally:
        await cache.aclose()


async def _entry(body: bytes) -> CacheEntry:
    return CacheEntry(body, "image/png")
