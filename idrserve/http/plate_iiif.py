"""`/iiif/plates/{id}/manifest.json`: a IIIF Presentation 3 manifest of a plate, one canvas
per well (the well's field 0, in row-major order), so Mirador can page through a plate.

Each canvas is the first canvas of that field image's own manifest (`iiif.manifest_document`:
its default plane, painted by `/iiif/3/{image id}`), labelled with the well (`B12`) and given
the field's thumbnail. A field whose metadata cannot be read has no canvas (the log says why).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from idrserve.errors import IdrServeError
from idrserve.http.iiif import PRESENTATION_CONTEXT, manifest_document
from idrserve.http.iiif_params import parse_identifier
from idrserve.http.keys import DEPS
from idrserve.http.middleware import log_error
from idrserve.http.plate_images import montage_fields
from idrserve.http.plates import PID, load_plate
from idrserve.http.urls import link_cache_control, public_base

META_IN_FLIGHT = 16


async def plate_manifest(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    pid = int(request.match_info["pid"])
    plate = await load_plate(request, pid)
    base = public_base(request)
    wells = sorted(montage_fields(plate, 0, None).items())
    sem = asyncio.Semaphore(META_IN_FLIGHT)

    async def canvas(position: tuple[int, int], image_id: int) -> dict[str, Any] | None:
        async with sem:
            try:
                meta = await deps.source.meta(image_id)
            except IdrServeError as exc:
                log_error(request, exc)
                return None
        ident = parse_identifier(str(image_id), deps.limits.max_active_channels)
        first: dict[str, Any] = manifest_document(meta, str(image_id), ident, base, deps.limits)[
            "items"
        ][0]
        first["label"] = {"none": [plate.well_label(*position)]}
        first["thumbnail"] = [
            {
                "id": f"{base}/webgateway/render_thumbnail/{image_id}/",
                "type": "Image",
                "format": "image/jpeg",
            }
        ]
        return first

    canvases = await asyncio.gather(*(canvas(pos, iid) for pos, iid in wells))
    doc = {
        "@context": PRESENTATION_CONTEXT,
        "id": f"{base}/iiif/plates/{pid}/manifest.json",
        "type": "Manifest",
        "label": {"none": [plate.name]},
        "summary": {
            "none": [f"{len(plate.rows)}×{len(plate.columns)} plate, field 0 of each well"]
        },
        "items": [c for c in canvases if c is not None],
    }
    return web.Response(
        body=json.dumps(doc, separators=(",", ":")).encode(),
        headers={
            "Content-Type": f'application/ld+json;profile="{PRESENTATION_CONTEXT}"',
            "Cache-Control": link_cache_control(request, "no-cache"),
        },
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"/iiif/plates/{PID}/manifest.json", plate_manifest, name="iiif_plate")
