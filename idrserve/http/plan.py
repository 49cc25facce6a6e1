"""Planners: what a protocol parsed, plus the image's metadata and the limits → `RegionRequest`.

Each protocol module owns only its grammar (`http/params.py`, `http/iiif_params.py`, the
DeepZoom path); what it parsed becomes a request for the pipeline here, in pure functions (no
aiohttp, no I/O) that tests call without HTTP. Handlers are then parse → metadata → plan →
`responses.respond_rendered`. Checks keep OMERO.web's order: the plane exists (404) before
the tile or region is read (400), a box starting outside the level is a 404, and size limits
(413) apply before any pixel is read (docs/webgateway.md#responses-and-status-codes).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from idrserve.errors import BadRequest, NotFound, TooLarge
from idrserve.http import params
from idrserve.http.iiif_params import (
    Identifier,
    Limits,
    RegionSpec,
    SizeSpec,
    Version,
    canonical_image_path,
    resolve_region,
    resolve_size,
)
from idrserve.model import (
    Box,
    Format,
    ImageMeta,
    Projection,
    RegionRequest,
    RenderOverrides,
    Tone,
    record,
)
from idrserve.pyramid import (
    dz_level_size,
    dz_max_level,
    dz_tile_region,
    plan_region,
    raw_bytes,
)
from idrserve.render.settings import resolve_render, resolve_thumbnail
from idrserve.settings import LimitSettings

_PROJECTION_NAMES = frozenset({"intmax", "intmean", "intsum"})
THUMBNAIL_QUALITY = 0.85


# --- checks every planner shares --------------------------------------------------------------


def check_plane(meta: ImageMeta, z: int, t: int) -> None:
    """Out-of-range planes are 404 on OMERO.web (the RE cannot find the plane)."""
    if not 0 <= z < meta.size_z:
        raise NotFound(f"z={z} is out of range: the image has {meta.size_z} z-planes", param="z")
    if not 0 <= t < meta.size_t:
        raise NotFound(f"t={t} is out of range: the image has {meta.size_t} timepoints", param="t")


def clip_box(meta: ImageMeta, level: int, box: Box, param: str) -> Box:
    """Clip to the level as the RE does; a box starting outside the level is a 404 on web."""
    lv = meta.levels[level]
    if box.x >= lv.size_x or box.y >= lv.size_y:
        raise NotFound(
            f"{param}: origin ({box.x},{box.y}) is outside the level {level} plane of "
            f"{lv.size_x}x{lv.size_y} pixels",
            param=param,
        )
    return box.clip(lv.size_x, lv.size_y)


def check_pixels(box: Box, limits: LimitSettings, param: str) -> None:
    if box.w * box.h > limits.max_region_pixels:
        raise TooLarge(
            f"{param}: {box.w}x{box.h} = {box.w * box.h} pixels exceeds the limit of "
            f"{limits.max_region_pixels} pixels per request; request tiles instead "
            f"(render_image_region with tile=level,col,row)",
            param=param,
        )


def mirror_box(meta: ImageMeta, level: int, box: Box, flip_h: bool, flip_v: bool) -> Box:
    """With `flip`, the microservice mirrors the region origin inside the level plane."""
    if not (flip_h or flip_v):
        return box
    lv = meta.levels[level]
    x = lv.size_x - box.x - box.w if flip_h else box.x
    y = lv.size_y - box.y - box.h if flip_v else box.y
    return Box(x, y, box.w, box.h)


def thumbnail_size(meta: ImageMeta, longest: int) -> tuple[int, int]:
    """OMERO's ThumbnailCtx: keep the aspect ratio, truncate the short side."""
    sx, sy = meta.size_x, meta.size_y
    if sx > sy:
        return longest, max(1, int(sy * longest / sx))
    return max(1, int(sx * longest / sy)), longest


def thumbnail_level(meta: ImageMeta, width: int, height: int) -> int:
    """First level from full resolution down whose width or height fits the target."""
    for i, lv in enumerate(meta.levels):
        if lv.size_x <= width or lv.size_y <= height:
            return i
    return len(meta.levels) - 1


# --- webgateway -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    """The rendering and output parameters both webgateway render routes share."""

    overrides: RenderOverrides
    flip_h: bool = False
    flip_v: bool = False
    fmt: Format = Format.JPEG
    quality: float = 0.9


@record
class RegionAsk:
    """`render_image_region/{id}/{z}/{t}/?tile=…|region=…`: the tile and region texts are
    read against the image's levels, so they are parsed here, after the plane check."""

    image_id: int
    z: int
    t: int
    tile: str | None
    region: str | None
    output: Output


def plan_webgateway_region(ask: RegionAsk, meta: ImageMeta, limits: LimitSettings) -> RegionRequest:
    """A tile or region of one plane, clipped to its level, mirrored for `flip`."""
    check_plane(meta, ask.z, ask.t)
    full = meta.levels[0]
    level, box = params.tile_or_region(
        ask.tile, ask.region, len(meta.levels), (full.tile_x, full.tile_y), limits.max_tile_length
    )
    param = "tile" if ask.tile else "region"
    box = clip_box(meta, level, box, param)
    check_pixels(box, limits, param)
    out = ask.output
    box = mirror_box(meta, level, box, out.flip_h, out.flip_v)
    return RegionRequest(
        image_id=ask.image_id,
        z=ask.z,
        t=ask.t,
        level=level,
        box=box,
        render=resolve_render(meta, out.overrides),
        flip_h=out.flip_h,
        flip_v=out.flip_v,
        fmt=out.fmt,
        quality=out.quality,
        data_version=meta.data_version,
    )


@dataclass(frozen=True, slots=True)
class PlaneAsk:
    """`render_image/{id}/[{z}/[{t}/]]?p=…`: None takes the image's default plane."""

    image_id: int
    z: int | None
    t: int | None
    projection: str | None
    output: Output


def plan_webgateway_plane(ask: PlaneAsk, meta: ImageMeta, limits: LimitSettings) -> RegionRequest:
    """A whole plane at full resolution, or a projection of a z range (`p=`)."""
    z = meta.default_z if ask.z is None else ask.z
    t = meta.default_t if ask.t is None else ask.t
    check_plane(meta, z, t)
    query = {} if ask.projection is None else {"p": ask.projection}
    projection, p_start, p_end = params.parse_projection(query, meta.size_z)
    box = Box(0, 0, meta.size_x, meta.size_y)
    check_pixels(box, limits, "render_image")
    out = ask.output
    projected = projection is not Projection.NORMAL
    return RegionRequest(
        image_id=ask.image_id,
        z=z,
        t=t,
        level=0,
        box=box,
        render=resolve_render(meta, out.overrides),
        projection=projection,
        proj_start=p_start if projected else 0,
        proj_end=p_end if projected else 0,
        flip_h=out.flip_h,
        flip_v=out.flip_v,
        fmt=out.fmt,
        quality=out.quality,
        data_version=meta.data_version,
    )


@dataclass(frozen=True, slots=True)
class ThumbnailAsk:
    """`render_thumbnail/{id}/[{w}/[{h}/]]?z=&t=` and the batch `get_thumbnails`."""

    image_id: int
    w: int | None = None
    h: int | None = None
    z: int | None = None
    t: int | None = None


def check_thumbnail_size(ask: ThumbnailAsk, limits: LimitSettings) -> None:
    """Sizes are checked before the image is looked up (a 400 wins over a 404)."""
    for name, value in (("w", ask.w), ("h", ask.h)):
        if value is not None and not 1 <= value <= limits.max_thumbnail_size:
            raise BadRequest(
                f"thumbnail size {name}={value} must be between 1 and {limits.max_thumbnail_size}",
                param=name,
            )


def plan_thumbnail(ask: ThumbnailAsk, meta: ImageMeta, limits: LimitSettings) -> RegionRequest:
    """The saved settings at the smallest level that still covers the thumbnail's size."""
    check_thumbnail_size(ask, limits)
    longest = ask.w if ask.w is not None else limits.default_thumbnail_size
    size = (ask.w, ask.h) if ask.w is not None and ask.h is not None else None
    if size is None:
        size = thumbnail_size(meta, longest)
    z = meta.default_z if ask.z is None else ask.z
    t = meta.default_t if ask.t is None else ask.t
    check_plane(meta, z, t)
    level = thumbnail_level(meta, size[0], size[1])
    lv = meta.levels[level]
    box = Box(0, 0, lv.size_x, lv.size_y)
    check_pixels(box, limits, "thumbnail")
    return RegionRequest(
        image_id=ask.image_id,
        z=z,
        t=t,
        level=level,
        box=box,
        render=resolve_thumbnail(meta),
        quality=THUMBNAIL_QUALITY,
        out_size=(int(size[0]), int(size[1])),
        data_version=meta.data_version,
    )


# --- IIIF and DeepZoom ------------------------------------------------------------------------


def identifier_plane(ident: Identifier, meta: ImageMeta) -> tuple[int, int]:
    """The identifier's z and t (the image's defaults where it names none); 404 if absent."""
    z = meta.default_z if ident.z is None else ident.z
    t = meta.default_t if ident.t is None else ident.t
    check_plane(meta, z, t)
    return z, t


def plan_scaled(
    meta: ImageMeta,
    ident: Identifier,
    region: Box,
    size: tuple[int, int],
    limits: LimitSettings,
    *,
    mirror: bool = False,
    rotate: int = 0,
    tone: Tone = Tone.DEFAULT,
    fmt: Format = Format.JPEG,
) -> RegionRequest:
    """`region` (full-resolution pixels) rendered at `size` from the best pyramid level.

    IIIF and DeepZoom. Raw reads over `limits.max_read_bytes` are refused here with a 400
    (IIIF: over a server limit), before any pixel is read.
    """
    z, t = identifier_plane(ident, meta)
    render = resolve_render(meta, ident.overrides)
    projection, p_start, p_end = Projection.NORMAL, 0, 0
    if ident.projection is not None:
        if ident.projection.partition("|")[0] not in _PROJECTION_NAMES:
            raise BadRequest(
                f"identifier p={ident.projection[:64]!r}: expected intmax, intmean or intsum"
                "[|start:end]",
                param="p",
            )
        projection, p_start, p_end = params.parse_projection({"p": ident.projection}, meta.size_z)
    level_plan = plan_region(meta, region, size[0], size[1])
    planes = 1 if projection is Projection.NORMAL else p_end - p_start + 1
    nbytes = raw_bytes(meta, level_plan, len(render.active_indices()), planes)
    if nbytes > limits.max_read_bytes:
        raise BadRequest(
            f"this region at this size needs {nbytes} bytes of raw pixels, over the limit of "
            f"{limits.max_read_bytes}; request a smaller region or size",
            param="size",
        )
    return RegionRequest(
        image_id=meta.image_id,
        z=z,
        t=t,
        level=level_plan.level,
        box=level_plan.box,
        render=render,
        projection=projection,
        proj_start=p_start,
        proj_end=p_end,
        flip_h=mirror,
        fmt=fmt,
        quality=ident.quality if ident.quality is not None else limits.default_jpeg_quality,
        out_size=level_plan.out_size,
        data_version=meta.data_version,
        downsample=level_plan.downsample,
        pad=level_plan.pad,
        rotate=rotate,
        tone=tone,
    )


def iiif_limits(limits: LimitSettings) -> Limits:
    """maxWidth/maxHeight/maxArea: the same plane bound webgateway regions have."""
    return _iiif_limits(limits.max_region_pixels)


@functools.lru_cache(maxsize=8)
def _iiif_limits(max_region_pixels: int) -> Limits:
    side = math.isqrt(max_region_pixels)
    return Limits(side, side, max_region_pixels)


def tile_size(meta: ImageMeta, limits: LimitSettings) -> tuple[int, int]:
    """The stored chunk size when it makes a sensible tile (64–1024 px), else 512."""
    lv = meta.levels[0]
    top = min(1024, limits.max_tile_length)

    def pick(chunk: int) -> int:
        return chunk if 64 <= chunk <= top else min(512, top)

    return pick(lv.tile_x), pick(lv.tile_y)


@record
class IiifAsk:
    """`{identifier}/{region}/{size}/{rotation}/{quality}.{format}`, each segment parsed."""

    version: Version
    identifier: Identifier
    region: RegionSpec
    size: SizeSpec
    mirror: bool
    degrees: int
    tone: Tone
    fmt: Format
    quality_name: str
    extension: str


def plan_iiif(ask: IiifAsk, meta: ImageMeta, limits: LimitSettings) -> tuple[RegionRequest, str]:
    """The pipeline request and the image request's canonical path (for its `Link`)."""
    identifier_plane(ask.identifier, meta)  # 404 for a missing plane before size errors
    region = resolve_region(ask.region, meta.size_x, meta.size_y)
    size = resolve_size(ask.size, region, ask.version, iiif_limits(limits))
    req = plan_scaled(
        meta,
        ask.identifier,
        region,
        size,
        limits,
        mirror=ask.mirror,
        rotate=ask.degrees,
        tone=ask.tone,
        fmt=ask.fmt,
    )
    canonical = canonical_image_path(
        ask.version,
        region,
        size,
        (meta.size_x, meta.size_y),
        iiif_limits(limits),
        mirror=ask.mirror,
        degrees=ask.degrees,
        quality=ask.quality_name,
        fmt=ask.extension,
    )
    return req, canonical


@dataclass(frozen=True, slots=True)
class DeepZoomAsk:
    """`{id}_files/{level}/{col}_{row}.{ext}` with the descriptor's rendering query."""

    identifier: Identifier
    level: int
    col: int
    row: int
    fmt: Format


def plan_deepzoom_tile(ask: DeepZoomAsk, meta: ImageMeta, limits: LimitSettings) -> RegionRequest:
    """One DeepZoom tile: its full-resolution region rendered at the tile's size."""
    identifier_plane(ask.identifier, meta)
    side = tile_size(meta, limits)[0]
    found = dz_tile_region(meta.size_x, meta.size_y, ask.level, ask.col, ask.row, side)
    if found is None:
        n = dz_max_level(meta.size_x, meta.size_y)
        shown = min(ask.level, n)
        w, h = dz_level_size(meta.size_x, meta.size_y, shown)
        raise NotFound(
            f"no tile {ask.col}_{ask.row} at level {ask.level}: levels are 0..{n}, level "
            f"{shown} is {w}x{h} px in tiles of {side}",
            param="tile",
        )
    region, size = found
    return plan_scaled(meta, ask.identifier, region, size, limits, fmt=ask.fmt)
