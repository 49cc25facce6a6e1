"""OMERO.iviewer's own boot endpoints, answered from our sources instead of OMERO.web.

The documents are built in `http/iviewer_data.py`; which URL gives what, and how it differs
from OMERO.web: docs/iviewer.md. Path grammar follows the Django routes (digits-only ids,
trailing slash, a missing one answered with the 301 of `urls.make_redirect_middleware`).
"""

from __future__ import annotations

from functools import partial

from aiohttp import web

from idrserve.encode import encode_png_rgba
from idrserve.http import params
from idrserve.http.histograms import HistogramAsk, plan_histogram
from idrserve.http.iviewer_data import image_rdefs, iviewer_image_data
from idrserve.http.keys import DEPS, MEMO_INFO, SETTINGS, TRACE
from idrserve.http.responses import etag_for, image_response, json_or_jsonp, not_modified
from idrserve.http.trace import Trace, UrlMemo
from idrserve.render.lut import LutTable, lut_sprite
from idrserve.service import cache_key, cached_histogram, in_pool, render_slot

ID = r"{iid:\d{1,19}}"

# The ids `webclient/api/paths_to_object/` reads as integers (a bad one is web's 400).
PATH_QUERY_IDS = (
    "experimenter",
    "project",
    "dataset",
    "image",
    "screen",
    "plate",
    "run",
    "acquisition",
    "tag",
    "tagset",
    "roi",
    "shape",
    "group",
    "page_size",
)


async def image_data(request: web.Request) -> web.StreamResponse:
    """`/iviewer/image_data/<id>/`: imgData's marshal plus ROI count, units and families."""
    iid = params.parse_path_int(request.match_info["iid"], "image_id")
    meta = await request.app[DEPS].source.meta(iid)
    return json_or_jsonp(iviewer_image_data(meta), None)


async def delta_t(request: web.Request) -> web.StreamResponse:
    """`/iviewer/image_data/<id>/delta_t/`: per-timepoint plane times. OME-Zarr and TIFF
    record none per plane (NGFF's t scale is a nominal interval, not a measured time), so the
    answer is what iviewer's view gives an image without PlaneInfo timings."""
    iid = params.parse_path_int(request.match_info["iid"], "image_id")
    await request.app[DEPS].source.meta(iid)  # 404 for an unknown image
    return json_or_jsonp({"delta_t": [], "delta_t_unit_symbol": None}, None)


async def histogram_json(request: web.Request) -> web.StreamResponse:
    """`/webgateway/histogram_json/<id>/channel/<c>/?theZ=&theT=&bins=`: one channel's counts.

    Cached like a rendered tile (tiers, single flight, ETag, the fast path's URL index).
    """
    deps = request.app[DEPS]
    cache_control = request.app[SETTINGS].server.cache_control
    iid = params.parse_path_int(request.match_info["iid"], "image_id")
    c = params.parse_path_int(request.match_info["c"], "c")
    z, t, bins = params.parse_histogram_query(request.query)
    meta = await deps.source.meta(iid)
    req = plan_histogram(HistogramAsk(iid, c, z, t, bins), meta, deps.limits)
    key, generation = await cache_key(req, deps)
    request[MEMO_INFO] = UrlMemo(key, iid, meta.data_version, generation)
    early = not_modified(request, key, cache_control)
    if early is not None:
        return early
    out = await cached_histogram(req, deps, key)
    trace = request[TRACE] = Trace(out.tier, out.timings)
    return image_response(out.body, out.media_type, key, cache_control, trace)


def lut_sprite_png(table: LutTable) -> bytes:
    """The LUT sprite, encoded (one CPU-pool job)."""
    return encode_png_rgba(lut_sprite(table))


async def luts_png(request: web.Request) -> web.StreamResponse:
    """`/webgateway/luts_png/`: every LUT as a 10-pixel band, in `/webgateway/luts/` order.

    Revalidated on every use (`no-cache` + ETag): the sprite's rows must stay in step with
    the listing, which is not cached either.
    """
    deps = request.app[DEPS]
    tag = deps.luts.digest
    early = not_modified(request, tag, "no-cache")
    if early is not None:
        return early
    with render_slot(deps):
        body = await in_pool(deps.cpu_pool, partial(lut_sprite_png, deps.luts))
    headers = {"ETag": etag_for(tag), "Cache-Control": "no-cache"}
    return web.Response(body=body, content_type="image/png", headers=headers)


async def image_rdef(request: web.Request) -> web.StreamResponse:
    """`/webgateway/getImgRDef/`: the settings copied in this session; never any here."""
    callback = params.parse_callback(request.query.get("callback"))
    return json_or_jsonp({"rdef": None}, callback)


async def image_rdefs_json(request: web.Request) -> web.StreamResponse:
    """`/webgateway/get_image_rdefs_json/<id>/`: the image's saved rendering definitions."""
    callback = params.parse_callback(request.query.get("callback"))
    iid = params.parse_path_int(request.match_info["iid"], "image_id")
    meta = await request.app[DEPS].source.meta(iid)
    return json_or_jsonp({"rdefs": image_rdefs(meta)}, callback)


async def open_with(request: web.Request) -> web.StreamResponse:
    """`/webgateway/open_with/`: the "Open with" viewers; none are offered here."""
    callback = params.parse_callback(request.query.get("callback"))
    return json_or_jsonp({"open_with_options": []}, callback)


async def paths_to_object(request: web.Request) -> web.StreamResponse:
    """`/webclient/api/paths_to_object/`: containers above an object; none are known here."""
    for name in PATH_QUERY_IDS:
        params.parse_optional_int(request.query, name)
    return json_or_jsonp({"paths": []}, None)


def add_routes(app: web.Application) -> None:
    """Register iviewer's boot URLs (docs/iviewer.md#what-iviewer-asks-for)."""
    add = app.router.add_get
    add(f"/iviewer/image_data/{ID}/", image_data, name="iviewer_image_data")
    add(f"/iviewer/image_data/{ID}/delta_t/", delta_t, name="iviewer_delta_t")
    add("/webgateway/luts_png/", luts_png, name="webgateway_luts_png")
    add(
        f"/webgateway/histogram_json/{ID}/channel/{{c:\\d{{1,9}}}}/",
        histogram_json,
        name="webgateway_histogram_json",
    )
    add("/webgateway/getImgRDef/", image_rdef, name="webgateway_get_image_rdef")
    add(f"/webgateway/get_image_rdefs_json/{ID}/", image_rdefs_json, name="webgateway_rdefs")
    add("/webgateway/open_with/", open_with, name="webgateway_open_with")
    add("/webclient/api/paths_to_object/", paths_to_object, name="webclient_paths_to_object")
