"""Memory hits without re-parsing: an index from exact request URL to the resolved cache key.

Keys stay what `RegionRequest.canonical` makes them (equivalent URLs share one entry); this
index only remembers, for a URL already answered, which key it resolved to and under which image
data version and purge generation. A repeated URL whose image is unchanged and whose entry is
in a cache tier is answered here, before the handler's parameter parsing, settings resolution
and key hashing — py-spy put those at a third of a memory hit's CPU, and bench/bench_cache.py
measured memory hits at 2.6× the rate of the full path with this index. Anything else (a new
URL, a changed image, a purge, a cache miss, a non-GET) takes the normal path, which records
the URL for next time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from aiohttp.typedefs import Handler, Middleware

from idrserve.admission import Admission
from idrserve.http.bodies import LARGE_BODY_BYTES
from idrserve.http.keys import MEMO_INFO, TRACE
from idrserve.http.middleware import EXPOSE_HEADERS, chosen_request_id
from idrserve.http.plainhead import HeadMessage, PlainGet, request_id_field
from idrserve.http.reqmetrics import RequestMetrics
from idrserve.http.responses import etag_for, image_response, not_modified, overloaded
from idrserve.http.trace import Trace
from idrserve.lru import BoundedLRU


@dataclass(frozen=True, slots=True)
class _Memo:
    key: str
    image_id: int
    data_version: str
    generation: int
    # Response headers of the URL's own that the entry (shared by equivalent URLs) lacks,
    # e.g. IIIF's canonical Link.
    headers: tuple[tuple[str, str], ...] = ()
    # The route that answered it (aiohttp's resource, shared by all its URLs): what the access
    # log and /metrics name a direct hit by, which never meets the router.
    resource: object | None = None


# Bytes charged per remembered URL beyond the URL and key text: the dict slot, the two str
# headers and the _Memo (about 250 B on CPython 3.11, 64-bit).
MEMO_OVERHEAD = 250


class UrlIndex:
    """A bounded LRU of URL → resolved key, validated on every use; bounded in entries and
    in bytes (URLs of up to 4 KiB are remembered, so entries alone would not bound memory)."""

    def __init__(self, max_entries: int, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._entries: BoundedLRU[str, _Memo] = BoundedLRU(max_entries, max_bytes, cost=_cost)

    @property
    def max_entries(self) -> int:
        return self._entries.max_entries

    @property
    def max_bytes(self) -> int:
        return self._entries.max_bytes

    @property
    def bytes(self) -> int:
        return self._entries.bytes

    def remember(
        self,
        url: str,
        key: str,
        image_id: int,
        data_version: str,
        generation: int,
        headers: tuple[tuple[str, str], ...] = (),
        resource: object | None = None,
    ) -> None:
        if self.max_entries <= 0 or len(url) > 4096:
            return
        memo = _Memo(key, image_id, data_version, generation, headers, resource)
        self._entries.put(url, memo)

    def lookup(self, url: str) -> _Memo | None:
        # Not a recency refresh: a URL stays for `max_entries` newer ones, then one request
        # on the normal path records it again.
        return self._entries.peek(url)

    def __len__(self) -> int:
        return len(self._entries)


def _cost(url: str, memo: _Memo) -> int:
    extra = sum(len(k) + len(v) + 100 for k, v in memo.headers)  # text + tuple and str headers
    return len(url) + len(memo.key) + len(memo.data_version) + extra + MEMO_OVERHEAD


def _still_valid(memo: _Memo, deps: Any) -> bool:
    """Whether the key a URL resolved to still answers it: the image is neither purged
    (cache generation) nor changed (data version) since. `deps.cache` is not None."""
    return bool(
        deps.cache.fresh_generation(memo.image_id) == memo.generation
        and deps.source.fresh_data_version(memo.image_id) == memo.data_version
    )


def make_fastpath_middleware(
    index: UrlIndex,
    deps_getter: Callable[[web.Request], Any],
    cache_control: str,
    admission: Admission | None = None,
) -> Middleware:
    """The outermost middleware. A memory hit is answered without awaiting anything, so it
    never holds a request slot; a lower-tier hit counts against `admission`'s request bound
    like any request (and a full bound sends it on to the admission middleware, which
    refuses it). Hits over `LARGE_BODY_BYTES` are left to the admitted path."""

    @web.middleware
    async def fastpath(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method != "GET":
            return await handler(request)
        url = request.raw_path
        memo = index.lookup(url)
        if memo is not None:
            deps = deps_getter(request)
            cache = deps.cache
            if cache is not None and _still_valid(memo, deps):
                tier = "memory"
                entry = cache.memory.get(memo.key) if cache.memory is not None else None
                if entry is None:
                    # Lower tiers still skip parsing and resolving; a hit fills memory.
                    if admission is not None and not admission.request_admitted():
                        return overloaded(request, admission)
                    try:
                        entry, tier = await cache.get(memo.key)
                    finally:
                        if admission is not None:
                            admission.request_done()
                # A large body must be budgeted and written in pieces while holding a
                # request slot (http/bodies.py): it takes the admitted path, which finds it
                # in the memory tier again.
                if entry is not None and len(entry.body) <= LARGE_BODY_BYTES:
                    trace = request[TRACE] = Trace(tier)
                    early = not_modified(request, memo.key, cache_control)
                    if early is not None:
                        return early
                    return image_response(
                        entry.body, entry.media_type, memo.key, cache_control, trace, memo.headers
                    )
        response = await handler(request)
        info = request.get(MEMO_INFO)
        if info is not None and response.status == 200:
            key, image_id, version, generation, headers = info
            resource = request.match_info.route.resource
            index.remember(url, key, image_id, version, generation, headers, resource)
        return response

    return fastpath


# --- direct hits ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirectHit:
    """A memory hit's whole response, and what its access-log line and /metrics need."""

    head: bytes
    body: bytes
    resource: object
    request_id: str


class DirectHits:
    """Memory hits answered where their request is parsed, before aiohttp makes anything of it.

    `JsonErrorRequestHandler.data_received` (http/server.py) offers each complete request
    head here; a hit is written to the connection at once. Even behind the URL index above,
    a memory hit cost aiohttp's per-request machinery first: a task, a request object, the
    router, four middlewares, a response object, its prepare signal and a stream writer,
    about 60 µs of the 80 µs of a hit on this machine's core (py-spy), where answering in
    `data_received` served 3× as many hits/s in a prototype (bench/bench_cache.py has the
    figures of this implementation).

    Only the plainest case is answered here, everything else takes the path through the
    middlewares, which answers it the same way or better: a GET over HTTP/1.1 on a kept-alive
    connection, with no body, no `If-None-Match` (a 304 is built there), for a URL in the
    index whose image is unchanged, whose entry is in the memory tier and small enough
    to write in one go (`LARGE_BODY_BYTES`). The bytes are those of the middleware path:
    same headers in the same order (tests/http/test_direct_hits.py compares them), and the
    same access-log line and /metrics counts.
    """

    def __init__(
        self,
        index: UrlIndex,
        deps: Callable[[], Any],
        heads: ImageHeads,
        metrics: RequestMetrics | None,
    ) -> None:
        self._index = index
        self._deps = deps
        self.heads = heads
        self.metrics = metrics

    def answer(self, message: HeadMessage) -> DirectHit | None:
        """The response to `message` when it is a plain memory hit, else None."""
        if not plain_get(message):
            return None
        memo = self._index.lookup(message.path)
        if memo is None or memo.resource is None:
            return None
        deps = self._deps()
        cache = None if deps is None else deps.cache
        if cache is None or cache.memory is None or not _still_valid(memo, deps):
            return None
        entry = cache.memory.get(memo.key)
        if entry is None or len(entry.body) > LARGE_BODY_BYTES:
            return None
        rid = chosen_request_id(request_id_field(message))
        head = self.heads.head(
            memo.key, "memory", None, memo.headers, entry.media_type, len(entry.body), rid
        )
        if head is None:
            return None
        return DirectHit(head, entry.body, memo.resource, rid)


def plain_get(message: HeadMessage) -> bool:
    """A GET over HTTP/1.1 keep-alive with no body and no `If-None-Match`: the only requests
    answered before aiohttp builds a request (here and http/coldpath.py); a 304, HTTP/1.0,
    a closing connection or a body are the usual path's."""
    if isinstance(message, PlainGet):
        return True  # what http/plainhead.py reads is such a GET, or not read there
    if (
        message.method != "GET"
        or message.version != HttpVersion11
        or message.should_close
        or message.upgrade
        or message.chunked
    ):
        return False
    headers = message.headers
    return "If-None-Match" not in headers and "Content-Length" not in headers


class ImageHeads:
    """The head of a 200 image response written without aiohttp (direct hits here, cold
    tiles in http/coldpath.py): the headers `image_response` and the app's on-prepare hook
    set, in the order aiohttp writes them (tests/http/test_direct_hits.py and
    tests/http/test_coldpath.py compare them byte for byte with the usual path's)."""

    def __init__(self, cache_control: str, cors_origin: str) -> None:
        self._cache_control = cache_control
        self._after_type = (
            f"Server: {SERVER_SOFTWARE}\r\nAccess-Control-Allow-Origin: {cors_origin}\r\n"
            f"Access-Control-Expose-Headers: {EXPOSE_HEADERS}\r\nX-Request-ID: "
        )
        self._date_second = -1
        self._date = ""

    def head(
        self,
        key: str,
        tier: str,
        timing: str | None,
        own_headers: tuple[tuple[str, str], ...],
        media_type: str,
        length: int,
        rid: str,
    ) -> bytes | None:
        """None when a header value holds a line break (aiohttp refuses those too)."""
        own = ""
        if timing:
            own = f"Server-Timing: {timing}\r\n"
        if own_headers:
            own += "".join(f"{k}: {v}\r\n" for k, v in own_headers)
            lines = len(own_headers) + (1 if timing else 0)
            if own.count("\n") != lines or own.count("\r") != lines:
                return None
        now = int(time.time())
        if now != self._date_second:
            self._date_second, self._date = now, formatdate(now, usegmt=True)
        return (
            f"HTTP/1.1 200 OK\r\nETag: {etag_for(key)}\r\n"
            f"Cache-Control: {self._cache_control}\r\nX-Cache: {tier}\r\n{own}"
            f"Content-Type: {media_type}\r\nContent-Length: {length}\r\n"
            f"Date: {self._date}\r\n{self._after_type}{rid}\r\n\r\n"
        ).encode()


# Here rather than in http/keys.py, which this module imports.
DIRECT_HITS = web.AppKey("direct_hits", DirectHits)
