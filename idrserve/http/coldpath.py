"""Cold tiles planned where their request is parsed, rendered in one task.

A cold tile (in no cache) cost about 180 µs of request handling around its ≈ 580 µs kernel on
this machine's core, and that handling doubled once it alternated with the kernel's memory
traffic (bench/bench_http.py `--request-path`): aiohttp's task per request, a request object,
the router, four middlewares, a response object, its prepare signal and a stream writer. Direct
hits (http/fastpath.py) showed that answering from the connection handler skips all of that;
this does the same for a render: the request path alone went from 183 to 110 µs.

`JsonErrorRequestHandler.data_received` (http/server.py) offers a lone queued request here
when it is not a direct hit. `plan` takes it only when everything the usual path would work
out first is known without I/O and without an error:

- a GET of `/webgateway/render_image_region/{id}/{z}/{t}/` exactly (digits only, the trailing
  slash, the OMERO.web form nginx routes here) or of a IIIF image request
  (`/iiif/{2,3}/{identifier}/{region}/{size}/{rotation}/{quality}.{format}`), over HTTP/1.1
  keep-alive, with no body and no `If-None-Match` (a 304 is the usual path's);
- the image's metadata loaded and trusted (`fresh_meta`) and its purge generation known
  (`fresh_cache_key`);
- parameters that parse and a plan that succeeds (an invalid one is answered, with its JSON
  4xx, by the usual path, which finds the same error);
- an output of at most 1024² pixels for JPEG, 512² for other formats (its body likely fits
  one write, `LARGE_BODY_BYTES`: a bigger body, rendered here, is handed back), and a free
  request slot and render slot (`Admission`).

`now` offers a plain call for a tile `service.render_now` can render without an await (inline
size, no cache tier that needs I/O, no render of its key under way): the connection handler
calls it in the tile's loop turn, at once when the turn is free, else from `InlineTurns`, with
no task at all. That took the request path from 187–215 to 141 µs and cold 256² tiles to 1.08×
(bench/results/http-now-vm-2026-12-06.md). A tile over the inline bound (or every tile, on a
worker with several CPU threads) in such a process goes to the CPU pool the same way (`pool`):
one plain pool job, a render slot and a single flight kept here, the result back by one
callback, the request deadline on `Deadlines.call_at`; no task, no shield, no wrapped
future. Otherwise `render`, in a task, does what `respond_rendered` does after planning (the
cache tiers, single flight, the render, the store, the URL index). All return the
response's head and body, headers in the usual path's order (`ImageHeads`). When the render
fails, or runs past the request deadline, the connection handler hands the request back to
aiohttp, which answers it through the middlewares (errors with their JSON body): a GET may be
worked on twice, the second answer is the one sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiohttp import web
from yarl import URL

from idrserve.admission import Admission
from idrserve.errors import IdrServeError
from idrserve.http import iiif, params
from idrserve.http.bodies import LARGE_BODY_BYTES
from idrserve.http.deadlines import Deadlines
from idrserve.http.fastpath import ImageHeads, UrlIndex, plain_get
from idrserve.http.iiif_params import Version
from idrserve.http.middleware import chosen_request_id
from idrserve.http.plainhead import HeadMessage, PlainURL, request_id_field
from idrserve.http.plan import Output, RegionAsk, plan_iiif, plan_webgateway_region
from idrserve.http.reqmetrics import RequestMetrics
from idrserve.http.trace import Trace
from idrserve.http.webgateway import output_from_query
from idrserve.lru import BoundedLRU
from idrserve.model import Format, ImageMeta, RegionRequest, record
from idrserve.service import (
    Rendered,
    Step,
    cached_render,
    fresh_cache_key,
    pool_job,
    render_now,
    store_rendered,
)
from idrserve.settings import Settings
from idrserve.turns import InlineTurns

log = logging.getLogger(__name__)

# The routes' own grammar (webgateway.py: ID, Z, T; iiif.py: five segments), on the path as
# sent.
_REGION_PREFIX = "/webgateway/render_image_region/"
_REGION_PATH = re.compile(r"/webgateway/render_image_region/(\d{1,19})/(\d{1,9})/(\d{1,9})/")
_IIIF_PREFIX = "/iiif/"
# A bigger output takes the usual path: its body may need the large-body budget (bodies.py).
# JPEG up to 1024², the tile of bioformats2raw's default chunk (100-500 KiB): under the cold
# 1024² load the loop spent 1 018 µs of CPU a tile on the usual path and 891 here, 1.02× the
# tiles/s (bench/results/http-large-paths-vm-2026-12-07.md). A PNG or TIFF that size is often
# over 1 MiB, would be handed back and rendered again: those stay at 512².
MAX_OUTPUT_PIXELS = 512 * 512
MAX_JPEG_OUTPUT_PIXELS = 1024 * 1024


# A viewer asks for every tile of an image with the same query but its `tile=`: the output
# parsed from the rest is kept by its text. `output_from_query` finds a kept output too, but
# only after making the query's multidict and reading six parameters from it: about 5 µs of a
# cold tile between two renders (docs/benchmarks.md, "Planning values built by plain stores").
OUTPUTS_KEPT = 256


def tile_and_rest(query_string: str) -> tuple[str, str] | None:
    """The text of the query's one non-empty `tile` and the query without it, in order; None
    when it must be read as a multidict: a `region`, no tile or more than one, a tile with
    anything escaped, or an escaped name (it may spell `tile`). Escapes elsewhere stay as
    they are: the rest is only a key, and the output is parsed from the decoded query."""
    tile = None
    rest = []
    for part in query_string.split("&"):
        name, _, value = part.partition("=")
        if "%" in name:
            return None
        if name == "tile":
            if tile is not None or "%" in value or "+" in value:
                return None
            tile = value
        elif name == "region":
            return None
        elif part:
            rest.append(part)
    if not tile:
        return None
    return tile, "&".join(rest)


@dataclass(slots=True)
class ColdJob:
    """A planned cold tile: what `render` needs, and what the log line and metrics name."""

    req: RegionRequest
    meta: ImageMeta
    key: str
    generation: int
    url: str
    request_id: str
    # The URL's own headers the shared cache entry lacks (IIIF's canonical Link).
    headers: tuple[tuple[str, str], ...]
    # The route the usual path would have matched: what the access log and /metrics name
    # the request by.
    resource: object
    # The URL index knows the URL: it was answered before, so its entry is likely in a
    # lower cache tier (it was not in memory, or DirectHits would have answered).
    indexed: bool = False


# A planned request, its image's metadata, its own headers and its route.
_Planned = tuple[RegionRequest, ImageMeta, tuple[tuple[str, str], ...], object]


class LowerHits:
    """How often a URL this process answered before, missing from its memory, is found in a
    lower tier (disk, Redis): a moving share over about the last 64 such lookups.

    `render` reads such a URL plainly first (one MGET batched with its iteration's others),
    which makes a Redis hit cheap, but costs a tile that missed a round trip before the lookup
    that takes the render lock: 90–100 µs of the loop a cold 256² tile here (963 against 882
    tiles/s, docs/redis.md). When the lower tiers keep forgetting (a Redis smaller than the
    traffic's working set), the plain read is skipped and the locking lookup answers hits and
    misses alike; its hits keep the share up to date, so the plain read comes back when the
    entries do. A hit through the locking lookup cost up to 140 µs more (3 418 against 6 609
    Redis hits/s before the multiplexed connection), hence the switch at 40 % rather than 50.
    """

    __slots__ = ("share",)

    WEIGHT = 1 / 64  # of the newest lookup
    PLAIN_FIRST_MIN = 0.4  # the share under which the plain read is skipped

    def __init__(self) -> None:
        self.share = 1.0  # as if every entry were there: the plain read first

    def saw(self, hit: bool) -> None:
        self.share += self.WEIGHT * (hit - self.share)

    @property
    def plain_first(self) -> bool:
        return self.share >= self.PLAIN_FIRST_MIN


class HandBack(Exception):
    """A rendered tile the direct answer cannot send (a body over one write, a header that
    cannot be written here): the usual path answers its request instead."""


@record
class ColdAnswer:
    head: bytes
    body: bytes
    tier: str
    trace: Trace


class ColdRenders:
    def __init__(
        self,
        settings: Settings,
        deps: Callable[[], Any],
        admission: Admission,
        index: UrlIndex | None,
        heads: ImageHeads,
        resources: tuple[object, object],
        metrics: RequestMetrics | None,
    ) -> None:
        self._limits = settings.limits
        self.metrics = metrics
        self._deps = deps
        self.admission = admission
        self._index = index
        self._heads = heads
        # The routes of render_image_region and of IIIF, for `ColdJob.resource`.
        self.resources = resources
        self.timeout_s = settings.limits.request_timeout_s
        # The request deadline, as the error middleware applies it to the usual path.
        self.deadlines = Deadlines(self.timeout_s)
        # Keys rendering in the pool (`pool`), each with the calls waiting for it and when
        # each joined (None: the request that started it).
        self._pooled: dict[str, list[tuple[PoolDone, float | None]]] = {}
        # Whether URLs answered before are still found in the lower tiers (`render`).
        self.lower = LowerHits()
        # Tiles' outputs by the rest of their query (`tile_and_rest`).
        self._outputs: BoundedLRU[str, Output] = BoundedLRU(OUTPUTS_KEPT)

    def plan(self, message: HeadMessage) -> ColdJob | None:
        """The job for `message` when it is a plain cold tile request, else None (nothing
        counted or held: the usual path answers it)."""
        if not plain_get(message) or len(message.path) > self._limits.max_url_length:
            return None
        deps = self._deps()
        if deps is None:
            return None
        url = message.url
        raw = url.raw_path
        try:
            if raw.startswith(_REGION_PREFIX):
                planned = self._region(raw, url, deps)
            elif raw.startswith(_IIIF_PREFIX):
                planned = self._iiif(raw, deps)
            else:
                return None
        except IdrServeError:
            return None  # the usual path answers the same error, with its JSON body
        if planned is None:
            return None
        req, meta, own_headers, resource = planned
        size = req.out_size or (req.box.w, req.box.h)
        bound = MAX_JPEG_OUTPUT_PIXELS if req.fmt is Format.JPEG else MAX_OUTPUT_PIXELS
        if size[0] * size[1] > bound:
            return None
        keyed = fresh_cache_key(req, deps)
        if keyed is None:
            return None
        admission = self.admission
        if (
            admission.requests >= admission.max_requests
            or admission.renders >= admission.max_renders
        ):
            # The usual path refuses it, counted once, with its 503 (a memory hit needs no
            # render slot: it answers that too).
            return None
        admission.request_admitted()
        key, generation = keyed
        rid = chosen_request_id(request_id_field(message))
        indexed = self._index is not None and self._index.lookup(message.path) is not None
        return ColdJob(
            req, meta, key, generation, message.path, rid, own_headers, resource, indexed
        )

    def _region(self, raw: str, url: PlainURL | URL, deps: Any) -> _Planned | None:
        """webgateway.render_image_region, without the request object."""
        m = _REGION_PATH.fullmatch(raw)
        if m is None:
            return None
        iid = int(m.group(1))
        meta = deps.source.fresh_meta(iid)
        if meta is None:
            return None
        split = tile_and_rest(url.raw_query_string)
        if split is None:
            query = url.query
            tile, region = query.get("tile"), query.get("region")
            output = output_from_query(query, self._limits, strict=False)
        else:
            (tile, rest), region = split, None
            kept = self._outputs.get(rest)
            if kept is None:  # a 400 raises: never kept
                kept = output_from_query(url.query, self._limits, strict=False)
                self._outputs.put(rest, kept)
            output = kept
        ask = RegionAsk(
            iid,
            params.parse_path_int(m.group(2), "z"),
            params.parse_path_int(m.group(3), "t"),
            tile,
            region,
            output,
        )
        req = plan_webgateway_region(ask, meta, self._limits)
        return req, meta, (), self.resources[0]

    def _iiif(self, raw: str, deps: Any) -> _Planned | None:
        """iiif.handle's image requests (`/iiif/{2,3}/` and five segments)."""
        version_text = raw[len(_IIIF_PREFIX) : len(_IIIF_PREFIX) + 2]
        if version_text not in ("2/", "3/"):
            return None
        segments = raw[len(_IIIF_PREFIX) + 2 :].split("/")
        if len(segments) != 5 or not all(segments):
            return None
        version = Version(version_text[0])
        ask = iiif.image_ask(version, segments, self._limits)
        meta = deps.source.fresh_meta(ask.identifier.image_id)
        if meta is None:
            return None
        req, canonical = plan_iiif(ask, meta, self._limits)
        link = tuple(iiif.link_headers(version, canonical).items())
        return req, meta, link, self.resources[1]

    async def render(self, job: ColdJob) -> ColdAnswer | None:
        """The answer to a planned job; None hands it back. The caller releases the slot
        (`admission.request_done()`) in every case, cancellation included."""
        deps = self._deps()
        if deps is None:
            return None
        rendered = None
        cache = deps.cache
        plain = job.indexed and cache is not None and self.lower.plain_first
        if plain:
            # A URL answered before: read the lower tiers plainly, as the URL index's
            # middleware does, before the single-flight task and the Redis render lock a
            # render needs. Through cached_render, Redis hits ran at half the rate
            # (bench/bench_cache.py: 3 418 vs 6 609 hits/s).
            entry, tier = await cache.get(job.key)
            self.lower.saw(entry is not None)
            if entry is not None:  # no timings, as the middleware's Server-Timing has none
                rendered = Rendered(entry.body, entry.media_type, job.key, {}, tier)
        if rendered is None:
            rendered = await cached_render(job.req, job.meta, deps, job.key)
            if job.indexed and not plain:
                self.lower.saw(rendered.tier in ("disk", "redis"))
        return self._answer(job, rendered)

    def now(self, job: ColdJob) -> tuple[InlineTurns | None, ColdStep] | None:
        """A plain call that answers `job` (`service.render_now`), with the process's render
        turns when it must wait for its loop turn (None: a memory hit, call it at once); or
        None: `render` it in a task. The call raises when the request must be answered the
        usual way (its render failed, or its answer does not fit the direct answer:
        `HandBack`). A render in two turns (`service.ONE_TURN_PIXELS`) returns, from its
        first, the call that does the rest in a later turn."""
        deps = self._deps()
        if deps is None or (job.indexed and not (deps.cache is None or deps.cache.local_only)):
            return None
        if job.key in self._pooled:
            return None  # rendering in the pool: joined there (`pool`)
        found = render_now(job.req, job.meta, deps, job.key)
        if found is None:
            return None
        produce = found if callable(found) else None
        turns = deps.inline_turns if produce is not None else None

        def answer() -> ColdAnswer | ColdStep:
            return self._finish(job, produce() if produce is not None else found)

        return turns, answer

    def pool(self, job: ColdJob, done: PoolDone) -> bool:
        """Render `job` in the CPU pool without a task, or join the pooled render of its key;
        False: `render` it in a task. `done` is called on the loop with the stored `Rendered`
        (tier miss, or coalesced for a request that joined) or the render's exception.

        For a tile `now` does not take (over the inline bound, or a process whose renders all
        go to the pool) in a process whose cache needs no I/O: the render slot is taken and
        given back here, the single flight is a list of calls, the result comes back as one
        callback from the pool thread. The connection handler keeps the request deadline
        (`Deadlines.call_at`). That took the loop's CPU for a 256² tile rendered in the pool
        from 111 to 88 µs with the kernel stubbed out (docs/benchmarks.md).
        """
        waiting = self._pooled.get(job.key)
        if waiting is not None:
            waiting.append((done, time.perf_counter()))
            return True
        deps = self._deps()
        if deps is None or deps.cpu_pool is None:
            return False
        call = self.pool_job(job)
        if call is None:
            return False
        admission = deps.admission
        if admission is not None and not admission.render_taken():
            return False  # the usual path refuses it (503), counted once
        loop = asyncio.get_running_loop()
        try:
            future = deps.cpu_pool.submit(call)
        except RuntimeError:  # the pool is shut down: the usual path says so
            if admission is not None:
                admission.render_done()
            return False
        self._pooled[job.key] = [(done, None)]
        back = partial(self._pool_done, job.key, admission)
        future.add_done_callback(partial(_on_loop, loop, back))
        return True

    def pool_job(self, job: ColdJob) -> Callable[[], Rendered] | None:
        """The plain call that renders `job` in the pool (`service.pool_job`); None: it must
        take a task."""
        deps = self._deps()
        if deps is None:
            return None
        return pool_job(job.req, job.meta, deps, job.key)

    def _pool_done(self, key: str, admission: Admission | None, future: Future[Rendered]) -> None:
        if admission is not None:
            admission.render_done()
        waiting = self._pooled.pop(key, [])
        result: Rendered | BaseException
        try:
            result = future.result()
        except BaseException as exc:  # each waiter hands its request back
            result = exc
        if isinstance(result, Rendered):
            deps = self._deps()
            cache = None if deps is None else deps.cache
            store_rendered(cache, result)
            if cache is not None:
                cache.coalesced += len(waiting) - 1
        now = time.perf_counter()
        for done, joined in waiting:
            given = result
            if joined is not None and isinstance(result, Rendered):
                waited = {"cache": now - joined}
                given = Rendered(result.body, result.media_type, key, waited, "coalesced")
            try:
                done(given)
            except Exception:  # the others must still get theirs
                log.exception("a pooled cold tile's answer failed")

    def answer(self, job: ColdJob, rendered: Rendered) -> ColdAnswer:
        """`rendered` as the direct answer to `job`; `HandBack` when it cannot be one."""
        answered = self._answer(job, rendered)
        if answered is None:
            raise HandBack(job.url[:200])
        return answered

    def _finish(self, job: ColdJob, rendered: Rendered | Step) -> ColdAnswer | ColdStep:
        if not isinstance(rendered, Rendered):
            step = rendered
            return lambda: self._finish(job, step())
        return self.answer(job, rendered)

    def _answer(self, job: ColdJob, rendered: Rendered) -> ColdAnswer | None:
        body = rendered.body
        if len(body) > LARGE_BODY_BYTES:
            return None
        trace = Trace(rendered.tier, rendered.timings)
        head = self._heads.head(
            job.key,
            rendered.tier,
            trace.server_timing(),
            job.headers,
            rendered.media_type,
            len(body),
            job.request_id,
        )
        if head is None:
            return None
        if self._index is not None:
            self._index.remember(
                job.url,
                job.key,
                job.req.image_id,
                job.meta.data_version,
                job.generation,
                job.headers,
                job.resource,
            )
        return ColdAnswer(head, body, rendered.tier, trace)


# A direct answer as plain calls: each returns the answer, or the call that does the rest in
# a later loop turn (a render in two turns).
ColdStep = Callable[[], "ColdAnswer | ColdStep"]
# What a request waiting for a pooled render is called with: the render, or its exception.
PoolDone = Callable[["Rendered | BaseException"], None]


def _on_loop(
    loop: asyncio.AbstractEventLoop,
    call: Callable[[Future[Rendered]], None],
    future: Future[Rendered],
) -> None:
    """In the pool thread that finished `future`: `call(future)` on the loop's thread."""
    with suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        loop.call_soon_threadsafe(call, future)


# Here rather than in http/keys.py, which this module imports.
COLD_RENDERS = web.AppKey("cold_renders", ColdRenders)
