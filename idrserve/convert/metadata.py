"""What the output's `omero` block and axes carry: names, colours, physical sizes and units.

Read from OME-XML (`parse_ome_xml`), Aperio SVS descriptions (`svs_pixel_size`), the TIFF
resolution tags that NDPI and most scanners write (`resolution_pixel_size`) and ImageJ's
metadata (`imagej_sizes`). Units are written as the UDUNITS-2 names NGFF asks for
(`micrometer`, `second`); an unknown unit leaves that axis without one rather than guessing.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
RGB_NAMES = ("Red", "Green", "Blue", "Alpha")
RGB_COLOURS = ("FF0000", "00FF00", "0000FF", "FFFFFF")
# TIFF ResolutionUnit: 2 inch, 3 centimetre, in micrometres.
_RESOLUTION_UNIT_UM = {2: 25400.0, 3: 10000.0}


@dataclass(frozen=True, slots=True)
class PhysicalSize:
    value: float
    unit: str | None  # a UDUNITS-2 name, or None when the file gives no usable unit


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """Metadata of one input image, in output terms (one entry per output channel)."""

    name: str
    channel_names: tuple[str | None, ...] = ()
    channel_colours: tuple[str | None, ...] = ()  # RRGGBB
    sizes: Mapping[str, PhysicalSize] = field(default_factory=dict)  # role x, y, z, t
    # Samples of a photometric RGB(A) image: display-ready, so windows span the full range.
    rgb: bool = False
    # An existing `omero` block to carry over (OME-Zarr input).
    omero: Mapping[str, Any] | None = None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _positive(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def ome_colour(value: str | None) -> str | None:
    """An OME `Color` (signed 32-bit RGBA integer) as `RRGGBB`."""
    try:
        rgba = int(value) & 0xFFFFFFFF if value is not None else None
    except ValueError:
        return None
    return None if rgba is None else f"{rgba >> 8:06X}"


@dataclass(frozen=True, slots=True)
class OmeImage:
    """The parts of one OME-XML `Image` that the output keeps."""

    name: str | None
    channel_names: tuple[str | None, ...]
    channel_colours: tuple[str | None, ...]
    samples: int  # SamplesPerPixel of its channels
    sizes: dict[str, PhysicalSize]


def parse_ome_xml(xml: str, index: int, name: str | None = None) -> OmeImage | None:
    """The `index`-th `Image` of an OME-XML document (or the one named `name`); None if absent.

    tifffile makes one series per `Image`, in document order; the name check guards against a
    document whose images it skipped.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    images = [el for el in root if _local(el.tag) == "Image"]
    if not images:
        return None
    image = images[index] if index < len(images) else None
    if name and (image is None or image.get("Name") != name):
        image = next((im for im in images if im.get("Name") == name), image)
    if image is None:
        return None
    pixels = next((el for el in image if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        return None
    sizes: dict[str, PhysicalSize] = {}
    for role in ("x", "y", "z"):
        key = f"PhysicalSize{role.upper()}"
        value = _positive(pixels.get(key))
        if value is not None:
            unit = pixels.get(f"{key}Unit", "µm")  # OME's default unit
            sizes[role] = PhysicalSize(value, SPACE_UNITS.get(unit))
    increment = _positive(pixels.get("TimeIncrement"))
    if increment is not None:
        sizes["t"] = PhysicalSize(increment, TIME_UNITS.get(pixels.get("TimeIncrementUnit", "s")))
    channels = [el for el in pixels if _local(el.tag) == "Channel"]
    samples = int(channels[0].get("SamplesPerPixel", "1")) if channels else 1
    return OmeImage(
        name=image.get("Name"),
        channel_names=tuple(ch.get("Name") or None for ch in channels),
        channel_colours=tuple(ome_colour(ch.get("Color")) for ch in channels),
        samples=max(samples, 1),
        sizes=sizes,
    )


def svs_pixel_size(description: str) -> float | None:
    """Aperio's `MPP` (micrometres per pixel) from an SVS ImageDescription."""
    if not description.startswith("Aperio"):
        return None
    for part in description.split("|")[1:]:
        key, _, value = part.partition("=")
        if key.strip() == "MPP":
            return _positive(value.strip())
    return None


def resolution_pixel_size(resolution: tuple[int, int] | None, unit: int | None) -> float | None:
    """Micrometres per pixel from an X/YResolution rational and ResolutionUnit (NDPI and most
    scanners write centimetres); None without a physical unit."""
    if resolution is None or unit not in _RESOLUTION_UNIT_UM:
        return None
    numerator, denominator = resolution
    if numerator <= 0 or denominator <= 0:
        return None
    return _RESOLUTION_UNIT_UM[unit] * denominator / numerator


def imagej_sizes(meta: Mapping[str, Any], x_res: float | None) -> dict[str, PhysicalSize]:
    """Physical sizes from ImageJ's description: `unit`, `spacing` (z), `finterval` (t);
    `x_res` is XResolution in pixels per unit."""
    sizes: dict[str, PhysicalSize] = {}
    raw_unit = meta.get("unit")
    unit = SPACE_UNITS.get(raw_unit.replace("\\u00B5", "µ")) if isinstance(raw_unit, str) else None
    if unit is not None and x_res:
        sizes["x"] = sizes["y"] = PhysicalSize(1.0 / x_res, unit)
    spacing = meta.get("spacing")
    if unit is not None and isinstance(spacing, int | float) and spacing > 0:
        sizes["z"] = PhysicalSize(float(spacing), unit)
    interval = meta.get("finterval")
    if isinstance(interval, int | float) and interval > 0:
        sizes["t"] = PhysicalSize(float(interval), "second")
    return sizes


def channel_labels(
    size_c: int, samples: int, names: tuple[str | None, ...], colours: tuple[str | None, ...]
) -> tuple[tuple[str | None, ...], tuple[str | None, ...]]:
    """Per output channel names and colours, when the input's channels carry samples.

    `names`/`colours` are per input channel; each of `samples` samples becomes an output
    channel. RGB(A) samples are named and coloured by their sample.
    """
    if samples == 1:
        return _fit(names, size_c), _fit(colours, size_c)
    out_names: list[str | None] = []
    out_colours: list[str | None] = []
    for g in range(size_c // samples):
        base = names[g] if g < len(names) else None
        for s in range(samples):
            sample = RGB_NAMES[s] if samples in (3, 4) else str(s)
            out_names.append(f"{base} {sample}" if base else sample)
            out_colours.append(RGB_COLOURS[s] if samples in (3, 4) else None)
    return tuple(out_names), tuple(out_colours)


def _fit(values: tuple[str | None, ...], n: int) -> tuple[str | None, ...]:
    """`values` when there is one per channel, else nothing (a mismatch is not trusted)."""
    return values if len(values) == n else ()
