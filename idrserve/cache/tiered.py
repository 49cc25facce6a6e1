"""The response cache: in-process memory, then local disk, then shared Redis.

Tier order comes from measurement, not habit (docs/benchmarks.md#cache-hits, aiohttp + uvloop, 30 KB
tile, one core): a hit from process memory serves about 27 k responses/s, a page-cached disk file
read through an executor about 12 k/s, and Redis on the same 2-core box about 6.5 k/s: redis-py
spends ~50 µs of client CPU per GET (docs/benchmarks.md#serving-bytes) and the Redis server competes
for the same cores. So a local disk hit is ~2× cheaper than a Redis hit and is tried first; Redis is
the tier *shared* between processes and hosts, so it is still worth one round trip before a render.
A hit in a lower tier fills the tiers above it (disk → memory; Redis → memory and disk). Each tier
is enabled by settings: memory when `memory_max_bytes` > 0, disk when `dir` is set (and
`dir_max_bytes` > 0), Redis when `redis_url` is set.

Failure is never an error for the caller: Redis runs behind a circuit breaker with short
timeouts, disk writes back off on a full or read-only disk, a corrupt entry is a miss.
Writes run as bounded background jobs, shielded from request cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from prometheus_client import CollectorRegistry

from idrserve.cache.breaker import CircuitBreaker
from idrserve.cache.disk import DiskTier
from idrserve.cache.entry import CacheEntry
from idrserve.cache.jobs import JobRunner
from idrserve.cache.memory import MemoryTier
from idrserve.cache.metrics import CacheCollector, CacheGauges, TierStats
from idrserve.cache.redis import RedisTier, RedisUnavailable
from idrserve.flight import SingleFlight
from idrserve.lru import BoundedLRU
from idrserve.settings import CacheSettings

log = logging.getLogger(__name__)

Render = Callable[[], Awaitable[CacheEntry]]
# Generations remembered per process (an entry is ~100 bytes).
MAX_GENERATIONS = 65536
# How long `aclose` waits for pending writes before cancelling them.
DRAIN_TIMEOUT_S = 5.0
# Polling while another process renders: start fast (a tile renders in ~1 ms), back off.
POLL_FIRST_S = 0.002
POLL_MAX_S = 0.05


class CachePurgeError(Exception):
    """A purge reached some tiers but not all (Redis unreachable, cache dir not writable)."""

    def __init__(self, detail: str, generation: int) -> None:
        super().__init__(detail)
        self.generation = generation


class TieredCache:
    """memory → disk → Redis, with single-flight renders and per-image generations."""

    def __init__(self, settings: CacheSettings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._stats: dict[str, TierStats] = {}
        self.memory: MemoryTier | None = None
        self.disk: DiskTier | None = None
        self.redis: RedisTier | None = None
        self._pools: list[ThreadPoolExecutor] = []
        if settings.memory_max_bytes > 0:
            stats = self._stats["memory"] = TierStats()
            self.memory = MemoryTier(
                settings.memory_max_bytes, settings.memory_max_item_bytes, stats
            )
        if settings.dir is not None and settings.dir_max_bytes > 0:
            stats = self._stats["disk"] = TierStats()
            # Separate pools so a burst of writes or a directory scan never queues a hit.
            read = ThreadPoolExecutor(4, thread_name_prefix="idrserve-cache-read")
            write = ThreadPoolExecutor(2, thread_name_prefix="idrserve-cache-write")
            scan = ThreadPoolExecutor(1, thread_name_prefix="idrserve-cache-scan")
            self._pools = [read, write, scan]
            self.disk = DiskTier(
                settings.dir,
                settings.dir_max_bytes,
                stats,
                self._breaker(),
                read,
                write,
                scan,
                open_files=settings.dir_open_files,
            )
        if settings.redis_url:
            stats = self._stats["redis"] = TierStats()
            self.redis = RedisTier(settings, stats, self._breaker())
        self._jobs = JobRunner(settings.max_pending_writes)
        self._flights: SingleFlight[str, tuple[CacheEntry, str]] = SingleFlight("cache-render")
        self._generation_flights: SingleFlight[int, int] = SingleFlight("cache-generation")
        # image id → (generation, trusted until): an expired one is still the floor that
        # `_load_generation` never goes below, so expiry is checked here, not by the LRU.
        self._generations: BoundedLRU[int, tuple[int, float]] = BoundedLRU(MAX_GENERATIONS)
        self._maintenance: asyncio.Task[None] | None = None
        self._closed = False
        self.coalesced = 0
        self.renders = 0
        self._collector = CacheCollector(self._stats, self._gauges)
        self.registry.register(self._collector)

    def _breaker(self) -> CircuitBreaker:
        s = self.settings
        return CircuitBreaker(s.breaker_failures, s.breaker_backoff_s, s.breaker_backoff_max_s)

    @property
    def tiers(self) -> tuple[str, ...]:
        """The enabled tiers, in lookup order."""
        return tuple(self._stats)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the cache dir, start disk maintenance and check Redis; never raises."""
        if self.disk is not None:
            await self.disk.start()
            self._start_maintenance()
        if self.redis is not None:
            if await self.redis.ping():
                log.info("redis cache at %s", redact_url(self.redis.url))
            else:
                log.warning(
                    "redis cache at %s unreachable; serving without it", redact_url(self.redis.url)
                )

    def _start_maintenance(self) -> None:
        # Also started by the first disk write, so a cache used without `start()` (a CLI
        # command) still keeps its directory within budget.
        if self.disk is None or self._maintenance is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._maintenance = loop.create_task(self.disk.maintain())

    async def aclose(self, timeout_s: float = DRAIN_TIMEOUT_S) -> None:
        """Stop maintenance, finish pending writes (bounded by `timeout_s`), close pools."""
        self._closed = True
        if self.disk is not None:
            self.disk.stop()
        if self._maintenance is not None:
            self._maintenance.cancel()
            await asyncio.gather(self._maintenance, return_exceptions=True)
            self._maintenance = None
        await self._flights.aclose()
        await self._generation_flights.aclose()
        left = await self._jobs.drain(timeout_s)
        if left:
            log.warning("cache closed with %d background writes unfinished", left)
        if self.redis is not None:
            await self.redis.aclose()
        for pool in self._pools:
            pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(KeyError):
            self.registry.unregister(self._collector)

    async def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every background write has finished; False on timeout."""
        return await self._jobs.wait(timeout_s)

    # -- lookups -----------------------------------------------------------------------------

    async def get(self, key: str) -> tuple[CacheEntry | None, str]:
        """`(entry, tier)` with tier "memory", "disk", "redis" or "miss"; never raises."""
        if self.memory is not None:
            entry = self.memory.get(key)
            if entry is not None:
                return entry, "memory"
        try:
            return await self._get_lower(key)
        except Exception:
            log.exception("cache lookup failed")
            return None, "miss"

    async def _get_lower(self, key: str) -> tuple[CacheEntry | None, str]:
        if self.disk is not None:
            entry = await self.disk.get(key)
            if entry is not None:
                self._fill(key, entry, "disk")
                return entry, "disk"
        if self.redis is not None:
            entry = await self.redis.get(key)
            if entry is not None:
                self._fill(key, entry, "redis")
                return entry, "redis"
        return None, "miss"

    def _fill(self, key: str, entry: CacheEntry, source: str) -> None:
        """Copy a lower-tier hit into the tiers above it."""
        if self.memory is not None:
            self.memory.put(key, entry)
        if source == "redis" and self.disk is not None:
            self._submit("disk", partial(self.disk.put, key, entry), self.disk.writable)

    @property
    def local_only(self) -> bool:
        """No tier needs I/O to look a key up (a memory tier or none): after a memory miss a
        caller may render and `store_render` without an await (service.render_now)."""
        return self.disk is None and self.redis is None

    def rendering(self, key: str) -> bool:
        """`get_or_render` is rendering `key` now (a new caller would join it)."""
        return key in self._flights

    def store_render(self, key: str, entry: CacheEntry) -> None:
        """Store what the caller rendered itself after a miss in every tier, counted as a
        render, as `get_or_render` stores its own."""
        self.renders += 1
        self._store(key, entry, None)

    async def get_or_render(self, key: str, render: Render) -> tuple[CacheEntry, str]:
        """The cached entry, or `render()` once for all concurrent callers, then cached.

        Tier is "memory", "disk", "redis", "miss" (rendered by this call) or "coalesced"
        (rendered for another request, in this or another process). `render`'s exception
        reaches every caller waiting on it and nothing is cached.
        """
        if self.memory is not None:
            entry = self.memory.get(key)
            if entry is not None:
                return entry, "memory"
        (entry, tier), joined = await self._flights.run(
            key, partial(self._lookup_or_render, key, render)
        )
        if joined and tier == "miss":
            self.coalesced += 1
            return entry, "coalesced"
        if joined and tier == "coalesced":
            self.coalesced += 1
        return entry, tier

    async def _lookup_or_render(self, key: str, render: Render) -> tuple[CacheEntry, str]:
        token: str | None = None
        try:
            if self.disk is not None:
                entry = await self.disk.get(key)
                if entry is not None:
                    self._fill(key, entry, "disk")
                    return entry, "disk"
            if self.redis is not None:
                found, token, waited = await self._redis_or_wait(key)
                if found is not None:
                    self._fill(key, found, "redis")
                    if waited:
                        self.coalesced += 1
                        return found, "coalesced"
                    return found, "redis"
        except Exception:
            log.exception("cache lookup failed")
        try:
            entry = await render()
        except BaseException:
            if token is not None and self.redis is not None:
                self._jobs.submit(partial(self.redis.release_lock, key, token))
            raise
        self.renders += 1
        self._store(key, entry, token)
        return entry, "miss"

    async def _redis_or_wait(self, key: str) -> tuple[CacheEntry | None, str | None, bool]:
        """`(entry, lock_token, waited)`: a Redis hit, or the render lock, or the entry another
        process rendered while we waited; `(None, None, …)` means render without the lock."""
        assert self.redis is not None
        if self.settings.lock_wait_s <= 0:
            return await self.redis.get(key), None, False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.lock_wait_s
        waited = False
        try:
            while True:
                entry, token = await self.redis.get_or_lock(key)
                if entry is not None or token is not None:
                    return entry, token, waited
                waited = True
                delay = POLL_FIRST_S
                while True:
                    left = deadline - loop.time()
                    if left <= 0:
                        log.info("gave up waiting for another process to render %s", key)
                        return None, None, waited
                    await asyncio.sleep(min(delay, left))
                    delay = min(delay * 2, POLL_MAX_S)
                    entry, held = await self.redis.poll(key)
                    if entry is not None:
                        return entry, None, waited
                    if not held:
                        break  # the holder stopped without storing a value: take over
        except RedisUnavailable:
            return None, None, waited

    # -- writes ------------------------------------------------------------------------------

    def put(self, key: str, entry: CacheEntry) -> None:
        """Store in memory now and schedule writes to the other tiers; never raises."""
        self._store(key, entry, None)

    def _store(self, key: str, entry: CacheEntry, token: str | None) -> None:
        try:
            if self.memory is not None:
                self.memory.put(key, entry)
            if self.disk is not None:
                self._start_maintenance()
                self._submit("disk", partial(self.disk.put, key, entry), self.disk.writable)
            if self.redis is not None:
                if not self.redis.storable(entry):
                    self._stats["redis"].skipped_writes += 1
                    if token is not None:
                        self._jobs.submit(partial(self.redis.release_lock, key, token))
                elif token is not None:
                    # Value first, then the lock, in one script (RedisTier.set_and_release).
                    store = partial(self.redis.set_and_release, key, entry, token)
                    self._submit("redis", store, True)
                else:
                    self._submit("redis", partial(self.redis.set, key, entry), self.redis.available)
        except Exception:
            log.exception("cache write failed")

    def _submit(self, tier: str, job: Callable[[], Awaitable[Any]], ready: bool) -> None:
        if not ready or not self._jobs.submit(job):
            self._stats[tier].dropped_writes += 1

    # -- generations and purge ---------------------------------------------------------------

    async def generation(self, image_id: int) -> int:
        """The image's cache generation (part of every key); 0 when never purged."""
        cached = self._generations.peek(image_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        if self.disk is None and self.redis is None:
            return 0 if cached is None else cached[0]
        try:
            value, _ = await self._generation_flights.run(
                image_id, partial(self._load_generation, image_id)
            )
        except Exception:
            log.exception("cache generation lookup failed")
            return 0 if cached is None else cached[0]
        return value

    def fresh_generation(self, image_id: int) -> int | None:
        """The generation `generation()` would return without any I/O, or None when this
        process's copy has expired (synchronous, O(1): for the URL fast path)."""
        cached = self._generations.peek(image_id)
        if cached is not None:
            return cached[0] if cached[1] > time.monotonic() else None
        return 0 if self.disk is None and self.redis is None else None

    async def _load_generation(self, image_id: int) -> int:
        known = self._known_generation(image_id)
        shared, local = await asyncio.gather(
            self.redis.get_generation(image_id) if self.redis is not None else _none(),
            self.disk.read_generation(image_id) if self.disk is not None else _none(),
        )
        # Never go back within a process: a restarted or evicting Redis may have lost it.
        value = max(known, shared or 0, local or 0)
        if self.redis is not None and shared is not None and shared < value:
            self._jobs.submit(partial(self.redis.raise_generation, image_id, value))
        if self.disk is not None and local is not None and local < value:
            self._jobs.submit(partial(self._write_generation_quietly, image_id, value))
        self._remember(image_id, value)
        return value

    async def _write_generation_quietly(self, image_id: int, generation: int) -> None:
        assert self.disk is not None
        try:
            await self.disk.write_generation(image_id, generation)
        except OSError as exc:
            log.warning("cache generation write failed: %s", exc)

    def _remember(self, image_id: int, generation: int) -> None:
        shared = self.disk is not None or self.redis is not None
        expires = time.monotonic() + self.settings.generation_ttl_s if shared else float("inf")
        self._generations.put(image_id, (generation, expires))

    def _known_generation(self, image_id: int) -> int:
        cached = self._generations.peek(image_id)
        return 0 if cached is None else cached[0]

    async def purge_image(self, image_id: int) -> int:
        """Invalidate every cached response of an image by bumping its generation everywhere.

        Returns the new generation. Other processes see it within `generation_ttl_s`. Raises
        `CachePurgeError` (after doing what it could) when Redis or the cache dir failed.
        """
        known = self._known_generation(image_id)
        local = await self.disk.read_generation(image_id) if self.disk is not None else 0
        new = max(known, local or 0) + 1
        failed: list[str] = []
        if self.redis is not None:
            try:
                new = await self.redis.bump_generation(image_id, new)
            except RedisUnavailable as exc:
                failed.append(f"redis ({exc})")
        if self.disk is not None:
            try:
                await self.disk.write_generation(image_id, new)
            except OSError as exc:
                failed.append(f"disk ({exc})")
        if self.memory is not None:
            self.memory.drop_image(image_id)
        self._remember(image_id, new)
        if failed:
            raise CachePurgeError(
                f"image {image_id} purged to generation {new}, but not in: {', '.join(failed)}",
                new,
            )
        return new

    # -- statistics --------------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, int]]:
        """Per-tier counters, plus "coalesce" (renders shared, pending writes)."""
        out = {tier: s.as_dict() for tier, s in self._stats.items()}
        if self.disk is not None:
            out["disk"]["writes_paused"] = int(not self.disk.writable)
            out["disk"]["evicted"] = self.disk.evicted
            out["disk"]["scans"] = self.disk.scans
        if self.redis is not None:
            out["redis"]["breaker_open"] = int(not self.redis.available)
            out["redis"]["breaker_opened"] = self.redis.breaker.opened
        out["coalesce"] = {
            "renders_coalesced": self.coalesced,
            "renders": self.renders,
            "in_flight": len(self._flights),
            "pending_writes": self._jobs.pending,
            "failed_jobs": self._jobs.failed,
        }
        return out

    def _gauges(self) -> CacheGauges:
        breakers: dict[str, bool] = {}
        if self.disk is not None:
            breakers["disk"] = not self.disk.writable
        if self.redis is not None:
            breakers["redis"] = not self.redis.available
        sized = tuple(t for t in ("memory", "disk") if t in self._stats)
        return CacheGauges(self.coalesced, self._jobs.pending, breakers, sized, self.renders)

    async def disk_stats(self) -> dict[str, Any]:
        """A fresh walk of the cache dir (for `idrserve cache stats`); {} without a disk tier."""
        if self.disk is None:
            return {}
        usage: dict[str, Any] = await self.disk.usage()
        usage["dir"] = str(self.disk.store.root)
        return usage

    async def redis_stats(self, count_keys: bool = False) -> dict[str, Any]:
        """Redis INFO and DBSIZE (and a SCAN count of our keys if asked); {} without Redis."""
        if self.redis is None:
            return {}
        try:
            info = await self.redis.info(count_keys)
        except RedisUnavailable as exc:
            return {"url": redact_url(self.redis.url), "error": str(exc)}
        info["url"] = redact_url(self.redis.url)
        info["prefix"] = self.redis.prefix
        return info


async def _none() -> None:
    return None


def redact_url(url: str) -> str:
    """The URL without a password."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    creds, at, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***{at}{host}" if ":" in creds else f"{scheme}{sep}***{at}{host}"
