"""OMERO.web `webgateway` (and `webclient` alias) rendering URLs, answered from our sources.

Handlers stay thin: parse with `http.params`, resolve settings with `render.settings`, run the
pipeline in `service`, build the response here. Path grammar follows OMERO.web's Django
routes: digits only for ids, z and t (anything else is no route, so 404), trailing slash
required (a missing one is answered with a 301 by `normalize_path_middleware`).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from idrserve import __version__
from idrserve.encode import encode
from idrserve.errors import IdrServeError, NotFound
from idrserve.http import params
from idrserve.http.imgdata import image_data, select_key
from idrserve.http.keys import DEPS, SETTINGS
from idrserve.http.middleware import answer_options, log_error
from idrserve.http.plan import (
    Output,
    PlaneAsk,
    RegionAsk,
    ThumbnailAsk,
    check_thumbnail_size,
    plan_thumbnail,
    plan_webgateway_plane,
    plan_webgateway_region,
)
from idrserve.http.plates import annotate_image_data
from idrserve.http.responses import json_or_jsonp, respond_rendered
from idrserve.lru import BoundedLRU
from idrserve.model import Format, ImageMeta, RegionRequest
from idrserve.render.lut import luts_json
from idrserve.service import Deps, Rendered, cache_key, cached_render
from idrserve.settings import LimitSettings, Settings

ID = r"{iid:\d{1,19}}"
Z = r"{z:\d{1,9}}"
T = r"{t:\d{1,9}}"
SIZE = r"{w:\d{1,9}}"
SHARE = r"{share:\d{1,19}}"


@dataclass(frozen=True, slots=True)
class _Ctx:
    deps: Deps
    settings: Settings

    @property
    def cache_control(self) -> str:
        return self.settings.server.cache_control


def _ctx(request: web.Request) -> _Ctx:
    return _Ctx(request.app[DEPS], request.app[SETTINGS])


def _path_int(request: web.Request, name: str) -> int:
    return params.parse_path_int(request.match_info[name], name)


def _opt_path_int(request: web.Request, name: str) -> int | None:
    value = request.match_info.get(name)
    return None if value is None else params.parse_path_int(value, name)


def _output(request: web.Request, limits: LimitSettings) -> Output:
    strict = (request.match_info.route.name or "").endswith("_rdef")  # _rdef: validated settings
    return output_from_query(request.query, limits, strict)


# The query parameters `output_from_query` reads (each by its last value, `params.last`).
OUTPUT_PARAMS = ("c", "maps", "m", "flip", "format", "q")
# Outputs already parsed, by those parameters' texts and the limits they were checked with. A
# viewer asks for every tile of an image with the same `c`, `maps` and `m`, and parsing them
# cost about 20 µs a tile (OMERO.iviewer's query, `python bench/bench_plan.py`),
# against about 2 µs to look them up. A refused query is never kept.
OUTPUTS_KEPT = 256
_OUTPUTS: BoundedLRU[tuple[object, ...], Output] = BoundedLRU(OUTPUTS_KEPT)


def output_from_query(query: Mapping[str, str], limits: LimitSettings, strict: bool) -> Output:
    """The output part of a rendering URL; also what http/coldpath.py plans a tile with."""
    key = (
        strict,
        limits.max_active_channels,
        limits.default_jpeg_quality,
        *[params.last(query, name) for name in OUTPUT_PARAMS],
    )
    return _OUTPUTS.get_or_make(key, parse_output, query, limits, strict)  # a 400: not kept


def parse_output(query: Mapping[str, str], limits: LimitSettings, strict: bool) -> Output:
    """`output_from_query` without its memo."""
    flip_h, flip_v = params.parse_flip(query)
    return Output(
        params.parse_render_overrides(
            query, max_active_channels=limits.max_active_channels, strict=strict
        ),
        flip_h,
        flip_v,
        params.parse_format(query),
        params.parse_quality(query, limits.default_jpeg_quality),
    )


# --- render_image_region --------------------------------------------------------------------


async def render_image_region(request: web.Request) -> web.StreamResponse:
    """Tiles (`tile=`) and regions (`region=`) of one plane; projection is ignored, as on web."""
    ctx = _ctx(request)
    iid, z, t = _path_int(request, "iid"), _path_int(request, "z"), _path_int(request, "t")
    output = _output(request, ctx.deps.limits)
    meta = await ctx.deps.source.meta(iid)
    query = request.query
    ask = RegionAsk(iid, z, t, query.get("tile"), query.get("region"), output)
    req = plan_webgateway_region(ask, meta, ctx.deps.limits)
    return await respond_rendered(request, req, meta)


# --- render_image -----------------------------------------------------------------------------


async def render_image(request: web.Request) -> web.StreamResponse:
    """A whole plane at full resolution, with `p=` projections honoured as on web."""
    ctx = _ctx(request)
    iid = _path_int(request, "iid")
    download = (request.match_info.route.name or "").startswith("webclient_render_image_download")
    output = _output(request, ctx.deps.limits)
    meta = await ctx.deps.source.meta(iid)
    ask = PlaneAsk(
        iid,
        _opt_path_int(request, "z"),
        _opt_path_int(request, "t"),
        request.query.get("p"),
        output,
    )
    req = plan_webgateway_plane(ask, meta, ctx.deps.limits)
    response = await respond_rendered(request, req, meta)
    if download and response.status == 200:
        ext = {Format.JPEG: "jpg", Format.PNG: "png", Format.TIFF: "tif"}[output.fmt]
        response.headers["Content-Disposition"] = f'attachment; filename="{iid}.{ext}"'
    return response


# --- thumbnails -------------------------------------------------------------------------------


async def _thumbnail(ctx: _Ctx, ask: ThumbnailAsk) -> tuple[RegionRequest, ImageMeta]:
    check_thumbnail_size(ask, ctx.deps.limits)  # a bad size is a 400 before a 404
    meta = await ctx.deps.source.meta(ask.image_id)
    return plan_thumbnail(ask, meta, ctx.deps.limits), meta


async def _thumbnail_rendered(ctx: _Ctx, ask: ThumbnailAsk) -> Rendered:
    req, meta = await _thumbnail(ctx, ask)
    key, _generation = await cache_key(req, ctx.deps)
    return await cached_render(req, meta, ctx.deps, key)


async def render_thumbnail(request: web.Request) -> web.StreamResponse:
    """Saved settings only (`c`, `m`, `p` are ignored, as on web); `z`/`t` query honoured."""
    ctx = _ctx(request)
    iid = _path_int(request, "iid")
    w = _opt_path_int(request, "w")
    h = _opt_path_int(request, "h")
    if w is None and "size" in request.match_info:
        w = _path_int(request, "size")
    z, t = params.parse_thumbnail_query(request.query)
    placeholder = (request.match_info.route.name or "").startswith("webclient_thumb")
    try:
        req, meta = await _thumbnail(ctx, ThumbnailAsk(iid, w, h, z, t))
        return await respond_rendered(request, req, meta)
    except NotFound as exc:
        if not placeholder:
            raise
        log_error(request, exc)  # answered with a picture: the log is the only trace
    # webclient's thumbnail views answer failures with a placeholder image (a PNG that
    # OMERO.web labels image/jpeg; browsers sniff it), never an error.
    side = w or ctx.deps.limits.default_thumbnail_size
    return web.Response(
        body=placeholder_png(side, h or side),
        content_type="image/jpeg",
        headers={"Cache-Control": "no-cache"},
    )


def placeholder_png(width: int, height: int) -> bytes:
    import numpy as np

    rgb = np.full((max(1, height), max(1, width), 3), 200, dtype=np.uint8)
    return encode(rgb, Format.PNG, 1.0)


async def get_thumbnails(request: web.Request) -> web.StreamResponse:
    """Batch JSON: image id → data URI, or null for images that cannot be rendered."""
    ctx = _ctx(request)
    callback = params.parse_callback(request.query.get("callback"))
    ids = params.parse_ids(request.query.getall("id", []), ctx.deps.limits.max_batch_thumbnails)
    w = _opt_path_int(request, "w")

    async def one(iid: int) -> str | None:
        try:
            rendered = await _thumbnail_rendered(ctx, ThumbnailAsk(iid, w))
        except IdrServeError as exc:
            log_error(request, exc)  # the batch answers null: the log is the only trace
            return None
        return "data:image/jpeg;base64," + base64.b64encode(rendered.body).decode()

    results = await asyncio.gather(*(one(i) for i in ids))
    data = {str(i): r for i, r in zip(ids, results, strict=True)}
    return json_or_jsonp(data, callback)


async def get_thumbnail(request: web.Request) -> web.StreamResponse:
    """One thumbnail as a JSON string holding a data URI."""
    ctx = _ctx(request)
    callback = params.parse_callback(request.query.get("callback"))
    iid = _path_int(request, "iid")
    ask = ThumbnailAsk(iid, _opt_path_int(request, "w"), _opt_path_int(request, "h"))
    rendered = await _thumbnail_rendered(ctx, ask)
    uri = "data:image/jpeg;base64," + base64.b64encode(rendered.body).decode()
    return json_or_jsonp(uri, callback)


# --- metadata ---------------------------------------------------------------------------------


async def img_data(request: web.Request) -> web.StreamResponse:
    ctx = _ctx(request)
    callback = params.parse_callback(request.query.get("callback"))
    iid = _path_int(request, "iid")
    meta = await ctx.deps.source.meta(iid)
    data: Any = image_data(meta, ctx.settings.viewer)
    await annotate_image_data(request, iid, data)  # a plate field's well (docs/plates.md)
    key = request.match_info.get("key")
    if key is not None:
        data = select_key(data, key)
    return json_or_jsonp(data, callback)


async def luts(request: web.Request) -> web.StreamResponse:
    return json_or_jsonp(luts_json(_ctx(request).deps.luts), None)


async def ms_options(request: web.Request) -> web.StreamResponse:
    """The omero-ms-image-region feature probe iviewer sends to learn maxActiveChannels.

    As OPTIONS it doubles as the CORS preflight of every webgateway path (the microservice
    answers `OPTIONS *`), with the same headers as every other route family's."""
    ctx = _ctx(request)
    limits = ctx.deps.limits
    side = int(limits.max_region_pixels**0.5)
    response = json_or_jsonp(
        {
            "provider": "idrserve",
            "version": __version__,
            "features": ["flip", "png-tiles", "quantization", "support-missing-channels"],
            "options": {
                "maxTileLength": limits.max_tile_length,
                "maxPlaneWidth": side,
                "maxPlaneHeight": side,
                "maxActiveChannels": limits.max_active_channels,
                "cacheControl": ctx.cache_control,
            },
        },
        None,
    )
    if request.method == "OPTIONS":
        return answer_options(request, response)
    return response


# --- routing ----------------------------------------------------------------------------------


def add_routes(app: web.Application) -> None:
    """Register every webgateway URL shape and its webclient aliases.

    The list: docs/webgateway.md#routes and #webclient-aliases.
    """
    add = app.router.add_get
    plane_tails = (("", "0"), (f"{Z}/", "1"), (f"{Z}/{T}/", "2"))
    h = r"{h:\d{1,9}}"
    for suffix in ("", "_rdef"):
        add(
            f"/webgateway/render_image_region{suffix}/{ID}/{Z}/{T}/",
            render_image_region,
            name=f"webgateway_render_image_region{suffix}",
        )
        for tail, n in plane_tails:
            add(
                f"/webgateway/render_image{suffix}/{ID}/{tail}",
                render_image,
                name=f"webgateway_render_image{n}{suffix}",
            )
    add(f"/webgateway/render_thumbnail/{ID}/", render_thumbnail, name="webgateway_thumb0")
    add(f"/webgateway/render_thumbnail/{ID}/{SIZE}/", render_thumbnail, name="webgateway_thumb1")
    add(
        f"/webgateway/render_thumbnail/{ID}/{SIZE}/{h}/", render_thumbnail, name="webgateway_thumb2"
    )
    add(f"/webgateway/render_birds_eye_view/{ID}/", render_thumbnail, name="webgateway_bev0")
    add(
        f"/webgateway/render_birds_eye_view/{ID}/{{size:\\d{{1,9}}}}/",
        render_thumbnail,
        name="webgateway_bev1",
    )
    add("/webgateway/get_thumbnails/", get_thumbnails, name="webgateway_get_thumbnails0")
    add(f"/webgateway/get_thumbnails/{SIZE}/", get_thumbnails, name="webgateway_get_thumbnails1")
    add(f"/webgateway/get_thumbnail/{ID}/", get_thumbnail, name="webgateway_get_thumbnail0")
    add(f"/webgateway/get_thumbnail/{ID}/{SIZE}/", get_thumbnail, name="webgateway_get_thumbnail1")
    add(
        f"/webgateway/get_thumbnail/{ID}/{SIZE}/{h}/",
        get_thumbnail,
        name="webgateway_get_thumbnail2",
    )
    add(f"/webgateway/imgData/{ID}/", img_data, name="webgateway_imgdata")
    add(f"/webgateway/imgData/{ID}/{{key:[^/]{{1,200}}}}/", img_data, name="webgateway_imgdata_key")
    add("/webgateway/luts/", luts, name="webgateway_luts")
    # webclient aliases: an optional share id segment, which public data ignores.
    for share, n in (("", ""), (f"{SHARE}/", "_share")):
        add(
            f"/webclient/{share}render_image_region/{ID}/{Z}/{T}/",
            render_image_region,
            name=f"webclient_render_image_region{n}",
        )
        for tail, m in plane_tails:
            add(
                f"/webclient/{share}render_image/{ID}/{tail}",
                render_image,
                name=f"webclient_render_image{m}{n}",
            )
            add(
                f"/webclient/{share}render_image_download/{ID}/{tail}",
                render_image,
                name=f"webclient_render_image_download{m}{n}",
            )
        add(
            f"/webclient/{share}render_birds_eye_view/{ID}/",
            render_thumbnail,
            name=f"webclient_bev0{n}",
        )
        add(
            f"/webclient/{share}render_birds_eye_view/{ID}/{{size:\\d{{1,9}}}}/",
            render_thumbnail,
            name=f"webclient_bev1{n}",
        )
        add(f"/webclient/{share}imgData/{ID}/", img_data, name=f"webclient_imgdata{n}")
        add(
            f"/webclient/render_thumbnail/{ID}/{share}",
            render_thumbnail,
            name=f"webclient_thumb{n}",
        )
        add(
            f"/webclient/render_thumbnail/size/{{size:\\d{{1,9}}}}/{ID}/{share}",
            render_thumbnail,
            name=f"webclient_thumb_size{n}",
        )
        add(
            f"/webclient/get_thumbnails/{share}",
            get_thumbnails,
            name=f"webclient_get_thumbnails{n}",
        )
        add(
            f"/webclient/get_thumbnail/{ID}/{share}",
            get_thumbnail,
            name=f"webclient_get_thumbnail{n}",
        )
    app.router.add_route("OPTIONS", "/omero_ms_image_region/", ms_options, name="ms_options")
    # OPTIONS on every other /webgateway/ path gets the same answer (the microservice
    # answers `OPTIONS *`): served by http/ops.py's middleware, because a catch-all OPTIONS
    # route would turn every unknown /webgateway/ GET into a 405 instead of a 404 (and stop
    # the missing-slash 301).
    add("/omero_ms_image_region/", ms_options, name="ms_options_get")
