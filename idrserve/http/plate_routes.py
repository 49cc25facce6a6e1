"""Every HCS plate route in one call, so the app wires plates with one line (docs/plates.md)."""

from __future__ import annotations

from aiohttp import web

from idrserve.http import plate_iiif, plate_images, plate_viewer, plate_zarr, plates


def add_routes(app: web.Application) -> None:
    plates.add_routes(app)  # the grid, the well list, /api/v1/plates/{id}
    plate_images.add_routes(app)  # the montage
    plate_zarr.add_routes(app)  # /zarr/plates/{id}.zarr/ and /zarr/v3/plates/{id}.zarr/
    plate_iiif.add_routes(app)  # /iiif/plates/{id}/manifest.json
    plate_viewer.add_routes(app)  # /viewer/plate/{id} (before the viewer's catch-all)
