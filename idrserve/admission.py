"""Admission control: a fixed number of requests and of renders in progress per process.

A server that queues everything it cannot do at once only turns overload into timeouts for
everyone, and its memory grows with the queue. Here work beyond a bound is refused at once
with `errors.Overloaded` (503 + `Retry-After`), so the admitted requests keep their latency
and a load balancer or client can retry elsewhere or later.

Three bounds, because what they protect differs:

* *requests* (`limits.max_concurrent_requests`): every request in progress, cache hits
  included; counted by the outermost middleware (`http/ops.py`). A request with a large body
  keeps its slot until the body is written or the client is gone (`http/bodies.py`).
* *renders* (`limits.max_concurrent_renders`): read + render + encode in progress; taken by
  `service.render_region`, and by the cold path for a render it sends to the pool itself
  (`render_taken`/`render_done`, http/coldpath.py `ColdRenders.pool`). A slot stays taken
  until the worker-thread job it started has really finished, even when the request was
  cancelled or timed out: a thread cannot be interrupted, and releasing early would let
  zombie jobs pile up in the pool's queue.
* *body bytes* (`limits.max_inflight_body_bytes`): large response bodies held in memory,
  from when they are produced (or reserved before a read) until written. CPU is what renders
  cost, memory is what a slow reader costs: a finished render no longer holds a render slot,
  but its body holds bytes of this budget for as long as the client takes to read it.

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


class BodyBytes:
    """Bytes of one response body charged to the budget; `release` gives them back."""

    __slots__ = ("_admission", "nbytes")

    def __init__(self, admission: Admission, nbytes: int) -> None:
        self._admission = admission
        self.nbytes = nbytes

    def resize(self, nbytes: int) -> None:
        """Charge the body's real size instead of the estimate it was admitted with."""
        self._admission.body_bytes += nbytes - self.nbytes
        self.nbytes = nbytes

    def release(self) -> None:
        self._admission.body_bytes -= self.nbytes
        self.nbytes = 0


class Admission:
    """The per-process bounds and their counters (shown by `/readyz` and `/metrics`)."""

    def __init__(
        self,
        max_requests: int,
        max_renders: int,
        retry_after_s: int = 1,
        max_body_bytes: int = 512 * 1024 * 1024,
    ) -> None:
        self.max_requests = max_requests
        self.max_renders = max_renders
        self.max_body_bytes = max_body_bytes
        self.retry_after_s = retry_after_s
        self.requests = 0
        self.renders = 0
        self.body_bytes = 0
        self.refused_requests = 0
        self.refused_renders = 0
        self.refused_bytes = 0
        self.timeouts = 0
        self.cancelled = 0
        self.send_timeouts = 0

    def request_admitted(self) -> bool:
        """Count one more request in progress, or False (nothing counted) when full."""
        if self.requests >= self.max_requests:
            self.refused_requests += 1
            return False
        self.requests += 1
        return True

    def request_done(self) -> None:
        self.requests -= 1

    def render_taken(self) -> bool:
        """Take a render slot for a caller that releases it itself (`render_done`), or False
        (nothing counted: the usual path refuses it, counted once) when all are taken."""
        if self.renders >= self.max_renders:
            return False
        self.renders += 1
        return True

    def render_done(self) -> None:
        self.renders -= 1

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

    def reserve_body(self, nbytes: int) -> BodyBytes:
        """Charge `nbytes` of response body to the budget, or `Overloaded` at once when it
        would go over. A body larger than the whole budget is let in only while no other body
        is held, so that it can be served at all: the peak stays max(budget, that body)."""
        if self.body_bytes + nbytes > self.max_body_bytes and self.body_bytes > 0:
            self.refused_bytes += 1
            raise Overloaded(
                f"{self.body_bytes} bytes of response bodies are waiting to be sent, and "
                f"{nbytes} more would exceed this process's limit of {self.max_body_bytes} "
                f"(limits.max_inflight_body_bytes); retry in {self.retry_after_s} s",
                retry_after_s=self.retry_after_s,
            )
        self.body_bytes += nbytes
        return BodyBytes(self, nbytes)

    def note_send_timeout(self) -> None:
        """A client stopped reading for `limits.send_timeout_s`; its connection was closed."""
        self.send_timeouts += 1

    def snapshot(self) -> dict[str, int]:
        return {
            "requests_in_progress": self.requests,
            "max_concurrent_requests": self.max_requests,
            "renders_in_progress": self.renders,
            "max_concurrent_renders": self.max_renders,
            "inflight_body_bytes": self.body_bytes,
            "max_inflight_body_bytes": self.max_body_bytes,
            "refused_requests": self.refused_requests,
            "refused_renders": self.refused_renders,
            "refused_bytes": self.refused_bytes,
            "timeouts": self.timeouts,
            "cancelled": self.cancelled,
            "send_timeouts": self.send_timeouts,
        }
