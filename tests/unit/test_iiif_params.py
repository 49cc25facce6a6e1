"""IIIF path-segment parsers and the pyramid planner, as pure functions (plus Hypothesis)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idrserve.errors import BadRequest, IdrServeError, NotFound
from idrserve.http import iiif_params
from idrserve.http.iiif_params import (
    Limits,
    NotImplementedFeature,
    Version,
    canonical_image_path,
    canonical_size,
    parse_identifier,
    parse_quality_format,
    parse_region,
    parse_rotation,
    parse_size,
    resolve_region,
    resolve_size,
)
from idrserve.model import Box, ChannelMeta, Format, ImageMeta, LevelMeta, Tone
from idrserve.pyramid import plan_region, power_of_two_scale

LIMITS = Limits(4096, 4096, 4096 * 4096)


def test_identifier_forms() -> None:
    ident = parse_identifier("1001")
    assert (ident.image_id, ident.z, ident.t, ident.overrides.channels) == (1001, None, None, None)
    ident = parse_identifier("1001;z=3;t=2;c=1%7C0:255$FF0000,-2;m=g;q=0.5;p=intmax%7C0:4")
    assert (ident.z, ident.t, ident.quality, ident.projection) == (3, 2, 0.5, "intmax|0:4")
    assert ident.overrides.channels is not None
    first, second = ident.overrides.channels
    assert (first.index, first.active, first.start, first.end) == (0, True, 0.0, 255.0)
    assert first.color == (255, 0, 0, 255)
    assert (second.index, second.active) == (1, False)
    assert ident.overrides.model is not None and ident.overrides.model.value == "greyscale"


@pytest.mark.parametrize("raw", ["x", "", "1.5", "-1", "1" * 20, "%FF", "..%2F1", "1%2F2", "１"])
def test_identifier_not_an_image_is_404(raw: str) -> None:
    with pytest.raises(NotFound):
        parse_identifier(raw)


@pytest.mark.parametrize(
    "raw", ["1;", "1;z", "1;z=", "1;z=a", "1;y=1", "1;z=1;z=2", "1;m=q", "1;q=0", "1;p=max"]
)
def test_identifier_bad_options_are_400(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_identifier(raw)


def test_region_resolution() -> None:
    assert resolve_region(parse_region("full"), 300, 200) == Box(0, 0, 300, 200)
    assert resolve_region(parse_region("square"), 300, 200) == Box(50, 0, 200, 200)
    assert resolve_region(parse_region("square"), 200, 301) == Box(0, 50, 200, 200)
    assert resolve_region(parse_region("10,20,1000,1000"), 300, 200) == Box(10, 20, 290, 180)
    assert resolve_region(parse_region("pct:50,50,50,50"), 300, 200) == Box(150, 100, 150, 100)
    with pytest.raises(BadRequest):
        resolve_region(parse_region("300,0,1,1"), 300, 200)


def test_size_resolution() -> None:
    region = Box(0, 0, 1000, 500)

    def size(text: str, version: Version = Version.V3) -> tuple[int, int]:
        return resolve_size(parse_size(text, version), region, version, LIMITS)

    assert size("max") == (1000, 500)
    assert size("500,") == (500, 250)
    assert size(",100") == (200, 100)
    assert size("pct:10") == (100, 50)
    assert size("!300,300") == (300, 150)
    assert size("!300,100") == (200, 100)
    assert size("^!3000,3000") == (3000, 1500)
    assert size("^max") == (4096, 2048)
    assert size("1500,", Version.V2) == (1500, 750)
    assert size("full", Version.V2) == (1000, 500)
    for bad in ("1500,", "!3000,3000", "pct:200", "1001,10"):
        with pytest.raises(BadRequest):
            size(bad)
    with pytest.raises(BadRequest):
        size("^5000,")  # over maxWidth
    with pytest.raises(BadRequest):
        size("pct:0.01")  # under one pixel


def test_max_respects_area() -> None:
    big = Box(0, 0, 100_000, 1_000)
    w, h = resolve_size(parse_size("max", Version.V3), big, Version.V3, Limits(4096, 4096, 10**6))
    assert w <= 4096 and w * h <= 10**6 and h >= 1


def test_rotation_and_quality() -> None:
    assert parse_rotation("0") == (False, 0)
    assert parse_rotation("!90") == (True, 90)
    assert parse_rotation("360") == (False, 0)
    with pytest.raises(NotImplementedFeature):
        parse_rotation("45.5")
    for bad in ("-90", "361", "090", "x", "90.0", "!"):
        with pytest.raises(BadRequest):
            parse_rotation(bad)
    assert parse_quality_format("gray.png") == (Tone.GRAY, Format.PNG)
    assert parse_quality_format("color.webp") == (Tone.DEFAULT, Format.WEBP)
    for bad in ("default", "grey.jpg", "default.gif", ".jpg", "default.JPG"):
        with pytest.raises(BadRequest):
            parse_quality_format(bad)


# --- Hypothesis: the parsers only ever raise our 4xx/501 errors --------------------------------

segment = st.text(
    alphabet=st.sampled_from(list("0123456789,.:!^%;=|$-+abcdefgmpqtxz/ \\~\x00é")), max_size=30
)


@given(segment)
def test_region_parser_total(text: str) -> None:
    try:
        spec = parse_region(text)
        box = resolve_region(spec, 4097, 3001)
    except IdrServeError as exc:
        status, detail = exc.status, exc.detail
        assert 400 <= status < 500 and detail
        return
    assert box.w >= 1 and box.h >= 1 and box.x + box.w <= 4097 and box.y + box.h <= 3001


@given(segment, st.sampled_from(list(Version)))
def test_size_parser_total(text: str, version: Version) -> None:
    try:
        w, h = resolve_size(parse_size(text, version), Box(0, 0, 4097, 3001), version, LIMITS)
    except IdrServeError as exc:
        status, detail = exc.status, exc.detail
        assert 400 <= status < 500 and detail
        return
    assert 1 <= w <= 4096 and 1 <= h <= 4096


@given(segment)
def test_other_parsers_total(text: str) -> None:
    for parse in (parse_rotation, parse_quality_format, parse_identifier):
        try:
            parse(text)
        except IdrServeError as exc:
            status, detail = exc.status, exc.detail
            assert 400 <= status < 502 and detail


# --- planning --------------------------------------------------------------------------------


def meta_with(width: int, height: int, n_levels: int, floor: bool = True) -> ImageMeta:
    levels = []
    w, h = width, height
    for _ in range(n_levels):
        levels.append(LevelMeta(w, h, 256, 256))
        w, h = (max(1, w // 2), max(1, h // 2)) if floor else (-(-w // 2), -(-h // 2))
    channel = ChannelMeta("c", (255, 255, 255, 255), 0, 255, 0, 255, True)
    return ImageMeta(1, "x", "uint8", width, height, 1, 1, 1, tuple(levels), (channel,))


def test_scale_uses_ceil_like_clients() -> None:
    assert power_of_two_scale(512, 441, 256, 221) == 2
    assert power_of_two_scale(1, 1, 1, 1) == 1
    assert power_of_two_scale(4097, 3001, 1, 1) == 4096
    assert power_of_two_scale(100, 100, 300, 300) == 1  # upscaling


def test_plan_stored_virtual_and_edge() -> None:
    meta = meta_with(4097, 3001, 3)  # stored factors 1, 2, 4
    stored = plan_region(meta, Box(512, 512, 512, 512), 256, 256)
    assert (stored.level, stored.box, stored.downsample, stored.pad, stored.out_size) == (
        1,
        Box(256, 256, 256, 256),
        (1, 1),
        (0, 0),
        None,
    )
    virtual = plan_region(meta, Box(2048, 0, 2048, 2048), 256, 256)  # factor 8 from level 2
    assert (virtual.level, virtual.box, virtual.downsample, virtual.out_size) == (
        2,
        Box(512, 0, 512, 512),
        (2, 2),
        None,
    )
    edge = plan_region(meta, Box(4096, 0, 1, 512), 1, 256)  # 1-px column at factor 2
    assert edge.level == 1 and edge.box == Box(2047, 0, 1, 256)
    assert edge.pad == (0, 0) and edge.out_size is None
    bottom = plan_region(meta, Box(0, 2560, 512, 441), 256, 221)  # floor level: 1 row short
    assert bottom.box == Box(0, 1280, 256, 220) and bottom.pad == (0, 1)
    assert bottom.out_size is None
    odd = plan_region(meta, Box(0, 0, 4097, 3001), 700, 513)  # not a power of two: resize
    assert odd.level == 2 and odd.downsample == (1, 1) and odd.out_size == (700, 513)


@given(
    st.integers(1, 5000),
    st.integers(1, 5000),
    st.integers(1, 4),
    st.booleans(),
    st.data(),
)
def test_plan_always_reads_inside_the_level(
    width: int, height: int, n_levels: int, floor: bool, data: st.DataObject
) -> None:
    meta = meta_with(width, height, n_levels, floor)
    x = data.draw(st.integers(0, width - 1))
    y = data.draw(st.integers(0, height - 1))
    w = data.draw(st.integers(1, width - x))
    h = data.draw(st.integers(1, height - y))
    ow = data.draw(st.integers(1, 2 * w))
    oh = data.draw(st.integers(1, 2 * h))
    plan = plan_region(meta, Box(x, y, w, h), ow, oh)
    lv = meta.levels[plan.level]
    assert plan.box.w >= 1 and plan.box.h >= 1
    assert plan.box.x + plan.box.w <= lv.size_x and plan.box.y + plan.box.h <= lv.size_y
    natural = (
        math.ceil(plan.box.w / plan.downsample[0]) + plan.pad[0],
        math.ceil(plan.box.h / plan.downsample[1]) + plan.pad[1],
    )
    assert (plan.out_size or natural) == (ow, oh)


def test_forwarded_prefix_normalisation() -> None:
    from idrserve.http.urls import normalise_prefix

    assert normalise_prefix("") == normalise_prefix("/") == ""
    assert normalise_prefix("idr") == normalise_prefix("/idr/") == "/idr"
    assert normalise_prefix("/a/b") == "/a/b"
    assert normalise_prefix('/x"y') == ""  # never echoed into JSON or Location
    assert normalise_prefix("/a b") == ""


def test_public_base_url_must_be_an_http_url() -> None:
    from idrserve.settings import SettingsError, load_settings

    ok = load_settings({"server": {"public_base_url": "https://tiles.example.org/idr"}})
    assert ok.server.public_base_url == "https://tiles.example.org/idr"
    for bad in ("tiles.example.org", "ftp://x", "https://x/?q=1", "https://"):
        with pytest.raises(SettingsError, match=r"\(server\.public_base_url\): string should"):
            load_settings({"server": {"public_base_url": bad}})


@given(
    st.integers(1, 5000),
    st.integers(1, 5000),
    st.integers(1, 4096),
    st.integers(1, 4096),
    st.sampled_from([Version.V3, Version.V2]),
)
def test_canonical_size_resolves_to_the_same_size(
    rw: int, rh: int, w: int, h: int, version: Version
) -> None:
    """The canonical spelling of a size, parsed and resolved again for the same region, gives
    that size: a canonical URI is an equivalent request."""
    region = Box(0, 0, rw, rh)
    text = canonical_size((w, h), region, version, LIMITS)
    if version is Version.V3:
        assert text.startswith("^") == (w > rw or h > rh)
    assert resolve_size(parse_size(text, version), region, version, LIMITS) == (w, h)


def test_canonical_image_path_forms() -> None:
    def path(region: Box, size: tuple[int, int], version: Version = Version.V3, **kw: Any) -> str:
        args: dict[str, Any] = {"mirror": False, "degrees": 0, "quality": "default", "fmt": "jpg"}
        args.update(kw)
        return canonical_image_path(version, region, size, (600, 400), LIMITS, **args)

    whole, half = Box(0, 0, 600, 400), (300, 200)
    assert path(whole, (600, 400)) == "full/max/0/default.jpg"
    assert path(whole, half, mirror=True, degrees=270) == "full/300,200/!270/default.jpg"
    assert path(Box(10, 0, 590, 400), (590, 400), quality="gray", fmt="png") == (
        "10,0,590,400/max/0/gray.png"
    )
    assert path(whole, (600, 400), Version.V2) == "full/full/0/default.jpg"
    assert path(whole, half, Version.V2) == "full/300,/0/default.jpg"
    assert path(whole, (300, 300), Version.V2) == "full/300,300/0/default.jpg"


# --- kept parses -------------------------------------------------------------------------------


@pytest.mark.parametrize("floor", [True, False])
def test_level_factors_are_whole_halvings_with_floor_or_ceil(floor: bool) -> None:
    meta = meta_with(4097, 3001, 5, floor)
    assert meta.level_factors() == ((1, 1), (2, 2), (4, 4), (8, 8), (16, 16))
    assert meta.level_factors() is meta.level_factors()  # worked out once per metadata


def test_a_kept_identifier_is_what_a_fresh_parse_makes() -> None:
    raw = "7;z=2;c=1|0:100$FF0000,-2;m=c"
    first = parse_identifier(raw, 10)
    assert parse_identifier(raw, 10) is first
    assert first == iiif_params._parse_identifier(raw, 10)
    # The channel limit is part of the key: a lower one refuses what was kept.
    two = "7;c=1|0:100$FF0000,2|0:100$00FF00"
    assert parse_identifier(two, 10).overrides.channels
    with pytest.raises(BadRequest):
        parse_identifier(two, 1)


def test_a_refused_identifier_or_size_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(NotFound):
            parse_identifier("x7", 10)
        with pytest.raises(BadRequest):
            parse_size("256,,", Version.V3)


def test_a_kept_size_belongs_to_its_version() -> None:
    assert parse_size("full", Version.V2).kind == "full"
    with pytest.raises(BadRequest):
        parse_size("full", Version.V3)  # removed in 3.0
    assert parse_size("256,", Version.V3) is parse_size("256,", Version.V3)


def test_kept_identifiers_and_sizes_are_bounded() -> None:
    for n in range(iiif_params.IDENTIFIERS_KEPT + 5):
        parse_identifier(str(n + 1), 10)
        parse_size(f"{n + 1},", Version.V3)
    assert 0 < len(iiif_params._IDENTIFIERS) <= iiif_params.IDENTIFIERS_KEPT
    assert 0 < len(iiif_params._SIZES) <= iiif_params.SIZES_KEPT


# --- the image request's kept segments (iiif.image_ask) ---------------------------------------


def _asked(segments: list[str]) -> object:
    """image_ask's answer, or the status and detail of its refusal."""
    from idrserve.http import iiif
    from idrserve.settings import LimitSettings

    try:
        return iiif.image_ask(Version.V3, segments, LimitSettings())
    except IdrServeError as exc:
        return (exc.status, exc.detail)


@given(segment, segment, segment, segment)
def test_an_image_request_with_kept_segments_is_what_a_fresh_parse_makes(
    region: str, size: str, rotation: str, last: str
) -> None:
    from idrserve.http import iiif

    for fixed in ((size, rotation, last), ("256,", "0", "default.jpg")):
        segments = ["7;c=1|0:100$FF0000", region, *fixed]
        iiif._FIXED.clear()
        fresh = _asked(segments)
        assert _asked(segments) == fresh  # now from the kept segments, when they were valid
        # Another region with the same kept segments: refused or read as a fresh parse does.
        iiif._FIXED.clear()
        _asked(["7;c=1|0:100$FF0000", "0,0,1,1", *fixed])
        assert _asked(segments) == fresh


def test_kept_segments_are_bounded_and_a_refused_one_is_never_kept() -> None:
    from idrserve.http import iiif

    iiif._FIXED.clear()
    for n in range(iiif.FIXED_KEPT + 5):
        assert not isinstance(_asked(["7", "0,0,256,256", f"{n + 1},", "0", "default.jpg"]), tuple)
    assert len(iiif._FIXED) == iiif.FIXED_KEPT
    iiif._FIXED.clear()
    assert _asked(["7", "0,0,256,256", "256,", "45", "default.jpg"])[0] == 501  # type: ignore[index]
    assert len(iiif._FIXED) == 0


@pytest.mark.parametrize("text", ["0,0,256,256", "00,7,0001,9", "4096,0,1,2"])
def test_pixel_regions_read_by_one_match_as_by_the_general_grammar(text: str) -> None:
    assert parse_region(text) == iiif_params.RegionSpec(
        "px", tuple(float(p) for p in text.split(","))
    )


@pytest.mark.parametrize("text", ["0,0,0,5", "0,0,5,000", "1,2,3", "1,2,3,4,5", "+1,2,3,4"])
def test_pixel_regions_the_one_match_passes_on_are_refused(text: str) -> None:
    with pytest.raises(BadRequest):
        parse_region(text)
