"""Client CPU a Redis command costs the event loop: redis-py as idrserve uses it, and a floor.

A cold tile with a shared Redis tier pays two or three round trips
(docs/redis.md#what-a-cold-tile-costs), and what each costs the server is client CPU on its
one event-loop thread, not Redis's time. This starts a redis-server pinned to core 1, runs
the client pinned to core 0 on uvloop (as `idrserve serve`), and reports CPU µs (user +
system, `time.process_time`) a command for:

- redis-py's asyncio client on a `BlockingConnectionPool` (idrserve's cache/redis_url.py),
  one command at a time, and 16 at once (`gather`, 16 pooled connections);
- a floor: one connection multiplexed by hand (commands written as they come, one reader
  task matching replies in order) on redis-py's own `Connection` and hiredis parser, one at a
  time and 16 in flight. It is not idrserve code: it shows what the library's layers above
  the connection (pool checkout, retry, timeout scopes, events) cost per command.

    python bench/bench_redis_client.py [--number 5000] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import os
import platform
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop
from _results import unused
from bench_http import start_redis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection

ROOT = Path(__file__).resolve().parent
BODY = b"x" * 17_000  # a 256² JPEG tile's size
SCRIPT = "local v = redis.call('GET', KEYS[1]) if v then return v end return 0"


class Multiplexed:
    """Commands pipelined on one connection; replies matched in order by one reader."""

    def __init__(self, conn: AbstractConnection) -> None:
        self.conn = conn
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.conn.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            reply = await self.conn.read_response(disable_decoding=True)
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def call(self, *args: Any) -> asyncio.Future[Any]:
        waiter = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        writer = self.conn._writer
        assert writer is not None
        writer.writelines(self.conn.pack_command(*args))
        return waiter


async def cpu_us(op: Callable[[], Awaitable[Any]], number: int, batch: int) -> float:
    """CPU µs per command, `batch` commands in flight at a time."""

    async def once() -> None:
        if batch == 1:
            await op()
        else:
            await asyncio.gather(*(op() for _ in range(batch)))

    for _ in range(max(1, number // (10 * batch))):
        await once()
    rounds = max(1, number // batch)
    start = time.process_time()
    for _ in range(rounds):
        await once()
    return (time.process_time() - start) / (rounds * batch) * 1e6


async def measure(url: str, number: int) -> list[tuple[str, str, float]]:
    pool = BlockingConnectionPool.from_url(url, max_connections=32, timeout=1.0)
    client = Redis(connection_pool=pool)
    script = client.register_script(SCRIPT)
    mux = Multiplexed(pool.make_connection())  # type: ignore[no-untyped-call]  # redis-py
    await mux.start()
    sha = await client.script_load(SCRIPT)
    ops: list[tuple[str, Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]] = [
        ("GET (missing key)", lambda: client.get("none"), lambda: mux.call("GET", "none")),
        (
            "SET 17 KB with a TTL",
            lambda: client.set("tile", BODY, ex=600),
            lambda: mux.call("SET", "tile", BODY, "EX", 600),
        ),
        ("MGET of one key", lambda: client.mget(["none"]), lambda: mux.call("MGET", "none")),
        (
            "EVALSHA (a script)",
            lambda: script(keys=["none"]),
            lambda: mux.call("EVALSHA", sha, 1, "none"),
        ),
    ]
    rows = []
    for name, pooled, multiplexed in ops:
        for label, op in (("redis-py client", pooled), ("multiplexed floor", multiplexed)):
            for batch in (1, 16):
                us = await cpu_us(op, number, batch)
                rows.append((name, f"{label}, {batch} at a time", us))
                print(f"{name:22} {label:18} ×{batch:<2} {us:7.1f} µs", flush=True)
    await client.aclose()
    if mux.reader is not None:
        mux.reader.cancel()
    await mux.conn.disconnect()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5000, help="commands per measurement")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        print("redis-server is needed: apt-get install redis-server", file=sys.stderr)
        return 2
    server, url = start_redis(maxmemory=None)
    try:
        os.sched_setaffinity(0, {0})
        rows = uvloop.run(measure(url, args.number))
    finally:
        server.terminate()
        server.wait(10)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    host = platform.node() or "host"
    lines = [
        f"# Client CPU a Redis command costs the event loop ({stamp}, {host})",
        "",
        f"Command: `python bench/bench_redis_client.py --number {args.number}`",
        "",
        "Client pinned to core 0 on uvloop, redis-server on core 1; CPU µs (user + system) a "
        "command, after a warm-up.",
        "",
        "| command | client | CPU µs a command |",
        "|---|---|---:|",
        *(f"| {name} | {label} | {us:.1f} |" for name, label, us in rows),
    ]
    out = args.out or unused(ROOT / "results" / f"redis-client-{host}-{stamp}.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
