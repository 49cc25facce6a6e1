"""Single-flight: concurrent calls for one key in this process share one execution."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Flight(Generic[T]):
    task: asyncio.Task[T]
    waiters: int = 0


class SingleFlight(Generic[T]):
    """The first caller for a key starts `fn()` as a task; later callers await the same task.

    The task runs on its own, so one cancelled caller (a viewer that panned away) does not
    fail the others; when every caller has gone it is cancelled, so abandoned work stops.
    Its exception reaches every caller and nothing is remembered after it finishes.
    """

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def run(self, key: str, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """`(result, joined)`: `joined` is True when another caller had started the work."""
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            flight = _Flight(asyncio.get_running_loop().create_task(_call(fn)))
            self._flights[key] = flight
            flight.task.add_done_callback(partial(self._finished, key, flight))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), joined
        except asyncio.CancelledError:
            if not flight.task.done() and flight.waiters == 1:
                flight.task.cancel()
            raise
        finally:
            flight.waiters -= 1

    def _finished(self, key: str, flight: _Flight[T], _task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.task.cancelled():
            # Mark the exception as retrieved: callers that were cancelled never saw it.
            flight.task.exception()

    async def cancel_all(self) -> None:
        tasks = [f.task for f in self._flights.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()
