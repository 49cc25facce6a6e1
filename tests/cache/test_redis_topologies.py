"""The shared tier on a Redis Cluster (3 primaries + 3 replicas) and on Sentinel (1 + 1, 3
sentinels).

The same cache behaviour as on one server — hits between processes, batched GETs, the
cross-process render lock, purge generations — and a primary SIGKILLed under load: no call
fails, the replica is promoted, and the tier serves again once the client has found it.
The failover test of each topology runs last, as it leaves that topology changed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from redis.crc import key_slot

from idrserve.cache import CacheEntry, cluster_mget, response_key
from tests.cache.conftest import CacheFactory, RedisServer
from tests.cache.test_redis_failures import load
from tests.cache.test_single_flight import Renderer
from tests.cache.topology import RedisClusterNodes, RedisSentinelSet, cli, wait_for

ENTRY = CacheEntry(b"\xff\xd8" + bytes(range(256)) * 8, "image/jpeg")


@dataclass
class Topology:
    kind: str
    url: str
    primaries: Callable[[], list[RedisServer]]
    cluster: RedisClusterNodes | None = None
    sentinels: RedisSentinelSet | None = None


@pytest.fixture(scope="module", params=["cluster", "sentinel"])
def topology(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Topology]:
    workdir = tmp_path_factory.mktemp(request.param)
    if request.param == "cluster":
        cluster = RedisClusterNodes(workdir)
        try:
            cluster.start()
            yield Topology("cluster", cluster.url, cluster.primaries, cluster=cluster)
        finally:
            cluster.stop()
    else:
        sentinels = RedisSentinelSet(workdir)
        try:
            sentinels.start()
            yield Topology(
                "sentinel", sentinels.url, lambda: [sentinels.primary], sentinels=sentinels
            )
        finally:
            sentinels.stop()


def steady(topology: Topology, **overrides: object) -> dict[str, object]:
    """Settings for a test of behaviour, not of timeouts: a command timeout generous enough
    that a first connection on a busy machine (a cluster's slot map or a sentinel lookup,
    then a connection per node) cannot turn a hit into a miss or count as an error."""
    return {"memory_max_bytes": 0, "redis_url": topology.url, "redis_timeout_s": 5.0, **overrides}


def commandstat(server: RedisServer, command: str) -> int:
    for line in cli("-p", str(server.port), "info", "commandstats").splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_hit_between_processes_and_miss(topology: Topology, make_cache: CacheFactory) -> None:
    a = await make_cache(**steady(topology))
    b = await make_cache(**steady(topology))
    key = response_key(1, 0, "hit")
    assert await b.get(key) == (None, "miss")
    a.put(key, ENTRY)
    assert await a.flush(5)
    assert await b.get(key) == (ENTRY, "redis")
    assert b.stats()["redis"]["hits"] == 1
    assert b.stats()["redis"]["misses"] == 1
    assert a.stats()["redis"]["errors"] + b.stats()["redis"]["errors"] == 0
    info = await b.redis_stats(count_keys=True)
    assert info["mode"] == topology.kind
    assert info["prefix_keys"] >= 1


async def test_batched_gets_span_slots(topology: Topology, make_cache: CacheFactory) -> None:
    """One event-loop iteration of GETs goes out as MGETs: one per hash slot on a cluster (in
    one pipeline per node), one per batch of 64 on a single primary."""
    writer = await make_cache(**steady(topology))
    reader = await make_cache(**steady(topology))
    keys = [response_key(20 + i % 10, 0, f"batch-{i}") for i in range(150)]  # 10 images
    for key in keys:
        writer.put(key, ENTRY)
    assert await writer.flush(10)
    assert await reader.redis.ping()  # type: ignore[union-attr]  # topology learnt first
    primaries = topology.primaries()
    before = sum(commandstat(p, "mget") for p in primaries)
    gets_before = sum(commandstat(p, "get") for p in primaries)
    results = await asyncio.gather(*(reader.get(key) for key in keys))
    assert all(r == (ENTRY, "redis") for r in results)
    mgets = sum(commandstat(p, "mget") for p in primaries) - before
    assert sum(commandstat(p, "get") for p in primaries) == gets_before  # no single GETs
    batches = [keys[i : i + 64] for i in range(0, len(keys), 64)]
    if topology.kind == "cluster":
        assert reader.redis is not None
        slots = [{key_slot(reader.redis.value_key(k).encode()) for k in b} for b in batches]
        assert mgets == sum(len(s) for s in slots)
        per_node = [commandstat(p, "mget") for p in primaries]
        assert all(n > 0 for n in per_node), per_node  # the keys spread over every primary
    else:
        assert mgets == len(batches)


async def test_render_lock_across_processes(topology: Topology, make_cache: CacheFactory) -> None:
    a = await make_cache(**steady(topology))
    b = await make_cache(**steady(topology))
    key = response_key(3, 0, "cold")
    assert a.redis is not None
    # A value and its lock hash to one slot, so the Lua script may touch both on a cluster.
    assert key_slot(a.redis.value_key(key).encode()) == key_slot(a.redis.lock_key(key).encode())
    render = Renderer(delay=0.2)
    results = await asyncio.gather(
        *(cache.get_or_render(key, render) for _ in range(10) for cache in (a, b))
    )
    assert render.calls == 1
    assert len({entry.body for entry, _ in results}) == 1
    assert Counter(tier for _, tier in results)["miss"] == 1
    assert a.stats()["redis"]["errors"] + b.stats()["redis"]["errors"] == 0


async def test_purge_reaches_other_processes(topology: Topology, make_cache: CacheFactory) -> None:
    a = await make_cache(**steady(topology))
    b = await make_cache(
        **steady(topology, memory_max_bytes=1 << 20)
    )  # a memory tier to invalidate
    image = 4
    old = response_key(image, await b.generation(image), "tile")
    b.put(old, ENTRY)
    assert await b.flush(5)
    assert await a.get(old) == (ENTRY, "redis")
    assert await a.purge_image(image) == 1
    assert await a.purge_image(image) == 2  # the counter lives in Redis: bumps add up
    assert a.redis is not None and await a.redis.get_generation(image) == 2
    await asyncio.sleep(a.settings.generation_ttl_s + 0.1)
    assert await b.generation(image) == 2  # seen by the other process within the TTL
    new = response_key(image, 2, "tile")
    assert await b.get(new) == (None, "miss")


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)  # slots exist only there
async def test_cluster_fast_path_follows_slot_migration(
    topology: Topology, make_cache: CacheFactory
) -> None:
    """Lookups go straight to the node of a slot (idrserve/cache/cluster_mget.py); when the
    slot moves, the ASK while it migrates and the MOVED after are followed through redis-py's
    cluster path, and the next lookup goes straight to the new owner."""
    assert topology.cluster is not None
    cache = await make_cache(**steady(topology))
    assert cache.redis is not None and cache.redis.cluster_mget is not None
    fast = cache.redis.cluster_mget
    key = response_key(60, 0, "migrating")
    cache.put(key, ENTRY)
    assert await cache.flush(5)
    assert await cache.get(key) == (ENTRY, "redis")
    assert (fast.fast, fast.fallbacks) == (1, 0)
    slot = key_slot(cache.redis.value_key(key).encode())
    src = topology.cluster.owner(slot)
    dst = next(p for p in topology.primaries() if p is not src)

    await asyncio.to_thread(topology.cluster.start_migration, slot, src, dst)
    assert await cache.get(key) == (ENTRY, "redis")  # ASK from src, answered by dst
    assert fast.fallbacks == 1
    await asyncio.to_thread(topology.cluster.finish_migration, slot, dst)
    assert await cache.get(key) == (ENTRY, "redis")  # MOVED from src
    assert fast.fallbacks == 2
    before = commandstat(dst, "mget")
    assert await cache.get(key) == (ENTRY, "redis")
    assert (fast.fast, fast.fallbacks) == (2, 2)  # straight to dst now
    assert commandstat(dst, "mget") == before + 1
    assert cache.stats()["redis"]["errors"] == 0


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
async def test_cluster_fast_path_while_a_refresh_waits(
    topology: Topology, make_cache: CacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slot-map refresh asked for but not due yet (redis-py spaces them out, longer after
    failed ones, as in a failover) leaves the current map serving: lookups stay on the fast
    path. One that is due goes through redis-py's path, which runs it. (Keyed on the raw
    `_initialize` flag, lookups fell back for as long as a refresh waited.)"""
    cache = await make_cache(**steady(topology))
    assert cache.redis is not None and cache.redis.cluster_mget is not None
    fast = cache.redis.cluster_mget
    client = fast._client
    key = response_key(61, 0, "refresh-waits")
    cache.put(key, ENTRY)
    assert await cache.flush(5)
    assert await cache.get(key) == (ENTRY, "redis")
    before = fast.fast
    monkeypatch.setattr(client, "_initialize", True)  # a refresh is asked for ...
    monkeypatch.setattr(client, "_initialize_due", lambda: False)  # ... and not due yet
    assert await cache.get(key) == (ENTRY, "redis")
    assert (fast.fast, fast.fallbacks) == (before + 1, 0)
    monkeypatch.setattr(client, "_initialize_due", lambda: True)  # now due: redis-py's path
    monkeypatch.setattr(client, "_initialize", False)  # (so that its refresh is a no-op)
    calls = []
    real = client.mget_nonatomic

    async def counted(*args: object, **kw: object) -> object:
        calls.append(args)
        return await real(*args, **kw)

    monkeypatch.setattr(client, "mget_nonatomic", counted)
    assert await cache.get(key) == (ENTRY, "redis")
    assert fast.fast == before + 1 and len(calls) == 1


@pytest.mark.parametrize("topology", ["cluster"], indirect=True)
@pytest.mark.parametrize("missing", ["_NEEDED", "_WRITER"])
async def test_cluster_lookups_without_redis_py_internals(
    topology: Topology, make_cache: CacheFactory, monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    """A redis-py without the internals the fast path uses still answers every lookup:
    without a ClusterNode pool method (`_NEEDED`) through `mget_nonatomic`, without a
    connection's writer (`_WRITER`) straight to the nodes through redis-py's public write."""
    if missing == "_NEEDED":
        monkeypatch.setattr(cluster_mget, "_NEEDED", (*cluster_mget._NEEDED, "gone_in_redis_9"))
    else:
        monkeypatch.setattr(cluster_mget, "_WRITER", "_writer_gone_in_redis_9")
    cache = await make_cache(**steady(topology))
    assert cache.redis is not None and cache.redis.cluster_mget is not None
    fast = cache.redis.cluster_mget
    assert fast.enabled is (missing != "_NEEDED")
    keys = [response_key(70 + i % 5, 0, f"internals-{i}") for i in range(40)]  # 5 images
    entries = {key: CacheEntry(key.encode() * 50, "image/jpeg") for key in keys}
    for key, entry in entries.items():
        cache.put(key, entry)
    assert await cache.flush(5)
    slots = {key_slot(cache.redis.value_key(k).encode()) for k in keys}
    assert len({topology.cluster.owner(s).port for s in slots}) > 1  # type: ignore[union-attr]
    for _ in range(3):  # the same batch, on connections new and reused
        results = await asyncio.gather(*(cache.get(key) for key in keys))
        assert results == [(entries[key], "redis") for key in keys]
    missed = await asyncio.gather(*(cache.get(response_key(75, 0, f"none-{i}")) for i in range(8)))
    assert missed == [(None, "miss")] * 8
    assert fast.fallbacks == 0
    if missing == "_NEEDED":
        assert fast.fast == 0
    else:  # four batches, or more if a busy loop split one over iterations
        assert fast.fast >= 4
    assert cache.stats()["redis"]["errors"] == 0


async def test_primary_killed_under_load(topology: Topology, make_cache: CacheFactory) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=topology.url)
    stop = asyncio.Event()
    workers = [asyncio.create_task(load(cache, stop, w)) for w in range(8)]
    await wait_until_async(lambda: cache.stats()["redis"]["hits"] > 0, "traffic to reach redis")
    redis = topology.cluster or topology.sentinels
    assert redis is not None
    killed, replica = redis.primary_and_replica()
    killed.kill()
    await asyncio.to_thread(wait_for, lambda: redis.promoted(killed, replica), "promotion")
    # Back in service: every key, including those of the failed-over primary's slots, is
    # stored and read again through the promoted replica.
    keys = [response_key(50 + i % 10, 0, f"after-{i}") for i in range(30)]

    async def serving() -> bool:
        for key in keys:
            cache.put(key, ENTRY)
        await cache.flush(2)
        found = [await cache.get(key) for key in keys]
        return all(f == (ENTRY, "redis") for f in found)

    # A round that misses is allowed while the cluster settles: on a loaded 2-core CI machine
    # one reply after the failover once took longer than the 0.2 s bound (a timeout is the
    # degradation the breaker absorbs, not a failure of the failover).
    for _ in range(200):
        if await serving():
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the cache never served every key again after the failover")
    if cache.redis is not None and cache.redis.cluster_mget is not None:
        # Lookups go straight to the nodes again, at the latest once the slot-map refresh
        # the failover asked for is due (redis-py spaces refreshes at least 1 s apart), and
        # a round served that way finds every key.
        fast = cache.redis.cluster_mget.fast
        for _ in range(50):
            if await serving() and cache.redis.cluster_mget.fast > fast:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("cluster lookups never went straight to the nodes again")
    stop.set()
    results = await asyncio.gather(*workers)
    assert sum(f for _, f in results) == 0  # no call ever raised
    assert sum(c for c, _ in results) > 100
    stats = cache.stats()["redis"]
    assert stats["errors"] + stats["write_errors"] > 0  # the outage was real, and absorbed
    if topology.cluster is not None:
        assert cache.redis is not None
        moved = {key_slot(cache.redis.value_key(k).encode()) for k in keys}
        assert moved & slots_served_by(topology.cluster, replica)


def slots_served_by(cluster: RedisClusterNodes, node: RedisServer) -> set[int]:
    for line in cli("-p", str(node.port), "cluster", "nodes").splitlines():
        fields = line.split()
        if "myself" in fields[2]:
            out: set[int] = set()
            for part in fields[8:]:
                if part.startswith("["):
                    continue
                lo, _, hi = part.partition("-")
                out.update(range(int(lo), int(hi or lo) + 1))
            return out
    return set()


async def wait_until_async(check: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
