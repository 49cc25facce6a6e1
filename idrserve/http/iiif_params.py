"""Parse IIIF Image API (3.0 and 2.1) path segments and idrserve's identifier syntax.

Pure functions, no aiohttp (like `http/params.py`). Syntax errors raise `BadRequest` (400),
valid requests for something idrserve does not implement raise `NotImplementedFeature` (501),
and an identifier that cannot name an image raises `NotFound` (404, as the IIIF validator
expects for random identifiers).

Identifier syntax (docs/iiif.md): ``{image id}[;key=value]...`` with keys

* ``z``, ``t``: plane (default: the image's default plane);
* ``c``: webgateway channel settings, ``1|0:255$FF0000,-2,3|10:900$lut.lut`` (``|`` is sent
  as ``%7C`` by browsers; both forms work);
* ``m``: ``c`` (colour) or ``g`` (greyscale);
* ``p``: projection ``intmax|intmean|intsum[|start:end]``;
* ``q``: JPEG/WebP quality 0..1.

Everything travels in the one path segment, so clients that build tile URLs by appending
``/region/size/rotation/quality.format`` to the `id` (OpenSeadragon, Mirador) keep the rendering.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import unquote

from idrserve.errors import BadRequest, IdrServeError, NotFound
from idrserve.http import params
from idrserve.lru import BoundedLRU
from idrserve.model import Box, Format, RenderOverrides, Tone, record


class NotImplementedFeature(IdrServeError):
    """A valid IIIF request for a feature idrserve does not offer (e.g. rotation by 45°)."""

    status = 501
    code = "not_implemented"


class Version(StrEnum):
    V2 = "2"
    V3 = "3"


MAX_IDENTIFIER = 4096
_ID = re.compile(r"[0-9]{1,19}")
_INT = re.compile(r"[0-9]{1,10}")
_DEC = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,10})?")
_KEY = re.compile(r"[a-z]{1,8}")
_IDENT_KEYS = ("z", "t", "c", "m", "p", "q")

FORMATS: dict[str, Format] = {
    "jpg": Format.JPEG,
    "png": Format.PNG,
    "tif": Format.TIFF,
    "webp": Format.WEBP,
}
# Formats in the IIIF grammar that idrserve does not produce.
_UNSUPPORTED_FORMATS = ("gif", "jp2", "pdf")
QUALITIES: dict[str, Tone] = {
    "default": Tone.DEFAULT,
    "color": Tone.DEFAULT,  # renders are always colour (RGB) already
    "gray": Tone.GRAY,
    "bitonal": Tone.BITONAL,
}


def _echo(text: str) -> str:
    return text if len(text) <= 64 else text[:64] + "…"


# --- identifier ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identifier:
    """An image id plus the rendering choices carried in the identifier segment."""

    image_id: int
    z: int | None = None
    t: int | None = None
    overrides: RenderOverrides = field(default_factory=RenderOverrides)
    projection: str | None = None
    quality: float | None = None


# Identifiers already parsed, by their text and the channel limit they were checked with:
# every tile of a view names the same identifier (parsing it took about 5 µs a tile,
# bench/bench_plan.py). A refused identifier is never kept.
IDENTIFIERS_KEPT = 256
_IDENTIFIERS: BoundedLRU[tuple[str, int], Identifier] = BoundedLRU(IDENTIFIERS_KEPT)


def parse_identifier(raw: str, max_active_channels: int = 10) -> Identifier:
    """Parse a (still percent-encoded) identifier path segment; see the module docstring."""
    key = (raw, max_active_channels)
    return _IDENTIFIERS.get_or_make(key, _parse_identifier, raw, max_active_channels)


def _parse_identifier(raw: str, max_active_channels: int) -> Identifier:
    if len(raw) > MAX_IDENTIFIER:
        raise BadRequest(f"identifier longer than {MAX_IDENTIFIER} characters", param="identifier")
    try:
        text = unquote(raw, errors="strict") if "%" in raw else raw
    except UnicodeDecodeError:
        text = ""  # not UTF-8 once decoded: cannot name an image
    head, *options = text.split(";")
    if not _ID.fullmatch(head):
        raise NotFound(
            f"no image with identifier {_echo(text)!r}: identifiers are an image id "
            "optionally followed by ;z=…;t=…;c=…;m=… (docs/iiif.md)",
            param="identifier",
        )
    values: dict[str, str] = {}
    for option in options:
        key, eq, value = option.partition("=")
        if not eq or key not in _IDENT_KEYS or not value:
            raise BadRequest(
                f"identifier option {_echo(option)!r}: expected key=value with key one of "
                f"{', '.join(_IDENT_KEYS)}",
                param="identifier",
            )
        if key in values:
            raise BadRequest(f"identifier option {key!r} given twice", param="identifier")
        values[key] = value
    z = t = None
    if "z" in values:
        z = _plane(values["z"], "z")
    if "t" in values:
        t = _plane(values["t"], "t")
    query = {k: v for k, v in values.items() if k in ("c", "m")}
    if "m" in query and query["m"] not in ("c", "g"):
        raise BadRequest(f"identifier m={_echo(query['m'])!r}: expected c or g", param="m")
    overrides = params.parse_render_overrides(query, max_active_channels=max_active_channels)
    if "p" in values and values["p"].partition("|")[0] not in ("intmax", "intmean", "intsum"):
        raise BadRequest(
            f"identifier p={_echo(values['p'])!r}: expected intmax, intmean or intsum[|start:end]",
            param="p",
        )
    quality = params.parse_quality(values, 0.0) if "q" in values else None
    if quality is not None and not 0 < quality <= 1:
        raise BadRequest(f"identifier q={values['q']!r}: expected 0 < q ≤ 1", param="q")
    return Identifier(int(head), z, t, overrides, values.get("p"), quality)


def _plane(value: str, name: str) -> int:
    if not _INT.fullmatch(value):
        raise BadRequest(f"identifier {name}={_echo(value)!r}: expected an integer", param=name)
    return int(value)


# --- region ----------------------------------------------------------------------------------


@record
class RegionSpec:
    kind: str  # full | square | px | pct
    values: tuple[float, ...] = ()


# `x,y,w,h` in pixels, every tile viewers ask for: one match instead of four (_INT's).
_PX_REGION = re.compile(r"([0-9]{1,10}),([0-9]{1,10}),([0-9]{1,10}),([0-9]{1,10})")


def parse_region(text: str) -> RegionSpec:
    m = _PX_REGION.fullmatch(text)
    if m is not None:
        x, y, w, h = m.groups()
        if w.strip("0") and h.strip("0"):
            return RegionSpec("px", (float(x), float(y), float(w), float(h)))
    if text in ("full", "square"):
        return RegionSpec(text)
    pct = text.startswith("pct:")
    parts = (text[4:] if pct else text).split(",")
    pattern = _DEC if pct else _INT
    if len(parts) != 4 or not all(pattern.fullmatch(p) for p in parts):
        raise BadRequest(
            f"region {_echo(text)!r}: expected full, square, x,y,w,h or pct:x,y,w,h",
            param="region",
        )
    values = tuple(float(p) for p in parts)
    if values[2] <= 0 or values[3] <= 0:
        raise BadRequest(f"region {_echo(text)!r}: width and height must be > 0", param="region")
    return RegionSpec("pct" if pct else "px", values)


def resolve_region(spec: RegionSpec, width: int, height: int) -> Box:
    """The region in full-resolution pixels, clipped to the image (400 if it misses it)."""
    if spec.kind == "full":
        return Box(0, 0, width, height)
    if spec.kind == "square":
        side = min(width, height)
        return Box((width - side) // 2, (height - side) // 2, side, side)
    fx, fy, fw, fh = spec.values
    if spec.kind == "pct":
        x, y = int(fx * width / 100), int(fy * height / 100)
        w, h = max(1, round(fw * width / 100)), max(1, round(fh * height / 100))
    else:
        x, y, w, h = int(fx), int(fy), int(fw), int(fh)
    if x >= width or y >= height:
        raise BadRequest(
            f"region ({x},{y},{w},{h}) lies outside the {width}x{height} image", param="region"
        )
    return Box(x, y, min(w, width - x), min(h, height - y))


# --- size ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SizeSpec:
    kind: str  # max | full | w | h | pct | wh | confined
    upscale: bool = False
    values: tuple[float, ...] = ()


# Size segments already parsed: a viewer asks for its tiles at one size ("256," or
# "512,512"), and parsing it took about 5 µs a tile (bench/bench_plan.py). A refused size
# is never kept.
SIZES_KEPT = 256
_SIZES: BoundedLRU[tuple[str, Version], SizeSpec] = BoundedLRU(SIZES_KEPT)


def parse_size(text: str, version: Version) -> SizeSpec:
    return _SIZES.get_or_make((text, version), _parse_size, text, version)


def _parse_size(text: str, version: Version) -> SizeSpec:
    bad = BadRequest(
        f"size {_echo(text)!r}: expected "
        + (
            "[^]max, [^]w,, [^],h, [^]pct:n, [^]w,h or [^]!w,h"
            if version is Version.V3
            else "full, max, w,, ,h, pct:n, w,h or !w,h"
        ),
        param="size",
    )
    upscale = text.startswith("^")
    if upscale:
        if version is Version.V2:
            raise bad
        text = text[1:]
    if text == "max" or (text == "full" and version is Version.V2):
        return SizeSpec(text, upscale)
    if text.startswith("pct:"):
        if not _DEC.fullmatch(text[4:]) or float(text[4:]) <= 0:
            raise bad
        return SizeSpec("pct", upscale, (float(text[4:]),))
    confined = text.startswith("!")
    body = text[1:] if confined else text
    w_text, comma, h_text = body.partition(",")
    if not comma:
        raise bad
    values: tuple[float, ...]
    if confined or (w_text and h_text):
        if not (_INT.fullmatch(w_text) and _INT.fullmatch(h_text)):
            raise bad
        values = (float(w_text), float(h_text))
        kind = "confined" if confined else "wh"
    elif w_text and _INT.fullmatch(w_text):
        values, kind = (float(w_text),), "w"
    elif h_text and _INT.fullmatch(h_text):
        values, kind = (float(h_text),), "h"
    else:
        raise bad
    if any(v < 1 for v in values):
        raise BadRequest(f"size {_echo(text)!r}: sizes must be at least 1 pixel", param="size")
    return SizeSpec(kind, upscale, values)


@dataclass(frozen=True, slots=True)
class Limits:
    max_width: int
    max_height: int
    max_area: int


def resolve_size(spec: SizeSpec, region: Box, version: Version, limits: Limits) -> tuple[int, int]:
    """Output width and height for the region; 400 for upscaling without `^` (3.0) or limits."""
    rw, rh = region.w, region.h
    if spec.kind == "full":
        w, h = rw, rh
    elif spec.kind == "max":
        cap = min(
            limits.max_width / rw, limits.max_height / rh, math.sqrt(limits.max_area / (rw * rh))
        )
        scale = cap if spec.upscale else min(1.0, cap)
        w, h = max(1, math.floor(rw * scale + 1e-9)), max(1, math.floor(rh * scale + 1e-9))
    elif spec.kind == "w":
        w = int(spec.values[0])
        h = max(1, round(w * rh / rw))
    elif spec.kind == "h":
        h = int(spec.values[0])
        w = max(1, round(h * rw / rh))
    elif spec.kind == "pct":
        n = spec.values[0]
        w, h = round(rw * n / 100), round(rh * n / 100)
        if w < 1 or h < 1:
            raise BadRequest(f"size pct:{n:g} gives less than one pixel", param="size")
    elif spec.kind == "wh":
        w, h = int(spec.values[0]), int(spec.values[1])
    else:  # confined: the largest size inside the box, keeping the aspect ratio
        bw, bh = spec.values
        scale = min(bw / rw, bh / rh)
        w = max(1, min(int(bw), round(rw * scale)))
        h = max(1, min(int(bh), round(rh * scale)))
    if version is Version.V3 and not spec.upscale and (w > rw or h > rh):
        raise BadRequest(
            f"size: {w}x{h} is larger than the {rw}x{rh} region; use ^ to allow upscaling",
            param="size",
        )
    if w > limits.max_width or h > limits.max_height or w * h > limits.max_area:
        raise BadRequest(
            f"size: {w}x{h} exceeds the limits maxWidth={limits.max_width}, "
            f"maxHeight={limits.max_height}, maxArea={limits.max_area} (see info.json)",
            param="size",
        )
    return w, h


_FULL = SizeSpec("full")
# The named forms a 3.0 canonical size is tried against, in order.
_V3_NAMED = (("max", SizeSpec("max")), ("^max", SizeSpec("max", upscale=True)))


def canonical_size(size: tuple[int, int], region: Box, version: Version, limits: Limits) -> str:
    """The size segment of the canonical URI for an output of `size` from `region`: the
    first of the spec's named forms that resolves to that size, else `w,h`.

    3.0: `max`, `^max`, else `w,h` (`^w,h` when it upscales). 2.1: `full`, `w,` (the
    region's aspect ratio), else `w,h`.
    """
    w, h = size
    named = (
        [("full", _FULL), (f"{w},", SizeSpec("w", values=(w,)))]
        if version is Version.V2
        else _V3_NAMED
    )
    for text, spec in named:
        try:
            if resolve_size(spec, region, version, limits) == size:
                return text
        except BadRequest:
            pass
    upscaled = version is Version.V3 and (w > region.w or h > region.h)
    return f"{'^' if upscaled else ''}{w},{h}"


def canonical_image_path(
    version: Version,
    region: Box,
    size: tuple[int, int],
    image_size: tuple[int, int],
    limits: Limits,
    *,
    mirror: bool,
    degrees: int,
    quality: str,
    fmt: str,
) -> str:
    """`{region}/{size}/{rotation}/{quality}.{format}` in the IIIF canonical form (section
    "Canonical URI Syntax" of Image API 3.0 and 2.1): the cache-friendly spelling of an
    equivalent request."""
    whole = (region.x, region.y, region.w, region.h) == (0, 0, *image_size)
    r = "full" if whole else f"{region.x},{region.y},{region.w},{region.h}"
    rotation = f"{'!' if mirror else ''}{degrees}"
    return f"{r}/{canonical_size(size, region, version, limits)}/{rotation}/{quality}.{fmt}"


# --- rotation, quality, format ---------------------------------------------------------------


def parse_rotation(text: str) -> tuple[bool, int]:
    """`[!]degrees` → (mirror, degrees); only multiples of 90 are implemented (else 501)."""
    mirror = text.startswith("!")
    body = text[1:] if mirror else text
    # Integers without leading zeros, or decimals without trailing zeros (IIIF's grammar).
    if not re.fullmatch(r"(?:0|[1-9][0-9]{0,2})(?:\.[0-9]{0,9}[1-9])?", body):
        raise BadRequest(
            f"rotation {_echo(text)!r}: expected [!]degrees between 0 and 360", param="rotation"
        )
    degrees = float(body)
    if degrees > 360:
        raise BadRequest(f"rotation {_echo(text)!r}: degrees must be ≤ 360", param="rotation")
    if degrees % 90:
        raise NotImplementedFeature(
            f"rotation {_echo(text)!r}: only multiples of 90 degrees are implemented",
            param="rotation",
        )
    return mirror, int(degrees) % 360


def parse_quality_format(text: str) -> tuple[Tone, Format]:
    quality, dot, fmt = text.rpartition(".")
    if not dot or quality not in QUALITIES:
        raise BadRequest(
            f"quality {_echo(quality or text)!r}: expected default, color, gray or bitonal",
            param="quality",
        )
    if fmt not in FORMATS:
        hint = " (not implemented here)" if fmt in _UNSUPPORTED_FORMATS else ""
        raise BadRequest(
            f"format {_echo(fmt)!r}{hint}: expected one of {', '.join(FORMATS)}", param="format"
        )
    return QUALITIES[quality], FORMATS[fmt]
