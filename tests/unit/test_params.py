"""Webgateway grammar: every parser rule; docs/webgateway.md#conformance-cases 5–17 here."""

from __future__ import annotations

from dataclasses import replace

import pytest
from multidict import MultiDict

from idrserve.errors import BadRequest, NotFound
from idrserve.http.params import (
    MAX_C_ENTRIES,
    TooManyThumbnails,
    parse_callback,
    parse_colour,
    parse_flip,
    parse_format,
    parse_ids,
    parse_path_int,
    parse_projection,
    parse_quality,
    parse_region,
    parse_render_overrides,
    parse_thumbnail_query,
    parse_tile,
    parse_tile_or_region,
)
from idrserve.model import (
    Box,
    ChannelMeta,
    ChannelOverride,
    ColorModel,
    Family,
    Format,
    ImageMeta,
    LevelMeta,
    MapOverride,
    Projection,
    RenderOverrides,
)
from idrserve.render.settings import resolve_render

BLUE = (0, 0, 255, 255)
GREEN = (0, 255, 0, 255)
RED = (255, 0, 0, 255)


def image_p(*, inverted: tuple[bool, bool, bool] = (False, False, False)) -> ImageMeta:
    """Conformance fixture P: 10000×8000 uint16, 3 ch, 5 levels, ch1 blue / ch2 green active."""
    levels = tuple(LevelMeta(10000 >> i, 8000 >> i, 256, 256) for i in range(5))
    channels = (
        ChannelMeta("c1", BLUE, 0, 65535, 110, 1800, True, inverted=inverted[0]),
        ChannelMeta("c2", GREEN, 0, 65535, 200, 2500, True, inverted=inverted[1]),
        ChannelMeta("c3", RED, 0, 65535, 0, 900, False, inverted=inverted[2]),
    )
    return ImageMeta(1, "P", "uint16", 10000, 8000, 1, 3, 1, levels, channels)


def image_s() -> ImageMeta:
    """Conformance fixture S: single-level 600×400 uint8, one channel."""
    ch = ChannelMeta("s", (255, 255, 255, 255), 0, 255, 0, 255, True)
    return ImageMeta(2, "S", "uint8", 600, 400, 1, 1, 1, (LevelMeta(600, 400, 600, 400),), (ch,))


def overrides(query: str, **kwargs: int | bool) -> RenderOverrides:
    """Parse a raw query string (values unescaped, as aiohttp would hand them over)."""
    pairs = [part.partition("=")[::2] for part in query.split("&") if part]
    return parse_render_overrides(MultiDict(pairs), **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# c


def test_c_absent_gives_no_channel_overrides() -> None:
    assert overrides("m=c") == RenderOverrides(model=ColorModel.COLOR)
    assert overrides("") == RenderOverrides()


def test_c_full_entry() -> None:
    ov = overrides("c=1|110:1800$00FF00,-2|0:4095$FF0000,3|50:900$cool.lut")
    assert ov.channels == (
        ChannelOverride(0, True, 110.0, 1800.0, GREEN),
        ChannelOverride(1, False, 0.0, 4095.0, RED),
        ChannelOverride(2, True, 50.0, 900.0, None, "cool.lut"),
    )
    assert ov.maps is None
    assert ov.model is None


@pytest.mark.parametrize("c", ["", "0", "-0", "0|0:1$FF0000", "abc", ",,,"])
def test_c_empty_or_channel_zero_means_all_inactive(c: str) -> None:
    assert parse_render_overrides({"c": c}).channels == ()


def test_c_bare_numbers_and_sign() -> None:
    ov = parse_render_overrides({"c": "2,-1, +3 "})
    assert ov.channels == (
        ChannelOverride(1, True),
        ChannelOverride(0, False),
        ChannelOverride(2, True),
    )


def test_c_unparsable_channel_entries_are_dropped() -> None:
    ov = parse_render_overrides({"c": "x|0:1$FF0000,1.5,2|0:9$00FF00,1$F$F,١"})
    assert ov.channels == (ChannelOverride(1, True, 0.0, 9.0, GREEN),)


@pytest.mark.parametrize(
    "tail",
    ["100:200r", "12:abc", "100", "1:2:3", "nan:5", "0:inf", "1e309:2", ":", "-inf:0", ""],
)
def test_c_malformed_window_is_absent(tail: str) -> None:
    (entry,) = parse_render_overrides({"c": f"1|{tail}$FF0000"}).channels or ()
    assert (entry.start, entry.end) == (None, None)
    assert entry.color == RED


def test_c_window_uses_python_float_syntax() -> None:
    (entry,) = parse_render_overrides({"c": "1| -1.5e2 : 1_000 "}).channels or ()
    assert (entry.start, entry.end) == (-150.0, 1000.0)


@pytest.mark.parametrize(
    ("colour", "rgba"),
    [
        ("F00", (255, 0, 0, 255)),
        ("f008", (255, 0, 0, 136)),
        ("00ff00", GREEN),
        ("0000FF80", (0, 0, 255, 128)),
        ("123456", (0x12, 0x34, 0x56, 255)),
    ],
)
def test_c_hex_colours(colour: str, rgba: tuple[int, int, int, int]) -> None:
    assert parse_colour(colour) == (rgba, None)
    (entry,) = parse_render_overrides({"c": f"1|0:1${colour}"}).channels or ()
    assert entry.color == rgba
    assert entry.lut is None


@pytest.mark.parametrize(
    "colour", ["#FF0000", "FF", "FF000", "GG0000", "FF0000FF0", "", "red", "FF 000", "0x0F00"]
)
def test_c_invalid_colour_is_ignored(colour: str) -> None:
    (entry,) = parse_render_overrides({"c": f"1|0:1${colour}"}).channels or ()
    assert (entry.color, entry.lut) == (None, None)
    assert (entry.start, entry.end) == (0.0, 1.0)


@pytest.mark.parametrize("lut", ["cool.lut", "16_colors.lut", "3-3-2_rgb.lut", "Red Hot.lut"])
def test_c_lut_names(lut: str) -> None:
    (entry,) = parse_render_overrides({"c": f"1|0:255${lut}"}).channels or ()
    assert (entry.color, entry.lut) == (None, lut)


@pytest.mark.parametrize("lut", [".lut", "a|b.lut", "a,b.lut", "../x.lut", "x=y.lut", "x.LUT"])
def test_c_unsafe_or_non_lut_names_are_ignored(lut: str) -> None:
    ov = parse_render_overrides({"c": f"1|0:255${lut}"})
    for entry in ov.channels or ():
        assert entry.lut is None


def test_c_legacy_colour_in_head_and_tail_precedence() -> None:
    ov = parse_render_overrides({"c": "1$FF0000,2$FF0000|0:5$00FF00"})
    assert ov.channels == (
        ChannelOverride(0, True, None, None, RED),
        ChannelOverride(1, True, 0.0, 5.0, GREEN),
    )


def test_c_duplicate_channel_last_wins() -> None:
    ov = parse_render_overrides({"c": "1|0:10$FF0000,2,-1|5:6$00FF00"})
    assert ov.channels == (ChannelOverride(1, True), ChannelOverride(0, False, 5.0, 6.0, GREEN))


def test_c_inactive_entries_keep_their_window_and_colour() -> None:
    (entry,) = parse_render_overrides({"c": "-3|0:900$FF0000"}).channels or ()
    assert entry == ChannelOverride(2, False, 0.0, 900.0, RED)


def test_c_active_channel_limit() -> None:
    parse_render_overrides({"c": "1,2,3,-4,-5"}, max_active_channels=3)
    with pytest.raises(BadRequest) as exc:
        parse_render_overrides({"c": "1,2,3,4"}, max_active_channels=3)
    assert exc.value.param == "c"
    # duplicates count once; inactive entries do not count
    parse_render_overrides({"c": "1,1,1,1,-2,-3"}, max_active_channels=1)


def test_c_entry_count_limit() -> None:
    many = ",".join(f"-{i}" for i in range(1, MAX_C_ENTRIES + 1))
    assert len(parse_render_overrides({"c": many}).channels or ()) == MAX_C_ENTRIES
    with pytest.raises(BadRequest) as exc:
        parse_render_overrides({"c": many + ",-1"})
    assert exc.value.param == "c"


def test_c_huge_channel_numbers_are_dropped() -> None:
    ov = parse_render_overrides({"c": "99999999999999999999999,1,-4294967296"})
    assert ov.channels == (ChannelOverride(0, True),)


def test_repeated_keys_last_value_wins_like_django() -> None:
    query = MultiDict([("c", "1"), ("m", "c"), ("c", "2"), ("m", "g")])
    ov = parse_render_overrides(query)
    assert ov.channels == (ChannelOverride(1, True),)
    assert ov.model is ColorModel.GREYSCALE


# --------------------------------------------------------------------------------------------
# m


@pytest.mark.parametrize(
    ("m", "model"),
    [("g", ColorModel.GREYSCALE), ("c", ColorModel.COLOR), ("G", None), ("rgb", None), ("", None)],
)
def test_m(m: str, model: ColorModel | None) -> None:
    assert parse_render_overrides({"m": m}).model is model


# --------------------------------------------------------------------------------------------
# maps


def test_maps_inverted_reverse_and_empty_object() -> None:
    ov = overrides(
        'c=1,2,3,4,5,6&maps=[{"inverted":{"enabled":true}},{"reverse":{"enabled":"true"}},'
        '{"inverted":{"enabled":"false"}},{},{"inverted":null,"reverse":{"enabled":1}},'
        '{"inverted":{}}]'
    )
    assert [m.inverted for m in ov.maps or ()] == [True, True, False, False, True, False]


def test_maps_shorter_than_c_is_padded_with_missing_entries() -> None:
    ov = overrides('c=1,2,3&maps=[{"inverted":{"enabled":true}}]')
    assert ov.maps == (MapOverride(inverted=True), MapOverride(), MapOverride())


def test_maps_quantization() -> None:
    ov = overrides(
        "c=1,2,3,4,5,6,7&maps=["
        '{"quantization":{"family":"polynomial","coefficient":2}},'
        '{"quantization":{"family":"logarithmic"}},'
        '{"quantization":{"family":"exponential","coefficient":-1}},'
        '{"quantization":{"family":"bogus","coefficient":3}},'
        '{"quantization":{"coefficient":3}},'
        '{"quantization":{"family":"polynomial","coefficient":1e999}},'
        '{"quantization":"linear"}]'
    )
    got = [(m.family, m.coefficient) for m in ov.maps or ()]
    assert got == [
        (Family.POLYNOMIAL, 2.0),
        (Family.LOGARITHMIC, 1.0),
        (Family.EXPONENTIAL, 1.0),
        (None, None),
        (None, None),
        (Family.POLYNOMIAL, 1.0),
        (None, None),
    ]
    assert all(m.inverted is False for m in ov.maps or ())


@pytest.mark.parametrize(
    "maps",
    ["[{", "not json", "", "{}", "null", '"x"', "[1]", '[{"inverted":{}}, 2]', "[" * 100_000],
)
def test_maps_malformed_is_ignored(maps: str) -> None:
    assert parse_render_overrides({"c": "1", "maps": maps}).maps is None


def test_maps_with_invalid_inverted_value_drops_all_inversion_flags_only() -> None:
    ov = overrides(
        'c=1,2&maps=[{"inverted":{"enabled":true}},'
        '{"inverted":true,"quantization":{"family":"polynomial","coefficient":2}}]'
    )
    assert ov.maps == (
        MapOverride(inverted=None),
        MapOverride(inverted=None, family=Family.POLYNOMIAL, coefficient=2.0),
    )


def test_maps_without_c_is_ignored() -> None:
    ov = parse_render_overrides({"maps": '[{"inverted":{"enabled":true}}]'})
    assert ov.maps is None
    assert ov.channels is None


def test_maps_follow_their_entry_through_drops_and_duplicates() -> None:
    ov = overrides(
        'c=1,x,2,1&maps=[{"inverted":{"enabled":true}},{"inverted":{"enabled":true}},'
        '{"reverse":{"enabled":true}},{}]'
    )
    assert ov.channels == (ChannelOverride(1, True), ChannelOverride(0, True))
    assert ov.maps == (MapOverride(inverted=True), MapOverride(inverted=False))


# --------------------------------------------------------------------------------------------
# strict (docs/webgateway.md#_rdef-routes)


def test_strict_accepts_complete_settings() -> None:
    query = {
        "c": "1|0:255$FF0000,-2|0:10$cool.lut",
        "m": "g",
        "maps": '[{"inverted":{"enabled":true}},{}]',
    }
    ov = parse_render_overrides(query, strict=True)
    assert ov == parse_render_overrides(query)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"m": "c"}, "c"),
        ({"c": "1|0:255$FF0000"}, "m"),
        ({"c": "1|0:255$FF0000", "m": "x"}, "m"),
        ({"c": "1|0:255", "m": "c"}, "c"),
        ({"c": "1$FF0000", "m": "c"}, "c"),
        ({"c": "1|0:255$FF0000,2", "m": "c"}, "c"),
        ({"c": "1|0:x$FF0000", "m": "c"}, "c"),
        ({"c": "1|0:255$#FF0000", "m": "c"}, "c"),
        ({"c": "a|0:255$FF0000", "m": "c"}, "c"),
        ({"c": "", "m": "c"}, "c"),
        ({"c": "1|0:255$FF0000", "m": "c", "maps": "[{"}, "maps"),
        ({"c": "1|0:255$FF0000", "m": "c", "maps": "[{},{}]"}, "maps"),
        ({"c": "1|0:255$FF0000", "m": "c", "maps": "[1]"}, "maps"),
        ({"c": "1|0:255$FF0000", "m": "c", "maps": "{}"}, "maps"),
    ],
)
def test_strict_rejects(query: dict[str, str], param: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_render_overrides(query, strict=True)
    assert exc.value.param == param
    assert param in exc.value.detail


# --------------------------------------------------------------------------------------------
# Resolution of conformance cases 2 and 10–17 (pixels are the renderer's; here: the settings)


IVIEWER_016 = (
    "c=1|110:1800$0000FF,2|200:2500$00FF00,-3|0:900$FF0000"
    '&maps=[{"inverted":{"enabled":false}},{"inverted":{"enabled":false}},{}]&m=c&p=normal'
)
IVIEWER_018 = (
    "c=1|110:1800$0000FF,2|200:2500$00FF00"
    '&maps=[{"inverted":{"enabled":false}},{"inverted":{"enabled":false}}]&m=c'
)
OLD_VIEWER = "c=1|110:1800$0000FF,2|200:2500$00FF00,-3|0:900$FF0000&m=c"


@pytest.mark.parametrize("saved_inversion", [(False, False, False), (True, False, True)])
def test_case2_iviewer_016_and_018_forms_resolve_equal(
    saved_inversion: tuple[bool, bool, bool],
) -> None:
    meta = image_p(inverted=saved_inversion)
    a = resolve_render(meta, overrides(IVIEWER_016))
    b = resolve_render(meta, overrides(IVIEWER_018))
    assert a == b
    assert a.canonical() == b.canonical()
    assert a.channels[0].inverted is False  # `enabled:false` removes a saved inversion
    assert a.channels[2] == replace(meta.channels[2].render(), active=False)


def test_case1_explicit_settings_equal_saved_have_same_canonical_as_no_c() -> None:
    meta = image_p()
    explicit = resolve_render(meta, overrides(OLD_VIEWER))
    saved = resolve_render(meta, overrides("m=c"))
    assert explicit.canonical() == saved.canonical()


def test_case10_no_c_uses_saved_settings() -> None:
    meta = image_p()
    assert resolve_render(meta, overrides("")) == meta.default_render()


@pytest.mark.parametrize("c", ["c=", "c=0"])
def test_case11_empty_c_renders_nothing(c: str) -> None:
    settings = resolve_render(image_p(), overrides(c))
    assert settings.active_indices() == ()
    assert settings.canonical() == "m=color;"


def test_case12_single_channel_uses_saved_window_and_colour() -> None:
    settings = resolve_render(image_p(), overrides("c=2"))
    assert settings.active_indices() == (1,)
    ch = settings.channels[1]
    assert (ch.start, ch.end, ch.color) == (200, 2500, GREEN)


def test_case13_greyscale_ignores_colour() -> None:
    meta = image_p()
    red = resolve_render(meta, overrides("c=1|110:1800$FF0000&m=g"))
    green = resolve_render(meta, overrides("c=1|110:1800$00FF00&m=g"))
    assert red.model is ColorModel.GREYSCALE
    assert red.active_indices() == (0,)
    assert red.canonical() == green.canonical()


@pytest.mark.parametrize("key", ["inverted", "reverse"])
def test_case14_inversion_and_reverse_alias(key: str) -> None:
    settings = resolve_render(
        image_s(), overrides(f'c=1|0:255$FFFFFF&maps=[{{"{key}":{{"enabled":true}}}}]')
    )
    assert settings.channels[0].inverted is True


def test_case15_lut_then_hex_clears_it() -> None:
    meta = image_s()
    with_lut = resolve_render(meta, overrides("c=1|0:255$cool.lut"))
    assert with_lut.channels[0].lut == "cool.lut"
    assert with_lut.channels[0].color == (255, 255, 255, 255)  # kept, unused
    lut_meta = ImageMeta(
        2,
        "S",
        "uint8",
        600,
        400,
        1,
        1,
        1,
        meta.levels,
        (ChannelMeta("s", (255, 255, 255, 255), 0, 255, 0, 255, True, lut="cool.lut"),),
    )
    cleared = resolve_render(lut_meta, overrides("c=1|0:255$FF0000"))
    assert (cleared.channels[0].lut, cleared.channels[0].color) == (None, RED)


def test_case16_quantization() -> None:
    poly = resolve_render(
        image_s(),
        overrides(
            'c=1|0:255$FFFFFF&maps=[{"quantization":{"family":"polynomial","coefficient":2}}]'
        ),
    )
    assert (poly.channels[0].family, poly.channels[0].coefficient) == (Family.POLYNOMIAL, 2.0)
    linear = resolve_render(
        image_s(),
        overrides('c=1|0:255$FFFFFF&maps=[{"quantization":{"family":"linear","coefficient":5}}]'),
    )
    assert (linear.channels[0].family, linear.channels[0].coefficient) == (Family.LINEAR, 1.0)


def test_case17_out_of_range_windows_pass_through_to_the_renderer() -> None:
    settings = resolve_render(image_s(), overrides("c=1|-50:300$FFFFFF"))
    assert (settings.channels[0].start, settings.channels[0].end) == (-50.0, 300.0)


# --------------------------------------------------------------------------------------------
# tile (docs/webgateway.md#tiles-and-regions, cases 5–8)


def test_case5_levels() -> None:
    with pytest.raises(BadRequest) as exc:
        parse_tile("5,0,0,512,512", 5, (256, 256), 2048)
    assert exc.value.param == "tile"
    with pytest.raises(BadRequest):
        parse_tile("-1,0,0,512,512", 5, (256, 256), 2048)
    with pytest.raises(BadRequest):
        parse_tile("1,0,0,256,256", 1, (600, 400), 2048)
    assert parse_tile("0,0,0,256,256", 1, (600, 400), 2048) == (0, Box(0, 0, 256, 256))
    assert parse_tile("4,0,0,512,512", 5, (256, 256), 2048) == (4, Box(0, 0, 512, 512))


@pytest.mark.parametrize(("limit", "side"), [(1024, 1024), (2048, 2048), (8192, 4096)])
def test_case6_tile_size_clamped(limit: int, side: int) -> None:
    assert parse_tile("0,0,0,4096,4096", 5, (256, 256), limit) == (0, Box(0, 0, side, side))


def test_case7_default_tile_size() -> None:
    assert parse_tile("0,1,1", 5, (256, 256), 2048) == (0, Box(256, 256, 256, 256))
    assert parse_tile("0,1,1,junk", 5, (256, 128), 2048) == (0, Box(256, 128, 256, 128))
    # web: the default tile size is never clamped
    assert parse_tile("0,1,0", 1, (4096, 4096), 2048) == (0, Box(4096, 0, 4096, 4096))


@pytest.mark.parametrize(
    "tile", ["0,0,0,0,0", "0,0,0,-1,-1", "0,1,1,-5,300", "0,1,1,300,0", "0,0,0,256,-256,9"]
)
def test_tile_w_or_h_not_positive_is_400(tile: str) -> None:
    """Deliberately unlike web, which quietly renders the default tile size: as `region=`."""
    with pytest.raises(BadRequest, match=r"^tile: w and h must be > 0, tile=") as exc:
        parse_tile(tile, 5, (256, 256), 2048)
    assert exc.value.param == "tile"
    with pytest.raises(BadRequest, match=r"^tile: w and h must be > 0"):
        parse_tile_or_region({"tile": tile, "region": "0,0,10,10"}, 5, (256, 256), 2048)


def test_tile_position_is_col_times_w() -> None:
    assert parse_tile("2,3,1,512,512", 5, (256, 256), 2048) == (2, Box(1536, 512, 512, 512))
    assert parse_tile("2,4,3,512,512", 5, (256, 256), 2048) == (2, Box(2048, 1536, 512, 512))
    # not clipped here: the service clips (452×464) or answers 404 (col 5)
    assert parse_tile("2,5,0,512,512", 5, (256, 256), 2048) == (2, Box(2560, 0, 512, 512))
    assert Box(2048, 1536, 512, 512).clip(2500, 2000) == Box(2048, 1536, 452, 464)


def test_tile_extra_fields_ignored_and_whitespace_allowed() -> None:
    assert parse_tile(" 0 , 1 ,+1,64,64,9,x", 1, (256, 256), 2048) == (0, Box(64, 64, 64, 64))


@pytest.mark.parametrize(
    "tile",
    [
        "a,b,c",
        "",
        "0",
        "0,0",
        "0,0,x",
        "0,0,0,a,b",
        "0,0,0,1.5,2",
        "0.0,0,0",
        "0,1e3,0",
        "0,,0",
        "1_0,0,0",
        "0,2147483648,0",
        "0,0,0,99999999999999999999999999,1",
        "0,-1,0",
        "0,0,-1",
        "0,2147483647,0,2,2",
        "٠,0,0",
    ],
)
def test_case8_malformed_tiles(tile: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_tile(tile, 5, (256, 256), 2048)
    assert exc.value.param == "tile"
    assert "tile" in exc.value.detail


def test_malformed_tile_message_is_web_like() -> None:
    with pytest.raises(BadRequest, match=r"malformed tile argument, tile=a,b,c"):
        parse_tile("a,b,c", 5, (256, 256), 2048)


def test_tile_or_region_selection() -> None:
    args = (5, (256, 256), 2048)
    assert parse_tile_or_region({"tile": "1,0,0"}, *args) == (1, Box(0, 0, 256, 256))
    assert parse_tile_or_region({"tile": "1,0,0", "region": "1,2,3,4"}, *args)[0] == 1
    assert parse_tile_or_region({"tile": "", "region": "1,2,3,4"}, *args) == (0, Box(1, 2, 3, 4))
    for query in ({}, {"tile": ""}, {"region": ""}, {"tile": "", "region": ""}):
        with pytest.raises(BadRequest, match="tile or region argument required") as exc:
            parse_tile_or_region(query, *args)
        assert exc.value.param == "tile"


# --------------------------------------------------------------------------------------------
# region (case 9)


def test_case9_region() -> None:
    assert parse_region("100,200,300,50") == Box(100, 200, 300, 50)
    assert parse_region("500,0,300,50").clip(600, 400) == Box(500, 0, 100, 50)
    assert parse_region("1,2,3,4,junk,5") == Box(1, 2, 3, 4)


@pytest.mark.parametrize(
    "region",
    [
        "1,2",
        "",
        "1,2,3",
        "a,2,3,4",
        "1,2,3,4.0",
        "-1,0,10,10",
        "0,-1,10,10",
        "0,0,0,10",
        "0,0,10,-10",
        "0,0,2147483648,1",
        "99999999999999999999999999999,0,1,1",
    ],
)
def test_region_rejects(region: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_region(region)
    assert exc.value.param == "region"
    assert "region" in exc.value.detail


# --------------------------------------------------------------------------------------------
# p


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (None, (Projection.NORMAL, 0, 0)),
        ("normal", (Projection.NORMAL, 0, 0)),
        ("split", (Projection.NORMAL, 0, 0)),
        ("bogus|1:2", (Projection.NORMAL, 0, 0)),
        ("INTMAX", (Projection.NORMAL, 0, 0)),
        ("intmax", (Projection.INTMAX, 0, 4)),
        ("intmax|1:3", (Projection.INTMAX, 1, 3)),
        ("intmean|1:3", (Projection.INTMEAN, 1, 3)),
        ("intsum", (Projection.INTSUM, 0, 4)),
        ("intmax|-3:99", (Projection.INTMAX, 0, 4)),
        ("intmax|a:b", (Projection.INTMAX, 0, 4)),
        ("intmax|1:2:3", (Projection.INTMAX, 0, 4)),
        ("intmax|", (Projection.INTMAX, 0, 4)),
        ("intmax|2", (Projection.INTMAX, 0, 4)),
        ("intmax|2:2", (Projection.INTMAX, 2, 2)),
        ("intmax|0:99999999999999999999999999", (Projection.INTMAX, 0, 4)),
    ],
)
def test_projection(p: str | None, expected: tuple[Projection, int, int]) -> None:
    query = {} if p is None else {"p": p}
    assert parse_projection(query, 5) == expected


@pytest.mark.parametrize("p", ["intmax|3:1", "intmax|7:9", "intsum|99999999999999999999999:1"])
def test_projection_empty_range(p: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_projection({"p": p}, 5)
    assert exc.value.param == "p"


def test_projection_single_plane() -> None:
    assert parse_projection({"p": "intmax"}, 1) == (Projection.INTMAX, 0, 0)


# --------------------------------------------------------------------------------------------
# q, format, flip


def test_quality() -> None:
    assert parse_quality({}, 0.85) == 0.85
    assert parse_quality({"q": "0.9"}, 0.85) == 0.9
    assert parse_quality({"q": "1"}, 0.85) == 1.0
    assert parse_quality({"q": " 5e-1 "}, 0.85) == 0.5


@pytest.mark.parametrize("q", ["", "abc", "nan", "inf", "-inf", "1e309", "0", "-0.1", "1.01", "90"])
def test_quality_rejects(q: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_quality({"q": q}, 0.85)
    assert exc.value.param == "q"
    assert "q" in exc.value.detail


@pytest.mark.parametrize(
    ("value", "fmt"),
    [
        (None, Format.JPEG),
        ("jpeg", Format.JPEG),
        ("jpg", Format.JPEG),
        ("JPEG", Format.JPEG),
        ("png", Format.PNG),
        ("tif", Format.TIFF),
        ("tiff", Format.TIFF),
    ],
)
def test_format(value: str | None, fmt: Format) -> None:
    assert parse_format({} if value is None else {"format": value}) is fmt


@pytest.mark.parametrize("value", ["", "gif", "webp", "png ", "jpeg2000"])
def test_format_rejects(value: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_format({"format": value})
    assert exc.value.param == "format"


@pytest.mark.parametrize(
    ("flip", "expected"),
    [
        (None, (False, False)),
        ("", (False, False)),
        ("h", (True, False)),
        ("V", (False, True)),
        ("hv", (True, True)),
        ("vertical,Horizontal", (True, True)),
        ("x", (False, False)),
    ],
)
def test_flip(flip: str | None, expected: tuple[bool, bool]) -> None:
    assert parse_flip({} if flip is None else {"flip": flip}) == expected


# --------------------------------------------------------------------------------------------
# thumbnails: z/t, ids, callback


def test_thumbnail_query() -> None:
    assert parse_thumbnail_query({}) == (None, None)
    assert parse_thumbnail_query({"z": "0", "t": "3", "rev": "x"}) == (0, 3)
    assert parse_thumbnail_query({"t": "2"}) == (None, 2)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"z": "a"}, "z"),
        ({"z": ""}, "z"),
        ({"z": "-1"}, "z"),
        ({"z": "1.0"}, "z"),
        ({"t": "2147483648"}, "t"),
        ({"z": "0", "t": "x"}, "t"),
    ],
)
def test_thumbnail_query_rejects(query: dict[str, str], param: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_thumbnail_query(query)
    assert exc.value.param == param


def test_ids() -> None:
    assert parse_ids(["3", "1", "3", "", " 2", "01"], 50) == [3, 1, 2]
    assert parse_ids([], 50) == []
    assert parse_ids([str(i) for i in range(50)] * 2, 50) == list(range(50))


@pytest.mark.parametrize("value", ["x", "-1", "1.5", "1,2", "9223372036854775808", "1e3"])
def test_ids_rejects(value: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_ids(["1", value], 50)
    assert exc.value.param == "id"
    assert not isinstance(exc.value, TooManyThumbnails)


def test_ids_too_many() -> None:
    with pytest.raises(TooManyThumbnails) as exc:
        parse_ids([str(i) for i in range(51)], 50)
    assert exc.value.detail == "Max 50 thumbnails at a time."
    assert exc.value.limit == 50
    assert isinstance(exc.value, BadRequest)


@pytest.mark.parametrize("cb", ["jQuery123_456", "$", "_cb", "a1$"])
def test_callback(cb: str) -> None:
    assert parse_callback(cb) == cb
    assert parse_callback(None) is None


@pytest.mark.parametrize("cb", ["", "alert(1)", "1abc", "a.b", "cb\n", "a" * 257, "é"])
def test_callback_rejects(cb: str) -> None:
    with pytest.raises(BadRequest, match="Invalid callback") as exc:
        parse_callback(cb)
    assert exc.value.param == "callback"


# --------------------------------------------------------------------------------------------
# path segments


def test_path_int() -> None:
    assert parse_path_int("0", "z") == 0
    assert parse_path_int("007", "iid") == 7
    assert parse_path_int("9223372036854775807", "iid") == 2**63 - 1


@pytest.mark.parametrize(
    "value", ["", "-1", "+1", " 1", "1 ", "1.0", "abc", "١", "9223372036854775808", "9" * 5000]
)
def test_path_int_rejects_with_not_found(value: str) -> None:
    with pytest.raises(NotFound) as exc:
        parse_path_int(value, "iid")
    assert exc.value.param == "iid"
