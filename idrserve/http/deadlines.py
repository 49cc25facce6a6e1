"""Request deadlines on one sweeping timer instead of a timer per request.

`asyncio.timeout` arms and cancels a loop timer for every request: about 8 µs each under
uvloop, a twentieth of a cold tile's request path on one core (bench/bench_http.py
`--request-path`). Every request here gets the same allowance (`limits.request_timeout_s`),
so deadlines fall in the order requests start: a dict in insertion order is already sorted
by deadline, and a sweep every `tick_s` cancels the expired ones from its front and stops
at the first that is not. A deadline therefore fires between 0 and `tick_s` late, which
nobody can tell apart from scheduling at a 30 s deadline (`tick_s` is a tenth of the
allowance, at most 0.1 s).

The task is cancelled as `asyncio.timeout` would cancel it; `expired()` tells the caller
that the cancellation was the deadline's (not a client that went away), and takes back the
cancel request (`Task.uncancel`) so the caller can still answer.
"""

from __future__ import annotations

import asyncio


class Deadlines:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.tick_s = min(0.1, timeout_s / 10)
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._sweeping: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[object]) -> None:
        loop = task.get_loop()
        self._due[task] = loop.time() + self.timeout_s
        if self._sweeping is None:
            self._sweeping = loop.call_later(self.tick_s, self._sweep, loop)

    def stop(self, task: asyncio.Task[object]) -> None:
        self._due.pop(task, None)
        self._expired.discard(task)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """True, once, when `task`'s CancelledError came from its deadline."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        due = self._due
        while due:
            task, when = next(iter(due.items()))
            if when > now:
                break
            del due[task]
            if not task.done():
                self._expired.add(task)
                task.cancel()
        self._sweeping = loop.call_later(self.tick_s, self._sweep, loop) if due else None

    def __len__(self) -> int:
        return len(self._due)
