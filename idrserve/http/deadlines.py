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
cancel request (`Task.uncancel`) so the caller can still answer. A request waited for
without a task (a cold tile rendered in the pool, http/coldpath.py) registers a call
instead (`call_at`), made once at its deadline unless `stop` came first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable

log = logging.getLogger(__name__)


class Deadlines:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.tick_s = min(0.1, timeout_s / 10)
        # What is due when, and the call to make then (None: cancel the task).
        self._due: dict[Hashable, tuple[float, Callable[[], object] | None]] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._sweeping: asyncio.TimerHandle | None = None

    def start(self, task: asyncio.Task[object]) -> None:
        self._arm(task.get_loop(), task, None)

    def call_at(
        self, loop: asyncio.AbstractEventLoop, key: Hashable, call: Callable[[], object]
    ) -> None:
        """Make `call()` at the deadline of a request starting now, unless `stop(key)` first."""
        self._arm(loop, key, call)

    def _arm(
        self, loop: asyncio.AbstractEventLoop, key: Hashable, call: Callable[[], object] | None
    ) -> None:
        self._due[key] = (loop.time() + self.timeout_s, call)
        if self._sweeping is None:
            self._sweeping = loop.call_later(self.tick_s, self._sweep, loop)

    def stop(self, key: Hashable) -> None:
        self._due.pop(key, None)
        self._expired.discard(key)

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
            key, (when, call) = next(iter(due.items()))
            if when > now:
                break
            del due[key]
            if call is not None:
                try:
                    call()
                except Exception:  # one failed call must not stop the sweep for the rest
                    log.exception("deadline call failed")
            elif isinstance(key, asyncio.Task) and not key.done():
                self._expired.add(key)
                key.cancel()
        self._sweeping = loop.call_later(self.tick_s, self._sweep, loop) if due else None

    def __len__(self) -> int:
        return len(self._due)
