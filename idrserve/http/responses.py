"""How every rendered image is answered, whichever protocol asked: one 304 rule, one header
builder, and `respond_rendered`, the step after a protocol has planned its `RegionRequest`.

webgateway, IIIF and DeepZoom handlers call `respond_rendered`; the fast path
(http/fastpath.py) answers repeated URLs with the same `not_modified` and `image_response`, so
a memory hit and a fresh render carry the same headers. JSON and JSONP live here too.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from idrserve.admission import Admission
from idrserve.errors import Overloaded
from idrserve.http.keys import DEPS, MEMO_INFO, SETTINGS, TRACE
from idrserve.http.middleware import error_response
from idrserve.http.trace import Trace, UrlMemo
from idrserve.model import ImageMeta, RegionRequest
from idrserve.service import cache_key, cached_render


def etag_for(key: str) -> str:
    return f'"{key}"'


def etag_matches(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110 weak comparison of `If-None-Match` against our strong `tag`; `*` matches."""
    if not if_none_match:
        return False
    candidates = {part.strip().removeprefix("W/") for part in if_none_match.split(",")}
    return tag in candidates or "*" in candidates


def not_modified(request: web.Request, key: str, cache_control: str) -> web.Response | None:
    """Answer 304 before any pixel is read when the client already holds these bytes."""
    tag = etag_for(key)
    if etag_matches(request.headers.get("If-None-Match"), tag):
        return web.Response(status=304, headers={"ETag": tag, "Cache-Control": cache_control})
    return None


def image_response(
    body: bytes,
    media_type: str,
    key: str,
    cache_control: str,
    trace: Trace,
    extra_headers: dict[str, str] | tuple[tuple[str, str], ...] | None = None,
) -> web.Response:
    """A rendered image: validators from its key, `X-Cache`/`Server-Timing` from its trace."""
    headers = {"ETag": etag_for(key), "Cache-Control": cache_control, "X-Cache": trace.tier}
    timing = trace.server_timing()
    if timing:
        headers["Server-Timing"] = timing
    if extra_headers:
        headers.update(extra_headers)
    return web.Response(body=body, content_type=media_type, headers=headers)


async def respond_rendered(
    request: web.Request,
    req: RegionRequest,
    meta: ImageMeta,
    extra_headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Key, 304, cached render (single-flight, admission), response, for any planned request.

    `extra_headers` go on the 200, and on the fast path's later answers to the same URL.
    """
    deps = request.app[DEPS]
    cache_control = request.app[SETTINGS].server.cache_control
    key, generation = await cache_key(req, deps)
    memo_headers = tuple(extra_headers.items()) if extra_headers else ()
    request[MEMO_INFO] = UrlMemo(key, req.image_id, meta.data_version, generation, memo_headers)
    early = not_modified(request, key, cache_control)
    if early is not None:
        return early
    rendered = await cached_render(req, meta, deps, key)
    trace = request[TRACE] = Trace(rendered.tier, rendered.timings)
    return image_response(
        rendered.body, rendered.media_type, key, cache_control, trace, extra_headers
    )


def refusal(request: web.Request, exc: Overloaded) -> web.Response:
    """The 503 of a refusal made outside the error middleware, in the same JSON shape."""
    refused = error_response(request, exc.status, exc.code, exc.detail)
    refused.headers["Retry-After"] = str(exc.retry_after_s)
    return refused


def overloaded(request: web.Request, admission: Admission) -> web.Response:
    """The request bound is reached (`Admission.request_admitted` said no and counted it)."""
    return refusal(
        request,
        Overloaded(
            f"{admission.requests} requests are in progress, the limit of this process; "
            f"retry in {admission.retry_after_s} s",
            retry_after_s=admission.retry_after_s,
        ),
    )


def json_or_jsonp(
    data: Any, callback: str | None, cache_control: str | None = None
) -> web.Response:
    """JSON, or `callback(<json>)` as application/javascript when a validated callback is given."""
    text = json.dumps(data, separators=(", ", ": "), allow_nan=False)
    headers = {"Cache-Control": cache_control} if cache_control else None
    if callback:
        return web.Response(
            text=f"{callback}({text})", content_type="application/javascript", headers=headers
        )
    return web.Response(text=text, content_type="application/json", headers=headers)
