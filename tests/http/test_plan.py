"""The planners, without HTTP: parsed asks + metadata + limits → RegionRequest, and the
errors in OMERO.web's order (plane 404 before tile 400, origin outside 404, size 413)."""

from __future__ import annotations

import dataclasses

import pytest

from idrserve.errors import BadRequest, NotFound, TooLarge
from idrserve.http.iiif_params import Version, parse_identifier, parse_region, parse_size
from idrserve.http.plan import (
    DeepZoomAsk,
    IiifAsk,
    Output,
    PlaneAsk,
    RegionAsk,
    ThumbnailAsk,
    plan_deepzoom_tile,
    plan_iiif,
    plan_thumbnail,
    plan_webgateway_plane,
    plan_webgateway_region,
)
from idrserve.model import (
    Box,
    ChannelMeta,
    Format,
    ImageMeta,
    LevelMeta,
    Projection,
    RenderOverrides,
    Tone,
)
from idrserve.settings import LimitSettings

CHANNELS = tuple(
    ChannelMeta(name, color, 0, 65535, 100, 2000, active)
    for name, color, active in (
        ("DAPI", (0, 0, 255, 255), True),
        ("GFP", (0, 255, 0, 255), True),
        ("RFP", (255, 0, 0, 255), False),
    )
)
# 1000×700, 3 levels, 256² chunks, 5 z-planes, 2 timepoints.
META = ImageMeta(
    7,
    "plan",
    "uint16",
    1000,
    700,
    5,
    3,
    2,
    (LevelMeta(1000, 700, 256, 256), LevelMeta(500, 350, 256, 256), LevelMeta(250, 175, 256, 256)),
    CHANNELS,
    default_z=2,
    data_version="dv1",
)
LIMITS = LimitSettings()
OUT = Output(RenderOverrides())


def region_ask(tile: str | None = None, region: str | None = None, **kw: object) -> RegionAsk:
    fields: dict[str, object] = {"image_id": 7, "z": 0, "t": 0, "output": OUT} | kw
    return RegionAsk(tile=tile, region=region, **fields)  # type: ignore[arg-type]


def test_tile_uses_the_chunk_size_and_clips_edge_tiles() -> None:
    req = plan_webgateway_region(region_ask("0,1,0"), META, LIMITS)
    assert (req.level, req.box, req.data_version) == (0, Box(256, 0, 256, 256), "dv1")
    edge = plan_webgateway_region(region_ask("0,3,2"), META, LIMITS)
    assert edge.box == Box(768, 512, 232, 188)  # clipped, never padded
    level1 = plan_webgateway_region(region_ask("1,1,1,256,256"), META, LIMITS)
    assert (level1.level, level1.box) == (1, Box(256, 256, 244, 94))


def test_region_is_level_zero_and_flip_mirrors_the_origin() -> None:
    req = plan_webgateway_region(region_ask(region="10,20,100,50"), META, LIMITS)
    assert (req.level, req.box) == (0, Box(10, 20, 100, 50))
    flipped = Output(RenderOverrides(), flip_h=True, flip_v=True, fmt=Format.PNG, quality=0.5)
    req = plan_webgateway_region(region_ask(region="10,20,100,50", output=flipped), META, LIMITS)
    assert req.box == Box(1000 - 110, 700 - 70, 100, 50)
    assert (req.flip_h, req.flip_v, req.fmt, req.quality) == (True, True, Format.PNG, 0.5)


def test_region_errors_in_omero_webs_order() -> None:
    with pytest.raises(NotFound, match="z=9"):  # the plane first, even with a bad tile
        plan_webgateway_region(region_ask("x,y", z=9), META, LIMITS)
    with pytest.raises(BadRequest, match="tile"):
        plan_webgateway_region(region_ask("0,0,0,-1,-1"), META, LIMITS)
    with pytest.raises(BadRequest, match="resolution level 3"):
        plan_webgateway_region(region_ask("3,0,0"), META, LIMITS)
    with pytest.raises(NotFound, match="outside the level"):
        plan_webgateway_region(region_ask("0,4,0"), META, LIMITS)
    with pytest.raises(BadRequest, match="tile or region argument required"):
        plan_webgateway_region(region_ask(), META, LIMITS)
    small = LimitSettings(max_region_pixels=1000)
    with pytest.raises(TooLarge, match="exceeds the limit"):
        plan_webgateway_region(region_ask(region="0,0,100,100"), META, small)


def test_plane_defaults_and_projection() -> None:
    req = plan_webgateway_plane(PlaneAsk(7, None, None, None, OUT), META, LIMITS)
    assert (req.z, req.t, req.level, req.box) == (2, 0, 0, Box(0, 0, 1000, 700))
    assert req.projection is Projection.NORMAL
    proj = plan_webgateway_plane(PlaneAsk(7, None, 1, "intmax|1:3", OUT), META, LIMITS)
    assert (proj.projection, proj.proj_start, proj.proj_end, proj.t) == (
        Projection.INTMAX,
        1,
        3,
        1,
    )
    with pytest.raises(NotFound, match="t=2"):
        plan_webgateway_plane(PlaneAsk(7, 0, 2, None, OUT), META, LIMITS)
    with pytest.raises(BadRequest):
        plan_webgateway_plane(PlaneAsk(7, 0, 0, "intmax|4:1", OUT), META, LIMITS)


def test_thumbnail_takes_the_smallest_covering_level() -> None:
    req = plan_thumbnail(ThumbnailAsk(7), META, LIMITS)
    assert req.out_size == (96, 67) and req.level == 2 and req.z == 2  # default z
    # the first level whose width or height fits: 500×350 for 600×420
    big = plan_thumbnail(ThumbnailAsk(7, 600, 420), META, LIMITS)
    assert (big.level, big.out_size) == (1, (600, 420))
    with pytest.raises(BadRequest, match="w=2000"):
        plan_thumbnail(ThumbnailAsk(7, 2000), META, LIMITS)


def test_iiif_request_and_canonical_path() -> None:
    ident = parse_identifier("7", 10)
    ask = IiifAsk(
        Version.V3,
        ident,
        parse_region("0,0,500,350"),
        parse_size("250,", Version.V3),
        False,
        0,
        Tone.DEFAULT,
        Format.JPEG,
        "default",
        "jpg",
    )
    req, canonical = plan_iiif(ask, META, LIMITS)
    # the region at half size is exactly level 1: read there, nothing to resize
    assert (req.level, req.box, req.out_size) == (1, Box(0, 0, 250, 175), None)
    assert canonical == "0,0,500,350/250,175/0/default.jpg"
    missing = dataclasses.replace(ask, identifier=parse_identifier("7;z=9", 10))
    with pytest.raises(NotFound, match="z=9"):
        plan_iiif(missing, META, LIMITS)


def test_deepzoom_tile_and_a_tile_off_the_level() -> None:
    ident = parse_identifier("7", 10)
    # DeepZoom level 10 is full resolution (⌈log2 1000⌉); tiles of the 256 chunk size
    req = plan_deepzoom_tile(DeepZoomAsk(ident, 10, 1, 0, Format.PNG), META, LIMITS)
    assert (req.level, req.box, req.out_size, req.fmt) == (
        0,
        Box(256, 0, 256, 256),
        None,
        Format.PNG,
    )
    half = plan_deepzoom_tile(DeepZoomAsk(ident, 9, 0, 0, Format.JPEG), META, LIMITS)
    assert (half.level, half.box) == (1, Box(0, 0, 256, 256))
    with pytest.raises(NotFound, match="no tile 9_0 at level 10"):
        plan_deepzoom_tile(DeepZoomAsk(ident, 10, 9, 0, Format.JPEG), META, LIMITS)
