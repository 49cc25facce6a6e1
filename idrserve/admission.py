"""Admission control: a fixed number of requests and of renders in progress per process.

A server that queues everything it cannot do at once only turns overload into timeouts for
everyone, and its memory grows with the queue. Here work beyond a bound is refused at once
with `errors.Overloaded` (503 + `Retry-After`), so the admitted requests keep their latency
and a load balancer or client can retry elsewhere or later.

Two bounds, because their costs differ by three orders of magnitude:

* *requests* (`limits.max_concurrent_requests`): every request in progress, cache hits
  included; counted by the outermost middleware (`http/ops.py`).
* *renders* (`limits.max_concurrent_renders`): read + render + encode in progress; taken by
  `service.render_region`. A slot stays taken until the worker-thread job it started has
  really finished, even when the request was cancelled or timed out: a thread cannot be
  interrupted, and releasing early would let zombie jobs pile up in the pool's queue.

Plain counters, no locks: everything runs on the event loop thread (releases from worker
threads are marshalled back with `call_soon_threadsafe`).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from idrserve.errors import Overloaded


class RenderSlot:
    """One admitted render; released when its block ends or its last pool job finishes."""

    __slots__ = ("_admission", "_held", "_released")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._held = 0  # pool jobs still running after the block was left
        self._released = False

    def hold_until(self, job: Future[Any]) -> None:
        """Keep the slot taken until `job` (a running worker-thread job) has finished."""
        loop = asyncio.get_running_loop()
        self._held += 1

        def done(_job: Future[Any]) -> None:
            loop.call_soon_threadsafe(self._job_done)

        job.add_done_callback(done)

    def _job_done(self) -> None:
        self._held -= 1
        if self._held == 0:
            self._release()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._admission.renders -= 1

    def leave(self) -> None:
        if self._held == 0:
            self._release()


# The render slot of the current task, so that `service.in_pool` can extend it over a
# thread job that outlives a cancelled request without every caller passing it along.
CURRENT_SLOT: contextvars.ContextVar[RenderSlot | None] = contextvars.ContextVar(
    "idrserve_render_slot", default=None
)


class Admission:
    """The two per-process bounds and their counters (shown by `/readyz` and `/metrics`)."""

    def __init__(self, max_requests: int, max_renders: int, retry_after_s: int = 1) -> None:
        self.max_requests = max_requests
        self.max_renders = max_renders
        self.retry_after_s = retry_after_s
        self.requests = 0
        self.renders = 0
        self.refused_requests = 0
        self.refused_renders = 0
        self.timeouts = 0
        self.cancelled = 0

    def request_admitted(self) -> bool:
        """Count one more request in progress, or False (nothing counted) when full."""
        if self.requests >= self.max_requests:
            self.refused_requests += 1
            return False
        self.requests += 1
        return True

    def request_done(self) -> None:
        self.requests -= 1

    @contextmanager
    def render(self) -> Iterator[RenderSlot]:
        """A render slot for the block, or `Overloaded` at once when all are taken."""
        if self.renders >= self.max_renders:
            self.refused_renders += 1
            raise Overloaded(
                f"{self.renders} renders are in progress, the limit of this process; "
                f"retry in {self.retry_after_s} s",
                retry_after_s=self.retry_after_s,
            )
        self.renders += 1
        slot = RenderSlot(self)
        token = CURRENT_SLOT.set(slot)
        try:
            yield slot
        finally:
            CURRENT_SLOT.reset(token)
            slot.leave()

    def snapshot(self) -> dict[str, int]:
        return {
            "requests_in_progress": self.requests,
            "max_concurrent_requests": self.max_requests,
            "renders_in_progress": self.renders,
            "max_concurrent_renders": self.max_renders,
            "refused_requests": self.refused_requests,
            "refused_renders": self.refused_renders,
            "timeouts": self.timeouts,
            "cancelled": self.cancelled,
        }
