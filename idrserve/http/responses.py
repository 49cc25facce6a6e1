"""Response builders shared by the protocol modules: images with validators, JSON and JSONP."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from idrserve.service import Rendered


def etag_for(key: str) -> str:
    return f'"{key}"'


def not_modified(request: web.Request, key: str, cache_control: str) -> web.Response | None:
    """Answer 304 before any pixel is read when the client already holds these bytes."""
    inm = request.headers.get("If-None-Match")
    if not inm:
        return None
    tag = etag_for(key)
    candidates = {part.strip().removeprefix("W/") for part in inm.split(",")}
    if tag in candidates or "*" in candidates:
        return web.Response(status=304, headers={"ETag": tag, "Cache-Control": cache_control})
    return None


def image_response(
    rendered: Rendered,
    cache_control: str,
    content_type: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> web.Response:
    timing = ", ".join(f"{name};dur={sec * 1000:.2f}" for name, sec in rendered.timings.items())
    headers = {
        "ETag": etag_for(rendered.key),
        "Cache-Control": cache_control,
        "X-Cache": rendered.tier,
    }
    if timing:
        headers["Server-Timing"] = timing
    if extra_headers:
        headers.update(extra_headers)
    return web.Response(
        body=rendered.body, content_type=content_type or rendered.media_type, headers=headers
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
