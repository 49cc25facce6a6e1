"""`/api/v1/`: image metadata in NGFF terms and raw pixel regions for notebooks.

`GET /api/v1/images/{id}` describes the image as the `/zarr/` view shows it (axes, shape and
chunks per level, dtype, physical sizes, channels and default windows, links).
`GET /api/v1/images/{id}/region?level=L&t=&c=&z=&y=&x=&format=npy|raw|tiff` returns exactly the
requested window, read through the source (`raw.py`), never a whole plane for a small window.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from idrserve.http import params
from idrserve.http.bodies import LARGE_BODY_BYTES, reserve_body
from idrserve.http.keys import DEPS, SETTINGS, TRACE
from idrserve.http.middleware import EXPOSE_HEADERS
from idrserve.http.responses import not_modified
from idrserve.http.trace import Trace
from idrserve.http.urls import link_cache_control, public_base
from idrserve.http.zarrstore import VIEWS
from idrserve.model import ImageMeta
from idrserve.ngffdocs import omero_block
from idrserve.raw import cached_region, parse_region_query, resolve_region
from idrserve.zarrview import ZarrView

ID = r"{iid:\d{1,19}}"
# A region's shape, dtype and axes travel in headers that browser code may read too.
EXPOSE_ARRAY_HEADERS = f"{EXPOSE_HEADERS}, X-Array-Shape, X-Array-Dtype, X-Array-Axes"


async def image_info(request: web.Request) -> web.Response:
    """Metadata a notebook needs to ask for regions or open the image lazily as Zarr."""
    deps = request.app[DEPS]
    iid = params.parse_path_int(request.match_info["iid"], "image_id")
    meta = await deps.source.meta(iid)
    view = await request.app[VIEWS].get(deps, iid, 2)
    base = public_base(request)
    return web.json_response(
        describe(meta, view, base, deps.limits.max_api_bytes),
        headers={"Cache-Control": link_cache_control(request, "no-cache")},
    )


def describe(meta: ImageMeta, view: ZarrView, base: str, max_bytes: int) -> dict[str, Any]:
    """The JSON of `image_info`: region axes are always t,c,z,y,x; chunks are the view's."""
    px, py, pz = meta.pixel_size
    levels = []
    for i, (lm, lv) in enumerate(zip(meta.levels, view.levels, strict=True)):
        chunks = dict.fromkeys("tczyx", 1) | dict(zip(view.axes, lv.chunks, strict=True))
        scale = dict.fromkeys("tczyx", 1.0) | dict(zip(view.axes, lv.scale, strict=True))
        levels.append(
            {
                "level": i,
                "path": str(i),
                "shape": [meta.size_t, meta.size_c, meta.size_z, lm.size_y, lm.size_x],
                "chunks": [chunks[a] for a in "tczyx"],
                "scale": [scale[a] for a in "tczyx"],
            }
        )
    zarr_url = f"{base}/zarr/{meta.image_id}.zarr"
    windows = [ch["window"] for ch in omero_block(meta)["channels"]]
    return {
        "id": meta.image_id,
        "name": meta.name,
        "description": meta.description,
        "source_format": meta.source_format,
        "dtype": meta.dtype,
        "axes": [
            {"name": "t", "type": "time"},
            {"name": "c", "type": "channel"},
            *(
                {"name": a, "type": "space", **({"unit": "micrometer"} if size else {})}
                for a, size in (("z", pz), ("y", py), ("x", px))
            ),
        ],
        "physical_size": {"x": px, "y": py, "z": pz, "unit": "micrometer"},
        "levels": levels,
        "channels": [
            {
                "index": c,
                "label": ch.label,
                "color": "{:02X}{:02X}{:02X}".format(*ch.color[:3]),
                "active": ch.active,
                "window": windows[c],  # non-finite values as null, as in the Zarr view
            }
            for c, ch in enumerate(meta.channels)
        ],
        "default_z": meta.default_z,
        "default_t": meta.default_t,
        "zarr": {
            "ngff_0.4": zarr_url,
            "ngff_0.5": f"{base}/zarr/v3/{meta.image_id}.zarr",
            "axes": list(view.axes),
            "layout": "stored" if view.passthrough else "generated",
        },
        "region": {
            "url": f"{base}/api/v1/images/{meta.image_id}/region",
            "parameters": "level, t, c, z, y, x (index or start:stop), format=npy|raw|tiff",
            "max_bytes": max_bytes,
        },
    }


async def region(request: web.Request) -> web.StreamResponse:
    """Raw pixels of one window, as `.npy`, raw little-endian bytes or TIFF."""
    deps = request.app[DEPS]
    cache_control = request.app[SETTINGS].server.cache_control
    iid = params.parse_path_int(request.match_info["iid"], "image_id")
    query = parse_region_query(request.query)
    meta = await deps.source.meta(iid)
    req = resolve_region(query, meta, deps.limits.max_api_bytes)
    key = req.key()
    early = not_modified(request, key, cache_control)
    if early is not None:
        return early
    if req.nbytes > LARGE_BODY_BYTES:
        # Charged before any pixel is read, so an over-budget request costs nothing: twice
        # the size while the decoded array and the encoded body coexist, then the body's own
        # size until it is written (http/bodies.py).
        reserve_body(request, deps.admission, 2 * req.nbytes)
    out = await cached_region(req, deps, key)
    request[TRACE] = Trace(out.tier)
    headers = {
        "ETag": f'"{key}"',
        "Cache-Control": cache_control,
        "X-Cache": out.tier,
        "X-Array-Shape": ",".join(map(str, req.out_shape)),
        "X-Array-Dtype": req.out_dtype,
        "X-Array-Axes": ",".join(req.out_axes),
        "Access-Control-Expose-Headers": EXPOSE_ARRAY_HEADERS,
    }
    return web.Response(body=out.body, content_type=out.media_type, headers=headers)


def add_routes(app: web.Application) -> None:
    """Register the JSON + raw API (GET and HEAD)."""
    app.router.add_get(f"/api/v1/images/{ID}", image_info, name="api_image")
    app.router.add_get(f"/api/v1/images/{ID}/region", region, name="api_region")
