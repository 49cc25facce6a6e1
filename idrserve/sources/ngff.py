"""Parse OME-NGFF 0.1–0.5 image metadata into an `NgffImage`, and turn it into an `ImageMeta`.

Pure functions over already-fetched JSON documents; no I/O here (`sources/zarr.py` fetches).
The `omero` block is parsed leniently: any field may be missing or of the wrong type, and then
the documented default applies (docs/rendering.md#default-settings-without-an-omero-block):

- label: the channel index as a string (what imgData shows for an unnamed channel);
- colour: the vizarr palette for the channel count (1: white; 2: magenta, green; 3: red, green,
  blue; more: cyan, yellow, magenta, red, green, blue, then white); `#`, lower case and an 8th/
  alpha byte are accepted (alpha ignored, colours are opaque);
- active: the first 3 channels (OMERO's `resetDefaults`);
- window start/end: computed from the data by the source (`compute_window`), uint8 0..255;
- window min/max: the dtype range for integers, the computed data range for floats;
- family linear, coefficient 1, not inverted;
- defaultZ sizeZ//2, defaultT 0 (out-of-range values are replaced by these);
- model: `rdefs.model` if valid; else `color` when an `omero` block exists, and without one
  `color` if 1 < sizeC < 8 else `greyscale` (OMERO's rule for images without settings).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from idrserve.model import (
    RGBA,
    ChannelMeta,
    ColorModel,
    Family,
    ImageMeta,
    LevelMeta,
    StoredLength,
)

AXES_5D = ("t", "c", "z", "y", "x")
ROLES = frozenset(AXES_5D)

# vizarr's default colours, by channel count.
WHITE: RGBA = (255, 255, 255, 255)
_PALETTE_2: tuple[RGBA, ...] = ((255, 0, 255, 255), (0, 255, 0, 255))
_PALETTE_3: tuple[RGBA, ...] = ((255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255))
_PALETTE_6: tuple[RGBA, ...] = (
    (0, 255, 255, 255),
    (255, 255, 0, 255),
    (255, 0, 255, 255),
    (255, 0, 0, 255),
    (0, 255, 0, 255),
    (0, 0, 255, 255),
)

# Length units (UDUNITS-2 names and common spellings) in micrometres.
_MICROMETRES = {
    "angstrom": 1e-4,
    "picometer": 1e-6,
    "nanometer": 1e-3,
    "nm": 1e-3,
    "micrometer": 1.0,
    "micron": 1.0,
    "um": 1.0,
    "µm": 1.0,  # micro sign
    "μm": 1.0,  # Greek mu (OME-XML from some writers)
    "millimeter": 1e3,
    "mm": 1e3,
    "centimeter": 1e4,
    "cm": 1e4,
    "decimeter": 1e5,
    "meter": 1e6,
    "m": 1e6,
    "kilometer": 1e9,
}

# OME's name of each length unit above (OMERO.iviewer shows pixel sizes in their stored unit).
_OME_LENGTH_UNITS = {
    "angstrom": "ANGSTROM",
    "picometer": "PICOMETER",
    "nanometer": "NANOMETER",
    "nm": "NANOMETER",
    "micrometer": "MICROMETER",
    "micron": "MICROMETER",
    "um": "MICROMETER",
    "µm": "MICROMETER",
    "μm": "MICROMETER",
    "millimeter": "MILLIMETER",
    "mm": "MILLIMETER",
    "centimeter": "CENTIMETER",
    "cm": "CENTIMETER",
    "decimeter": "DECIMETER",
    "meter": "METER",
    "m": "METER",
    "kilometer": "KILOMETER",
}

# numpy dtype names for Zarr v3 `data_type` values we can serve.
_V3_DTYPES = {
    "bool": "bool",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "int64": "int64",
    "uint64": "uint64",
    "float32": "float32",
    "float64": "float64",
}


_E = TypeVar("_E", Family, ColorModel)


class NgffError(ValueError):
    """The metadata is not a readable OME-NGFF image (the source maps it to SourceError)."""


@dataclass(frozen=True, slots=True)
class ArrayInfo:
    """The parts of a level array's metadata document we use."""

    zarr_format: int
    shape: tuple[int, ...]
    chunks: tuple[int, ...]  # inner chunk shape when sharded
    shards: tuple[int, ...] | None
    dtype: np.dtype[Any]  # as stored, byte order included


@dataclass(frozen=True, slots=True)
class Multiscale:
    """The first `multiscales` entry of an image group, plus the raw `omero` block."""

    version: str
    name: str
    description: str
    axes: tuple[str, ...] | None  # roles (t,c,z,y,x) in array order; None when not given
    paths: tuple[str, ...]
    scale: tuple[float, ...] | None  # level-0 scale × multiscale-level scale
    units: tuple[str | None, ...] | None  # per axis, as given
    omero: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class Level:
    path: str
    shape: tuple[int, ...]  # array order
    chunks: tuple[int, ...]
    dtype: np.dtype[Any]


@dataclass(frozen=True, slots=True)
class NgffImage:
    """One multiscale image: axes mapped to roles, levels from finest to coarsest."""

    version: str
    name: str
    description: str
    axes: tuple[str, ...]  # role of each array dimension, e.g. ("c", "y", "x")
    levels: tuple[Level, ...]
    dtype: np.dtype[Any]  # level 0 as stored (may be big-endian)
    pixel_size: tuple[float | None, float | None, float | None]  # x, y, z in µm
    omero: Omero | None
    zarr_format: int = 2
    # x, y, z as stated: (scale, OME unit name), None where `pixel_size` is None.
    stored_pixel_size: tuple[StoredLength | None, StoredLength | None, StoredLength | None] = (
        None,
        None,
        None,
    )

    def size(self, role: str, level: int = 0) -> int:
        """Size along `role` at `level`, 1 for a role the array does not have."""
        if role not in self.axes:
            return 1
        return self.levels[level].shape[self.axes.index(role)]


@dataclass(frozen=True, slots=True)
class OmeroChannel:
    label: str | None = None
    color: RGBA | None = None
    active: bool | None = None
    start: float | None = None
    end: float | None = None
    min: float | None = None
    max: float | None = None
    family: Family | None = None
    coefficient: float | None = None
    inverted: bool | None = None


@dataclass(frozen=True, slots=True)
class Omero:
    name: str | None
    channels: tuple[OmeroChannel, ...]
    default_z: int | None
    default_t: int | None
    model: ColorModel | None


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """Per-channel statistics the source computes when the metadata lacks them."""

    start: float
    end: float
    lo: float  # data min (finite values)
    hi: float  # data max


# ---- array documents ---------------------------------------------------------------------


def parse_array(doc: Mapping[str, Any]) -> ArrayInfo:
    """Parse a v2 `.zarray` or a v3 array `zarr.json` document."""
    try:
        zarr_format = int(doc.get("zarr_format", 2))
        shape = tuple(int(n) for n in doc["shape"])
        if zarr_format == 2:
            dtype = np.dtype(doc["dtype"])
            chunks = tuple(int(n) for n in doc["chunks"])
            shards = None
        elif zarr_format == 3:
            if doc.get("node_type", "array") != "array":
                raise NgffError("zarr.json is not an array")
            data_type = doc["data_type"]
            if not isinstance(data_type, str) or data_type not in _V3_DTYPES:
                raise NgffError(f"unsupported data_type {data_type!r}")
            grid = tuple(int(n) for n in doc["chunk_grid"]["configuration"]["chunk_shape"])
            codecs = list(doc.get("codecs") or [])
            sharding = next((c for c in codecs if _codec_name(c) == "sharding_indexed"), None)
            if sharding is not None:
                config = sharding.get("configuration", {})
                chunks = tuple(int(n) for n in config["chunk_shape"])
                shards = grid
                codecs = list(config.get("codecs") or [])
            else:
                chunks, shards = grid, None
            endian: Literal["<", ">"] = "<"
            for codec in codecs:
                if _codec_name(codec) == "bytes":
                    conf = codec.get("configuration") or {}
                    endian = ">" if conf.get("endian") == "big" else "<"
            dtype = np.dtype(_V3_DTYPES[data_type]).newbyteorder(endian)
        else:
            raise NgffError(f"unknown zarr_format {zarr_format}")
    except NgffError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise NgffError(f"malformed array metadata: {exc!r}") from exc
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise NgffError(f"unsupported dtype {dtype}")
    if len(chunks) != len(shape) or any(n < 1 for n in chunks) or any(n < 0 for n in shape):
        raise NgffError("chunk shape does not match array shape")
    if dtype.itemsize == 1:
        dtype = dtype.newbyteorder("=")  # `|u1`: byte order is meaningless
    return ArrayInfo(zarr_format, shape, chunks, shards, dtype)


def _codec_name(codec: Any) -> str | None:
    if isinstance(codec, str):
        return codec
    if isinstance(codec, Mapping):
        name = codec.get("name")
        return name if isinstance(name, str) else None
    return None


# ---- group attributes --------------------------------------------------------------------


def ngff_attrs(group_doc: Mapping[str, Any], zarr_format: int) -> Mapping[str, Any]:
    """The NGFF keys of a group: `.zattrs` itself (v2) or `attributes.ome` (v3)."""
    if zarr_format == 2:
        return group_doc
    attributes = group_doc.get("attributes")
    if not isinstance(attributes, Mapping):
        return {}
    ome = attributes.get("ome")
    # Tolerate 0.4-style keys written at the top level of a v3 group.
    return ome if isinstance(ome, Mapping) else attributes


def parse_multiscale(attrs: Mapping[str, Any]) -> Multiscale:
    """Parse the first `multiscales` entry (and keep the raw `omero` block)."""
    multiscales = attrs.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales:
        raise NgffError("no multiscales")
    ms = multiscales[0]
    if not isinstance(ms, Mapping):
        raise NgffError("multiscales[0] is not an object")
    version = _version(attrs.get("version") or ms.get("version"))
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise NgffError("multiscales[0] has no datasets")
    paths = []
    for ds in datasets:
        path = ds.get("path") if isinstance(ds, Mapping) else None
        if not isinstance(path, str) or not path or path.startswith("/") or ".." in path:
            raise NgffError(f"bad dataset path {path!r}")
        paths.append(path.strip("/"))
    axes, units = _parse_axes(ms.get("axes"))
    scale = _scale_of(datasets[0])
    global_scale = _scale_of(ms)
    if scale is not None and global_scale is not None and len(global_scale) == len(scale):
        scale = tuple(a * b for a, b in zip(scale, global_scale, strict=True))
    metadata = ms.get("metadata")
    description = metadata.get("description") if isinstance(metadata, Mapping) else None
    omero = attrs.get("omero")
    name = ms.get("name")
    return Multiscale(
        version=version,
        name=name if isinstance(name, str) else "",
        description=description if isinstance(description, str) else "",
        axes=axes,
        paths=tuple(paths),
        scale=scale,
        units=units,
        omero=omero if isinstance(omero, Mapping) else None,
    )


def _version(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return "0.4"  # what the ome-ngff-validator assumes
    return value.split("-")[0]


def _parse_axes(
    axes: Any,
) -> tuple[tuple[str, ...] | None, tuple[str | None, ...] | None]:
    """Map axes (0.3 strings or 0.4+ objects) to t/c/z/y/x roles; None when absent or unusable."""
    if not isinstance(axes, list) or not 2 <= len(axes) <= 5:
        return None, None
    names: list[str] = []
    types: list[str | None] = []
    units: list[str | None] = []
    for axis in axes:
        if isinstance(axis, str):
            names.append(axis.lower())
            types.append(None)
            units.append(None)
        elif isinstance(axis, Mapping) and isinstance(axis.get("name"), str):
            names.append(axis["name"].lower())
            kind = axis.get("type")
            types.append(kind.lower() if isinstance(kind, str) else None)
            unit = axis.get("unit")
            units.append(unit if isinstance(unit, str) else None)
        else:
            return None, None
    if set(names) <= ROLES and len(set(names)) == len(names):
        return tuple(names), tuple(units)
    # Unusual names: fall back to the axis types (the last two spatial axes are y, x).
    roles: list[str] = []
    spatial = [i for i, t in enumerate(types) if t == "space"]
    if len(spatial) not in (2, 3):
        return None, None
    spatial_roles = dict(zip(spatial, ("z", "y", "x")[3 - len(spatial) :], strict=True))
    for i, kind in enumerate(types):
        roles.append(spatial_roles.get(i) or ("t" if kind == "time" else "c"))
    if len(set(roles)) != len(roles):
        return None, None
    return tuple(roles), tuple(units)


def _scale_of(node: Any) -> tuple[float, ...] | None:
    if not isinstance(node, Mapping):
        return None
    transforms = node.get("coordinateTransformations")
    if not isinstance(transforms, list):
        return None
    for tr in transforms:
        if isinstance(tr, Mapping) and tr.get("type") == "scale":
            values = tr.get("scale")
            if isinstance(values, list) and all(_is_number(v) for v in values):
                return tuple(float(v) for v in values)
    return None


def default_axes(rank: int) -> tuple[str, ...]:
    """Axes of 0.1/0.2 data (always t,c,z,y,x); for other ranks the trailing roles."""
    if not 2 <= rank <= 5:
        raise NgffError(f"unsupported rank {rank}")
    return AXES_5D[5 - rank :]


# ---- omero block -------------------------------------------------------------------------


def parse_color(value: Any) -> RGBA | None:
    """`RRGGBB` (optionally `#`-prefixed, any case, optional alpha byte ignored) → opaque RGBA."""
    if not isinstance(value, str):
        return None
    text = value.strip().removeprefix("#")
    if len(text) not in (6, 8):
        return None
    try:
        rgb = int(text[:6], 16)
    except ValueError:
        return None
    if text[6:] and not all(ch in "0123456789abcdefABCDEF" for ch in text[6:]):
        return None
    return ((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255, 255)


def parse_omero(block: Mapping[str, Any] | None) -> Omero | None:
    """Parse an `omero` block; never raises, wrong-typed fields become None."""
    if not isinstance(block, Mapping):
        return None
    raw_channels = block.get("channels")
    channels = tuple(
        _parse_channel(ch) for ch in (raw_channels if isinstance(raw_channels, list) else [])
    )
    rdefs = block.get("rdefs")
    rdefs = rdefs if isinstance(rdefs, Mapping) else {}
    model = rdefs.get("model")
    name = block.get("name")
    return Omero(
        name=name if isinstance(name, str) and name else None,
        channels=channels,
        default_z=_int_or_none(rdefs.get("defaultZ")),
        default_t=_int_or_none(rdefs.get("defaultT")),
        model=_enum_or_none(ColorModel, "color" if model == "rgb" else model),
    )


def _parse_channel(ch: Any) -> OmeroChannel:
    if not isinstance(ch, Mapping):
        return OmeroChannel()
    window = ch.get("window")
    window = window if isinstance(window, Mapping) else {}
    label = ch.get("label")
    return OmeroChannel(
        label=label if isinstance(label, str) and label else None,
        color=parse_color(ch.get("color")),
        active=ch.get("active") if isinstance(ch.get("active"), bool) else None,
        start=_float_or_none(window.get("start")),
        end=_float_or_none(window.get("end")),
        min=_float_or_none(window.get("min")),
        max=_float_or_none(window.get("max")),
        family=_enum_or_none(Family, ch.get("family")),
        coefficient=_float_or_none(ch.get("coefficient")),
        inverted=ch.get("inverted") if isinstance(ch.get("inverted"), bool) else None,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _float_or_none(value: Any) -> float | None:
    if _is_number(value) and math.isfinite(value):
        return float(value)
    return None


def _int_or_none(value: Any) -> int | None:
    if _is_number(value) and float(value).is_integer():
        return int(value)
    return None


def _enum_or_none(enum: type[_E], value: Any) -> _E | None:
    if isinstance(value, str):
        try:
            return enum(value.lower())
        except ValueError:
            return None
    return None


# ---- assembling ----------------------------------------------------------------------------


def build_image(ms: Multiscale, arrays: Sequence[ArrayInfo]) -> NgffImage:
    """Combine parsed group attributes with the level arrays' metadata."""
    if len(arrays) != len(ms.paths):
        raise NgffError("one array document per dataset is needed")
    rank = len(arrays[0].shape)
    axes = ms.axes if ms.axes is not None and len(ms.axes) == rank else default_axes(rank)
    if "y" not in axes or "x" not in axes:
        raise NgffError(f"axes {axes} lack y or x")
    levels = []
    for path, info in zip(ms.paths, arrays, strict=True):
        if len(info.shape) != rank:
            raise NgffError(f"level {path} has rank {len(info.shape)}, expected {rank}")
        levels.append(Level(path, info.shape, info.chunks, info.dtype))
    if any(lv.dtype.newbyteorder("=") != levels[0].dtype.newbyteorder("=") for lv in levels):
        raise NgffError("levels differ in dtype")
    return NgffImage(
        version=ms.version,
        name=ms.name,
        description=ms.description,
        axes=axes,
        levels=tuple(levels),
        dtype=levels[0].dtype,
        pixel_size=_pixel_size(ms, axes),
        omero=parse_omero(ms.omero),
        zarr_format=arrays[0].zarr_format,
        stored_pixel_size=_stored_pixel_size(ms, axes),
    )


def _pixel_size(
    ms: Multiscale, axes: tuple[str, ...]
) -> tuple[float | None, float | None, float | None]:
    """Level-0 physical pixel size of x, y, z in µm; None when no scale or no known unit."""
    out: list[float | None] = []
    for role in ("x", "y", "z"):
        if ms.scale is None or ms.units is None or role not in axes:
            out.append(None)
            continue
        i = axes.index(role)
        factor = _MICROMETRES.get((ms.units[i] or "").lower())
        value = ms.scale[i] * factor if factor is not None else None
        # Infinity parses from JSON, and a product of two huge scales overflows to it: JSON
        # responses cannot carry it, so such a size is as unknown as a missing one.
        out.append(value if value is not None and 0 < value < math.inf else None)
    return out[0], out[1], out[2]


def _stored_pixel_size(
    ms: Multiscale, axes: tuple[str, ...]
) -> tuple[StoredLength | None, StoredLength | None, StoredLength | None]:
    """x, y, z as the metadata states them, for every size `_pixel_size` gives."""
    out: list[StoredLength | None] = []
    for role, size in zip(("x", "y", "z"), _pixel_size(ms, axes), strict=True):
        if size is None or ms.scale is None or ms.units is None:
            out.append(None)
            continue
        i = axes.index(role)
        out.append((ms.scale[i], _OME_LENGTH_UNITS[(ms.units[i] or "").lower()]))
    return out[0], out[1], out[2]


def to_micrometres(value: float, unit: str) -> float | None:
    """`value` in `unit` (UDUNITS-2 names, OME's symbols) as µm; None for an unknown unit."""
    factor = _MICROMETRES.get(unit.strip().lower())
    return value * factor if factor is not None else None


def palette(size_c: int) -> tuple[RGBA, ...]:
    """vizarr's default colours for an image with `size_c` channels."""
    if size_c == 1:
        return (WHITE,)
    if size_c == 2:
        return _PALETTE_2
    if size_c == 3:
        return _PALETTE_3
    return _PALETTE_6[:size_c] + (WHITE,) * max(0, size_c - 6)


def dtype_range(dtype: np.dtype[Any]) -> tuple[float, float] | None:
    """(min, max) of an integer dtype; None for floats."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    if dtype.kind == "b":
        return 0.0, 1.0
    return None


def _omero_channel(image: NgffImage, c: int) -> OmeroChannel:
    if image.omero is not None and c < len(image.omero.channels):
        return image.omero.channels[c]
    return OmeroChannel()


def _window(ch: OmeroChannel) -> tuple[float, float] | None:
    """The saved rendering window (start, end) if usable: finite, start < end."""
    if ch.start is not None and ch.end is not None and ch.start < ch.end:
        return ch.start, ch.end
    return None


def _data_range(ch: OmeroChannel) -> tuple[float, float] | None:
    if ch.min is not None and ch.max is not None and ch.min <= ch.max:
        return ch.min, ch.max
    return None


def channels_needing_stats(image: NgffImage) -> tuple[int, ...]:
    """Channels whose defaults must be computed from pixels (no window, or float slider range)."""
    out = []
    for c in range(image.size("c")):
        ch = _omero_channel(image, c)
        float_range = image.dtype.kind == "f" and _data_range(ch) is None
        if float_range or (_window(ch) is None and image.dtype.itemsize > 1):
            out.append(c)
    return tuple(out)


def compute_window(plane: np.ndarray) -> ChannelStats:
    """Auto-contrast window of one channel: p0.1/p99.9 of finite non-zero values.

    Falls back to min/max of the finite values, and to [v, v+1] for a constant channel.
    """
    values = plane.astype(np.float64, copy=False).ravel()
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return ChannelStats(0.0, 1.0, 0.0, 1.0)
    lo, hi = float(finite.min()), float(finite.max())
    nonzero = finite[finite != 0]
    start, end = lo, hi
    if nonzero.size:
        p_lo, p_hi = np.percentile(nonzero, [0.1, 99.9])
        if p_lo < p_hi:
            start, end = float(p_lo), float(p_hi)
    if not start < end:
        start, end = start, start + 1.0
    return ChannelStats(start, end, lo, hi)


def to_image_meta(
    image: NgffImage,
    image_id: int,
    *,
    stats: Mapping[int, ChannelStats],
    data_version: str,
    fallback_name: str = "",
) -> ImageMeta:
    """Resolve every default and build the `ImageMeta` served to the other layers."""
    size_c, size_z, size_t = image.size("c"), image.size("z"), image.size("t")
    colours = palette(size_c)
    has_block = image.omero is not None
    span = dtype_range(image.dtype)
    channels = []
    for c in range(size_c):
        ch = _omero_channel(image, c)
        st = stats.get(c)
        window = _window(ch)
        if window is not None:
            start, end = window
        elif st is not None:
            start, end = st.start, st.end
        else:  # 8-bit (full range, without reading pixels), or stats not computed
            start, end = span if span is not None else (0.0, 1.0)
        data_range = _data_range(ch)
        if data_range is not None:
            lo, hi = data_range
        elif span is not None:
            lo, hi = span
        elif st is not None:
            lo, hi = st.lo, st.hi
        else:
            lo, hi = start, end
        channels.append(
            ChannelMeta(
                label=ch.label or str(c),
                color=ch.color or colours[c],
                window_min=min(lo, start),
                window_max=max(hi, end),
                start=start,
                end=end,
                active=ch.active if ch.active is not None else c < 3,
                family=ch.family or Family.LINEAR,
                coefficient=ch.coefficient if ch.coefficient is not None else 1.0,
                inverted=bool(ch.inverted),
            )
        )
    omero = image.omero
    default_z = omero.default_z if omero is not None else None
    default_t = omero.default_t if omero is not None else None
    if omero is not None and omero.model is not None:
        model = omero.model
    elif has_block or 1 < size_c < 8:
        model = ColorModel.COLOR
    else:
        model = ColorModel.GREYSCALE
    levels = tuple(
        LevelMeta(
            size_x=image.size("x", i),
            size_y=image.size("y", i),
            tile_x=lv.chunks[image.axes.index("x")],
            tile_y=lv.chunks[image.axes.index("y")],
        )
        for i, lv in enumerate(image.levels)
    )
    name = (omero.name if omero is not None else None) or image.name or fallback_name
    return ImageMeta(
        image_id=image_id,
        name=name,
        dtype=image.dtype.newbyteorder("=").name,
        size_x=image.size("x"),
        size_y=image.size("y"),
        size_z=size_z,
        size_c=size_c,
        size_t=size_t,
        levels=levels,
        channels=tuple(channels),
        default_z=default_z if default_z is not None and 0 <= default_z < size_z else size_z // 2,
        default_t=default_t if default_t is not None and 0 <= default_t < size_t else 0,
        default_model=model,
        pixel_size=image.pixel_size,
        stored_pixel_size=image.stored_pixel_size,
        data_version=data_version,
        description=image.description,
        source_format=f"OME-NGFF {image.version}, Zarr v{image.zarr_format}",
    )
