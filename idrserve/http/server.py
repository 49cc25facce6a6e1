"""The process's HTTP server: aiohttp's, with five behaviours stock aiohttp lacks.

1. Requests aiohttp's parser refuses (a header over `max_field_size`, a control character in a
   header, a malformed request line or Content-Length) get idrserve's JSON error body, CORS and
   `X-Request-ID`. aiohttp answers them itself, in text/plain, before any middleware or
   `on_response_prepare` hook runs; `JsonErrorRequestHandler.handle_error` keeps its logging,
   status and connection close and replaces only the body and headers.
2. A request head must arrive within `limits.header_timeout_s` of its first byte, else a JSON
   408 and the connection closes (nginx's `client_header_timeout`). aiohttp only closes a
   connection that has waited `keepalive_timeout` for its next request, so a client trickling
   a header a byte at a time held a connection, a descriptor and a parser buffer for that long,
   and `keepalive_timeout` cannot be lowered that far without closing idle keep-alive
   connections as early (`JsonErrorRequestHandler.data_received`).
3. A client that takes no response data for `limits.send_timeout_s` is disconnected (nginx's
   `send_timeout`), which drops what was buffered for it and cancels the handler, so its
   admission slot and body bytes are released (`http/bodies.py`). aiohttp has no such limit.
4. A plain memory hit is answered in `data_received`, as its request is parsed
   (`fastpath.DirectHits`; `server.direct_hits`): aiohttp's request object, task, router,
   middlewares and response cost two thirds of a hit.
5. A plain cold tile is planned there too (`coldpath.ColdRenders`; `server.direct_renders`).
   One that renders inline in a cache without lower tiers is answered by a plain call in its
   loop turn, at once or from `InlineTurns` (no task; a future marks the request in
   progress); any other is rendered in one task of the handler's own. Either writes the
   response or hands the request back to the handler task (a failure, the deadline).

Public API only, for 3: the kernel enforces it (TCP_USER_TIMEOUT on the listening sockets,
`_limit_untaken_data`), for small responses left in the socket buffers as for large ones; the
handler only counts what asyncio reports as `connection_lost(TimeoutError)`. Public too: the app
runs in a plain `web.AppRunner`, and `start_server` listens with `loop.create_server`, whose
protocol factory builds the handler on the runner's own `web.Server` (`runner.server`), so the
runner's graceful shutdown covers its connections; `serve` adds run_app's signal handling.

Private, and confined to `JsonErrorRequestHandler` (aiohttp 3.x has no hook for 1 or 2): the
handler's constructor (`manager`, then `loop` and the options as keywords, as
`web.Server.__call__` calls it), `handle_error(request, status, exc, message)`, and two pieces
of its state read after `data_received`: `_messages` (requests parsed, not yet handled) and
`_request_in_progress` (hence aiohttp >= 3.10.11 in pyproject.toml); for 4 also `_waiter`,
the parser's `message_consumed`, `_keepalive_timeout`, `_next_keepalive_close_time` and
`access_logger`; for 5 also `_task_handler`, `_request_factory` (wrapped) and
`_handle_request` (extended), `_process_keepalive` and `shutdown` (extended) and the
Server's `handler_cancellation` (docs/operations.md#the-aiohttp-seam says how each is used).
`tests/http/test_server.py::test_aiohttp_private_api_relied_on` fails when any of them changes.
What would remove them (aiohttp 4's middleware dispatch of parser errors for 1, a proposed
`header_timeout` option for 2): docs/operations.md#the-aiohttp-seam.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http import RawRequestMessage
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from idrserve.errors import IdrServeError
from idrserve.http.coldpath import (
    COLD_RENDERS,
    ColdAnswer,
    ColdJob,
    ColdRenders,
    ColdStep,
    HandBack,
)
from idrserve.http.fastpath import DIRECT_HITS, DirectHits
from idrserve.http.keys import SETTINGS
from idrserve.http.middleware import (
    HTTP_ERROR_CODES,
    error_body,
    new_request_id,
    request_id,
    set_common_headers,
)
from idrserve.http.plainhead import HeadMessage, PlainGet, read_head
from idrserve.service import Rendered
from idrserve.turns import InlineTurns

log = logging.getLogger("idrserve.http")

# Bytes waiting in a connection's send buffer above which a direct hit (fastpath.py) is left
# to the usual path, whose writer waits for the client to take them first.
DIRECT_MAX_BUFFERED = 256 * 1024
# Requests a client may pipeline behind a cold tile before its connection stops being read.
MAX_HELD = 16


class Outbox:
    """Responses answered in `data_received` (direct hits, cold tiles), written together once
    every connection that was readable has been read.

    A response written as soon as it is made wakes the client's idle process for each one;
    in a VM each wake-up is an inter-processor interrupt that the writer's `writev` pays
    (bench_cache.py: direct hits 1.17x, memory hits through the cold path 1.57x written
    together; docs/benchmarks.md#writing-responses-together). Flushed by the first
    callback of the next loop iteration, before the loop polls its sockets again, and by the
    connection itself before it writes or reads anything else, so its responses keep their
    order. One per event loop (`outbox_for`).
    """

    __slots__ = ("__weakref__", "_armed", "_handlers", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handlers: list[JsonErrorRequestHandler] = []
        self._armed = False

    def add(self, handler: JsonErrorRequestHandler) -> None:
        self._handlers.append(handler)
        if not self._armed:
            self._armed = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._armed = False
        handlers, self._handlers = self._handlers, []
        for handler in handlers:
            handler.flush_unsent()


_OUTBOXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Outbox] = (
    weakref.WeakKeyDictionary()
)


def outbox_for(loop: asyncio.AbstractEventLoop) -> Outbox:
    outbox = _OUTBOXES.get(loop)
    if outbox is None:
        outbox = _OUTBOXES[loop] = Outbox(loop)
    return outbox


@dataclass(slots=True)
class _ColdWait:
    """A request waiting for its tile's render in the pool, without a task: `waiting` stands
    for it in progress (held requests, keep-alive, shutdown, cancellation)."""

    job: ColdJob
    message: HeadMessage
    payload: Any
    start: float
    waiting: asyncio.Future[None]


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, with its own error responses in idrserve's JSON shape."""

    __slots__ = (
        "_cold_task",
        "_head_timer",
        "_held",
        "_held_paused",
        "_log_hit",
        "_outbox",
        "_own_heads",
        "_peer_host",
        "_plain_request_factory",
        "_unsent",
        "_usual",
        "cold",
        "cors_origin",
        "direct",
        "header_timeout_s",
        "on_send_timeout",
        "send_timeout_s",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        cors_origin: str,
        header_timeout_s: float | None = None,
        send_timeout_s: float | None = None,
        on_send_timeout: Callable[[], None] | None = None,
        direct: DirectHits | None = None,
        cold: ColdRenders | None = None,
        plain_heads: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        # Direct hits are logged and counted by idrserve's own access logger (`log_hit`);
        # with another one they take the usual path, so that it sees every request.
        self._log_hit: Callable[..., None] | None = getattr(self.access_logger, "log_hit", None)
        if self.access_logger is not None and self._log_hit is None:
            direct = cold = None
        self.direct = direct
        self.cold = cold
        # The cold tile in progress: its task, or the future of one waiting for its turn.
        self._cold_task: asyncio.Future[None] | None = None
        # A response made in `data_received`, written with the others (`Outbox`).
        self._unsent: tuple[bytes, bytes] | None = None
        self._outbox = outbox_for(loop)
        self._held: deque[Any] = deque()  # requests pipelined behind a cold tile
        self._held_paused = False
        # Request heads are read here while they are plain (http/plainhead.py;
        # `server.plain_heads`), for the direct hits and cold tiles only.
        self._own_heads = plain_heads and (direct is not None or cold is not None)
        self._usual = 0
        self._plain_request_factory = self._request_factory
        self._request_factory = self._make_request_counted
        self._peer_host: str | None = None
        self.cors_origin = cors_origin
        self.header_timeout_s = header_timeout_s
        self.send_timeout_s = send_timeout_s
        self.on_send_timeout = on_send_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def _make_request_counted(self, *args: Any) -> BaseRequest:
        # Called by the handler task as it takes a request from the queue, before the
        # request's own task starts: from here until `_handle_request` ends, a request of
        # this connection is on the usual path and no direct answer may overtake it.
        self._usual += 1
        factory = self._plain_request_factory
        assert factory is not None  # None only after connection_lost
        return factory(*args)

    async def _handle_request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._handle_request(*args, **kwargs)
        finally:
            self._usual -= 1

    def send_soon(self, head: bytes, body: bytes) -> None:
        """Write this response with the others of this loop iteration (`Outbox`)."""
        self.flush_unsent()  # one at a time per connection, in order
        self._unsent = (head, body)
        self._outbox.add(self)

    def flush_unsent(self) -> None:
        unsent = self._unsent
        if unsent is not None:
            self._unsent = None
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.writelines(unsent)

    def data_received(self, data: bytes) -> None:
        if self._unsent is not None:
            self.flush_unsent()  # before anything this connection sends next
        answered = False
        waiter = self._waiter
        if self._cold_task is not None:
            # A cold tile is being rendered for this connection (coldpath.py): requests
            # pipelined behind it wait aside, unseen by the handler task, until it is sent.
            self._keep_own_heads(data)
            self._waiter = None
            try:
                super().data_received(data)
            finally:
                self._waiter = waiter
            self._held.extend(self._messages)
            self._messages.clear()
            if len(self._held) >= MAX_HELD and not self._held_paused and self.transport:
                self._held_paused = True
                self.transport.pause_reading()
            answered = True  # for the head timer below: a request is in progress
        elif (
            (self.direct is not None or self.cold is not None)
            and self._usual == 0
            and not self._messages
            and self._task_handler is not None
            and (waiter is None or not waiter.done())
        ):
            # No request of this connection is being handled (the handler task waits for
            # one, or is about to): let aiohttp parse and queue what arrived without waking
            # the task, answer a lone plain memory hit or cold tile here, wake it for the
            # rest (asleep or not, the task takes what is queued before it waits again).
            start = time.perf_counter()
            # One whole plain GET head is read here, not by aiohttp (http/plainhead.py), while
            # aiohttp's parser has only had whole bodiless heads on this connection.
            own = read_head(data) if self._own_heads else False
            if own is False:
                self._own_heads = False
            elif own is not True:
                taken = self._request_count
                try:
                    answered = self._answer_now(own, None, start)
                except Exception:  # the usual path answers it, with the error middleware's care
                    log.exception("direct answer failed")
                    # ... unless it was taken before the failure: never answered twice
                    answered = self._request_count != taken
            if not answered:
                self._waiter = None
                try:
                    super().data_received(data)
                finally:
                    self._waiter = waiter
                if own is False and len(self._messages) == 1:
                    message, payload = self._messages[0]
                    try:
                        answered = self._answer_now(message, payload, start)
                    except Exception:  # never leave a request queued with the task asleep
                        log.exception("direct answer failed")
                if self._messages and not answered and waiter is not None:
                    waiter.set_result(None)
        else:
            self._keep_own_heads(data)
            super().data_received(data)
        # A timer per request head that does not arrive whole: started when bytes leave the
        # parser with a partial head while no request is being handled, stopped once the head
        # is complete. A head in one read, the usual case, never creates a timer. (Bytes
        # pipelined behind a request in progress are left to the keep-alive timeout.)
        if answered or self._messages or self._request_in_progress:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
        elif self._head_timer is None and self.header_timeout_s is not None and data:
            self._head_timer = asyncio.get_running_loop().call_later(
                self.header_timeout_s, self._head_timed_out
            )

    def _keep_own_heads(self, data: bytes) -> None:
        """Before aiohttp's parser reads `data` itself: heads are read here afterwards only
        if `data` leaves it at a message boundary (one whole bodiless head)."""
        if self._own_heads and read_head(data) is False:
            self._own_heads = False

    def _answer_now(self, message: object, payload: Any, start: float) -> bool:
        """Answer `message` here, a direct hit or a cold tile, when it is one; False: the
        usual path's. It is the queued one from aiohttp's parser, or a `PlainGet` read here
        (nothing queued)."""
        # Not a request (a parser error's), or not now: answered as usual.
        if not isinstance(message, RawRequestMessage | PlainGet) or not self._answerable():
            return False
        if self.direct is not None and self._answer_direct(message, start):
            return True
        return self.cold is not None and self._start_cold(message, payload, start)

    def _taken(self, message: HeadMessage) -> None:
        """`message` is answered here: off aiohttp's queue when it came from there."""
        if isinstance(message, PlainGet):
            self._request_count += 1  # as aiohttp counts the requests it parses
            return
        self._messages.popleft()
        consumed = getattr(self._parser, "message_consumed", None)  # aiohttp >= 3.14
        if consumed is not None:
            consumed()  # what the handler task does for each request it takes

    def _answer_direct(self, message: HeadMessage, start: float) -> bool:
        """Write the request's response here when it is a direct hit (fastpath.py)."""
        transport = self.transport
        if transport is None:
            return False
        assert self.direct is not None
        try:
            hit = self.direct.answer(message)
        except Exception:  # the usual path answers it, with the error middleware's care
            log.exception("direct hit failed for %s", message.path[:200])
            return False
        if hit is None:
            return False
        self.send_soon(hit.head, hit.body)  # written with the others of this iteration
        self._taken(message)
        manager = self._manager
        if manager is not None:
            manager.requests_count += 1
        if self._keepalive_timeout > 0:  # the keep-alive timer counts from the last answer
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        log_hit = self._log_hit
        if log_hit is not None:
            elapsed = time.perf_counter() - start
            metrics = self.direct.metrics
            if metrics is not None:
                metrics.observe_resource(hit.resource, 200, len(hit.body), elapsed, "memory")
            log_hit(hit.request_id, hit.resource, len(hit.body), elapsed, self._peer())
        return True

    def _answerable(self) -> bool:
        """Whether the lone request may be answered here rather than by the task."""
        transport = self.transport
        return not (
            transport is None
            or transport.is_closing()
            # a client slow to take earlier responses: the usual path waits for it to drain
            or transport.get_write_buffer_size() > DIRECT_MAX_BUFFERED
        )

    def _start_cold(self, message: HeadMessage, payload: Any, start: float) -> bool:
        """Take the request as a cold tile when coldpath.py plans it: the handler task
        sleeps on, and `_cold` answers, or hands the request back to it."""
        assert self.cold is not None
        try:
            job = self.cold.plan(message)
        except Exception:  # the usual path answers it, with the error middleware's care
            log.exception("cold tile planning failed for %s", message.path[:200])
            return False
        if job is None:
            return False
        cold = self.cold
        try:
            now = cold.now(job)
            # A memory hit, or its iteration's first render: answered here, at once, with no
            # task at all.
            turns = None if now is None else now[0]
            at_once = now is not None and (turns is None or turns.take_now())
            answer = now[1]() if now is not None and at_once else None
        except Exception as exc:  # the usual path answers it, with the error middleware's care
            cold.admission.request_done()
            if not isinstance(exc, IdrServeError | HandBack):
                log.exception("cold tile failed for %s; answered the usual way", job.url[:200])
            return False
        self._taken(message)
        if isinstance(answer, ColdAnswer):
            cold.admission.request_done()
            self._send_cold(job, answer, start, batch=True)
        elif now is not None and turns is not None:
            # Its turn comes in a later iteration (turns.py): no task either, a future stands
            # for the request in progress (held requests, keep-alive, shutdown, cancellation).
            # A render begun here (the first of two turns) goes ahead of the others.
            waiting: asyncio.Future[None] = self._loop.create_future()
            self._cold_task = waiting
            step = now[1] if answer is None else answer
            turn = partial(self._cold_turn, job, message, payload, start, step, waiting, turns)
            turns.defer(turn, first=answer is not None)
        else:
            # Rendered in the pool with no task either (coldpath.ColdRenders.pool), when it
            # can be; else in a task.
            wait = _ColdWait(job, message, payload, start, self._loop.create_future())
            if cold.pool(job, partial(self._cold_pooled, wait)):
                self._cold_task = wait.waiting
                overdue = partial(self._cold_overdue, wait)
                cold.deadlines.call_at(self._loop, wait.waiting, overdue)
            else:
                self._cold_task = self._loop.create_task(self._cold(job, message, payload, start))
        return True

    def _cold_pooled(self, wait: _ColdWait, result: Rendered | BaseException) -> None:
        """A pooled render's result for its request (`ColdRenders.pool` calls it)."""
        cold = self.cold
        assert cold is not None
        job, waiting = wait.job, wait.waiting
        if waiting.done():
            if waiting.cancelled():  # by connection_lost: the client went away
                cold.admission.request_done()
                self._cold_gone(job, wait.start)
            return  # else handed back at its deadline (`_cold_overdue`)
        cold.deadlines.stop(waiting)
        cold.admission.request_done()
        answer = None
        if isinstance(result, Rendered):
            try:
                answer = cold.answer(job, result)
            except HandBack:
                pass
            except Exception:
                log.exception("cold tile failed for %s; answered the usual way", job.url[:200])
        elif not isinstance(result, IdrServeError):
            log.error(
                "cold tile failed for %s; answered the usual way",
                job.url[:200],
                exc_info=result,
            )
        waiting.set_result(None)
        self._cold_done(job, wait.message, wait.payload, answer, wait.start)

    def _cold_overdue(self, wait: _ColdWait) -> None:
        """The request deadline of a tile rendering in the pool: hand it back now, as the
        task path does; the render finishes and is stored for whoever asks next."""
        if wait.waiting.done():
            return
        assert self.cold is not None
        self.cold.admission.request_done()
        wait.waiting.set_result(None)
        self._cold_done(wait.job, wait.message, wait.payload, None, wait.start)

    def _cold_turn(
        self,
        job: ColdJob,
        message: HeadMessage,
        payload: Any,
        start: float,
        answer_now: ColdStep,
        waiting: asyncio.Future[None],
        turns: InlineTurns,
    ) -> bool:
        """A deferred cold tile's turn (InlineTurns calls it): False when its request went
        away meanwhile. It carries no request deadline: it waits only for the renders queued
        before it, at most `limits.max_concurrent_requests` of them (1 024 × 0.75 ms at 256²).
        A render in two turns queues its second ahead of every other waiter."""
        cold = self.cold
        assert cold is not None
        if waiting.done():  # cancelled by connection_lost: the client went away
            cold.admission.request_done()
            self._cold_gone(job, start)
            return False
        answer = None
        step = None
        try:
            result = answer_now()
            if isinstance(result, ColdAnswer):
                answer = result
            else:
                step = result
        except Exception as exc:
            if not isinstance(exc, IdrServeError | HandBack):
                log.exception("cold tile failed for %s; answered the usual way", job.url[:200])
        if step is not None:
            turn = partial(self._cold_turn, job, message, payload, start, step, waiting, turns)
            turns.defer(turn, first=True)
            return True
        cold.admission.request_done()
        waiting.set_result(None)
        self._cold_done(job, message, payload, answer, start)
        return True

    async def _cold(self, job: ColdJob, message: HeadMessage, payload: Any, start: float) -> None:
        cold = self.cold
        assert cold is not None
        task = asyncio.current_task()
        assert task is not None
        deadlines = cold.deadlines
        answer: ColdAnswer | None = None
        deadlines.start(task)
        try:
            answer = await cold.render(job)
        except asyncio.CancelledError:
            if not deadlines.expired(task):
                self._cold_gone(job, start)
                return
        except Exception:
            log.exception("cold tile failed for %s; answered the usual way", job.url[:200])
        finally:
            deadlines.stop(task)
            cold.admission.request_done()
        self._cold_done(job, message, payload, answer, start)

    def _cold_gone(self, job: ColdJob, start: float) -> None:
        """The client went away (handler_cancellation): as the admission middleware counts
        and logs it."""
        assert self.cold is not None
        self.cold.admission.cancelled += 1
        self._cold_task = None
        if self._log_hit is not None:
            elapsed = time.perf_counter() - start
            self._log_hit(job.request_id, job.resource, 0, elapsed, self._peer(),
                          tier="-", status=499)  # fmt: skip

    def _cold_done(
        self,
        job: ColdJob,
        message: HeadMessage,
        payload: Any,
        answer: ColdAnswer | None,
        start: float,
    ) -> None:
        """Send the answer (or hand the request back) and let held requests through."""
        self._cold_task = None
        transport = self.transport
        if transport is None or transport.is_closing():
            self._held.clear()
            return  # the connection is gone: nobody to answer
        queued = self._messages  # empty: what arrived meanwhile is held
        queued.extend(self._held)
        self._held.clear()
        if self._held_paused:
            self._held_paused = False
            transport.resume_reading()
        if answer is None:
            # Handed back: aiohttp's handler answers it through the middlewares.
            if isinstance(message, PlainGet):  # read here: aiohttp reads it now
                message, payload = message.parsed(self, self._loop)
            queued.appendleft((message, payload))
        else:
            self._send_cold(job, answer, start, batch=True)
        waiter = self._waiter
        if self._messages and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _send_cold(
        self, job: ColdJob, answer: ColdAnswer, start: float, batch: bool = False
    ) -> None:
        transport = self.transport
        assert transport is not None
        assert self.cold is not None
        if batch:
            self.send_soon(answer.head, answer.body)
        else:
            self.flush_unsent()
            transport.writelines((answer.head, answer.body))
        manager = self._manager
        if manager is not None:
            manager.requests_count += 1
        if self._keepalive_timeout > 0:
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        log_hit = self._log_hit
        if log_hit is not None:
            elapsed = time.perf_counter() - start
            metrics = self.cold.metrics
            size = len(answer.body)
            if metrics is not None:
                metrics.observe_resource(
                    job.resource, 200, size, elapsed, answer.tier, answer.trace.timings
                )
            log_hit(job.request_id, job.resource, size, elapsed, self._peer(),
                    tier=answer.tier, trace=answer.trace)  # fmt: skip

    def _peer(self) -> str | None:
        if self._peer_host is None and self.transport is not None:
            peer = self.transport.get_extra_info("peername")
            self._peer_host = str(peer[0]) if isinstance(peer, list | tuple) else str(peer)
        return self._peer_host

    def _process_keepalive(self) -> None:
        # A connection waiting for its cold tile is not idle: look again a timeout later.
        if self._cold_task is not None and self._keepalive_timeout > 0:
            self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        super()._process_keepalive()

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 (aiohttp's)
        self.flush_unsent()
        # A cold tile in progress is a request in progress: let it finish first, as aiohttp
        # lets its own handler finish.
        task = self._cold_task
        if task is not None:
            await asyncio.wait([task], timeout=timeout)
        await super().shutdown(timeout)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if (
            self._messages
            or self._request_in_progress
            or self._cold_task is not None
            or self.transport is None
        ):
            return
        rid, peer = new_request_id(), self.transport.get_extra_info("peername")
        detail = f"request line and headers not complete within {self.header_timeout_s:g} s"
        log.info("%s: 408 for %s: %s", rid, peer, detail)
        body = json.dumps(error_body(HTTP_ERROR_CODES[408], detail, rid)).encode()
        # Written by hand: there is no request object to build an aiohttp response for.
        head = (
            "HTTP/1.1 408 Request Timeout\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Access-Control-Allow-Origin: {self.cors_origin}\r\n"
            f"X-Request-ID: {rid}\r\n"
            "Connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        self.force_close()  # the transport sends what is buffered, then closes

    def connection_lost(self, exc: BaseException | None) -> None:
        self._unsent = None  # nobody to write it to
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        manager = self._manager
        if self._cold_task is not None and manager is not None and manager.handler_cancellation:
            self._cold_task.cancel()  # as aiohttp cancels its handler task
        if isinstance(exc, TimeoutError) and self.send_timeout_s is not None:
            # ETIMEDOUT: the kernel gave up on data the client left unacknowledged, or a zero
            # window it kept shut, for send_timeout_s (TCP_USER_TIMEOUT, set in start_server).
            # aiohttp then cancels the handler, which releases the slot and the body bytes.
            peer = None if self.transport is None else self.transport.get_extra_info("peername")
            log.info("%s took no data for %g s: connection closed", peer, self.send_timeout_s)
            if self.on_send_timeout is not None:
                self.on_send_timeout()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp logs, and raises when part of a response has been sent already.
        plain = super().handle_error(request, status, exc, message)
        if status >= 500:
            code, detail = "internal_error", "the server failed to answer this request"
        else:
            code = HTTP_ERROR_CODES.get(status, "bad_request")
            reason = (message or HTTPStatus(status).phrase).splitlines()[0][:200]
            detail = f"malformed HTTP request: {reason}"
        # The app's request factory builds a web.Request even for an unparsable request.
        rid = request_id(request) if isinstance(request, web.Request) else ""
        resp = web.json_response(error_body(code, detail, rid), status=plain.status)
        set_common_headers(resp, self.cors_origin, rid)
        resp.force_close()
        return resp


class HttpServer:
    """A server `start_server` started: the app's runner and the listening sockets."""

    def __init__(self, runner: web.AppRunner, listener: asyncio.Server) -> None:
        self._runner = runner
        self._listener = listener

    @property
    def port(self) -> int:
        """The port listened on (the one the system chose when asked for port 0)."""
        return int(self._listener.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, then aiohttp's graceful shutdown (as a site's stop + runner cleanup):
        idle connections close, in-flight requests finish, then on_shutdown and on_cleanup."""
        self._listener.close()
        await self._runner.cleanup()


async def start_server(
    app: web.Application,
    host: str | None,
    port: int,
    *,
    reuse_port: bool | None = None,
    cors_origin: str = "*",
    header_timeout_s: float | None = None,
    send_timeout_s: float | None = None,
    on_send_timeout: Callable[[], None] | None = None,
    shutdown_timeout: float = 60.0,
    handler_cancellation: bool = False,
    **handler_kwargs: Any,
) -> HttpServer:
    """Start `app` (its on_startup included) and listen on host:port.

    `handler_kwargs` are aiohttp's per-connection options (`keepalive_timeout`, `access_log`,
    `access_log_class`, `access_log_format`, `max_field_size`, …), as `web.run_app` takes them.
    """
    runner = web.AppRunner(
        app,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        handler_cancellation=handler_cancellation,
    )
    await runner.setup()
    manager = runner.server  # the app's web.Server: request factory, handler, connections
    assert manager is not None
    loop = asyncio.get_running_loop()

    direct = app.get(DIRECT_HITS)  # set by create_app unless server.direct_hits is off
    cold = app.get(COLD_RENDERS)  # likewise, server.direct_renders
    settings = app.get(SETTINGS)
    plain_heads = settings is None or settings.server.plain_heads

    def connection() -> RequestHandler:
        # What web.Server.__call__ does, with our subclass; the handler registers with
        # `manager`, so the runner's graceful shutdown covers its connections.
        return JsonErrorRequestHandler(
            manager,
            loop=loop,
            cors_origin=cors_origin,
            header_timeout_s=header_timeout_s,
            send_timeout_s=send_timeout_s,
            on_send_timeout=on_send_timeout,
            direct=direct,
            cold=cold,
            plain_heads=plain_heads,
            **handler_kwargs,
        )

    listener: asyncio.Server | None = None
    try:
        listener = await loop.create_server(
            connection, host, port, reuse_port=reuse_port, start_serving=False
        )
        if send_timeout_s is not None:
            _limit_untaken_data(listener, send_timeout_s)
        await listener.start_serving()
    except BaseException:
        if listener is not None:
            listener.close()
        await runner.cleanup()
        raise
    return HttpServer(runner, listener)


def _limit_untaken_data(listener: asyncio.Server, seconds: float) -> None:
    """Have the kernel drop a connection whose client takes no data for `seconds`.

    TCP_USER_TIMEOUT bounds how long sent data may stay unacknowledged, or queued data unsent
    behind a zero receive window (a client that stops reading), before the kernel resets the
    connection and reports ETIMEDOUT. Set on a listening socket it is inherited by every
    connection accepted from it (so says the Linux change that added it, and HAProxy's `tcp-ut`
    relies on it; tests/http/test_server.py checks it), so no per-connection work is needed.
    Linux only; elsewhere the limit is not enforced.
    """
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None:
        log.warning("limits.send_timeout_s is not enforced: no TCP_USER_TIMEOUT on this system")
        return
    for sock in listener.sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, option, max(1, round(seconds * 1000)))


async def _serve_forever(
    start: Callable[[], Awaitable[HttpServer]],
    drain_grace_s: float,
    on_drain: Callable[[], None] | None,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    grace: asyncio.TimerHandle | None = None

    def on_signal(signum: signal.Signals) -> None:
        nonlocal grace
        if drain_grace_s <= 0 or grace is not None:  # no grace, or a second signal: stop now
            stop.set()
            return
        log.info("%s: draining for %gs before closing the listener", signum.name, drain_grace_s)
        if on_drain is not None:
            on_drain()  # /readyz now answers 503 "draining"; requests are still served
        grace = loop.call_later(drain_grace_s, stop.set)

    signals = (signal.SIGINT, signal.SIGTERM)
    server: HttpServer | None = None
    try:
        for signum in signals:
            loop.add_signal_handler(signum, on_signal, signum)
        server = await start()
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        if grace is not None:
            grace.cancel()
        if server is not None:
            await server.close()  # stop listening, finish in-flight requests, on_cleanup


def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    reuse_port: bool | None = None,
    cors_origin: str = "*",
    header_timeout_s: float | None = None,
    send_timeout_s: float | None = None,
    on_send_timeout: Callable[[], None] | None = None,
    drain_grace_s: float = 0.0,
    on_drain: Callable[[], None] | None = None,
    **server_kwargs: Any,
) -> None:
    """Serve `app` until SIGTERM or SIGINT, then shut down gracefully (as `web.run_app`).

    With `drain_grace_s` > 0 the first signal calls `on_drain` and the server keeps accepting
    and serving for that long before it closes the listener: a load balancer that learns about
    a stopping backend only from its readiness checks (Kubernetes endpoints, HAProxy, cloud
    target groups) has stopped sending by then, so no request meets a closed port. A second
    signal ends the grace at once. `server_kwargs` go to `start_server`.
    """

    def start() -> Awaitable[HttpServer]:
        return start_server(
            app,
            host,
            port,
            reuse_port=reuse_port,
            cors_origin=cors_origin,
            header_timeout_s=header_timeout_s,
            send_timeout_s=send_timeout_s,
            on_send_timeout=on_send_timeout,
            **server_kwargs,
        )

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve_forever(start, drain_grace_s, on_drain))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()  # its `finally` runs the graceful shutdown
                with suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_remaining(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)


def _cancel_remaining(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("task failed during shutdown", exc_info=task.exception())
