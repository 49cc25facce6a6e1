"""`SingleFlight`: concurrent calls for one key in this process share one computation.

The one implementation behind every "load once for all concurrent callers" in the server
(cache renders and purge generations, Zarr image records, OMERO metadata and tiles), so that
cancellation and shutdown are handled once (`tests/unit/test_flight.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(slots=True)
class _Flight(Generic[V]):
    task: asyncio.Task[V]
    waiters: int = 0


class SingleFlight(Generic[K, V]):
    """The first caller for a key starts `fn()` as a task; later callers await the same task.

    The task is shielded from its callers: one cancelled caller (a viewer that panned away)
    does not fail the others. With `cancel_abandoned` (the default) it is cancelled once every
    caller has gone, so abandoned work stops; without it, it runs on (work whose result is
    kept, such as a metadata load). Its exception reaches every caller; nothing is remembered
    after it finishes. The tasks are owned here: `aclose` lets them finish for up to
    `timeout_s`, cancels the rest and waits for them, so none outlives its owner.
    """

    def __init__(self, name: str = "flight", *, cancel_abandoned: bool = True) -> None:
        self._name = name
        self._cancel_abandoned = cancel_abandoned
        self._flights: dict[K, _Flight[V]] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._flights)

    def __contains__(self, key: K) -> bool:
        """A computation for `key` is running (a new caller would join it)."""
        return key in self._flights

    async def run(self, key: K, fn: Callable[[], Awaitable[V]]) -> tuple[V, bool]:
        """`(result, joined)`: `joined` is True when another caller had started the work.

        After `aclose`, `fn()` runs in the caller's own task, unshared, so nothing is left
        to close again.
        """
        if self._closed:
            return await fn(), False
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            task = asyncio.get_running_loop().create_task(_call(fn), name=f"{self._name}:{key}")
            flight = _Flight(task)
            self._flights[key] = flight
            task.add_done_callback(partial(self._finished, key, flight))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), joined
        except asyncio.CancelledError:
            if self._cancel_abandoned and flight.waiters == 1 and not flight.task.done():
                flight.task.cancel()
            raise
        finally:
            flight.waiters -= 1

    def _finished(self, key: K, flight: _Flight[V], task: asyncio.Task[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not task.cancelled():
            # Mark the exception as retrieved: callers that were cancelled never saw it.
            task.exception()

    async def aclose(self, timeout_s: float = 0.0) -> int:
        """Refuse to share from now on, wait up to `timeout_s` for the running computations,
        cancel the rest and wait until they have stopped; returns how many were cancelled."""
        self._closed = True
        tasks = [f.task for f in self._flights.values()]
        if tasks and timeout_s > 0:
            await asyncio.wait(tasks, timeout=timeout_s)
        left = [t for t in tasks if not t.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)
        return len(left)


async def _call(fn: Callable[[], Awaitable[V]]) -> V:
    return await fn()
