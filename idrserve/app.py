"""`create_app(settings)`: wiring only. Every shared object is opened and closed here."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from idrserve import __version__
from idrserve.admission import Admission
from idrserve.cache import TieredCache
from idrserve.catalog import Catalog
from idrserve.catalog.metrics import CatalogCollector
from idrserve.cpupool import cpu_pool as make_cpu_pool
from idrserve.http import (
    api,
    deepzoom,
    iiif,
    iviewer,
    ops,
    plate_routes,
    reqmetrics,
    urls,
    viewer,
    webgateway,
    zarrstore,
)
from idrserve.http.coldpath import COLD_RENDERS, ColdRenders
from idrserve.http.fastpath import (
    DIRECT_HITS,
    DirectHits,
    ImageHeads,
    UrlIndex,
    make_fastpath_middleware,
)
from idrserve.http.keys import ADMISSION, CATALOG, DEPS, PLATES, REGISTRY, SETTINGS, STATE
from idrserve.http.looplag import LoopLag
from idrserve.http.middleware import make_error_middleware, make_on_prepare
from idrserve.http.params import parse_page
from idrserve.http.viewer import page_links
from idrserve.render import kernels
from idrserve.render.lut import LutTable
from idrserve.service import Deps
from idrserve.settings import Settings
from idrserve.sources.plate_catalog import PlateCatalog
from idrserve.sources.routing import build_source
from idrserve.threadcpu import ThreadCpu
from idrserve.turns import InlineTurns

log = logging.getLogger("idrserve")

# Longest wait at start-up for a catalog read in-process (see `lifecycle`).
INLINE_WAIT_S = 10.0


async def healthz(request: web.Request) -> web.Response:
    """200 once startup has finished (sources opened, pools created); no dependency calls."""
    if not request.app[STATE].get("ready"):
        return web.json_response({"status": "starting"}, status=503)
    return web.json_response({"status": "ok", "version": __version__})


async def index(request: web.Request) -> web.Response:
    """One page of the served images (`?offset=&limit=`) as JSON; browsers get the index page.

    O(limit) whatever the catalog's size: the page is a slice of the sorted index.
    """
    offset, limit = parse_page(request.query)
    page = await request.app[CATALOG].page(offset, limit)
    if viewer.prefers_html(request):
        return await viewer.index_page(request, page)
    base = urls.public_base(request)
    images = [
        {
            "id": i,
            "imgData": f"{base}/webgateway/imgData/{i}/",
            "thumbnail": f"{base}/webgateway/render_thumbnail/{i}/",
        }
        for i in page.ids
    ]
    doc = {
        "service": "idrserve",
        "version": __version__,
        "viewer": f"{base}/viewer/",
        "total": page.total,
        "offset": page.offset,
        "limit": page.limit,
        "images": images,
        "links": {
            rel: f"{base}/?offset={start}&limit={page.limit}"
            for rel, start in page_links(page).items()
        },
    }
    return web.json_response(
        doc,
        headers={"Vary": "Accept", "Cache-Control": urls.link_cache_control(request, "no-cache")},
    )


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of this process's counters (cache tiers, per process)."""
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def reload_catalog_on_sighup(app: web.Application) -> None:
    """On startup of a served app (not in tests): SIGHUP re-reads the catalog file."""
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGHUP, lambda: app[CATALOG].request_reload()
    )


async def freeze_heap_when_warm(app: web.Application) -> None:
    """On startup of a served app (not in tests): once the render kernels are loaded, move
    every object alive then out of the garbage collector's reach (`gc.freeze`).

    numba and llvmlite leave ~180 000 tracked objects, so a full collection took ~58 ms, and
    one came every few thousand requests: the slowest 1 % of cold tiles waited 45–90 ms
    behind it, against a median of 4 ms (bench/results/http-*.md). What start-up built lives
    as long as the process; nothing is lost by never scanning it again.
    """
    pool = app[DEPS].cpu_pool
    loop = asyncio.get_running_loop()

    async def freeze() -> None:
        # After the warm-up submitted at start-up (loading twice is a no-op).
        await loop.run_in_executor(pool, kernels.warm)
        gc.collect()
        gc.freeze()

    app[STATE]["freeze"] = loop.create_task(freeze(), name="gc-freeze")


def create_app(settings: Settings) -> web.Application:
    limits = settings.limits
    tiers = settings.cache
    # With no cache tier at all nothing can be found again, and remembering URLs only costs
    # every request a lookup that always misses (10 µs of a cold tile on the bench's one core).
    no_tier = tiers.memory_max_bytes == 0 and not tiers.redis_url
    no_tier = no_tier and (tiers.dir is None or tiers.dir_max_bytes == 0)
    url_index = UrlIndex(0 if no_tier else tiers.url_index_entries, tiers.url_index_max_bytes)
    admission = Admission(
        limits.max_concurrent_requests,
        limits.max_concurrent_renders,
        limits.retry_after_s,
        limits.max_inflight_body_bytes,
    )
    app = web.Application(
        middlewares=[
            # Memory hits first: they await nothing, so they never hold a request slot, and
            # skipping a middleware layer is ~5 % of a memory hit (bench/bench_cache.py).
            make_fastpath_middleware(
                url_index,
                lambda request: request.app[DEPS],
                settings.server.cache_control,
                admission,
            ),
            ops.make_admission_middleware(
                admission, logging.getLogger(ops.ACCESS_LOGGER), settings.log.access_log_format
            ),
            make_error_middleware(limits.request_timeout_s, limits.max_url_length),
            # The missing-slash 301, its Location under the public prefix.
            urls.make_redirect_middleware(),
        ],
        client_max_size=64 * 1024,  # read-only server: no request needs a body
        # aiohttp answers an over-long request line itself, in plain text; let lines up to 4×
        # the limit through so the error middleware can refuse them with a JSON 414.
        handler_args={"max_line_size": 4 * limits.max_url_length, "max_field_size": 8190},
    )
    app[SETTINGS] = settings
    # One registry per app, so several apps (tests, workers) never share counters.
    app[REGISTRY] = CollectorRegistry()
    reqmetrics.install(app, app[REGISTRY])  # idrserve_http_* (summed over workers)
    app[STATE] = {"ready": False}  # /readyz reads it too, plus "draining" at shutdown
    app[ADMISSION] = admission
    app.on_response_prepare.append(make_on_prepare(settings.server.cors_origin))
    heads = ImageHeads(settings.server.cache_control, settings.server.cors_origin)
    if settings.server.direct_hits and url_index.max_entries > 0:
        # Read by http/server.py's connection handler (`start_server`).
        app[DIRECT_HITS] = DirectHits(
            url_index, lambda: app.get(DEPS), heads, app[reqmetrics.REQUEST_METRICS]
        )

    # idrserve_thread_cpu_seconds_total: the loop's CPU apart from the pool's (threadcpu.py),
    # exported per worker with the request counts.
    thread_cpu = ThreadCpu()
    app[reqmetrics.REQUEST_METRICS].thread_cpu = thread_cpu

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        thread_cpu.add_current("loop")  # the loop's own thread: lifecycle runs on it
        cpu_pool = make_cpu_pool(
            settings.server.cpu_threads, settings.server.cpu_thread_nice, thread_cpu
        )
        # Load the compiled render loops (≈ 0.5 s from numba's cache, longer the first time
        # ever) in the pool, while the server already answers: the first renders queue behind.
        cpu_pool.submit(kernels.warm)
        # Loaded in the background: /readyz says "loading", image requests get a 503 with
        # Retry-After until it is ready; nothing is read per request.
        catalog = Catalog(settings.source, wait_for_load=False)
        catalog.start()
        if catalog.loads_inline():
            # An index file opens in about a second even at IDR's scale, a small CSV sooner:
            # worth waiting for before listening, so the first requests find it loaded. No
            # shield: the timeout cancels only this wait, the load is the catalog's own task.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(catalog.wait_loaded(), INLINE_WAIT_S)
        app[REGISTRY].register(CatalogCollector(catalog))
        # HCS plates (docs/plates.md): their fields are located before the image catalog.
        plates = PlateCatalog(settings.source, catalog)
        source = build_source(settings, plates)  # Zarr, plus OMERO when configured
        for collector in getattr(source, "collectors", list)():
            app[REGISTRY].register(collector)  # idrserve_omero_* when OMERO is configured
        luts = LutTable(settings.source.lut_dir)
        cache = TieredCache(settings.cache, registry=app[REGISTRY])
        await cache.start()
        app[CATALOG] = catalog
        app[PLATES] = plates
        app[DEPS] = Deps(
            source=source,
            luts=luts,
            limits=limits,
            cpu_pool=cpu_pool,
            cache=cache,
            admission=admission,
            inline_pixels=settings.server.inline_pixels(),
            inline_turns=InlineTurns(
                settings.server.inline_renders_per_turn,
                settings.server.inline_turn_budget_ms / 1000,
            ),
        )
        app[STATE]["ready"] = True
        try:
            yield
        finally:
            app[STATE]["ready"] = False
            await cache.aclose()  # drains pending cache writes
            await source.aclose()
            await plates.aclose()
            await catalog.aclose()
            cpu_pool.shutdown(wait=False, cancel_futures=True)

    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(LoopLag(app[REGISTRY]).run)  # idrserve_event_loop_lag_seconds
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/", index, name="index")
    app.router.add_get("/metrics", metrics, name="metrics")
    webgateway.add_routes(app)
    iviewer.add_routes(app)
    iiif.add_routes(app)
    deepzoom.add_routes(app)
    plate_routes.add_routes(app)  # HCS plates (docs/plates.md); before the viewer's catch-all
    viewer.add_routes(app, lambda request, offset, limit: request.app[CATALOG].page(offset, limit))
    zarrstore.add_routes(app)
    api.add_routes(app)
    ops.add_routes(app)
    if settings.server.direct_renders:
        # Read by http/server.py's connection handler, like DIRECT_HITS.
        app[COLD_RENDERS] = ColdRenders(
            settings,
            lambda: app.get(DEPS),
            admission,
            url_index if url_index.max_entries > 0 else None,
            heads,
            (
                app.router.named_resources()["webgateway_render_image_region"],
                app.router.named_resources()["iiif"],
            ),
            app[reqmetrics.REQUEST_METRICS],
        )
    return app
