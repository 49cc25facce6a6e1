"""The server's public base URL, for documents that must name themselves (IIIF `id`, DZI).

Behind nginx the request idrserve sees is `http://127.0.0.1:8080/...`, which is useless to a
browser: IIIF clients build every tile URL by appending to `info.json`'s `id`. The base is,
in order of preference:

1. `server.public_base_url` when configured (scheme, host and path prefix, fixed);
2. `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Prefix` (first value of each,
   as set by the nearest proxy), falling back per part to the request's own scheme and Host.

Forwarded values are checked against strict patterns: they end up in JSON bodies and in
`Location` headers, so anything odd is ignored rather than echoed.
"""

from __future__ import annotations

import re

from aiohttp import web

from idrserve.http.keys import SETTINGS

_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?")
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*")


def _first(value: str | None) -> str:
    """The first entry of a possibly comma-separated forwarded header, stripped."""
    return value.split(",", 1)[0].strip() if value else ""


def normalise_prefix(prefix: str) -> str:
    """`idr/`, `/idr/` and `/idr` → `/idr`; empty or `/` → ``; invalid → ``."""
    prefix = "/" + prefix.strip().strip("/") if prefix.strip().strip("/") else ""
    return prefix if _PREFIX.fullmatch(prefix) else ""


def public_base(request: web.Request) -> str:
    """`scheme://host[:port][/prefix]` as clients reach this server, without a trailing slash."""
    configured = request.app[SETTINGS].server.public_base_url
    if configured:
        return configured.rstrip("/")
    headers = request.headers
    scheme = _first(headers.get("X-Forwarded-Proto")).lower()
    if scheme not in ("http", "https"):
        scheme = request.scheme
    host = _first(headers.get("X-Forwarded-Host"))
    if not _HOST.fullmatch(host):
        host = request.host if _HOST.fullmatch(request.host or "") else "localhost"
    prefix = normalise_prefix(_first(headers.get("X-Forwarded-Prefix")))
    return f"{scheme}://{host}{prefix}"


def forwarded_headers_used(request: web.Request) -> bool:
    """Whether `public_base` depends on request headers (so its result must not be shared).

    With no configured base URL, a document naming itself differs per Host and forwarded
    header; shared caches (nginx keys on the path only) must not store it.
    """
    return not request.app[SETTINGS].server.public_base_url
