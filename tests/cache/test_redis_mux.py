"""The single-server tier's multiplexed connection (cache/redis_mux.py) on a real redis-server.

Replies must reach the commands that asked, in every interleaving the event loop makes; an
error reply must fail its own command only; a dead, restarted or hung server must fail the
commands waiting on it and leave the next one a fresh connection; and the tier must work the
same with multiplexing off.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from idrserve.cache import CacheEntry, response_key
from idrserve.cache.redis import RedisTier
from idrserve.cache.redis_mux import ConnectionLost, Multiplexed
from tests.cache.conftest import CacheFactory, RedisServer

ENTRY = CacheEntry(b"j" * 5000, "image/jpeg")


def _mux(tier: RedisTier | None) -> Multiplexed:
    assert tier is not None and tier._mux is not None
    return tier._mux


@pytest.fixture
async def mux(make_cache: CacheFactory, redis_url: str) -> Multiplexed:
    """A tier's connection with `mux:a` = a, `mux:b` = b."""
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_url, redis_timeout_s=5.0)
    conn = _mux(cache.redis)
    await conn.execute("SET", "mux:a", b"a")
    await conn.execute("SET", "mux:b", b"b")
    return conn


async def test_hot_commands_go_through_one_connection(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_url, redis_timeout_s=5.0)
    mux = _mux(cache.redis)
    keys = [response_key(10, 0, str(i)) for i in range(40)]

    async def render() -> CacheEntry:
        return ENTRY

    # Misses with locks, stores with releases, then hits: all on one connection.
    got = await asyncio.gather(*(cache.get_or_render(k, render) for k in keys))
    assert all(g == (ENTRY, "miss") for g in got)
    assert await cache.flush(5)
    assert all([(await cache.get(k))[1] == "redis" for k in keys])
    assert mux.connects == 1
    clients = await raw_redis.client_list()
    assert sum(1 for c in clients if c.get("name") == "idrserve-cache") >= 1


async def test_replies_reach_the_commands_that_asked(
    redis_url: str, make_cache: CacheFactory
) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_url, redis_timeout_s=5.0)
    mux = _mux(cache.redis)
    values = {f"mux:{i}": f"value {i} ".encode() * random.randint(1, 400) for i in range(300)}
    await asyncio.gather(*(mux.execute("SET", k, v) for k, v in values.items()))
    order = list(values)
    random.shuffle(order)

    async def fetch(key: str) -> tuple[str, bytes]:
        await asyncio.sleep(random.random() / 1000)  # interleave sends across iterations
        return key, await mux.execute("GET", key)

    for key, value in await asyncio.gather(*(fetch(k) for k in order)):
        assert value == values[key]
    assert await mux.execute("MGET", *order[:5]) == [values[k] for k in order[:5]]


async def test_one_iterations_commands_go_out_in_one_write(mux: Multiplexed) -> None:
    conn = mux._conn
    assert conn is not None
    writer = conn._writer  # type: ignore[attr-defined]  # redis-py's stream, as the mux uses
    writes: list[int] = []
    real = writer.writelines

    def counted(data: list[bytes]) -> None:
        writes.append(len(data))
        real(data)

    writer.writelines = counted
    try:
        # 30 commands of one iteration (gather starts them together): one write of all 30,
        # and every reply still reaches its own command.
        sets = [mux.execute("SET", f"mux:w{i}", f"v{i}".encode(), "EX", 60) for i in range(30)]
        assert await asyncio.gather(*sets) == [b"OK"] * 30
        assert writes == [30]
        got = await asyncio.gather(*(mux.execute("GET", f"mux:w{i}") for i in range(30)))
        assert got == [f"v{i}".encode() for i in range(30)]
        assert writes == [30, 30]
    finally:
        writer.writelines = real


async def test_a_reset_before_the_write_fails_the_unsent_commands(mux: Multiplexed) -> None:
    unsent = [asyncio.ensure_future(mux.execute("GET", "mux:a")) for _ in range(3)]
    await asyncio.sleep(0)  # queued for this iteration's write, not written yet
    mux.reset(RedisConnectionError("dropped"))
    for command in unsent:
        with pytest.raises(RedisConnectionError):
            await command
    # Nothing of them reaches the next connection: its replies stay in step.
    assert await mux.execute("GET", "mux:b") == b"b"
    assert await mux.execute("GET", "mux:a") == b"a"
    assert mux.connects == 2


async def test_arguments_are_packed_as_redis_py_would(mux: Multiplexed) -> None:
    # str, bytes, int and float arguments; a bool is refused, as redis-py refuses it.
    assert await mux.execute("SET", "mux:n", 41) == b"OK"
    assert await mux.execute("INCRBYFLOAT", "mux:n", 0.5) == b"41.5"
    assert await mux.execute("SET", "mux:ü", "é") == b"OK"
    assert await mux.execute("GET", "mux:ü") == "é".encode()
    with pytest.raises(TypeError):
        await mux.execute("SET", "mux:n", True)
    assert await mux.execute("GET", "mux:n") == b"41.5"


async def test_an_error_reply_fails_its_command_only(mux: Multiplexed) -> None:
    await mux.execute("SET", "mux:n", b"1")
    results = await asyncio.gather(
        mux.execute("GET", "mux:n"),
        mux.execute("INCR", "mux:a"),  # an error reply in the middle of the pipeline
        mux.execute("INCR", "mux:n"),
        return_exceptions=True,
    )
    assert results[0] == b"1"
    assert isinstance(results[1], ResponseError)
    assert results[2] == 2
    assert mux.connects == 1  # the connection survived it


async def test_a_cancelled_command_leaves_the_others_in_step(mux: Multiplexed) -> None:
    first = asyncio.ensure_future(mux.execute("GET", "mux:a"))
    await asyncio.sleep(0)  # sent
    first.cancel()  # its caller gave up: the reply still comes, and is dropped
    assert await mux.execute("GET", "mux:b") == b"b"
    assert await mux.execute("GET", "mux:a") == b"a"
    assert mux.connects == 1


async def test_a_forgotten_script_is_sent_again(
    make_cache: CacheFactory, redis_url: str, raw_redis: aioredis.Redis
) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_url, redis_timeout_s=5.0)
    assert cache.redis is not None
    await raw_redis.script_flush()  # as a restarted Redis would have
    key = response_key(11, 0, "t")
    entry, token = await cache.redis.get_or_lock(key)
    assert entry is None and token is not None
    assert await cache.redis.set_and_release(key, ENTRY, token)
    assert await raw_redis.get(cache.redis.lock_key(key)) is None
    assert await cache.redis.get(key) == ENTRY


async def test_a_restarted_redis_gets_a_new_connection(
    make_cache: CacheFactory, redis_server: RedisServer
) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_server.url)
    mux = _mux(cache.redis)
    assert await mux.execute("SET", "mux:x", b"1")
    redis_server.kill()
    with pytest.raises(RedisConnectionError):
        await mux.execute("GET", "mux:x")
    await asyncio.to_thread(redis_server.restart)
    assert await mux.execute("GET", "mux:x") is None  # data lost: a miss, on a new connection
    assert mux.connects == 2


async def test_a_hung_redis_fails_the_waiting_commands_then_recovers(
    make_cache: CacheFactory, redis_server: RedisServer
) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_server.url)
    assert cache.redis is not None
    mux = _mux(cache.redis)
    cache.put(response_key(12, 0, "x"), ENTRY)
    assert await cache.flush(5)
    redis_server.pause()
    try:
        timeout = cache.settings.redis_timeout_s
        results = await asyncio.gather(
            *(cache.redis.get(response_key(12, 0, "x")) for _ in range(8))
        )
        assert results == [None] * 8  # timed out: read as misses, the connection dropped
    finally:
        redis_server.resume()
    await asyncio.sleep(cache.settings.breaker_backoff_max_s + 0.05)
    for _ in range(10):  # a probe goes through on a new connection, the breaker closes
        if await cache.redis.get(response_key(12, 0, "x")) == ENTRY:
            break
        await asyncio.sleep(timeout)
    assert await cache.redis.get(response_key(12, 0, "x")) == ENTRY
    assert mux.connects >= 2


async def test_an_unanswered_command_fails_all_waiting_after_the_timeout(
    make_cache: CacheFactory, redis_server: RedisServer
) -> None:
    # The connection's own watch, not a timeout scope per command, bounds every command.
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_server.url, redis_timeout_s=0.3)
    mux = _mux(cache.redis)
    assert await mux.execute("SET", "mux:h", b"h") == b"OK"
    loop = asyncio.get_running_loop()
    redis_server.pause()
    try:
        t0 = loop.time()
        first = asyncio.ensure_future(mux.execute("GET", "mux:h"))
        await asyncio.sleep(0.2)
        later = asyncio.ensure_future(mux.execute("GET", "mux:h"))
        results = await asyncio.wait_for(
            asyncio.gather(first, later, return_exceptions=True), timeout=5
        )
        waited = loop.time() - t0
    finally:
        redis_server.resume()
    assert all(isinstance(r, ConnectionLost) for r in results), results
    # The oldest command's deadline (0.3 s) failed both, not the later one's own (0.5 s).
    assert 0.29 <= waited < 0.45
    assert await mux.execute("GET", "mux:h") == b"h"  # a new connection
    assert mux.connects == 2


async def test_multiplexing_off_uses_the_pooled_client(
    make_cache: CacheFactory, redis_url: str
) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_url, redis_multiplex=False)
    assert cache.redis is not None and cache.redis._mux is None
    key = response_key(13, 0, "t")

    async def render() -> CacheEntry:
        return ENTRY

    assert await cache.get_or_render(key, render) == (ENTRY, "miss")
    assert await cache.flush(5)
    assert await cache.get(key) == (ENTRY, "redis")
    entry, token = await cache.redis.get_or_lock(response_key(13, 0, "u"))
    assert entry is None and token is not None
    assert await cache.redis.set_and_release(response_key(13, 0, "u"), ENTRY, token)
    assert await cache.redis.get(response_key(13, 0, "u")) == ENTRY


async def test_closing_fails_nothing_and_refuses_later_commands(
    make_cache: CacheFactory, redis_url: str
) -> None:
    cache = await make_cache(memory_max_bytes=0, redis_url=redis_url, start=True)
    mux = _mux(cache.redis)
    await mux.execute("SET", "mux:c", b"c")
    await cache.aclose()
    with pytest.raises(RedisConnectionError):
        await mux.execute("GET", "mux:c")
