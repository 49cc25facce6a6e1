"""`/webgateway/plate/{id}/montage.jpg`: one field of every well at thumbnail size, one image.

Each well's picture is that field's ordinary thumbnail (`plan_thumbnail`: the smallest pyramid
level that covers the size, so no full-resolution chunk is read for a plate with pyramids),
rendered and cached under its own key as any thumbnail, then pasted into a grid of the plate's
rows and columns with their labels. A well whose field cannot be rendered gets a crossed-out
placeholder; empty positions stay dark. The montage itself is not stored: once its thumbnails
are cached it is a few hundred memory hits and one JPEG encode.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image, ImageDraw

from idrserve.encode import encode
from idrserve.errors import BadRequest, IdrServeError, NotFound, TooLarge
from idrserve.http.keys import DEPS, SETTINGS
from idrserve.http.middleware import log_error
from idrserve.http.plan import ThumbnailAsk, plan_thumbnail
from idrserve.http.plates import PID, load_plate
from idrserve.http.responses import etag_matches
from idrserve.model import Format
from idrserve.service import Deps, cache_key, cached_render
from idrserve.sources.plate import Plate, fields_for

DEFAULT_SIZE = 64
MAX_SIZE = 256
GAP = 2
LABEL = 14  # pixels for the row and column labels
RENDERS_IN_FLIGHT = 16
EMPTY = (32, 32, 32)
BACKGROUND = (0, 0, 0)


def _int_query(request: web.Request, name: str, default: int | None, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) > hi:
        raise BadRequest(f"{name} must be an integer 0..{hi}", param=name)
    return int(raw)


async def well_thumbnail(deps: Deps, image_id: int, size: int) -> np.ndarray:
    """One field's thumbnail as RGB pixels (rendered and cached as `render_thumbnail` is)."""
    meta = await deps.source.meta(image_id)
    req = plan_thumbnail(ThumbnailAsk(image_id, size), meta, deps.limits)
    key, _ = await cache_key(req, deps)
    rendered = await cached_render(req, meta, deps, key)
    with Image.open(io.BytesIO(rendered.body)) as im:
        return np.asarray(im.convert("RGB"))


def _placeholder(size: int) -> np.ndarray:
    tile = Image.new("RGB", (size, size), (200, 200, 200))
    draw = ImageDraw.Draw(tile)
    draw.line((0, 0, size - 1, size - 1), fill=(120, 120, 120), width=2)
    draw.line((0, size - 1, size - 1, 0), fill=(120, 120, 120), width=2)
    return np.asarray(tile)


def compose(plate: Plate, tiles: dict[tuple[int, int], np.ndarray | None], size: int) -> bytes:
    """The plate's grid with labels; `None` marks a well whose field failed."""
    rows, cols = len(plate.rows), len(plate.columns)
    step = size + GAP
    canvas = Image.new("RGB", (LABEL + cols * step + GAP, LABEL + rows * step + GAP), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(plate.columns):
        draw.text((LABEL + GAP + c * step + size // 2 - 3 * len(name), 1), name, fill="white")
    for r, name in enumerate(plate.rows):
        draw.text((1, LABEL + GAP + r * step + size // 2 - 5), name, fill="white")
    placeholder = _placeholder(size)
    for r in range(rows):
        for c in range(cols):
            x, y = LABEL + GAP + c * step, LABEL + GAP + r * step
            if (r, c) not in tiles:
                draw.rectangle((x, y, x + size - 1, y + size - 1), fill=EMPTY)
                continue
            tile = tiles[(r, c)]
            pixels = placeholder if tile is None else tile
            h, w = pixels.shape[:2]
            canvas.paste(Image.fromarray(pixels), (x + (size - w) // 2, y + (size - h) // 2))
    return encode(np.asarray(canvas), Format.JPEG, 0.9)


def montage_fields(plate: Plate, field: int, acquisition: int | None) -> dict[tuple[int, int], int]:
    """(row, column) → image id of the requested field of every well that has it."""
    out = {}
    for well in plate.wells:
        chosen = fields_for(well, acquisition)
        if not 0 <= field < len(chosen) or well.fields is None:
            continue
        image_id = plate.image_ids.get((well.row, well.column, well.fields.index(chosen[field])))
        if image_id is not None:
            out[(well.row, well.column)] = image_id
    return out


def _etag(deps: Deps, ask: list[Any], wanted: dict[tuple[int, int], int]) -> str | None:
    """A validator from the request and every field's data version, or None while any field's
    metadata is not loaded (then the montage is built, and its answer carries one)."""
    versions = [deps.source.fresh_data_version(iid) for iid in wanted.values()]
    if any(v is None for v in versions):
        return None
    digest = hashlib.blake2b(repr([*ask, versions]).encode(), digest_size=10).hexdigest()
    return f'"{digest}"'


async def montage(request: web.Request) -> web.StreamResponse:
    """`?field=` (default 0), `?acquisition=`, `?size=` (thumbnail side, 8..256, default 64)."""
    deps, settings = request.app[DEPS], request.app[SETTINGS]
    pid = int(request.match_info["pid"])
    field = _int_query(request, "field", 0, 9999) or 0
    acquisition = _int_query(request, "acquisition", None, 2**63 - 1)
    size = _int_query(request, "size", DEFAULT_SIZE, MAX_SIZE) or DEFAULT_SIZE
    if size < 8:
        raise BadRequest(f"size must be 8..{MAX_SIZE}", param="size")
    plate = await load_plate(request, pid)
    if acquisition is not None and all(a.id != acquisition for a in plate.acquisitions):
        raise NotFound(f"plate {pid} has no acquisition {acquisition}", param="acquisition")
    pixels = len(plate.rows) * len(plate.columns) * (size + GAP) ** 2
    if pixels > deps.limits.max_region_pixels:
        raise TooLarge(
            f"a {len(plate.rows)}×{len(plate.columns)} montage at size {size} is over "
            f"limits.max_region_pixels; ask for a smaller size",
            param="size",
        )
    wanted = montage_fields(plate, field, acquisition)
    ask = [pid, field, acquisition, size, sorted(wanted.items())]
    tag = _etag(deps, ask, wanted)
    if tag is not None and etag_matches(request.headers.get("If-None-Match"), tag):
        return web.Response(status=304, headers={"ETag": tag})
    sem = asyncio.Semaphore(RENDERS_IN_FLIGHT)

    async def one(image_id: int) -> np.ndarray | None:
        async with sem:
            try:
                return await well_thumbnail(deps, image_id, size)
            except IdrServeError as exc:
                log_error(request, exc)  # the well shows a placeholder: the log is the trace
                return None

    keys = list(wanted)
    results = await asyncio.gather(*(one(wanted[k]) for k in keys))
    tiles = dict(zip(keys, results, strict=True))
    body = await asyncio.get_running_loop().run_in_executor(
        deps.cpu_pool, compose, plate, tiles, size
    )
    # A well that failed may fail only now (storage unreachable): such a montage is not kept.
    tag = None if any(r is None for r in results) else _etag(deps, ask, wanted)
    headers = {"Cache-Control": settings.server.cache_control if tag else "no-cache"}
    if tag:
        headers["ETag"] = tag
    return web.Response(body=body, content_type="image/jpeg", headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_get(f"/webgateway/plate/{PID}/montage.jpg", montage, name="plate_montage")
