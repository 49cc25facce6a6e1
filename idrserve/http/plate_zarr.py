"""`/zarr/plates/{id}.zarr/` (NGFF 0.4, Zarr v2) and `/zarr/v3/plates/{id}.zarr/` (NGFF 0.5):
a plate as an HCS store that ome-zarr-py, napari-ome-zarr and zarr-python open as a plate.

The plate, row and well groups are this view's own: a plate stored as Zarr v2 and asked for as
v2 gets its stored `.zattrs` bytes unchanged; otherwise the stored `plate`/`well` metadata is
written in the other format's document. Everything below a field (`ROW/COL/FIELD/…`) is that
field image's own store view (`/zarr/{id}.zarr/`, http/zarrstore.py): stored chunks passed
through where the format allows, generated otherwise, with its range requests, ETags and 404s.
Only rows, wells and fields the plate lists exist; anything else is a 404.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from idrserve.errors import NotFound
from idrserve.http.keys import DEPS, SETTINGS
from idrserve.http.plates import PID, load_plate
from idrserve.http.urls import link_cache_control, public_base
from idrserve.http.zarrstore import VIEWS, bytes_response, stored_range
from idrserve.http.zarrstore import _store_key as store_key
from idrserve.sources.plate import Plate
from idrserve.sources.zarr import _get as get_key
from idrserve.sources.zarr import _open_store as open_store
from idrserve.zarrview import JSON_TYPE, Blob, ChunkRef, digest_tag, read_chunk, resolve_key


def _group(zarr_format: int, ome: dict[str, Any] | None) -> bytes:
    if zarr_format == 2:
        return json.dumps(ome or {}).encode()
    doc: dict[str, Any] = {"zarr_format": 3, "node_type": "group", "attributes": {}}
    if ome is not None:
        doc["attributes"]["ome"] = {"version": "0.5", **ome}
    return json.dumps(doc).encode()


def _plate_attrs(plate: Plate, zarr_format: int) -> dict[str, Any]:
    attrs = {k: v for k, v in plate.attrs.items() if k != "version"}
    if zarr_format == 2:
        attrs["version"] = "0.4"
    return {"plate": attrs}


def _well_attrs(plate: Plate, path: str, zarr_format: int) -> dict[str, Any] | None:
    well = next((w for w in plate.wells if w.path == path), None)
    if well is None or well.fields is None:
        return None
    images: list[dict[str, Any]] = []
    for ref in well.fields:
        entry: dict[str, Any] = {"path": ref.path}
        if ref.acquisition is not None:
            entry["acquisition"] = ref.acquisition
        images.append(entry)
    attrs: dict[str, Any] = {"images": images}
    if zarr_format == 2:
        attrs["version"] = "0.4"
    return {"well": attrs}


def _exists(plate: Plate, group: str) -> bool:
    """Whether the view has this group: the plate, a row with wells, or a listed well."""
    if group == "":
        return True
    if "/" not in group:
        return group in {w.path.split("/")[0] for w in plate.wells}
    return _well_attrs(plate, group, 2) is not None


async def _group_doc(
    request: web.Request, plate: Plate, group: str, zarr_format: int
) -> bytes | None:
    """The document of the plate (`group` ""), a row or a well group, or None."""
    if group == "":
        ome: dict[str, Any] | None = _plate_attrs(plate, zarr_format)
        stored_key = ".zattrs"
    elif "/" not in group:
        if group not in {w.path.split("/")[0] for w in plate.wells}:
            return None
        ome, stored_key = None, ""
    else:
        ome = _well_attrs(plate, group, zarr_format)
        if ome is None:
            return None
        stored_key = f"{group}/.zattrs"
    if zarr_format == 2 and plate.zarr_format == 2 and stored_key:
        location = plate.location
        raw = await get_key(open_store(location, request.app[SETTINGS].source), stored_key)
        if raw is not None:
            return raw  # the stored document, passed through
    return _group(zarr_format, ome)


def _index(request: web.Request, plate: Plate, zarr_format: int) -> web.Response:
    return web.json_response(
        {
            "plate_id": plate.plate_id,
            "ngff": "0.4" if zarr_format == 2 else "0.5",
            "zarr_format": zarr_format,
            "url": f"{public_base(request)}{request.path}",
            "wells": [w.path for w in plate.wells if w.fields],
        },
        headers={"Cache-Control": link_cache_control(request, "no-cache")},
    )


async def plate_key(request: web.Request) -> web.StreamResponse:
    pid = int(request.match_info["pid"])
    zarr_format = 3 if request.match_info.route.name == "zarr_v3_plate_key" else 2
    key = store_key(request)
    plate = await load_plate(request, pid)
    if key == "":
        return _index(request, plate, zarr_format)
    cache_control = request.app[SETTINGS].server.cache_control
    missing = NotFound(f"plate {pid}: no key {key!r} in the store", param="key")
    parts = key.split("/")
    names = (".zgroup", ".zattrs") if zarr_format == 2 else ("zarr.json",)
    if len(parts) <= 3 and parts[-1] in names:
        group = "/".join(parts[:-1])
        if parts[-1] == ".zgroup":
            doc: bytes | None = b'{"zarr_format": 2}' if _exists(plate, group) else None
        else:
            doc = await _group_doc(request, plate, group, zarr_format)
        if doc is None or (group and "/" not in group and parts[-1] == ".zattrs"):
            raise missing
        return bytes_response(request, Blob(doc, JSON_TYPE, digest_tag(doc)), cache_control)
    if len(parts) < 4:
        raise missing
    image_id = _field_image(plate, parts[0], parts[1], parts[2])
    if image_id is None:
        raise missing
    rest = "/".join(parts[3:])
    deps = request.app[DEPS]
    view = await request.app[VIEWS].get(deps, image_id, zarr_format)
    found = resolve_key(view, rest)
    if found is None:
        raise missing
    if isinstance(found, ChunkRef):
        if view.passthrough and "Range" in request.headers:
            return await stored_range(request, view, found, rest)
        blob = await read_chunk(view, found, deps)
        if blob is None:
            raise missing
    else:
        blob = Blob(found, JSON_TYPE, digest_tag(found))
    return bytes_response(request, blob, cache_control)


def _field_image(plate: Plate, row: str, column: str, field: str) -> int | None:
    for w in plate.wells:
        if w.path == f"{row}/{column}" and w.fields is not None:
            for index, ref in enumerate(w.fields):
                if ref.path == field:
                    return plate.image_ids.get((w.row, w.column, index))
    return None


def add_routes(app: web.Application) -> None:
    add = app.router.add_get
    add(f"/zarr/plates/{PID}.zarr/{{key:.*}}", plate_key, name="zarr_v2_plate_key")
    add(f"/zarr/v3/plates/{PID}.zarr/{{key:.*}}", plate_key, name="zarr_v3_plate_key")
