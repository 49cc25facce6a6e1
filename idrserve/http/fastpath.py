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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from idrserve.admission import Admission
from idrserve.http.bodies import LARGE_BODY_BYTES
from idrserve.http.keys import MEMO_INFO, TRACE
from idrserve.http.responses import image_response, not_modified, overloaded
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
    ) -> None:
        if self.max_entries <= 0 or len(url) > 4096:
            return
        self._entries.put(url, _Memo(key, image_id, data_version, generation, headers))

    def lookup(self, url: str) -> _Memo | None:
        # Not a recency refresh: a URL stays for `max_entries` newer ones, then one request
        # on the normal path records it again.
        return self._entries.peek(url)

    def __len__(self) -> int:
        return len(self._entries)


def _cost(url: str, memo: _Memo) -> int:
    extra = sum(len(k) + len(v) + 100 for k, v in memo.headers)  # text + tuple and str headers
    return len(url) + len(memo.key) + len(memo.data_version) + extra + MEMO_OVERHEAD


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
            if (
                cache is not None
                and cache.fresh_generation(memo.image_id) == memo.generation
                and deps.source.fresh_data_version(memo.image_id) == memo.data_version
            ):
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
            index.remember(url, *info)
        return response

    return fastpath
