"""Fuzzing the URL parsers: no input may raise anything but BadRequest / NotFound (no 500s),
and formatting random overrides into webgateway syntax parses back to the same overrides."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from hypothesis import example, given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from idrserve.errors import BadRequest, NotFound
from idrserve.http import params
from idrserve.http.params import (
    parse_callback,
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
from idrserve.model import ChannelOverride, ColorModel, Family, MapOverride, RenderOverrides

# Text that looks like the grammar often enough to reach deep branches.
FRAGMENTS = [
    ",", "|", ":", "$", "-", "+", "0", "1", "2", "9", "-1", ".", "e", "e309", "1e309", "nan",
    "inf", "-inf", "%", "%2C", "%7C", "FF0000", "F00", "FF000080", "#", ".lut", "cool.lut",
    "[", "]", "{", "}", '"', "null", "true", "false", '"inverted"', '"reverse"',
    '"enabled"', '"quantization"', '"family"', '"polynomial"', '"coefficient"', "1e999",
    "99999999999999999999999", "2147483648", " ", "\n", "\x00", "é", "١", "𝟙", "_", "\\",
    "intmax", "intmean", "intsum", "normal", "g", "c", "h", "v",
]  # fmt: skip
grammar_text = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
any_text = st.one_of(st.text(max_size=200), grammar_text, st.from_regex(r"[-+0-9,|:$.e ]*"))
KEYS = ["c", "m", "maps", "p", "q", "format", "flip", "z", "t", "tile", "region", "id", "x"]
queries = st.lists(st.tuples(st.sampled_from(KEYS), any_text), max_size=8).map(MultiDict)


def only_allowed(fn: Callable[[], object]) -> None:
    """Run `fn`; BadRequest/NotFound are fine, any other exception fails the test."""
    with contextlib.suppress(BadRequest, NotFound):
        fn()


@settings(max_examples=500)
@given(queries, st.integers(1, 20), st.booleans())
@example(
    MultiDict([("c", "1|1e309:nan$FFF,-0,+2$$,3|0:1$cool.lut"), ("maps", "[" * 5000)]), 3, False
)
@example(
    MultiDict(
        [
            ("c", "1|0:1$FFF"),
            ("maps", '[{"quantization":{"family":"polynomial","coefficient":1e400}}]'),
        ]
    ),
    1,
    True,
)
@example(MultiDict([("c", "1"), ("maps", "[" + "9" * 5000 + "]")]), 1, False)
def test_render_overrides_never_crash(query: MultiDict[str], limit: int, strict: bool) -> None:
    only_allowed(lambda: parse_render_overrides(query, max_active_channels=limit, strict=strict))


@given(queries, st.integers(0, 10))
def test_query_parsers_never_crash(query: MultiDict[str], size_z: int) -> None:
    only_allowed(lambda: parse_projection(query, size_z))
    only_allowed(lambda: parse_quality(query, 0.85))
    only_allowed(lambda: parse_format(query))
    only_allowed(lambda: parse_flip(query))
    only_allowed(lambda: parse_thumbnail_query(query))
    only_allowed(lambda: parse_callback(query.get("x")))
    only_allowed(lambda: parse_ids(query.getall("id", []), 50))
    only_allowed(lambda: parse_tile_or_region(query, 5, (256, 256), 2048))


@settings(max_examples=500)
@given(any_text, st.integers(0, 8), st.integers(1, 5000), st.integers(1, 5000))
@example("0,99999999999999999999999999,0", 5, 256, 2048)
@example("0,2147483647,2147483647,2147483647,2147483647", 1, 256, 2048)
def test_tile_and_region_never_crash(text: str, levels: int, tile: int, limit: int) -> None:
    only_allowed(lambda: parse_tile(text, levels, (tile, tile), limit))
    only_allowed(lambda: parse_region(text))


@given(any_text)
@example("9" * 5000)
def test_path_and_callback_never_crash(text: str) -> None:
    only_allowed(lambda: parse_path_int(text, "iid"))
    only_allowed(lambda: parse_callback(text))
    only_allowed(lambda: parse_ids([text], 50))


@given(any_text)
def test_tile_results_are_sane(text: str) -> None:
    try:
        level, box = parse_tile(text, 5, (256, 256), 1024)
    except BadRequest:
        return
    assert 0 <= level < 5
    assert 0 < box.w <= 1024
    assert 0 < box.h <= 1024
    assert box.x >= 0
    assert box.y >= 0


# --------------------------------------------------------------------------------------------
# round trip: format(overrides) parses back to the same overrides

finite = st.floats(allow_nan=False, allow_infinity=False)
rgba = st.tuples(*[st.integers(0, 255)] * 4)
lut_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.+ -]{0,20}", fullmatch=True).map(
    lambda s: s.strip() + "x.lut"
)


@st.composite
def channel_overrides(draw: st.DrawFn) -> tuple[ChannelOverride, ...]:
    indices = draw(st.lists(st.integers(0, 200), unique=True, max_size=12))
    out = []
    for index in indices:
        window = draw(st.none() | st.tuples(finite, finite))
        colour = draw(
            st.none() | rgba.map(lambda c: ("rgba", c)) | lut_names.map(lambda n: ("lut", n))
        )
        out.append(
            ChannelOverride(
                index,
                draw(st.booleans()),
                None if window is None else window[0],
                None if window is None else window[1],
                colour[1] if colour and colour[0] == "rgba" else None,  # type: ignore[arg-type]
                colour[1] if colour and colour[0] == "lut" else None,  # type: ignore[arg-type]
            )
        )
    return tuple(out)


map_overrides = st.builds(
    MapOverride,
    inverted=st.booleans(),
    family=st.none() | st.sampled_from(list(Family)),
).flatmap(
    lambda m: (
        st.just(m)
        if m.family is None
        else st.floats(min_value=1e-6, max_value=1e6).map(
            lambda k: MapOverride(m.inverted, m.family, k)
        )
    )
)


def format_entry(ov: ChannelOverride) -> str:
    text = ("" if ov.active else "-") + str(ov.index + 1)
    tail = ""
    if ov.start is not None and ov.end is not None:
        tail += f"{ov.start!r}:{ov.end!r}"
    if ov.color is not None:
        tail += "$" + "".join(f"{v:02X}" for v in ov.color)
    elif ov.lut is not None:
        tail += "$" + ov.lut
    return text + ("|" + tail if tail else "")


def format_map(m: MapOverride) -> dict[str, object]:
    out: dict[str, object] = {"inverted": {"enabled": m.inverted}}
    if m.family is not None:
        out["quantization"] = {"family": m.family.value, "coefficient": m.coefficient}
    return out


@settings(max_examples=300)
@given(channel_overrides(), st.data(), st.sampled_from([None, "g", "c"]))
def test_round_trip(
    channels: tuple[ChannelOverride, ...], data: st.DataObject, m: str | None
) -> None:
    maps = data.draw(
        st.none() | st.lists(map_overrides, min_size=len(channels), max_size=len(channels))
    )
    query = {"c": ",".join(format_entry(ov) for ov in channels)}
    if maps is not None:
        query["maps"] = json.dumps([format_map(x) for x in maps])
    if m is not None:
        query["m"] = m
    got = parse_render_overrides(query, max_active_channels=len(channels) + 1)
    model = {"g": ColorModel.GREYSCALE, "c": ColorModel.COLOR}.get(m or "")
    assert got == RenderOverrides(channels, None if maps is None else tuple(maps), model)
    # the strict (_rdef) parser agrees whenever every entry is complete
    complete = all(
        ov.start is not None and (ov.color is not None or ov.lut is not None) for ov in channels
    )
    if complete and channels and m is not None:
        assert parse_render_overrides(query, max_active_channels=len(channels), strict=True) == got


def _general_int_fields(values: list[str]) -> list[int] | str:
    """The field-by-field parse `params._int_fields` falls back to, or its error."""
    out = []
    for text in values:
        value = params._to_int(text)
        if value is None or abs(value) > params.MAX_COORD:
            return "error"
        out.append(value)
    return out


@given(
    st.lists(
        st.one_of(
            st.text("0123456789", min_size=0, max_size=12),
            st.integers(2**31 - 3, 2**31 + 3).map(str),
            st.text("0123456789 +-٣x", max_size=4),
        ),
        min_size=3,
        max_size=6,
    )
)
@example(["0", "1", "2", "256", "256"])
@example(["00", "01", "2147483647", "1", "1"])
@example(["0", "", "1"])
@example(["0", "١", "1"])
def test_plain_digit_tile_fields_parse_as_the_general_parser(values: list[str]) -> None:
    """The one-go conversion of plain-digit fields gives what the general parser gives, and
    anything else still gets its 400."""
    expected = _general_int_fields(values)
    try:
        got: list[int] | str = params._int_fields(values, "tile", "form", ",".join(values))
    except BadRequest:
        got = "error"
    assert got == expected
