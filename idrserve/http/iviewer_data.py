"""The JSON documents of OMERO.iviewer's boot endpoints, built from `ImageMeta` (pure).

What each field is and where it comes from, field by field: docs/iviewer.md. The shapes are
those OMERO.web 5.2x and OMERO.iviewer 0.19 give the public user; facts OME-Zarr does not hold
(ROIs, rendering-definition owners, import dates, the container hierarchy) get the value
OMERO gives when they are absent, or a documented constant.
"""

from __future__ import annotations

from typing import Any

from idrserve.http.imgdata import image_data
from idrserve.model import ColorModel, Family, ImageMeta, StoredLength
from idrserve.settings import ViewerSettings

# iviewer's image_data calls OMERO.web's image marshal without a request, so the viewer
# settings OMERO.web reads from the session are never found: interpolation on, zoom level 0.
MARSHAL_WITHOUT_REQUEST = ViewerSettings(interpolate=True, init_zoom=0)

# OMERO's Family enumeration in its database order, which iviewer lists as given.
FAMILIES = (Family.LINEAR, Family.POLYNOMIAL, Family.EXPONENTIAL, Family.LOGARITHMIC)

# OMERO's symbol of each length unit a source may report (ome.model.enums.UnitsLength).
LENGTH_SYMBOLS = {
    "ANGSTROM": "\u00c5",
    "PICOMETER": "pm",
    "NANOMETER": "nm",
    "MICROMETER": "\u00b5m",
    "MILLIMETER": "mm",
    "CENTIMETER": "cm",
    "DECIMETER": "dm",
    "METER": "m",
    "KILOMETER": "km",
}

# Rendering definitions and their owners are OMERO objects that OME-Zarr does not record.
UNKNOWN_ID = -1


def display_micrometres(um: float) -> tuple[float, str]:
    """A micrometre length as OMERO.web's `lengthformat` and `lengthunit` filters show it.

    The thresholds and the arithmetic (operation by operation, so floats round alike) are
    web's, including its quirks: zero keeps µm but goes through the ångström branch's
    arithmetic, the ångström symbol is U+212B, and cm, m and km divide by 10⁵, 10⁶ and 10⁹.
    """
    if um < 0.001:
        value = um * 1000 * 10
        return value, "\u00b5m" if um == 0 else "\u212b"
    if um < 0.01:
        return um * 1000, "nm"
    if um < 1000:
        return um, "\u00b5m"
    if um < 1000 * 100:
        return um / 1000, "mm"
    if um < 1000 * 100 * 10:
        return um / 1000 / 100, "cm"
    if um < 1000 * 100 * 10 * 100:
        return um / 1000 / 100 / 10, "m"
    return um / 1000 / 100 / 10 / 1000, "km"


def pixel_size_units(um: float, stored: StoredLength | None) -> tuple[float, str, str]:
    """(value, symbol, unit id) of one pixel size, as iviewer's image_data reports it.

    A size stored in micrometres is re-expressed for display; any other unit is shown as
    stored. A source that does not know the stored unit gives micrometres.
    """
    value, unit = stored if stored is not None else (um, "MICROMETER")
    if unit == "MICROMETER":
        shown, symbol = display_micrometres(value)
        return shown, symbol, unit
    return value, LENGTH_SYMBOLS.get(unit, unit), unit


def iviewer_image_data(meta: ImageMeta) -> dict[str, Any]:
    """`/iviewer/image_data/<id>/`: the image marshal plus what iviewer's view adds."""
    out = image_data(meta, MARSHAL_WITHOUT_REQUEST)
    out["roi_count"] = 0  # idrserve serves no ROIs
    sizes = out["pixel_size"]
    for axis, um, stored in zip("xyz", meta.pixel_size, meta.stored_pixel_size, strict=True):
        if um is None:
            continue
        value, symbol, unit = pixel_size_units(um, stored)
        sizes[f"unit_{axis}"] = value
        sizes[f"symbol_{axis}"] = symbol
        sizes[f"unit_id_{axis}"] = unit
    out["delta_t_unit_symbol"] = None  # always null in iviewer's view; delta_t/ fills it
    out["import_date"] = None  # OME-Zarr keeps no import date; `acquisition_date` is absent
    out["families"] = [family.value for family in FAMILIES]
    return out


def image_rdefs(meta: ImageMeta) -> list[dict[str, Any]]:
    """`get_image_rdefs_json`'s list: the one saved rendering definition the source holds."""
    channels = []
    for ch in meta.channels:
        r, g, b, _a = ch.color
        entry: dict[str, Any] = {
            "active": ch.active,
            "start": float(ch.start),
            "end": float(ch.end),
            "color": f"{r:02X}{g:02X}{b:02X}",
            "inverted": ch.inverted,
            "reverseIntensity": ch.inverted,
            "family": ch.family.value,
            "coefficient": float(ch.coefficient),
            "rgb": {"red": r, "green": g, "blue": b},
        }
        if ch.lut:
            entry["lut"] = ch.lut
        channels.append(entry)
    return [
        {
            "id": UNKNOWN_ID,
            "owner": {"id": UNKNOWN_ID, "firstName": "", "lastName": ""},
            "z": meta.default_z,
            "t": meta.default_t,
            # OMERO's RenderingModel values: "rgb" is imgData's "color".
            "model": "greyscale" if meta.default_model is ColorModel.GREYSCALE else "rgb",
            "c": channels,
        }
    ]
