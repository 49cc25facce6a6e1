"""Cross-cutting HTTP behaviour: one error table, request ids, CORS, the per-request deadline.

Every response, errors included, carries CORS and `X-Request-ID`: they are set in
`on_response_prepare`, which aiohttp runs for every response it sends. `OPTIONS` on any
resource that answers GET is answered by `answer_options` (called from the admission
middleware, http/ops.py), the one CORS preflight of every route family.

Every JSON error body is built by `error_body`, and says only what the client may know: the
internal side of an error (`IdrServeError.internal`: a file path, a store URL, the exception)
is logged here once, with the request id the client got, so a user's report can be matched
to the log line.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from idrserve.errors import (
    CatalogLoading,
    IdrServeError,
    Overloaded,
    SourceUnavailable,
    UpstreamTimeout,
)
from idrserve.http.deadlines import Deadlines
from idrserve.http.keys import REQUEST_ID

log = logging.getLogger("idrserve.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own HTTP errors (unknown route, wrong method, a request its parser refuses:
# http/server.py) get a JSON body with these codes.
HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
    414: "uri_too_long",
}


# Request ids: a per-process random prefix and a counter (uuid4 per request cost 3 % of a tile).
_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def request_id(request: web.Request) -> str:
    rid = request.get(REQUEST_ID)
    if rid is None:
        rid = request[REQUEST_ID] = chosen_request_id(request.headers.get("X-Request-ID"))
    return rid


def chosen_request_id(sent: str | None) -> str:
    """The client's `X-Request-ID` when it is a plain token (letters, digits, dashes; cut to 64
    characters), so its logs and ours share the id; a new one otherwise. Being that plain, it
    needs no escaping in a header or a log line."""
    rid = (sent or "")[:64]
    if not rid or not rid.isascii() or not rid.replace("-", "").isalnum():
        return new_request_id()
    return rid


def error_body(code: str, detail: str, rid: str, param: str | None = None) -> dict[str, object]:
    """The JSON body of every error response (middleware, handlers, http/server.py)."""
    body: dict[str, object] = {"error": code, "detail": detail}
    if param is not None:
        body["param"] = param
    body["request_id"] = rid
    return body


def error_response(
    request: web.Request, status: int, code: str, detail: str, param: str | None = None
) -> web.Response:
    body = error_body(code, detail, request_id(request), param)
    return web.json_response(body, status=status)


def log_error(request: web.Request, exc: IdrServeError) -> None:
    """One log line for an error worth an operator's attention: every 5xx (WARNING), and
    4xx answers that hide something (INFO: e.g. a catalogued image whose data is missing).
    The line carries the request id and the internal detail the response left out."""
    if exc.status < 500 and exc.internal is None:
        return
    # A loading catalog answers every image request 503 until it is ready: expected, already
    # reported by /readyz and the start-up log, and not worth a warning per request.
    expected = isinstance(exc, CatalogLoading)
    level = logging.WARNING if exc.status >= 500 and not expected else logging.INFO
    rid = request_id(request)
    log.log(
        level,
        "request %s: %s %s -> %d %s: %s%s",
        rid,
        request.method,
        request.raw_path,  # as sent: no decoded control characters in the log
        exc.status,
        exc.code,
        exc.detail,
        "" if exc.internal is None else f" [{exc.internal}]",
        extra={"request_id": rid},
    )


def make_error_middleware(timeout_s: float, max_url_length: int = 16384) -> Middleware:
    deadlines = Deadlines(timeout_s)  # one sweeping timer, not one per request

    @web.middleware
    async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id(request)
        if len(request.raw_path) > max_url_length:
            return error_response(
                request,
                414,
                "uri_too_long",
                f"the URL has {len(request.raw_path)} characters, over the limit of "
                f"{max_url_length}; send fewer channels or shorter settings",
            )
        task = asyncio.current_task()
        assert task is not None
        deadlines.start(task)
        try:
            try:
                return await handler(request)
            except asyncio.CancelledError:
                if deadlines.expired(task):
                    raise TimeoutError from None
                raise
            finally:
                deadlines.stop(task)
        except IdrServeError as exc:
            response = error_response(request, exc.status, exc.code, exc.detail, exc.param)
            if isinstance(exc, SourceUnavailable | Overloaded):
                response.headers["Retry-After"] = str(exc.retry_after_s)
            log_error(request, exc)
            return response
        except TimeoutError:
            exc2 = UpstreamTimeout(f"the request took longer than the {timeout_s:g} s deadline")
            return error_response(request, exc2.status, exc2.code, exc2.detail)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = HTTP_ERROR_CODES.get(exc.status, "http_error")
            detail = exc.reason if exc.status != 404 else f"no such resource: {request.path}"
            response = error_response(request, exc.status, code, detail)
            for name in ("Allow", "Retry-After"):
                if name in exc.headers:
                    response.headers[name] = exc.headers[name]
            return response
        except asyncio.CancelledError:
            raise
        except Exception:
            rid = request_id(request)
            log.exception(
                "request %s: unhandled error for %s %s",
                rid,
                request.method,
                request.raw_path,
                extra={"request_id": rid},
            )
            return error_response(
                request, 500, "internal_error", "the server failed to answer this request"
            )

    return error_middleware


# --- CORS -------------------------------------------------------------------------------------

# Response headers browser code may read, on every response (the CORS-safelisted ones, such as
# Content-Type, need no listing; Content-Length is listed for older browsers). Content-Range
# lets a Zarr reader check the span of a 206, Retry-After lets a client back off from a 503.
EXPOSE_HEADERS = "Content-Range, Content-Length, ETag, Link, Retry-After, X-Cache, X-Request-ID"
# The methods of every route family: the server is read-only.
ALLOW_METHODS = "GET, HEAD, OPTIONS"
# How long a browser may reuse a preflight's answer (Firefox caps it at 24 h, Chromium at 2 h).
PREFLIGHT_MAX_AGE_S = 86400
# Access-Control-Request-Headers is a comma-separated list of header names (RFC 9110 tokens);
# browsers send it lowercased and sorted. 1 024 characters is dozens of custom headers.
MAX_REQUEST_HEADERS_LENGTH = 1024
# RFC 9110's token (a header name); http/plainhead.py reads field names with it too.
TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TOKEN_LIST = re.compile(rf"{TOKEN}(?:[ \t]*,[ \t]*{TOKEN})*")


def answer_options(request: web.Request, response: web.Response | None = None) -> web.Response:
    """OPTIONS on a resource the server answers GET for: `response` (default an empty 204)
    with `Allow` and, when it is a CORS preflight (it names `Access-Control-Request-Method`),
    the methods, the request headers it asked for, and how long the answer may be reused.

    A preflight whose `Access-Control-Request-Headers` is not a list of header names, or is
    longer than `MAX_REQUEST_HEADERS_LENGTH`, is a JSON 400 (the browser then blocks the
    request, as it would without the header allowed; the body says why in its devtools).
    """
    if response is None:
        response = web.Response(status=204)
    response.headers["Allow"] = ALLOW_METHODS
    if "Access-Control-Request-Method" not in request.headers:
        return response
    asked = request.headers.get("Access-Control-Request-Headers", "").strip(" \t,")
    if asked:
        if len(asked) > MAX_REQUEST_HEADERS_LENGTH or not _TOKEN_LIST.fullmatch(asked):
            return error_response(
                request,
                400,
                "bad_request",
                "Access-Control-Request-Headers: expected a comma-separated list of header "
                f"names of at most {MAX_REQUEST_HEADERS_LENGTH} characters",
                "Access-Control-Request-Headers",
            )
        # Echoed rather than `*`: a wildcard never covers Authorization (Fetch standard).
        response.headers["Access-Control-Allow-Headers"] = asked
    response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
    response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
    response.headers["Vary"] = "Access-Control-Request-Headers"
    return response


def serves_get(request: web.Request) -> bool:
    """True when the request's path is a route answering GET (matched for another method)."""
    exc = request.match_info.http_exception
    return isinstance(exc, web.HTTPMethodNotAllowed) and "GET" in exc.allowed_methods


def make_on_prepare(
    cors_origin: str,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        set_common_headers(response, cors_origin, request_id(request))

    return on_prepare


def set_common_headers(response: web.StreamResponse, cors_origin: str, rid: str) -> None:
    """CORS and the request id, on every response (http/server.py's parser errors too)."""
    response.headers["Access-Control-Allow-Origin"] = cors_origin
    response.headers.setdefault("Access-Control-Expose-Headers", EXPOSE_HEADERS)
    response.headers["X-Request-ID"] = rid
