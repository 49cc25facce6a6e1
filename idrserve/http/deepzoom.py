"""DeepZoom (DZI) for OpenSeadragon: `/deepzoom/{id}.dzi` and its `_files/` tiles.

DeepZoom numbers levels from a 1×1 image (level 0) up to full resolution (level N =
⌈log2(max(W, H))⌉); level L is ⌈W / 2^(N−L)⌉ × ⌈H / 2^(N−L)⌉. Tiles are square, TileSize
the stored chunk size (as in IIIF's info.json), Overlap 0, so tiles of stored levels fall on
chunk boundaries. Levels the pyramid does not store are area-averaged from raw values
(`pyramid.plan_region`), exactly as for IIIF.

Rendering settings travel in the descriptor's query string with webgateway's names (`c`, `m`,
`z`, `t`, `p`, `q`, `maps`): OpenSeadragon appends the descriptor's query string to every tile
URL, so `…/1001.dzi?c=1|0:255$FF0000&m=c` renders every tile that way.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from idrserve.errors import BadRequest
from idrserve.http import params
from idrserve.http.iiif_params import Identifier
from idrserve.http.keys import DEPS, SETTINGS
from idrserve.http.plan import DeepZoomAsk, identifier_plane, plan_deepzoom_tile, tile_size
from idrserve.http.responses import respond_rendered
from idrserve.model import Format
from idrserve.service import Deps

NAMESPACE = "http://schemas.microsoft.com/deepzoom/2008"
_EXTENSIONS = {
    "jpeg": Format.JPEG,
    "jpg": Format.JPEG,
    "png": Format.PNG,
    "tif": Format.TIFF,
    "webp": Format.WEBP,
}
_DZI_FORMAT = {Format.JPEG: "jpeg", Format.PNG: "png", Format.TIFF: "tif", Format.WEBP: "webp"}


def _identifier(iid: int, query: Mapping[str, str], deps: Deps) -> Identifier:
    overrides = params.parse_render_overrides(
        query, max_active_channels=deps.limits.max_active_channels
    )
    z, t = params.parse_thumbnail_query(query)
    quality = params.parse_quality(query, deps.limits.default_jpeg_quality)
    return Identifier(iid, z, t, overrides, query.get("p"), quality)


def _image_id(text: str) -> int:
    return params.parse_path_int(text, "id")


async def descriptor(request: web.Request) -> web.Response:
    """The DZI XML: TileSize, Overlap 0, Format (from `format=`, default jpeg), Size."""
    deps = request.app[DEPS]
    iid = _image_id(request.match_info["iid"])
    fmt = params.parse_format(request.query)
    ident = _identifier(iid, request.query, deps)
    meta = await deps.source.meta(iid)
    identifier_plane(ident, meta)  # 404 for a plane the query names but the image lacks
    tile = tile_size(meta, deps.limits)[0]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Image xmlns="{NAMESPACE}" TileSize="{tile}" Overlap="0" Format="{_DZI_FORMAT[fmt]}">'
        f'<Size Width="{meta.size_x}" Height="{meta.size_y}"/></Image>\n'
    )
    return web.Response(
        text=body,
        content_type="application/xml",
        headers={"Cache-Control": request.app[SETTINGS].server.cache_control},
    )


async def tile(request: web.Request) -> web.StreamResponse:
    """One tile: `{id}_files/{level}/{col}_{row}.{jpeg|jpg|png|tif|webp}`."""
    deps = request.app[DEPS]
    info = request.match_info
    iid = _image_id(info["iid"])
    level = params.parse_path_int(info["level"], "level")
    col = params.parse_path_int(info["col"], "col")
    row = params.parse_path_int(info["row"], "row")
    fmt = _EXTENSIONS.get(info["ext"])
    if fmt is None:
        raise BadRequest(
            f"tile format {info['ext'][:16]!r}: expected one of {', '.join(_EXTENSIONS)}",
            param="format",
        )
    ident = _identifier(iid, request.query, deps)
    meta = await deps.source.meta(iid)
    req = plan_deepzoom_tile(DeepZoomAsk(ident, level, col, row, fmt), meta, deps.limits)
    return await respond_rendered(request, req, meta)


def add_routes(app: web.Application) -> None:
    """The descriptor and the tiles (GET and HEAD); CORS, OPTIONS included, comes from the
    middleware (`middleware.answer_options`)."""
    iid = r"{iid:\d{1,19}}"
    dzi = f"/deepzoom/{iid}.dzi"
    tiles = (
        f"/deepzoom/{iid}_files/{{level:\\d{{1,3}}}}/{{col:\\d{{1,9}}}}_{{row:\\d{{1,9}}}}"
        r".{ext:[A-Za-z]{1,8}}"
    )
    app.router.add_get(dzi, descriptor, name="deepzoom_dzi")
    app.router.add_get(tiles, tile, name="deepzoom_tile")
