"""The one reader of OME-XML, and of the vendor tags that stand in for it, shared by `idrserve
convert` (`convert/metadata.py`, `convert/tiffin.py`) and the TIFF source (`sources/tiff.py`).

Why one reader: a file served directly and its converted output must describe the image alike
(the same `Image` for a series, the same channel names and colours, the same physical sizes).
Two parsers had drifted apart on units, colours and which page's tags count. It lives in
`sources` because `convert` may import from the sources layer, never the reverse.

The rules, after the OME schema where it has one:

- tifffile makes one series per `Image`, in document order: series N is the N-th `Image`, or
  the one of the series' name when tifffile skipped some. A series that no `Image` describes
  gets no OME facts, never another image's.
- Elements are matched by local name, so every OME namespace version reads alike.
- `Color` is a signed 32-bit RGBA integer (-1 is opaque white).
- `PhysicalSize*` and `TimeIncrement` must be positive and finite. A missing or empty unit
  attribute means the schema's default (µm, s). Units are OME's symbols, matched exactly
  (`Mm` is a megametre, `mm` a millimetre), or UDUNITS-2 names in any case. A unit with no
  UDUNITS-2 name leaves the size without one rather than guessing.
- Vendor sizes: Aperio's `MPP` key, else the TIFF resolution tags of the series' own page,
  each axis on its own, in inches or centimetres, from positive rationals only.
- Samples become channels alike too (`sample_channels`): 3 or 4 samples a pixel are named
  Red, Green, Blue (and Alpha) after their channel's name and coloured so; photometric RGB
  (or YCbCr, as JPEG stores RGB) samples are display-ready (`is_rgb`), so both callers give
  them full-range windows and leave the alpha channel off.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from idrserve.model import RGBA
from idrserve.sources import ngff

# OME-XML unit symbols (and a few common spellings) → UDUNITS-2 names.
SPACE_UNITS = {
    "Å": "angstrom",
    "pm": "picometer",
    "nm": "nanometer",
    "µm": "micrometer",
    "μm": "micrometer",  # Greek mu, as some writers spell it
    "um": "micrometer",
    "micron": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "dm": "decimeter",
    "m": "meter",
    "km": "kilometer",
    "in": "inch",
    "ft": "foot",
}
TIME_UNITS = {
    "ps": "picosecond",
    "ns": "nanosecond",
    "µs": "microsecond",
    "μs": "microsecond",
    "us": "microsecond",
    "ms": "millisecond",
    "s": "second",
    "sec": "second",
    "min": "minute",
    "h": "hour",
    "d": "day",
}
# Lengths `ngff.to_micrometres` does not know, in micrometres.
_IMPERIAL_UM = {"inch": 25400.0, "foot": 304800.0}
# TIFF ResolutionUnit: 2 inch, 3 centimetre, in micrometres.
_RESOLUTION_UNIT_UM = {2: 25400.0, 3: 10000.0}


class OmeXmlError(ValueError):
    """The OME-XML is not well-formed; callers decide whether that deserves a warning."""


@dataclass(frozen=True, slots=True)
class PhysicalSize:
    value: float
    unit: str | None  # a UDUNITS-2 name, or None when the file gives no usable unit

    @property
    def micrometres(self) -> float | None:
        """The length in µm, for the server's pixel sizes; None for a time or unknown unit, or
        a product that JSON cannot carry."""
        if self.unit is None:
            return None
        factor = _IMPERIAL_UM.get(self.unit)
        um = self.value * factor if factor else ngff.to_micrometres(self.value, self.unit)
        return um if um is not None and 0 < um < math.inf else None


@dataclass(frozen=True, slots=True)
class OmeChannel:
    name: str | None  # an empty Name is no name
    colour: RGBA | None
    samples: int  # SamplesPerPixel, 1 when missing or not a positive integer


@dataclass(frozen=True, slots=True)
class OmeXmlImage:
    """What both callers take from one OME `Image`."""

    name: str | None
    channels: tuple[OmeChannel, ...] = ()
    sizes: Mapping[str, PhysicalSize] = field(default_factory=dict)  # role x, y, z, t


def read_image(xml: str, index: int, name: str | None = None) -> OmeXmlImage | None:
    """The `Image` describing tifffile's series `index` (named `name`); None when no `Image`
    with `Pixels` does. Raises `OmeXmlError` for a document that is not XML."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise OmeXmlError(str(exc)) from exc
    images = _children(root, "Image")
    image = images[index] if 0 <= index < len(images) else None
    if name and (image is None or image.get("Name") != name):
        image = next((im for im in images if im.get("Name") == name), image)
    pixels = next(iter(_children(image, "Pixels")), None) if image is not None else None
    if image is None or pixels is None:
        return None
    sizes: dict[str, PhysicalSize] = {}
    for role in ("x", "y", "z"):
        key = f"PhysicalSize{role.upper()}"
        value = _positive(pixels.get(key))
        if value is not None:
            sizes[role] = PhysicalSize(value, _unit(SPACE_UNITS, pixels.get(f"{key}Unit"), "µm"))
    increment = _positive(pixels.get("TimeIncrement"))
    if increment is not None:
        unit = _unit(TIME_UNITS, pixels.get("TimeIncrementUnit"), "s")
        sizes["t"] = PhysicalSize(increment, unit)
    channels = tuple(
        OmeChannel(
            name=ch.get("Name") or None,
            colour=ome_rgba(ch.get("Color")),
            samples=max(_integer(ch.get("SamplesPerPixel")) or 1, 1),
        )
        for ch in _children(pixels, "Channel")
    )
    return OmeXmlImage(image.get("Name"), channels, sizes)


SAMPLE_NAMES = ("Red", "Green", "Blue", "Alpha")
SAMPLE_RGBA: tuple[RGBA, ...] = (
    (255, 0, 0, 255),
    (0, 255, 0, 255),
    (0, 0, 255, 255),
    (255, 255, 255, 255),
)
C = TypeVar("C")


def is_rgb(photometric: int, samples: int) -> bool:
    """Samples meant to be shown as they are (photometric RGB, or YCbCr, which is how JPEG
    stores RGB), not measurements: their windows span the type's full range."""
    return int(photometric) in (2, 6) and samples in (3, 4)


def sample_channels(
    size_c: int,
    samples: int,
    names: Sequence[str | None],
    colours: Sequence[C | None],
    sample_colours: Sequence[C],
) -> tuple[tuple[str | None, ...], tuple[C | None, ...]]:
    """Names and colours per output channel, from those per input channel.

    With one sample a pixel they are kept when there is one per channel, else dropped (a
    count that does not match is not trusted). Each of 3 or 4 samples becomes a channel
    named after its sample (`<channel name> Red`, or `Red` alone) and coloured
    `sample_colours[s]`; other sample counts are numbered and left uncoloured. A document
    that lists one channel per sample (as some writers do for RGB) names them itself, and
    colours them where it gives a colour.
    """
    if samples == 1:
        return (
            tuple(names) if len(names) == size_c else (),
            tuple(colours) if len(colours) == size_c else (),
        )
    rgb = samples in (3, 4)
    out_names: list[str | None] = []
    out_colours: list[C | None] = []
    if len(names) == size_c:
        for c, given in enumerate(names):
            s = c % samples
            out_names.append(given or (SAMPLE_NAMES[s] if rgb else str(s)))
            colour = colours[c] if len(colours) == size_c else None
            out_colours.append(colour if colour is not None else sample_colours[s] if rgb else None)
        return tuple(out_names), tuple(out_colours)
    for g in range(size_c // samples):
        base = names[g] if g < len(names) else None
        for s in range(samples):
            sample = SAMPLE_NAMES[s] if rgb else str(s)
            out_names.append(f"{base} {sample}" if base else sample)
            out_colours.append(sample_colours[s] if rgb else None)
    return tuple(out_names), tuple(out_colours)


def ome_rgba(value: str | None) -> RGBA | None:
    """An OME `Color` as (r, g, b, a). The schema's type is a signed 32-bit int, but writers
    that store the unsigned form mean the same colour, so both are read modulo 2³²."""
    number = _integer(value)
    if number is None:
        return None
    rgba = number & 0xFFFFFFFF
    return (rgba >> 24 & 255, rgba >> 16 & 255, rgba >> 8 & 255, rgba & 255)


def svs_pixel_size(description: str) -> float | None:
    """Aperio's `MPP` (micrometres per pixel) from an SVS ImageDescription.

    Only the key `MPP` itself: other keys end in it (`OriginalMPP` in rescanned slides)."""
    if not description.startswith("Aperio"):
        return None
    for part in description.split("|")[1:]:
        key, _, value = part.partition("=")
        if key.strip() == "MPP":
            return _positive(value.strip())
    return None


def resolution_pixel_size(resolution: tuple[int, int] | None, unit: int | None) -> float | None:
    """Micrometres per pixel from an X/YResolution rational and ResolutionUnit (NDPI and most
    scanners write centimetres); None without a physical unit or for a size that is not
    positive (a zero denominator or a negative rational)."""
    if resolution is None or unit not in _RESOLUTION_UNIT_UM:
        return None
    numerator, denominator = resolution
    if numerator <= 0 or denominator <= 0:
        return None
    return _RESOLUTION_UNIT_UM[unit] * denominator / numerator


def page_pixel_size(page: Any) -> tuple[float | None, float | None]:
    """x and y in µm from a TIFF page's vendor tags, for a file whose OME-XML gives no x.

    `page` is the series' own keyframe: an SVS label or macro image is not at the slide's
    `MPP`, and a multi-series file may give each series its own resolution."""
    mpp = svs_pixel_size(page.description or "")
    if mpp is not None:
        return mpp, mpp
    tags = page.tags
    unit = tags.get("ResolutionUnit")
    unit_value = int(unit.value) if unit is not None else None
    x, y = (_rational(tags.get(t)) for t in ("XResolution", "YResolution"))
    return resolution_pixel_size(x, unit_value), resolution_pixel_size(y, unit_value)


def vendor_sizes(page: Any) -> dict[str, PhysicalSize]:
    """`page_pixel_size` as the sizes of the axes it gives, for callers that fill in what the
    OME-XML left out (both the TIFF source and `idrserve convert`)."""
    x, y = page_pixel_size(page)
    return {role: PhysicalSize(v, "micrometer") for role, v in (("x", x), ("y", y)) if v}


def _children(element: ET.Element, local: str) -> list[ET.Element]:
    return [el for el in element if el.tag.rsplit("}", 1)[-1] == local]


def _unit(table: Mapping[str, str], text: str | None, default: str) -> str | None:
    symbol = (text or "").strip() or default
    name = symbol.lower()
    return table.get(symbol) or (name if name in table.values() else None)


def _integer(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _positive(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def _rational(tag: Any) -> tuple[int, int] | None:
    value = getattr(tag, "value", None)
    if isinstance(value, tuple) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None
