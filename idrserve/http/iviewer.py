"""OMERO.iviewer's own boot endpoints, answered from our sources instead of OMERO.web.

The documents are built in `http/iviewer_data.py`; which URL gives what, and how it differs
from OMERO.web: docs/iviewer.md. Path grammar follows the Django routes (digits-only ids,
trailing slash, a missing one answered with the 301 of `urls.make_redirect_middleware`).
"""

from __future__ import annotations

from aiohttp import web

from idrserve.http import params
from idrserve.http.iviewer_data import iviewer_image_data
from idrserve.http.keys import DEPS
from idrserve.http.responses import json_or_jsonp

ID = r"{iid:\d{1,19}}"


async def image_data(request: web.Request) -> web.StreamResponse:
    """`/iviewer/image_data/<id>/`: imgData's marshal plus ROI count, units and families."""
    iid = params.parse_path_int(request.match_info["iid"], "iid")
    meta = await request.app[DEPS].source.meta(iid)
    return json_or_jsonp(iviewer_image_data(meta), None)


def add_routes(app: web.Application) -> None:
    """Register iviewer's boot URLs (docs/iviewer.md#endpoints)."""
    add = app.router.add_get
    add(f"/iviewer/image_data/{ID}/", image_data, name="iviewer_image_data")
