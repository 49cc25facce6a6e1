"""Shared Redis tier: one pooled `redis.asyncio` client (hiredis), short timeouts, a breaker.

Every call is bounded by `redis_timeout_s` (pool wait, connect and reply together) and goes
through a circuit breaker: after `breaker_failures` consecutive failures Redis is skipped
entirely for a backoff, then probed again. Nothing here raises to a request: a failure is
counted, logged when the breaker changes state, and read as a miss. A restarted Redis (data
lost) is just misses; the pool reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import zlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from idrserve.cache.breaker import CircuitBreaker
from idrserve.cache.cluster_mget import ClusterMget
from idrserve.cache.entry import CacheEntry, pack_value, unpack_value
from idrserve.cache.metrics import TierStats
from idrserve.cache.redis_mux import ConnectionLost, Multiplexed
from idrserve.cache.redis_url import connect
from idrserve.settings import CacheSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Delete the lock only if it is still ours (it may have expired and been taken by another).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# A rendered value stored and its render lock released in one round trip: value first, so a
# waiter that sees the lock gone finds the value; the lock deleted only if still ours (it may
# have expired and been taken by another).
_STORE_RELEASE = """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1
"""
# One round trip for a cold miss: the value if present, else try to take the render lock.
_GET_OR_LOCK = """
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, ''} end
return {0, ''}
"""
# Raise a generation counter to ARGV[1] unless it is already there (self-repair).
_RAISE = """
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 0
"""
# Bump a generation counter to at least ARGV[1] (the disk tier may already be ahead).
_BUMP = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0') + 1
local floor = tonumber(ARGV[1])
if floor > n then n = floor end
redis.call('SET', KEYS[1], n)
return n
"""


# Keys per MGET: replies of a few hundred KB to a few MB for tiles.
MAX_BATCH = 64
# Slots per image on a cluster: an image's responses spread over this many hash tags.
TAG_SHARDS = 4


def hash_tag(key: str) -> str:
    """`{<image>.<shard>}` for a response key: the cluster slot of its value and its lock.

    Per image, so that a viewer's burst of tiles of one image, one MGET on a single server,
    costs at most TAG_SHARDS per-slot MGETs on a cluster rather than one per tile: redis-py
    spends its client CPU per command: with the cluster fast path a tag per response makes a
    cluster hit about 1.3x dearer than a single-server one, 4 shards about 1.1x, 1 shard
    about the same (docs/redis.md#keys-and-hash-slots).
    Sharded, so that one popular or huge image still spreads over several nodes. Any other
    string is its own tag.
    """
    image, sep, rest = key.partition(":")
    if not sep or not image.isdigit():
        return "{" + key.replace("{", "").replace("}", "") + "}"
    return f"{{{image}.{zlib.crc32(rest.encode()) % TAG_SHARDS}}}"


class RedisUnavailable(Exception):
    """Redis was skipped (breaker open) or failed; callers carry on without it."""


class RedisTier:
    def __init__(self, settings: CacheSettings, stats: TierStats, breaker: CircuitBreaker) -> None:
        if settings.redis_url is None:
            raise ValueError("RedisTier needs cache.redis_url")
        self.url = settings.redis_url
        self.prefix = settings.redis_prefix
        self.stats = stats
        self.breaker = breaker
        self._ttl_s = settings.redis_ttl_s
        self._max_value = settings.redis_max_value_bytes
        self._lock_ttl_ms = settings.lock_ttl_ms
        self._timeout_s = settings.redis_timeout_s
        self._client, self.mode = connect(settings)
        # The cluster and sentinel pools refuse a connection beyond redis_pool_size rather
        # than wait for one: bound the commands in flight here instead (inside the timeout).
        self._slots = asyncio.Semaphore(settings.redis_pool_size) if self.mode != "single" else None
        self._release = self._client.register_script(_RELEASE)
        self._bump = self._client.register_script(_BUMP)
        self._get_or_lock = self._client.register_script(_GET_OR_LOCK)
        self._store_release = self._client.register_script(_STORE_RELEASE)
        self._raise = self._client.register_script(_RAISE)
        # A single server's hot commands (lookups, locks, stores) on one multiplexed
        # connection, with the pool's settings (docs/redis.md#what-a-cold-tile-costs).
        self._mux: Multiplexed | None = None
        if (
            self.mode == "single"
            and settings.redis_multiplex
            and not isinstance(self._client, RedisCluster)
        ):
            self._mux = Multiplexed(self._client.connection_pool.make_connection, self._timeout_s)
        # Cluster lookups skip redis-py's cluster pipeline while the slot map holds.
        self.cluster_mget = (
            ClusterMget(self._client) if isinstance(self._client, RedisCluster) else None
        )
        # GETs waiting for this iteration's MGET (see `_batched_get`).
        self._pending: dict[str, list[asyncio.Future[bytes | str | None]]] = {}
        self._flush_scheduled = False
        self._batches: set[asyncio.Task[None]] = set()

    # A value and its render lock share a hash tag, so on a cluster the GET-or-lock script
    # and the value+lock MGET of `poll` stay in one slot (docs/redis.md#keys-and-hash-slots).
    def value_key(self, key: str) -> str:
        return f"{self.prefix}r:{hash_tag(key)}{key}"

    def lock_key(self, key: str) -> str:
        return f"{self.prefix}lock:{hash_tag(key)}{key}"

    def generation_key(self, image_id: int) -> str:
        return f"{self.prefix}gen:{image_id}"

    @property
    def available(self) -> bool:
        """False while the breaker skips Redis (a cheap check before scheduling work)."""
        return not self.breaker.is_open

    async def _call(
        self, fn: Callable[[Any], Awaitable[T]], *, write: bool = False, muxed: bool = False
    ) -> T:
        """`fn(client)` under the breaker and the timeout. `muxed`: `fn` is a command `_via`
        or `_script` sends, which the multiplexed connection (when there is one) bounds
        itself, without a timeout scope here."""
        if not self.breaker.allow():
            if write:
                self.stats.dropped_writes += 1
            else:
                self.stats.skipped += 1
            raise RedisUnavailable("circuit open")
        try:
            if muxed and self._mux is not None:
                result = await fn(self._client)
            else:
                async with asyncio.timeout(self._timeout_s):
                    if self._slots is None:
                        result = await fn(self._client)
                    else:
                        async with self._slots:
                            result = await fn(self._client)
        except Exception as exc:
            if self._mux is not None and not isinstance(exc, ResponseError | ConnectionLost):
                # Timed out or dropped: the connection is suspect; the next command opens
                # another (what the pool does with its connection on a timeout). One the
                # multiplexed connection failed itself is already gone.
                self._mux.reset()
            if write:
                self.stats.write_errors += 1
            else:
                self.stats.errors += 1
            was_open = self.breaker.state != "closed"
            self.breaker.record_failure()
            if self.breaker.state != "closed" and not was_open:
                log.warning(
                    "redis cache unavailable (%s: %s); skipping it for %.1f s",
                    type(exc).__name__,
                    exc,
                    self.breaker.backoff_s,
                )
            raise RedisUnavailable(str(exc)) from exc
        if self.breaker.state != "closed":
            log.info("redis cache available again")
        self.breaker.record_success()
        return result

    def _via(
        self, command: tuple[Any, ...], pooled: Callable[[Any], Awaitable[T]]
    ) -> Callable[[Any], Awaitable[Any]]:
        """What `_call` runs for `command`: sent on the multiplexed connection when there is
        one, else `pooled` (redis-py's method for it, which also knows a cluster's slots)."""
        mux = self._mux
        if mux is None:
            return pooled
        return lambda _: mux.execute(*command)

    async def _script(
        self, script: AsyncScript, keys: list[str], args: list[Any], client: Any
    ) -> Any:
        """Run `script`: on the multiplexed connection by its SHA (the body on NOSCRIPT: a
        restarted Redis has forgotten it; EVAL caches it again), else through redis-py."""
        mux = self._mux
        if mux is None:
            return await script(keys=keys, args=args, client=client)
        try:
            return await mux.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await mux.execute("EVAL", script.script, len(keys), *keys, *args)

    async def ping(self) -> bool:
        try:
            return bool(await self._call(lambda r: r.ping()))
        except RedisUnavailable:
            return False

    async def get(self, key: str) -> CacheEntry | None:
        try:
            value = await self._batched_get(self.value_key(key))
        except RedisUnavailable:
            return None
        entry = None if value is None else unpack_value(_as_bytes(value))
        if entry is None:
            self.stats.misses += 1
            if value is not None:
                self.stats.errors += 1
                log.warning("dropped a corrupt redis cache entry for %s", key)
                await self.delete(key)
            return None
        self.stats.hits += 1
        return entry

    async def _batched_get(self, redis_key: str) -> bytes | str | None:
        """GET through a per-iteration batch: the GETs of all requests that reach here in one
        event-loop iteration go out as one MGET.

        redis-py spends most of a cache hit's client CPU on the command, not the bytes (pool
        checkout, timeout scope, reply parsing setup: docs/benchmarks.md#serving-bytes); under
        load one iteration holds the lookups of many requests, so batching makes that cost per
        batch.
        """
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes | str | None] = loop.create_future()
        self._pending.setdefault(redis_key, []).append(waiter)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await waiter

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        keys = list(pending)
        loop = asyncio.get_running_loop()
        for i in range(0, len(keys), MAX_BATCH):
            batch = {k: pending[k] for k in keys[i : i + MAX_BATCH]}
            task = loop.create_task(self._mget(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _mget(self, batch: dict[str, list[asyncio.Future[bytes | str | None]]]) -> None:
        keys = list(batch)
        try:
            fast = self.cluster_mget
            if fast is None:
                values = await self._call(
                    self._via(("MGET", *keys), lambda r: r.mget(keys)), muxed=True
                )
                groups = [(keys, values)]
            else:
                groups = await self._call(lambda _: fast.mget(keys))
        except BaseException as exc:
            failure = exc if isinstance(exc, RedisUnavailable) else RedisUnavailable(repr(exc))
            for waiters in batch.values():
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(failure)
            if not isinstance(exc, Exception):
                raise  # cancelled (shutdown): the waiters have their answer
            return
        for group, values in groups:
            for key, value in zip(group, values, strict=True):
                for waiter in batch[key]:
                    if not waiter.done():
                        waiter.set_result(value)

    def storable(self, entry: CacheEntry) -> bool:
        return len(entry.body) + len(entry.media_type) + 2 <= self._max_value

    async def set(self, key: str, entry: CacheEntry) -> bool:
        """Store an entry with the TTL; False when skipped (too large, Redis unavailable)."""
        if not self.storable(entry):
            self.stats.skipped_writes += 1
            return False
        value = pack_value(entry)
        try:
            vkey, ttl = self.value_key(key), self._ttl_s
            set_value = self._via(
                ("SET", vkey, value, "EX", ttl), lambda r: r.set(vkey, value, ex=ttl)
            )
            await self._call(set_value, write=True, muxed=True)
        except RedisUnavailable:
            return False
        self.stats.writes += 1
        return True

    async def set_and_release(self, key: str, entry: CacheEntry, token: str) -> bool:
        """`set`, then `release_lock(key, token)`, in one round trip (a cold render's store:
        each redis-py command costs the loop about 90 µs of CPU, docs/redis.md). The caller
        has checked `storable`. False when Redis is unavailable: the lock expires after
        `lock_ttl_ms` then."""
        value = pack_value(entry)
        keys = [self.value_key(key), self.lock_key(key)]
        args: list[bytes | str | int] = [value, self._ttl_s, token]
        try:
            await self._call(
                lambda r: self._script(self._store_release, keys, args, r), write=True, muxed=True
            )
        except RedisUnavailable:
            return False
        self.stats.writes += 1
        return True

    async def delete(self, key: str) -> None:
        with contextlib.suppress(RedisUnavailable):
            vkey = self.value_key(key)
            await self._call(
                self._via(("DEL", vkey), lambda r: r.delete(vkey)), write=True, muxed=True
            )

    async def get_or_lock(self, key: str) -> tuple[CacheEntry | None, str | None]:
        """`(entry, None)` on a hit, else `(None, token)` if this process now holds the render
        lock of `key`, else `(None, None)`: another process is rendering it.

        Raises `RedisUnavailable`: without Redis there is no cross-process lock to wait on.
        """
        token = secrets.token_hex(8)
        keys = [self.value_key(key), self.lock_key(key)]
        args: list[str | int] = [token, self._lock_ttl_ms]
        status, value = await self._call(
            lambda r: self._script(self._get_or_lock, keys, args, r), muxed=True
        )
        if status == 1:
            entry = unpack_value(value)
            if entry is not None:
                self.stats.hits += 1
                return entry, None
            self.stats.errors += 1
            await self.delete(key)
        self.stats.misses += 1
        return None, (token if status == 2 else None)

    async def poll(self, key: str) -> tuple[CacheEntry | None, bool]:
        """`(entry, lock_held)` in one round trip; raises `RedisUnavailable`."""
        keys = (self.value_key(key), self.lock_key(key))
        value, lock = await self._call(
            self._via(("MGET", *keys), lambda r: r.mget(*keys)), muxed=True
        )
        entry = None if value is None else unpack_value(_as_bytes(value))
        return entry, lock is not None

    async def release_lock(self, key: str, token: str) -> None:
        # On failure the lock expires after lock_ttl_ms anyway.
        with contextlib.suppress(RedisUnavailable):
            await self._call(
                lambda r: self._script(self._release, [self.lock_key(key)], [token], r),
                muxed=True,
            )

    async def get_generation(self, image_id: int) -> int | None:
        """The generation stored in Redis (0 when none), or None when Redis is unavailable."""
        try:
            value = await self._call(lambda r: r.get(self.generation_key(image_id)))
        except RedisUnavailable:
            return None
        try:
            return max(0, int(value)) if value is not None else 0
        except ValueError:
            return 0

    async def raise_generation(self, image_id: int, generation: int) -> None:
        """Make the stored generation at least `generation` (it can be lost to eviction)."""
        with contextlib.suppress(RedisUnavailable):
            await self._call(
                lambda r: self._raise(
                    keys=[self.generation_key(image_id)], args=[generation], client=r
                ),
                write=True,
            )

    async def bump_generation(self, image_id: int, floor: int) -> int:
        """INCR the generation (to at least `floor`); raises `RedisUnavailable`."""
        result = await self._call(
            lambda r: self._bump(keys=[self.generation_key(image_id)], args=[floor], client=r),
            write=True,
        )
        return int(result)

    async def info(self, count_keys: bool = False) -> dict[str, Any]:
        """Server memory and hit counters for `idrserve cache stats`; raises `RedisUnavailable`.

        `count_keys` SCANs the keyspace for this prefix: O(keys), for the stats command only.
        """
        mem = await self._call(partial(_info, section="memory"))
        st = await self._call(partial(_info, section="stats"))
        out: dict[str, Any] = {
            "mode": self.mode,
            "used_memory": mem.get("used_memory"),
            "maxmemory": mem.get("maxmemory"),
            "maxmemory_policy": mem.get("maxmemory_policy"),
            "evicted_keys": st.get("evicted_keys"),
            "keyspace_hits": st.get("keyspace_hits"),
            "keyspace_misses": st.get("keyspace_misses"),
            "dbsize": await self._call(lambda r: r.dbsize()),
        }
        if count_keys:
            out["prefix_keys"] = await self._count(f"{self.prefix}r:*")
            out["prefix_generations"] = await self._count(f"{self.prefix}gen:*")
        return out

    async def _count(self, pattern: str) -> int:
        if isinstance(self._client, RedisCluster):
            nodes: list[Any] = self._client.get_primaries()
        else:
            nodes = [None]
        n = 0
        for node in nodes:
            cursor = 0
            while True:
                cursor, keys = await self._call(
                    partial(_scan_page, cursor=cursor, pattern=pattern, node=node)
                )
                n += len(keys)
                if cursor == 0:
                    break
        return n

    async def aclose(self) -> None:
        for task in list(self._batches):
            task.cancel()
        await asyncio.gather(*self._batches, return_exceptions=True)
        if self._mux is not None:
            await self._mux.aclose()
        try:
            await self._client.aclose()
        except Exception as exc:
            log.debug("closing the redis cache pool: %s", exc)


async def _scan_page(
    r: Redis | RedisCluster, cursor: int, pattern: str, node: Any
) -> tuple[int, list[bytes | str]]:
    if node is None:
        return await r.scan(cursor=cursor, match=pattern, count=1000)
    # A cluster answers {node: next cursor} and the keys.
    cursors: Any
    cursors, keys = await r.scan(cursor=cursor, match=pattern, count=1000, target_nodes=node)
    return int(cursors[node.name]), keys


# Summed over a cluster's primaries (the policy is the same on every node).
_SUMMED = ("used_memory", "maxmemory", "evicted_keys", "keyspace_hits", "keyspace_misses")


async def _info(r: Redis | RedisCluster, section: str) -> dict[str, Any]:
    if not isinstance(r, RedisCluster):
        return dict(await r.info(section))
    per_node: dict[str, dict[str, Any]] = await r.info(section, target_nodes=RedisCluster.PRIMARIES)
    merged: dict[str, Any] = {}
    for info in per_node.values():
        for name, value in info.items():
            if name in _SUMMED:
                merged[name] = merged.get(name, 0) + value
            else:
                merged.setdefault(name, value)
    return merged


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
