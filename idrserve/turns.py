"""Inline renders take turns, a few per event-loop iteration, the rest waiting in arrival order.

A cold tile small enough renders on the event-loop thread (`server.inline_render_pixels`):
with one worker per core, a thread hand-off costs more than it overlaps. But asyncio runs every
callback that is ready at the start of an iteration before it polls its sockets again, so when
16 requests arrive together their 16 renders (0.6 ms each at 256²) run back to back in one
iteration, and everything else on the loop (a cache hit, a health check, the lag sampler,
a client's next bytes) waits for all of them: the event-loop lag's p99 was 5–10 ms at 16
connections for a 0.6 ms render.

`InlineTurns.turn()` bounds that: the first render of an iteration goes at once; later ones
queue (FIFO) and are let through `per_turn` at a time in the following iterations
(`server.inline_renders_per_turn`), so the loop polls its sockets and runs whatever became
ready between any two groups. Measured at 16 connections on one core
(bench/results/http-turns-vm-2026-12-05.md): one per iteration keeps the lag p99 under 2 ms
but costs 12 % of cold 256² tiles/s (each render's memory traffic evicts the parsing that
preceded it); three, the default until 2026-12-06, halve the lag p99 of unbounded batches
(5 vs 10 ms) and cut the request p99 from 20.7 to 17.1 ms for 3 % of the throughput.
Re-measured with cold tiles rendered from the connection handler and the lag timed from the
sampler's tick
(bench/results/http-lag-vm-2026-12-05.md): three keep 52 % of lag samples under 2 ms, two
78–85 % for 6–8 % of the throughput and a worse request p99 (16.4 vs 14.8 ms), one 98 % for
17 %; none meets a 2 ms p99. With the lag sampled by a timerfd the loop watches (no sampler
thread, 2026-12-06, bench/results/http-lag-vm-2026-12-06-d.md): three keep 56–69 %, two 79–94 %
for 0–2 %, one all of them (a 2 ms p99) for 0–8 %. Once the responses of an iteration were
written together (http/server.py, `Outbox`), two kept all of them too, for 0.98–1.00× the
tiles/s of three (bench/results/http-turns-vm-2026-12-06-b.md and
bench/results/http-turns-vm-2026-12-06-c.md): two is the default.
Since 2026-12-07 a turn is also bounded by time (`server.inline_turn_budget_ms`): a later render
of an iteration goes only while the iteration's renders, as estimated from the recent ones
(`record`), fit the budget, so the count adapts to the render's cost. Tiles of one channel
(a third of a millisecond) go several at a time; slow ones (many channels, a slower core)
one at a time, where a fixed count let two 0.75 ms renders hold the loop for 1.5 ms and more.
`per_turn` stays the cap. The first render of an iteration is never refused: the loop always
makes progress.
A render that is alone costs nothing (no await); one that queues costs one future and one
loop iteration. The connection handler's cold tiles queue no task at all (`defer`): a plain
call, run by `_next` itself in the iteration that gives it its turn, shares the queue, in
arrival order, with the tasks' futures. A waiter cancelled (deadline, client gone) is skipped
and never stalls the queue. Loop-thread only, no locks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)


class InlineTurns:
    """The queue for inline renders; one per process (service.Deps)."""

    __slots__ = (
        "_armed",
        "_busy",
        "_clock",
        "_waiters",
        "budget_s",
        "estimate_s",
        "per_turn",
        "queued",
    )

    def __init__(
        self,
        per_turn: int = 2,
        budget_s: float = 0.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.per_turn = per_turn  # at most this many renders per loop iteration once some wait
        self.budget_s = budget_s  # and no more than fit in this (0: count only)
        self.estimate_s = 0.0  # an inline render's recent duration (moving average)
        self._clock = clock  # what times a turn (tests pass their own)
        # Tasks' futures (`turn`) and deferred renders (`defer`), in arrival order.
        self._waiters: deque[asyncio.Future[None] | Callable[[], bool]] = deque()
        self._busy = False  # a render has had this iteration's turn
        self._armed = False  # `_next` is scheduled for the next iteration
        self.queued = 0  # renders that had to wait a turn (for tests and metrics)

    async def turn(self, first: bool = False) -> None:
        """Return when the caller may render inline in the current loop iteration; `first`:
        ahead of every waiter (the second part of a render already begun)."""
        loop = asyncio.get_running_loop()
        if not self._busy and not self._waiters:
            self._busy = True
            self._arm(loop)
            return
        waiter = loop.create_future()
        if first:
            self._waiters.appendleft(waiter)
        else:
            self._waiters.append(waiter)
        self.queued += 1
        self._arm(loop)
        # Cancelled while waiting: asyncio cancels `waiter` too, and `_next` skips it.
        await waiter

    def record(self, seconds: float) -> None:
        """An inline render's duration (service.py reports each): the estimate the time
        budget is spent by. A moving average over about the last five, so that a change of
        image or settings shows within a few renders."""
        estimate = self.estimate_s
        self.estimate_s = seconds if estimate == 0.0 else estimate + 0.2 * (seconds - estimate)

    def take_now(self) -> bool:
        """`turn()` without the wait: True (and the turn taken) when the caller may render in
        this iteration at once, False when it would have to queue (then `defer`)."""
        if self._busy or self._waiters:
            return False
        self._busy = True
        self._arm(asyncio.get_running_loop())
        return True

    def defer(self, job: Callable[[], bool], first: bool = False) -> None:
        """Queue a render that needs no task (coldpath.py): called, in arrival order among
        the waiters, in the iteration that gives it its turn. It returns False when it had
        nothing to do (its request went away), and then takes no turn. `first`: ahead of
        every waiter (the second part of a render already begun)."""
        if first:
            self._waiters.appendleft(job)
        else:
            self._waiters.append(job)
        self.queued += 1
        self._arm(asyncio.get_running_loop())

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._armed:
            self._armed = True
            loop.call_soon(self._next)

    def _next(self) -> None:
        """A new iteration: let the oldest live waiters through, at most `per_turn` of them
        and, after the first, only while their renders fit `budget_s`: the deferred ones run
        here and are timed as they go, a task's runs later in the iteration and counts at the
        estimate."""
        self._armed = False
        self._busy = False
        woken = 0
        tasks = 0  # woken tasks, whose renders are still to come in this iteration
        budget = self.budget_s
        clock = self._clock
        start = clock() if budget else 0.0
        while self._waiters and woken < self.per_turn:
            if woken and budget:
                ahead = (tasks + 1) * self.estimate_s
                if clock() - start + ahead > budget:
                    break
            waiter = self._waiters.popleft()
            if not isinstance(waiter, asyncio.Future):
                try:
                    woken += waiter()  # a deferred render: it runs here, now
                except Exception:
                    woken += 1
                    log.exception("a deferred inline render failed")
            elif not waiter.done():
                waiter.set_result(None)  # it runs in the next iteration, and so does `_next`
                woken += 1
                tasks += 1
        if woken:
            self._busy = True
            self._arm(asyncio.get_running_loop())  # `_next` runs as a loop callback
