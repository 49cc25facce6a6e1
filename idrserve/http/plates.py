"""HCS plates over HTTP: OMERO.web's plate grid and well list, and `/api/v1/plates/{id}`.

The JSON itself is built in `http/plategrid.py`; the plate comes from the `PlateCatalog`
(parsed once, kept for `source.rescan_interval_s`), and a built grid document is kept in a
small LRU, so a repeated grid costs a dictionary lookup and a JSON dump. The thumbnails the
grid names are ordinary webgateway thumbnails of the field images (cached like any other).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from idrserve.errors import BadRequest, IdrServeError, NotFound
from idrserve.http import params, plategrid
from idrserve.http.keys import DEPS, PLATES
from idrserve.http.responses import json_or_jsonp
from idrserve.http.urls import link_cache_control, public_base, public_prefix
from idrserve.lru import BoundedLRU
from idrserve.sources.plate import Plate

PID = r"{pid:\d{1,19}}"
FIELD = r"{field:\d{1,4}}"
ACQ = r"{acq:\d{1,19}}"
GRIDS = web.AppKey("plate_grids", BoundedLRU)
MAX_GRIDS = 512
MAX_SIZE_PARAM = 4096


async def load_plate(request: web.Request, pid: int) -> Plate:
    return await request.app[PLATES].plate(pid)


def _size(request: web.Request) -> int | None:
    raw = request.query.get("size")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_SIZE_PARAM:
        raise BadRequest(f"size must be an integer 1..{MAX_SIZE_PARAM}", param="size")
    return int(raw)


def _layout(request: web.Request) -> str:
    layout = request.query.get("layout", plategrid.DEFAULT_LAYOUT)
    if layout not in plategrid.LAYOUTS:
        raise BadRequest("layout must be expand, shrink or trim", param="layout")
    return layout


def thumb_url_maker(request: web.Request, size: int | None) -> Any:
    prefix = public_prefix(request)
    tail = "" if size is None else f"{size}/"

    def url(image_id: int) -> str:
        return f"{prefix}/webgateway/render_thumbnail/{image_id}/{tail}"

    return url


async def _image_sizes(request: web.Request, first: int | None) -> list[dict[str, int]]:
    """The size of the first field, as OMERO.web adds it to help page layout; a field whose
    metadata cannot be read gives none (the grid still answers)."""
    if first is None:
        return []
    try:
        meta = await request.app[DEPS].source.meta(first)
    except IdrServeError:
        return []
    return [{"x": meta.size_x, "y": meta.size_y, "image_id": first}]


async def plate_grid(request: web.Request) -> web.StreamResponse:
    """`/webgateway/plate/{id}/[{field}/[{acquisition}/]]`: the well grid of one field."""
    callback = params.parse_callback(request.query.get("callback"))
    pid = params.parse_path_int(request.match_info["pid"], "plate_id")
    field = int(request.match_info.get("field", "0"))
    acq_raw = request.match_info.get("acq")
    acquisition = None if acq_raw is None else params.parse_path_int(acq_raw, "acquisition")
    size, layout = _size(request), _layout(request)
    plate = await load_plate(request, pid)
    if acquisition is not None and all(a.id != acquisition for a in plate.acquisitions):
        raise NotFound(f"plate {pid} has no acquisition {acquisition}", param="acquisition")
    key = (plate.serial, pid, field, acquisition, size, layout, public_prefix(request))
    grids = request.app[GRIDS]
    text = grids.get(key)
    if text is None:
        doc, first = plategrid.grid(
            plate, field, acquisition, layout, thumb_url_maker(request, size)
        )
        doc["image_sizes"] = await _image_sizes(request, first)
        # Kept serialised: a 384-well grid is ~100 kB of JSON, and dumping it was most of a
        # warm request (bench/bench_plate.py).
        text = json.dumps(doc, separators=(", ", ": "), allow_nan=False)
        grids.put(key, text)
    headers = {"Cache-Control": link_cache_control(request, "no-cache")}
    if callback:
        return web.Response(
            text=f"{callback}({text})", content_type="application/javascript", headers=headers
        )
    return web.Response(text=text, content_type="application/json", headers=headers)


async def well_children(request: web.Request) -> web.StreamResponse:
    """`/webgateway/well/{id}/children/`: every field image of one well (`?run=` filters)."""
    callback = params.parse_callback(request.query.get("callback"))
    wid = params.parse_path_int(request.match_info["wid"], "well_id")
    run = request.query.get("run")
    acquisition = None
    if run is not None and run != "":
        if not run.isdigit() or len(run) > 19:
            raise BadRequest("run must be an acquisition id (an integer)", param="run")
        acquisition = int(run)
    where = plategrid.decode_well_id(wid)
    if where is None:
        raise NotFound(f"well {wid} not found", param="well_id")
    try:
        plate = await load_plate(request, where[0])
    except NotFound:
        raise NotFound(f"well {wid} not found", param="well_id") from None
    well = plate.well_at(where[1], where[2])
    if well is None:
        raise NotFound(f"well {wid} not found", param="well_id")
    body = plategrid.well_images(plate, well, acquisition, thumb_url_maker(request, None))
    return json_or_jsonp(body, callback, link_cache_control(request, "no-cache"))


async def annotate_image_data(request: web.Request, image_id: int, data: dict[str, Any]) -> None:
    """Fill imgData's well fields when `image_id` is a plate field (see `field_meta`)."""
    info = await request.app[PLATES].field(image_id)
    if info is None:
        return
    extra = plategrid.field_meta(info.plate, info.row, info.column, info.index)
    meta = data["meta"]
    meta["wellId"] = extra["wellId"]
    meta["wellSampleId"] = extra["wellSampleId"]
    meta["imageName"] = extra["imageName"]
    data["plate"] = extra["plate"]


def describe(request: web.Request, plate: Plate) -> dict[str, Any]:
    """`/api/v1/plates/{id}`: rows, columns, acquisitions, and every well with its fields."""
    base = public_base(request)
    wells = []
    for w in plate.wells:
        fields = []
        for index, ref in enumerate(w.fields or ()):
            image_id = plate.image_ids.get((w.row, w.column, index))
            fields.append(
                {
                    "index": index,
                    "path": f"{w.path}/{ref.path}",
                    "acquisition": ref.acquisition,
                    "image_id": image_id,
                    "imgData": None
                    if image_id is None
                    else f"{base}/webgateway/imgData/{image_id}/",
                }
            )
        wells.append(
            {
                "path": w.path,
                "row": w.row,
                "column": w.column,
                "name": plate.well_label(w.row, w.column),
                "wellId": plategrid.well_id(plate, w),
                "fields": fields,
                **({"problem": w.problem} if w.problem else {}),
            }
        )
    return {
        "id": plate.plate_id,
        "name": plate.name,
        "ngff": plate.version,
        "zarr_format": plate.zarr_format,
        "rows": list(plate.rows),
        "columns": list(plate.columns),
        "field_count": max((len(w.fields or ()) for w in plate.wells), default=0),
        "acquisitions": [
            {"id": a.id, "name": a.name, "description": a.description, "starttime": a.starttime}
            for a in plate.acquisitions
        ],
        "image_ids": "mapped" if plate.explicit_ids else "scheme",
        "wells": wells,
        "problems": plate.problems[:100],
        "links": {
            "grid": f"{base}/webgateway/plate/{plate.plate_id}/",
            "zarr": f"{base}/zarr/plates/{plate.plate_id}.zarr/",
            "viewer": f"{base}/viewer/plate/{plate.plate_id}",
        },
    }


async def api_plate(request: web.Request) -> web.StreamResponse:
    pid = params.parse_path_int(request.match_info["pid"], "plate_id")
    plate = await load_plate(request, pid)
    return json_or_jsonp(describe(request, plate), None, link_cache_control(request, "no-cache"))


def add_routes(app: web.Application) -> None:
    app[GRIDS] = BoundedLRU(MAX_GRIDS)
    add = app.router.add_get
    add(f"/webgateway/plate/{PID}/", plate_grid, name="webgateway_plategrid0")
    add(f"/webgateway/plate/{PID}/{FIELD}/", plate_grid, name="webgateway_plategrid1")
    add(f"/webgateway/plate/{PID}/{FIELD}/{ACQ}/", plate_grid, name="webgateway_plategrid2")
    add(r"/webgateway/well/{wid:\d{1,19}}/children/", well_children, name="webgateway_wellchildren")
    add(f"/api/v1/plates/{PID}", api_plate, name="api_plate")
