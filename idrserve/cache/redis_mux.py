"""The single-server Redis tier's hot commands on one multiplexed connection.

Why: each command through redis-py's client costs the event loop 83–102 µs of CPU alone and
46–54 µs with 16 in flight (bench/bench_redis_client.py), most of it in the layers above the
connection: pool checkout, retry, timeout scopes, event hooks. A cold tile behind Redis pays
two or three commands, a Redis hit one. Here the cache's lookups and stores are written to one
connection as they come, and one reader task hands each reply to the command that waits for
it, in order (Redis answers a connection's commands in the order sent): 14–21 µs a command
under load, 51–54 alone (docs/redis.md#what-a-cold-tile-costs).

The connection is redis-py's own (`Connection`: connect, AUTH, SELECT, TLS, the client name,
RESP framing and the hiredis parser), made from the client's pool settings, with no read
timeout. What this module adds is the multiplexing: a FIFO of waiters, a reader, and a reset
that fails every waiter when the connection breaks or a command goes unanswered too long (a
timed-out command leaves the connection suspect; the next command connects again, as a pool
would).

Commands are bounded here, not by a timeout scope each: Redis answers in order, so the oldest
command waiting is the one to watch, and one timer (re-armed about once per timeout under
load) resets the connection when it has waited `timeout_s`. An `asyncio.timeout` per command
cost the loop about 5 µs of CPU a command (a lookup-and-lock script: 15 → 9.5 µs with 16 in
flight). Connecting is bounded by a timeout scope as before, being rare. Every command failed
by a reset gets `ConnectionLost`, so that its caller does not reset the next connection too.

A waiter cancelled by its caller (a request gone) keeps its place: the reader drops its
reply when it comes. Writes go to the transport without waiting for it to drain; the
commands in flight are bounded by the callers (the write queue, the breaker, request slots).

The commands of one event-loop iteration are written together, in one `writev`, from a
callback the first of them schedules (Redis reads them as a pipeline): a cold tile's lookup,
lock and store are each one `write(2)` fewer, which the loop's thread pays in the kernel's
TCP path, not Redis. Commands are packed by hiredis from their arguments as given (str,
bytes, int, float), without redis-py's per-argument encoder; a bool is refused there too.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from hiredis import pack_command
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

log = logging.getLogger(__name__)

# A check may fire this early (uvloop rounds timers to the millisecond).
_SLACK_S = 0.001


class ConnectionLost(RedisConnectionError):
    """The multiplexed connection failed or was reset, and every command waiting on it with it:
    nothing is left to reset."""


class Multiplexed:
    """Commands pipelined on one connection, replies matched in order by one reader."""

    def __init__(self, make_connection: Callable[[], AbstractConnection], timeout_s: float) -> None:
        self._make = make_connection
        self._timeout_s = timeout_s
        self._conn: AbstractConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._sent: deque[float] = deque()  # when each waiting command was queued (loop time)
        self._watch: asyncio.TimerHandle | None = None  # the check of the oldest one
        self._opening: asyncio.Task[AbstractConnection] | None = None
        self._closed = False
        # Packed commands not yet written, in the order of their waiters in `_waiting`.
        self._out: list[bytes] = []
        self._flush_armed = False
        # Connections opened, for tests and /stats-minded debugging.
        self.connects = 0

    async def execute(self, *args: Any) -> Any:
        """One command's reply (bytes left undecoded), within `timeout_s`; raises the
        reply's ResponseError, `ConnectionLost` (a redis-py ConnectionError) when no reply
        comes, or TimeoutError when connecting takes longer."""
        conn = self._conn
        writer = None if conn is None else getattr(conn, "_writer", None)  # redis-py's stream
        if writer is None or writer.is_closing():
            await self._reconnect()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        self._out.append(pack_command(args))
        self._waiting.append(waiter)
        now = loop.time()
        self._sent.append(now)
        if self._watch is None:
            self._watch = loop.call_at(now + self._timeout_s, self._check)
        if not self._flush_armed:
            self._flush_armed = True
            loop.call_soon(self._flush)
        return await waiter

    async def _reconnect(self) -> None:
        if self._conn is not None:
            self.reset(ConnectionLost("connection closed"))
        async with asyncio.timeout(self._timeout_s):
            conn = await self._connected()
        if getattr(conn, "_writer", None) is None:
            raise RedisConnectionError("no connection to Redis")

    def _check(self) -> None:
        """The oldest waiting command's deadline: reset when it has passed, else look again
        at its deadline."""
        self._watch = None
        if not self._sent:
            return
        loop = asyncio.get_running_loop()
        due = self._sent[0] + self._timeout_s
        if loop.time() + _SLACK_S >= due:
            self.reset(ConnectionLost(f"no reply from Redis within {self._timeout_s} s"))
        else:
            self._watch = loop.call_at(due, self._check)

    def _flush(self) -> None:
        """Write this iteration's commands in one go (see the module's docstring)."""
        self._flush_armed = False
        out, self._out = self._out, []
        if not out:
            return  # a reset dropped them, and failed their waiters
        conn = self._conn
        writer = None if conn is None else getattr(conn, "_writer", None)
        if writer is None or writer.is_closing():
            self.reset(ConnectionLost("connection closed"))
            return
        writer.writelines(out)

    async def _connected(self) -> AbstractConnection:
        if self._closed:
            raise RedisConnectionError("closed")
        opening = self._opening
        if opening is None or opening.done():
            # One connect for all callers, in its own task: a caller that times out does not
            # cancel it for the others.
            opening = self._opening = asyncio.get_running_loop().create_task(self._open())
            opening.add_done_callback(_retrieve)
        return await asyncio.shield(opening)

    async def _open(self) -> AbstractConnection:
        conn = self._make()
        await conn.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        if self._closed:
            await conn.disconnect()
            raise RedisConnectionError("closed")
        self.connects += 1
        self._conn = conn
        self._reader = asyncio.get_running_loop().create_task(self._read(conn))
        return conn

    async def _read(self, conn: AbstractConnection) -> None:
        while True:
            try:
                reply = await conn.read_response(disable_decoding=True, timeout=math.inf)
            except ResponseError as exc:  # an error reply: that command's, not the link's
                reply = exc
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                self._fail(conn, exc)
                return
            if not self._waiting:  # a reply nobody sent for: the stream is out of step
                self._fail(conn, RedisConnectionError("reply without a command"))
                return
            waiter = self._waiting.popleft()
            self._sent.popleft()
            if waiter.done():
                continue  # its caller gave up (timeout, request gone)
            if isinstance(reply, ResponseError):
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)

    def _fail(self, conn: AbstractConnection, exc: BaseException) -> None:
        if self._conn is not conn:
            return
        self.reset(ConnectionLost(str(exc) if isinstance(exc, RedisConnectionError) else repr(exc)))

    def reset(self, error: Exception | None = None) -> None:
        """Drop the connection and fail every command waiting on it; the next command opens
        a new one."""
        conn, self._conn = self._conn, None
        reader, self._reader = self._reader, None
        waiting, self._waiting = self._waiting, deque()
        self._sent = deque()
        self._out = []  # unsent: their waiters fail below
        failure = error or ConnectionLost("connection reset")
        for waiter in waiting:
            if not waiter.done():
                waiter.set_exception(failure)
                waiter.exception()  # retrieved: a waiter whose caller left logs nothing
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
        if conn is not None:
            writer = getattr(conn, "_writer", None)
            if writer is not None:
                writer.close()  # closes the socket now; redis-py's disconnect would await

    async def aclose(self) -> None:
        self._closed = True
        reader = self._reader
        self.reset(ConnectionLost("closed"))
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)


def _retrieve(task: asyncio.Task[AbstractConnection]) -> None:
    """Mark a failed connect's exception as seen: its callers may all have timed out."""
    if not task.cancelled():
        task.exception()
