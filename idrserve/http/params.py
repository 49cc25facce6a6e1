"""Parse webgateway (OMERO.web) query strings and path segments into typed values.

Pure functions with no aiohttp import; the grammar and its rules: docs/webgateway.md.

Query objects are any ``Mapping[str, str]``. If the object also has ``getall`` (aiohttp's
``MultiDictProxy``), the *last* value of a repeated key wins, as with Django's ``QueryDict`` on
OMERO.web. The one parameter whose repetition matters, ``id`` on get_thumbnails, is passed
as a list: ``parse_ids(request.query.getall("id", []), limit)``.

Every failure is a ``BadRequest`` (400) naming the parameter and the expected form, except
path segments, which raise ``NotFound`` because OMERO.web's router would not match them.
Resolution levels use the URL numbering, which is already idrserve's: 0 = full resolution.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from idrserve.errors import BadRequest, NotFound
from idrserve.model import (
    RGBA,
    Box,
    ChannelOverride,
    ColorModel,
    Family,
    Format,
    MapOverride,
    Projection,
    RenderOverrides,
)

MAX_COORD = 2**31 - 1  # tile/region numbers and z/t beyond this are absurd: 400
MAX_ID = 2**63 - 1  # OMERO ids are Java longs
MAX_C_ENTRIES = 1000  # c= entries; IDR's widest images have ~150 channels
MAX_CALLBACK_LENGTH = 256
_HUGE = 10**21  # stands in for integers too long to convert (beyond every limit above)
_ECHO_LENGTH = 64

_INT = re.compile(r"[+-]?[0-9]+")
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"[0-9A-Fa-f]{3,4}|[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8}")
# Stricter than web ("anything ending in .lut"): the name goes into cache keys and logs, so
# separators such as `|` `,` `=` must not appear. Real OMERO LUT file names all fit.
_LUT = re.compile(r"[A-Za-z0-9_.+ -]{1,124}\.lut")
_CALLBACK = re.compile(r"[a-zA-Z_$][0-9a-zA-Z_$]*")

_MODELS = {"g": ColorModel.GREYSCALE, "c": ColorModel.COLOR}
_FORMATS = {
    "jpeg": Format.JPEG,
    "jpg": Format.JPEG,
    "png": Format.PNG,
    "tif": Format.TIFF,
    "tiff": Format.TIFF,
}
_PROJECTIONS = {p.value: p for p in Projection}
_FAMILIES = {f.value: f for f in Family}
_MISSING_MAP = MapOverride()
_C_FORM = "c=[-]N[|start:end][$RRGGBB|$name.lut],… (N 1-based)"
_TILE_FORM = "tile=level,col,row[,w,h] (integers)"
_REGION_FORM = "region=x,y,w,h (integers)"

_ChannelEntry = tuple[int, float | None, float | None, str | None]


class TooManyThumbnails(BadRequest):
    """More distinct ids than the batch limit; OMERO.web answers 500 with this exact text."""

    code = "too_many_thumbnails"

    def __init__(self, limit: int) -> None:
        super().__init__(f"Max {limit} thumbnails at a time.", param="id")
        self.limit = limit


# ---------------------------------------------------------------------------------------------
# small helpers


def last(query: Mapping[str, str], key: str) -> str | None:
    """The last value of `key` (Django semantics) or None when absent: the value every
    parser here reads."""
    getall = getattr(query, "getall", None)
    if getall is None:
        return query.get(key)
    values = getall(key, ())
    value = values[-1] if values else None
    return value if isinstance(value, str) else None


def _echo(value: str) -> str:
    """The user's value for an error message, truncated."""
    return value if len(value) <= _ECHO_LENGTH else value[:_ECHO_LENGTH] + "…"


def _to_int(text: str) -> int | None:
    """Python `int()` syntax restricted to ASCII digits; absurdly long numbers map to ±_HUGE."""
    if text.isascii() and text.isdigit() and len(text) <= 18:
        return int(text)  # plain digits, every tile field: no strip, no regex (a cold tile's 5)
    t = text.strip()
    if _INT.fullmatch(t) is None:
        return None
    if len(t.lstrip("+-").lstrip("0")) > 20:
        return -_HUGE if t.startswith("-") else _HUGE
    return int(t)


def _to_float(text: str) -> float | None:
    """Python `float()` syntax; NaN and ±inf (incl. overflow such as 1e309) give None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_colour(text: str) -> tuple[RGBA | None, str | None]:
    """`$`-colour of a c entry → (RGBA, None), (None, LUT name), or (None, None) if invalid.

    HEX3/HEX4 digits are doubled; alpha is FF when absent.
    """
    if text.endswith(".lut"):
        return (None, text) if _LUT.fullmatch(text) else (None, None)
    if _HEX.fullmatch(text) is None:
        return None, None
    if len(text) <= 4:
        text = "".join(ch * 2 for ch in text)
    if len(text) == 6:
        text += "FF"
    v = int(text, 16)
    return ((v >> 24) & 255, (v >> 16) & 255, (v >> 8) & 255, v & 255), None


# ---------------------------------------------------------------------------------------------
# rendering overrides: c, maps, m


def _split_entry(raw: str) -> _ChannelEntry | None:
    """One c entry → (signed channel number, start, end, colour text); None if dropped."""
    head, bar, tail = raw.partition("|")
    head = head.strip()
    colour: str | None = None
    if "$" in head:  # legacy colour in the head; web drops entries with two `$` here
        parts = head.split("$")
        if len(parts) != 2:
            return None
        head, colour = parts
    number = _to_int(head)
    if number is None or abs(number) > MAX_COORD:
        return None
    start = end = None
    if bar:
        tail = tail.strip()
        if "$" in tail:
            tail, colour = tail.split("$", 1)
        bounds = tail.split(":")
        if len(bounds) == 2:  # "100:200r" (legacy inversion suffix) fails float(): no window
            start, end = _to_float(bounds[0]), _to_float(bounds[1])
            if start is None or end is None:
                start = end = None
    return number, start, end, colour


def _check_strict_entries(raw: list[str], parsed: list[_ChannelEntry | None]) -> None:
    for text, entry in zip(raw, parsed, strict=True):
        if entry is None:
            raise BadRequest(f"c: cannot parse channel entry {_echo(text)!r}; {_C_FORM}", param="c")
        _number, start, _end, colour = entry
        if start is None:
            raise BadRequest(
                f"c: Must specify window for each channel, got {_echo(text)!r}; "
                "expected N|start:end$color",
                param="c",
            )
        if colour is None or parse_colour(colour) == (None, None):
            raise BadRequest(
                f"c: Must specify color for each channel, got {_echo(text)!r}; "
                "expected N|start:end$RRGGBB or $name.lut",
                param="c",
            )


def _parse_quantization(q: Any) -> tuple[Family | None, float | None]:
    if not isinstance(q, dict):
        return None, None
    family = _FAMILIES.get(q["family"]) if isinstance(q.get("family"), str) else None
    if family is None:
        return None, None
    coefficient = 1.0
    raw = q.get("coefficient", 1.0)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        try:
            value = float(raw)
        except OverflowError:
            value = math.inf
        if math.isfinite(value) and value > 0:
            coefficient = value
    return family, coefficient


def _parse_maps(text: str | None, n_entries: int, strict: bool) -> list[MapOverride] | None:
    """`maps` JSON → one MapOverride per element (aligned with the raw c entries), or None."""
    if text is None:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        # Web: a non-list or a non-object element raises inside its parser and the whole
        # `maps` is ignored (plain routes) or rejected (_rdef routes).
        if strict:
            raise BadRequest(
                "maps: Failed to parse maps JSON; expected a JSON list of objects", param="maps"
            )
        return None
    if strict and len(data) != n_entries:
        raise BadRequest(
            f'maps: Number of "maps" must match number of channels ({len(data)} != {n_entries})',
            param="maps",
        )
    out: list[MapOverride] = []
    inversion_valid = True
    for entry in data:
        flag = entry.get("inverted")
        if flag is None:
            flag = entry.get("reverse")  # deprecated alias (OMERO 5.4)
        inverted: bool | None = False  # web: no inverted/reverse key means enabled: false
        if isinstance(flag, dict):
            inverted = flag.get("enabled") in (True, "true")
        elif flag is not None:
            inversion_valid = False
        family, coefficient = _parse_quantization(entry.get("quantization"))
        out.append(MapOverride(inverted=inverted, family=family, coefficient=coefficient))
    if not inversion_valid:
        # Web's inversion parser fails as a whole (every flag None); quantization still applies.
        out = [replace(m, inverted=None) for m in out]
    return out


def parse_render_overrides(
    query: Mapping[str, str], *, max_active_channels: int = 10, strict: bool = False
) -> RenderOverrides:
    """`c`, `maps`, `m` → RenderOverrides, leniently like OMERO.web render_image(_region).

    * Entries whose channel number is not an integer, and channel 0, are dropped; a window
      needs two finite floats; an invalid colour is ignored. `c=` / `c=0` give ``()``.
    * A channel listed twice: the last entry wins (and takes its `maps` element with it).
    * ``maps`` elements pair with the raw `c` entries by position; the result is aligned with
      ``channels`` (same length, ``MapOverride()`` where the list was too short). ``maps`` is
      None when absent, malformed, or when `c` is absent (web ignores it then).
    * ``strict=True`` (``_rdef`` routes): `c` required, every entry a channel with window and
      colour, ``m`` in {g, c}, ``maps`` (if present) a list with one object per entry.

    Raises BadRequest for more than `max_active_channels` active channels or more than
    MAX_C_ENTRIES entries.
    """
    m = last(query, "m")
    model = _MODELS.get(m) if m is not None else None
    if strict and model is None:
        raise BadRequest('m: Query parameter "m" must be present with value "g" or "c"', param="m")
    c = last(query, "c")
    if c is None:
        if strict:
            raise BadRequest(f"c: Rendering settings must specify channels; {_C_FORM}", param="c")
        return RenderOverrides(model=model)
    if c.count(",") >= MAX_C_ENTRIES:
        raise BadRequest(f"c: more than {MAX_C_ENTRIES} channel entries", param="c")
    raw_entries = c.split(",")
    parsed = [_split_entry(e) for e in raw_entries]
    if strict:
        _check_strict_entries(raw_entries, parsed)
    raw_maps = _parse_maps(last(query, "maps"), len(raw_entries), strict)

    listed: dict[int, tuple[ChannelOverride, MapOverride]] = {}
    for pos, entry in enumerate(parsed):
        if entry is None or entry[0] == 0:  # channel 0 does not exist (numbers are 1-based)
            continue
        number, start, end, colour_text = entry
        colour, lut = parse_colour(colour_text) if colour_text else (None, None)
        override = ChannelOverride(abs(number) - 1, number > 0, start, end, colour, lut)
        mapping = raw_maps[pos] if raw_maps is not None and pos < len(raw_maps) else _MISSING_MAP
        listed.pop(override.index, None)  # last wins, in the position of the winning entry
        listed[override.index] = (override, mapping)

    active = sum(1 for ov, _ in listed.values() if ov.active)
    if active > max_active_channels:
        raise BadRequest(
            f"c: {active} active channels, at most {max_active_channels} allowed", param="c"
        )
    channels = tuple(ov for ov, _ in listed.values())
    maps = tuple(mp for _, mp in listed.values()) if raw_maps is not None else None
    return RenderOverrides(channels=channels, maps=maps, model=model)


# ---------------------------------------------------------------------------------------------
# tile / region


def _int_fields(values: list[str], param: str, form: str, raw: str) -> list[int]:
    digits = "".join(values)
    if all(values) and len(digits) <= 90 and digits.isascii() and digits.isdigit():
        # Plain digits, as every viewer sends them: converted in one go (a cold tile's plan
        # called the general parser five times). Anything else, or out of range, below.
        plain = [int(text) for text in values]
        if max(plain) <= MAX_COORD:
            return plain
    out: list[int] = []
    for text in values:
        value = _to_int(text)
        if value is None:
            raise BadRequest(
                f"{param}: malformed {param} argument, {param}={_echo(raw)}; expected {form}",
                param=param,
            )
        if abs(value) > MAX_COORD:
            raise BadRequest(
                f"{param}: value out of range in {param}={_echo(raw)}; "
                f"numbers must be within ±{MAX_COORD}",
                param=param,
            )
        out.append(value)
    return out


def parse_tile(
    value: str, level_count: int, default_tile: tuple[int, int], max_tile_length: int
) -> tuple[int, Box]:
    """`tile=level,col,row[,w,h]` → (level, unclipped Box in that level's pixels).

    3 or 4 fields use `default_tile` (a 4th field is ignored); from 5 fields on, w/h ≤ 0 are
    a 400, as for `region=` (web quietly uses the default tile size), and w/h >
    `max_tile_length` are clamped (fields after the 5th are ignored, as on web). Level 0 is
    full resolution; the level must be < `level_count`.
    """
    fields = value.split(",", 5)
    if len(fields) < 3:
        raise BadRequest(
            f"tile: malformed tile argument, tile={_echo(value)}; expected {_TILE_FORM}",
            param="tile",
        )
    nums = _int_fields(fields[:5] if len(fields) >= 5 else fields[:3], "tile", _TILE_FORM, value)
    level, col, row = nums[0], nums[1], nums[2]
    w, h = default_tile
    if len(nums) == 5:
        if nums[3] <= 0 or nums[4] <= 0:
            raise BadRequest(f"tile: w and h must be > 0, tile={_echo(value)}", param="tile")
        w, h = min(nums[3], max_tile_length), min(nums[4], max_tile_length)
    if level < 0:
        raise BadRequest(f"tile: Invalid resolution level {level} < 0", param="tile")
    if level >= level_count:
        raise BadRequest(
            f"tile: Invalid resolution level {level}; expected 0..{level_count - 1} "
            "(0 = full resolution)",
            param="tile",
        )
    if col < 0 or row < 0:
        raise BadRequest(f"tile: col and row must be ≥ 0, tile={_echo(value)}", param="tile")
    x, y = col * w, row * h
    if x > MAX_COORD or y > MAX_COORD:
        raise BadRequest(f"tile: position out of range, tile={_echo(value)}", param="tile")
    return level, Box(x, y, w, h)


def parse_region(value: str) -> Box:
    """`region=x,y,w,h` (full-resolution pixels, extra fields ignored) → unclipped Box.

    Negative x/y and w/h ≤ 0 are 400 (web renders nothing and answers 404 or 500).
    """
    fields = value.split(",", 4)
    if len(fields) < 4:
        raise BadRequest(
            f"region: malformed region argument, region={_echo(value)}; expected {_REGION_FORM}",
            param="region",
        )
    x, y, w, h = _int_fields(fields[:4], "region", _REGION_FORM, value)
    if x < 0 or y < 0:
        raise BadRequest(f"region: x and y must be ≥ 0, region={_echo(value)}", param="region")
    if w <= 0 or h <= 0:
        raise BadRequest(f"region: w and h must be > 0, region={_echo(value)}", param="region")
    return Box(x, y, w, h)


def parse_tile_or_region(
    query: Mapping[str, str],
    level_count: int,
    default_tile: tuple[int, int],
    max_tile_length: int,
) -> tuple[int, Box]:
    """A non-empty `tile` wins, else a non-empty `region` (level 0), else 400.

    The order and both grammars: docs/webgateway.md#tiles-and-regions.
    """
    return tile_or_region(
        last(query, "tile"), last(query, "region"), level_count, default_tile, max_tile_length
    )


def tile_or_region(
    tile: str | None,
    region: str | None,
    level_count: int,
    default_tile: tuple[int, int],
    max_tile_length: int,
) -> tuple[int, Box]:
    """`parse_tile_or_region` for texts already taken from the query (a planned tile)."""
    if tile:
        return parse_tile(tile, level_count, default_tile, max_tile_length)
    if region:
        return 0, parse_region(region)
    raise BadRequest(
        f"tile or region argument required; expected {_TILE_FORM} or {_REGION_FORM}",
        param="tile",
    )


# ---------------------------------------------------------------------------------------------
# other query parameters


def parse_projection(query: Mapping[str, str], size_z: int) -> tuple[Projection, int, int]:
    """`p=intmax|intmean|intsum[|start:end]` → (projection, start, end), 0-based inclusive Z.

    Unknown or absent ⇒ (NORMAL, 0, 0). Range: start clamped ≥ 0, end ≤ sizeZ-1; an
    unparsable range means 0..sizeZ-1. A range that is empty after clamping is 400.
    """
    p = last(query, "p")
    if p is None:
        return Projection.NORMAL, 0, 0
    name, bar, span = p.partition("|")
    projection = _PROJECTIONS.get(name, Projection.NORMAL)
    if projection is Projection.NORMAL:
        return Projection.NORMAL, 0, 0
    top = max(size_z - 1, 0)
    start, end = 0, top
    if bar:
        bounds = span.split(":")
        if len(bounds) == 2:
            s, e = _to_int(bounds[0]), _to_int(bounds[1])
            if s is not None and e is not None:
                start, end = max(s, 0), min(e, top)
    if start > end:
        raise BadRequest(
            f"p: empty projection range {start}:{end}; expected {name}|start:end within 0..{top}",
            param="p",
        )
    return projection, start, end


def parse_quality(query: Mapping[str, str], default: float) -> float:
    """`q` → JPEG quality in (0, 1]; absent ⇒ `default`; anything else ⇒ 400."""
    q = last(query, "q")
    if q is None:
        return default
    value = _to_float(q)
    if value is None or not 0 < value <= 1:
        raise BadRequest(f"q: expected a number in (0, 1], got {_echo(q)!r}", param="q")
    return value


def parse_format(query: Mapping[str, str]) -> Format:
    """`format=jpeg|jpg|png|tif|tiff` (case-insensitive) → Format; absent ⇒ JPEG."""
    value = last(query, "format")
    if value is None:
        return Format.JPEG
    fmt = _FORMATS.get(value.lower())
    if fmt is None:
        raise BadRequest(
            f"format: unsupported format {_echo(value)!r}; expected jpeg, png or tif",
            param="format",
        )
    return fmt


def parse_flip(query: Mapping[str, str]) -> tuple[bool, bool]:
    """`flip` → (horizontal, vertical): whether it contains `h` / `v`, case-insensitive."""
    value = last(query, "flip")
    if not value:
        return False, False
    lower = value.lower()
    return "h" in lower, "v" in lower


def _plane_index(query: Mapping[str, str], key: str) -> int | None:
    text = last(query, key)
    if text is None:
        return None
    value = _to_int(text)
    if value is None or not 0 <= value <= MAX_COORD:
        raise BadRequest(
            f"{key}: expected a 0-based plane index (integer ≥ 0), got {_echo(text)!r}",
            param=key,
        )
    return value


def parse_thumbnail_query(query: Mapping[str, str]) -> tuple[int | None, int | None]:
    """Thumbnail `z`, `t` (0-based) → (z, t), None when absent; non-integer/negative ⇒ 400."""
    return _plane_index(query, "z"), _plane_index(query, "t")


DEFAULT_HISTOGRAM_BINS = 256
MAX_HISTOGRAM_BINS = 4096


def parse_histogram_query(query: Mapping[str, str]) -> tuple[int, int, int]:
    """`histogram_json`'s `theZ`, `theT` (0-based, default 0) and `bins` → (z, t, bins).

    Not an integer, or a negative plane, ⇒ 400. `bins` ≤ 0 means the default 256, as OMERO's
    server takes it; more than MAX_HISTOGRAM_BINS ⇒ 400.
    """
    z = _plane_index(query, "theZ")
    t = _plane_index(query, "theT")
    text = last(query, "bins")
    bins = DEFAULT_HISTOGRAM_BINS if text is None else _to_int(text)
    if bins is None or bins > MAX_HISTOGRAM_BINS:
        raise BadRequest(
            f"bins: expected an integer of at most {MAX_HISTOGRAM_BINS}, got {_echo(text or '')!r}",
            param="bins",
        )
    return z or 0, t or 0, bins if bins > 0 else DEFAULT_HISTOGRAM_BINS


def parse_optional_int(query: Mapping[str, str], key: str) -> int | None:
    """An optional integer parameter (OMERO.web's `get_long_or_default`); not one ⇒ 400."""
    text = last(query, key)
    if text is None:
        return None
    value = _to_int(text)
    if value is None:
        raise BadRequest(f"{key}: expected an integer, got {_echo(text)!r}", param=key)
    return value


def parse_ids(values: Iterable[str], max_batch: int) -> list[int]:
    """Repeated `id` values → distinct ids in first-seen order; empty values are skipped.

    Non-integer or negative ⇒ BadRequest; more than `max_batch` distinct ⇒ TooManyThumbnails.
    """
    seen: dict[int, None] = {}
    for text in values:
        if text == "":
            continue
        value = _to_int(text)
        if value is None or not 0 <= value <= MAX_ID:
            raise BadRequest(
                f"id: expected an image id (integer ≥ 0), got {_echo(text)!r}", param="id"
            )
        seen[value] = None
        if len(seen) > max_batch:
            raise TooManyThumbnails(max_batch)
    return list(seen)


def parse_callback(value: str | None) -> str | None:
    """JSONP `callback` → the name, or None when absent; not a JS identifier ⇒ 400."""
    if value is None:
        return None
    if len(value) > MAX_CALLBACK_LENGTH or _CALLBACK.fullmatch(value) is None:
        raise BadRequest(
            "callback: Invalid callback; expected a JavaScript identifier "
            f"[a-zA-Z_$][0-9a-zA-Z_$]* of at most {MAX_CALLBACK_LENGTH} characters",
            param="callback",
        )
    return value


def parse_path_int(value: str, name: str) -> int:
    """A path segment of ASCII digits → int ≤ 2**63-1; anything else ⇒ NotFound (no route)."""
    if value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)  # below MAX_ID whatever the digits: one call instead of four
    if _DIGITS.fullmatch(value) is None or len(value.lstrip("0")) > 19 or int(value) > MAX_ID:
        raise NotFound(f"{name}: expected a non-negative integer, got {_echo(value)!r}", param=name)
    return int(value)


DEFAULT_PAGE_LIMIT = 100
MAX_PAGE_LIMIT = 1000


def parse_page(query: Mapping[str, str]) -> tuple[int, int]:
    """`offset` and `limit` of a listing (defaults 0 and 100; limit at most 1000)."""
    out: list[int] = []
    for key, default, high in (("offset", 0, MAX_ID), ("limit", DEFAULT_PAGE_LIMIT, None)):
        text = query.get(key)
        value = default if text in (None, "") else _to_int(text)
        top = high if high is not None else MAX_PAGE_LIMIT
        if value is None or not (0 if key == "offset" else 1) <= value <= top:
            low = 0 if key == "offset" else 1
            raise BadRequest(
                f"{key}: expected an integer from {low} to {top}, got {_echo(text or '')!r}",
                param=key,
            )
        out.append(value)
    return out[0], out[1]
