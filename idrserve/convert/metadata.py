"""What the output's `omero` block and axes carry: names, colours, physical sizes and units.

Read from OME-XML (`parse_ome_xml`), Aperio SVS descriptions (`svs_pixel_size`), the TIFF
resolution tags that NDPI and most scanners write (`resolution_pixel_size`) and ImageJ's
metadata (`imagej_sizes`). Units are written as the UDUNITS-2 names NGFF asks for
(`micrometer`, `second`); an unknown unit leaves that axis without one rather than guessing.

OME-XML and the vendor tags are read by `sources/omexml.py`, the reader the TIFF source uses
too, so a converted file and the same file served directly cannot disagree; this module turns
its facts into output terms and keeps the names `convert` has always imported from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from idrserve.model import RGBA
from idrserve.sources import omexml
from idrserve.sources.omexml import SPACE_UNITS as SPACE_UNITS
from idrserve.sources.omexml import TIME_UNITS as TIME_UNITS
from idrserve.sources.omexml import PhysicalSize as PhysicalSize
from idrserve.sources.omexml import resolution_pixel_size as resolution_pixel_size
from idrserve.sources.omexml import svs_pixel_size as svs_pixel_size


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


def ome_colour(value: str | None) -> str | None:
    """An OME `Color` (signed 32-bit RGBA integer) as `RRGGBB`."""
    return _hex(omexml.ome_rgba(value))


def _hex(rgba: RGBA | None) -> str | None:
    """`RRGGBB`: an `omero` block's colour has no alpha."""
    return None if rgba is None else "{:02X}{:02X}{:02X}".format(*rgba[:3])


RGB_COLOURS: tuple[str, ...] = tuple(h for c in omexml.SAMPLE_RGBA if (h := _hex(c)) is not None)


@dataclass(frozen=True, slots=True)
class OmeImage:
    """The parts of one OME-XML `Image` that the output keeps."""

    name: str | None
    channel_names: tuple[str | None, ...]
    channel_colours: tuple[str | None, ...]
    samples: int  # SamplesPerPixel of its channels
    sizes: dict[str, PhysicalSize]


def parse_ome_xml(xml: str, index: int, name: str | None = None) -> OmeImage | None:
    """The `Image` describing series `index` (named `name`), as `omexml.read_image` picks it
    for the TIFF source too; None if absent or the document is not XML."""
    try:
        image = omexml.read_image(xml, index, name)
    except omexml.OmeXmlError:
        return None
    if image is None:
        return None
    return OmeImage(
        name=image.name,
        channel_names=tuple(ch.name for ch in image.channels),
        channel_colours=tuple(_hex(ch.colour) for ch in image.channels),
        samples=image.channels[0].samples if image.channels else 1,
        sizes=dict(image.sizes),
    )


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
    """Per output channel names and colours (RRGGBB), when the input's channels carry samples:
    `omexml.sample_channels`, the rule the TIFF source follows too."""
    return omexml.sample_channels(size_c, samples, names, colours, RGB_COLOURS)
