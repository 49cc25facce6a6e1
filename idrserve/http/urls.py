"""The server's public address, for every response that names it.

Behind nginx the request idrserve sees is `http://127.0.0.1:8080/...`, which is useless to a
browser: IIIF clients build every tile URL by appending to `info.json`'s `id`, and a page
served under `/idr/` must link to `/idr/...`. The base is, in order of preference:

1. `server.public_base_url` when configured (scheme, host and path prefix, fixed);
2. `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Prefix` (first value of each,
   as set by the nearest proxy), falling back per part to the request's own scheme and Host.

Forwarded values are checked against strict patterns: they end up in JSON bodies, pages and
`Location` headers, so anything odd is ignored rather than echoed.

Documents for programs (JSON, IIIF) carry absolute URLs (`public_base`). Pages and redirects
are fetched by the browser that is already on this server, so they carry root-relative paths
with the prefix alone (`public_prefix`): the scheme and host a proxy reports could be wrong
(TLS ended in front of nginx makes `$scheme` `http`), and an absolute `http://` link on an
`https://` page is mixed content the browser blocks.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from idrserve.http.keys import SETTINGS

_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](?::[0-9]{1,5})?")
_PREFIX = re.compile(r"(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*")
_REBUILT = frozenset({"location", "content-type", "content-length", "cache-control"})


def _first(value: str | None) -> str:
    """The first entry of a possibly comma-separated forwarded header, stripped."""
    return value.split(",", 1)[0].strip() if value else ""


def normalise_prefix(prefix: str) -> str:
    """`idr/`, `/idr/` and `/idr` → `/idr`; empty or `/` → ``; invalid → ``."""
    prefix = "/" + prefix.strip().strip("/") if prefix.strip().strip("/") else ""
    return prefix if _PREFIX.fullmatch(prefix) else ""


def public_prefix(request: web.Request) -> str:
    """The path clients reach this server under (`/idr`, or `` at the root), no trailing slash."""
    configured = request.app[SETTINGS].server.public_base_url
    if configured:
        return urlsplit(configured).path.rstrip("/")
    return normalise_prefix(_first(request.headers.get("X-Forwarded-Prefix")))


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
    return f"{scheme}://{host}{public_prefix(request)}"


def forwarded_headers_used(request: web.Request) -> bool:
    """Whether `public_base` depends on request headers (so its result must not be shared).

    With no configured base URL, a document naming itself differs per Host and forwarded
    header; shared caches (nginx keys on the path only) must not store it.
    """
    return not request.app[SETTINGS].server.public_base_url


def link_cache_control(request: web.Request, directives: str = "") -> str:
    """`Cache-Control` for a response that names this server: `directives`, made `private`
    when the name came from request headers (nginx ignores `Vary`; `private` it honours)."""
    if not forwarded_headers_used(request):
        return directives
    return f"private, {directives}" if directives else "private"


def make_redirect_middleware() -> Middleware:
    """aiohttp's missing-slash 301 (Django's, which QuPath follows), with the public prefix.

    aiohttp answers `/webgateway/imgData/1` with `Location: /webgateway/imgData/1/`, which
    behind a proxy serving idrserve under `/idr/` leads out of it. Every root-relative
    `Location` raised below this middleware gets the prefix; absolute ones pass unchanged.
    """
    normalise = web.normalize_path_middleware(
        append_slash=True, merge_slashes=False, redirect_class=web.HTTPMovedPermanently
    )

    @web.middleware
    async def redirect_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await normalise(request, handler)
        except web.HTTPMove as exc:
            location = str(exc.location)
            if location.startswith("/") and not location.startswith("//"):
                location = public_prefix(request) + location
            # The rest is rebuilt by the new exception (its Location, type and body).
            kept = {k: v for k, v in exc.headers.items() if k.lower() not in _REBUILT}
            cache_control = link_cache_control(request, exc.headers.get("Cache-Control", ""))
            if cache_control:
                kept["Cache-Control"] = cache_control
            raise type(exc)(location, headers=kept) from None

    return redirect_middleware
