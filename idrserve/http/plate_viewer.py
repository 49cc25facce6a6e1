"""`/viewer/plate/{id}`: the built-in viewer's plate page (static/plate.html and plate.js).

The page is static; its script reads `/api/v1/plates/{id}` and OMERO.web's plate grid, loads
thumbnails in `get_thumbnails` batches and links every well to `/viewer/{image id}`.
"""

from __future__ import annotations

from aiohttp import web

from idrserve.errors import NotFound
from idrserve.http.plates import PID, load_plate
from idrserve.http.viewer import _common, _page, _render, asset_url, not_found


async def plate_page(request: web.Request) -> web.Response:
    pid = int(request.match_info["pid"])
    try:
        await load_plate(request, pid)
    except NotFound as exc:
        return not_found(request, exc)
    values = _common(request)
    values["plate_id"] = str(pid)
    values["plate_css"] = values["base"] + asset_url(request.app, "plate.css")
    values["plate_js"] = values["base"] + asset_url(request.app, "plate.js")
    return _page(request, _render(request.app, "plate.html", values))


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"/viewer/plate/{PID}", plate_page, name="viewer_plate")
    app.router.add_get(f"/viewer/plate/{PID}/", plate_page, name="viewer_plate_slash")
