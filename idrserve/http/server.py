"""The process's HTTP server: aiohttp's, except that requests refused before routing get JSON.

aiohttp's HTTP parser answers a request it cannot parse (a header over `max_field_size`, a
control character in a header, a malformed request line or Content-Length) itself, in
text/plain and before any middleware or `on_response_prepare` hook runs, so such a response
had neither the JSON error body every other refusal has nor CORS. `JsonErrorRequestHandler`
keeps aiohttp's logging, status and connection close and only replaces the body and headers;
`serve` is `web.run_app` with that handler (same startup, signal handling and graceful
shutdown sequence), because run_app offers no way to choose the protocol class.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from idrserve.http.middleware import HTTP_ERROR_CODES, request_id, set_common_headers

log = logging.getLogger("idrserve.http")


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's connection handler, with its own error responses in idrserve's JSON shape."""

    __slots__ = ("cors_origin",)

    def __init__(self, manager: web.Server, *, cors_origin: str, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.cors_origin = cors_origin

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
        resp = web.json_response(
            {"error": code, "detail": detail, "request_id": rid}, status=plain.status
        )
        set_common_headers(resp, self.cors_origin, rid)
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    cors_origin = "*"

    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(
            self, loop=self._loop, cors_origin=self.cors_origin, **self._kwargs
        )


class JsonErrorAppRunner(web.AppRunner):
    """An AppRunner whose connections use `JsonErrorRequestHandler`."""

    def __init__(self, app: web.Application, *, cors_origin: str = "*", **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._cors_origin = cors_origin

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Same object and state, one method more: the protocol factory aiohttp calls per
        # connection now builds the JSON-error handler.
        server.__class__ = _JsonErrorServer
        assert isinstance(server, _JsonErrorServer)
        server.cors_origin = self._cors_origin
        return server


async def _serve_forever(
    runner: JsonErrorAppRunner, host: str, port: int, reuse_port: bool | None
) -> None:
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
        await site.start()
        await asyncio.Event().wait()  # until SIGTERM/SIGINT raise GracefulExit
    finally:
        await runner.cleanup()  # stop listening, finish in-flight requests, on_cleanup


def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    reuse_port: bool | None = None,
    cors_origin: str = "*",
    **runner_kwargs: Any,
) -> None:
    """Serve `app` until SIGTERM or SIGINT, then shut down gracefully (as `web.run_app`)."""
    runner = JsonErrorAppRunner(app, cors_origin=cors_origin, handle_signals=True, **runner_kwargs)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve_forever(runner, host, port, reuse_port))
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
