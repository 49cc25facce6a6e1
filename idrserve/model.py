"""Typed values that flow between the layers: image metadata, rendering settings, requests.

Every stage of the pipeline (http → service → sources → render → encode) passes one of these
frozen dataclasses, never a dict of loose keyword arguments, so that a request parsed once can
be keyed, logged and replayed exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypeVar, dataclass_transform

from idrserve.lru import BoundedLRU

# Bump whenever rendering or encoding output changes for the same request, so that cached
# bytes rendered by older code are never served again.
RENDER_SCHEMA = 1

# Bump whenever the histogram JSON changes for the same request (binning, format).
HISTOGRAM_SCHEMA = 1

# Render settings kept per image metadata for requests with overrides (`overridden_render`).
OVERRIDDEN_KEPT = 64

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True)
def record(cls: type[_T]) -> type[_T]:
    """A value made for every request (a box, a plan, the pipeline's request): frozen to the
    type checker, equal and hashed by its fields, but built by plain slot stores.

    Why: a frozen dataclass's `__init__` stores each field through `object.__setattr__`, a
    call a field. `RegionRequest` took 2.4 µs to build frozen against 0.7 µs so (timeit), and
    a cold tile builds half a dozen such values between two renders, where each costs about
    three times as much (docs/benchmarks.md#planning-values-built-by-plain-stores-2026-12-08).
    mypy refuses a store to a field as it refuses one to a frozen dataclass's
    (`dataclass_transform(frozen_default=True)`), and `scripts/test.sh` runs mypy, so nothing
    assigns them at run time either. tests/unit/test_records.py checks they compare, hash
    and `replace` as frozen dataclasses do.
    """
    return dataclass(slots=True, unsafe_hash=True)(cls)


RGBA = tuple[int, int, int, int]
# A physical length as the metadata states it: the value and OME's unit name, e.g.
# (65.0, "NANOMETER"); iviewer shows pixel sizes in their stored unit.
StoredLength = tuple[float, str]


class Family(StrEnum):
    """OMERO quantization families (docs/rendering.md#families)."""

    LINEAR = "linear"
    POLYNOMIAL = "polynomial"
    EXPONENTIAL = "exponential"
    LOGARITHMIC = "logarithmic"


class ColorModel(StrEnum):
    """OMERO rendering models; `rgb` in the RE is `color` in imgData and NGFF."""

    COLOR = "color"
    GREYSCALE = "greyscale"


class Projection(StrEnum):
    NORMAL = "normal"
    INTMAX = "intmax"
    INTMEAN = "intmean"
    INTSUM = "intsum"


class Format(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    TIFF = "tif"
    WEBP = "webp"


MEDIA_TYPES: dict[Format, str] = {
    Format.JPEG: "image/jpeg",
    Format.PNG: "image/png",
    Format.TIFF: "image/tiff",
    Format.WEBP: "image/webp",
}

# Formats whose bytes depend on `RegionRequest.quality` (lossy encoders).
LOSSY_FORMATS = frozenset({Format.JPEG, Format.WEBP})


class Tone(StrEnum):
    """IIIF qualities applied to the rendered RGB: as rendered, luminance, or black/white."""

    DEFAULT = "default"
    GRAY = "gray"
    BITONAL = "bitonal"


# OMERO pixel type names (imgData meta.pixelsType) keyed by numpy dtype name.
PIXELS_TYPES: dict[str, str] = {
    "bool": "bit",
    "int8": "int8",
    "uint8": "uint8",
    "int16": "int16",
    "uint16": "uint16",
    "int32": "int32",
    "uint32": "uint32",
    "float32": "float",
    "float64": "double",
}


@dataclass(frozen=True, slots=True)
class ChannelRender:
    """Resolved rendering settings of one channel (saved defaults plus request overrides)."""

    active: bool
    start: float
    end: float
    color: RGBA = (255, 255, 255, 255)
    lut: str | None = None
    family: Family = Family.LINEAR
    coefficient: float = 1.0
    inverted: bool = False

    def canonical(self) -> str:
        r, g, b, a = self.color
        colour = f"lut:{self.lut}" if self.lut else f"{r:02X}{g:02X}{b:02X}{a:02X}"
        coefficient = 1.0 if self.family is Family.LINEAR else self.coefficient
        return (
            f"{int(self.active)}|{float(self.start) + 0.0!r}:{float(self.end) + 0.0!r}|{colour}"
            f"|{self.family.value}|{float(coefficient)!r}|{int(self.inverted)}"
        )


@dataclass(frozen=True, slots=True)
class RenderSettings:
    """Everything that maps raw channel planes to RGB: per-channel settings plus the model."""

    channels: tuple[ChannelRender, ...]
    model: ColorModel = ColorModel.COLOR
    # `canonical()`, made once: the same settings object serves every request that takes an
    # image's saved settings (`ImageMeta.saved_render`). Not part of equality or hashing.
    _canonical: str | None = field(default=None, init=False, compare=False, repr=False)

    def active_indices(self) -> tuple[int, ...]:
        """Channel indices that contribute pixels: all active ones, or the first for greyscale."""
        active = tuple(i for i, ch in enumerate(self.channels) if ch.active)
        if self.model is ColorModel.GREYSCALE:
            return active[:1]
        return active

    def canonical(self) -> str:
        # Only contributing channels change the output bytes; inactive ones are left out so
        # that iviewer 0.16 (all channels listed) and 0.18 (active only) share a key.
        if self._canonical is None:
            object.__setattr__(self, "_canonical", self._make_canonical())
        return self._canonical  # type: ignore[return-value]

    def _make_canonical(self) -> str:
        parts = []
        for i in self.active_indices():
            ch = self.channels[i]
            if self.model is ColorModel.GREYSCALE:
                # Colour and LUT are ignored in greyscale; normalise them away.
                ch = replace(ch, color=(255, 255, 255, 255), lut=None)
            parts.append(f"{i}={ch.canonical()}")
        return f"m={self.model.value};" + ",".join(parts)


@record
class Box:
    """A rectangle in the pixel coordinates of one resolution level."""

    x: int
    y: int
    w: int
    h: int

    def clip(self, size_x: int, size_y: int) -> Box:
        """Clip to the level bounds as the OMERO RE does: edge tiles shrink, never pad."""
        return Box(self.x, self.y, min(self.w, size_x - self.x), min(self.h, size_y - self.y))


@dataclass(frozen=True, slots=True)
class LevelMeta:
    """One resolution level; level 0 is full resolution (NGFF order)."""

    size_x: int
    size_y: int
    tile_x: int
    tile_y: int


@dataclass(frozen=True, slots=True)
class ChannelMeta:
    """Saved (default) rendering settings and facts about one channel."""

    label: str
    color: RGBA
    window_min: float
    window_max: float
    start: float
    end: float
    active: bool
    family: Family = Family.LINEAR
    coefficient: float = 1.0
    inverted: bool = False
    lut: str | None = None
    emission_wave: float | None = None

    def render(self) -> ChannelRender:
        return ChannelRender(
            active=self.active,
            start=self.start,
            end=self.end,
            color=self.color,
            lut=self.lut,
            family=self.family,
            coefficient=self.coefficient,
            inverted=self.inverted,
        )


@dataclass(frozen=True, slots=True)
class ImageMeta:
    """What every endpoint needs to know about an image, from any source.

    `dtype` is the native-endian numpy dtype name (e.g. ``"uint16"``); sources convert
    big-endian stored data before returning it.
    """

    image_id: int
    name: str
    dtype: str
    size_x: int
    size_y: int
    size_z: int
    size_c: int
    size_t: int
    levels: tuple[LevelMeta, ...]
    channels: tuple[ChannelMeta, ...]
    default_z: int = 0
    default_t: int = 0
    default_model: ColorModel = ColorModel.COLOR
    pixel_size: tuple[float | None, float | None, float | None] = (None, None, None)
    # Changes whenever the stored pixels or saved settings change; part of every cache key.
    data_version: str = "0"
    description: str = ""
    # Where the pixels come from, for people: "OME-NGFF 0.4, Zarr v2", "OMERO".
    source_format: str = ""
    # The same x, y, z sizes in their stored unit, where the source knows it (None: unknown,
    # or no size); `pixel_size` is always micrometres.
    stored_pixel_size: tuple[StoredLength | None, StoredLength | None, StoredLength | None] = (
        None,
        None,
        None,
    )

    @property
    def pixels_type(self) -> str:
        return PIXELS_TYPES.get(self.dtype, self.dtype)

    # Settings derived from the image's saved ones, made on first use and kept with the
    # metadata (a cold tile spent ~20 µs of its request path remaking and re-keying them;
    # bench/bench_http.py --request-path). `init=False`: `replace()` starts them afresh.
    _default_render: RenderSettings | None = field(
        default=None, init=False, compare=False, repr=False
    )
    _saved_render: RenderSettings | None = field(
        default=None, init=False, compare=False, repr=False
    )
    _overridden: BoundedLRU[RenderOverrides, RenderSettings] | None = field(
        default=None, init=False, compare=False, repr=False
    )
    _level_factors: tuple[tuple[int, int], ...] | None = field(
        default=None, init=False, compare=False, repr=False
    )

    def default_render(self) -> RenderSettings:
        if self._default_render is None:
            made = RenderSettings(tuple(ch.render() for ch in self.channels), self.default_model)
            object.__setattr__(self, "_default_render", made)
        return self._default_render  # type: ignore[return-value]

    def saved_render(self, make: Callable[[ImageMeta], RenderSettings]) -> RenderSettings:
        """`make(self)` (the saved settings as a request without overrides resolves them),
        made once per metadata object."""
        if self._saved_render is None:
            object.__setattr__(self, "_saved_render", make(self))
        return self._saved_render  # type: ignore[return-value]

    def level_factors(self) -> tuple[tuple[int, int], ...]:
        """Each level's nominal integer (x, y) downsampling factors relative to level 0,
        worked out once: a IIIF tile's plan looked them all up (pyramid.plan_region).

        NGFF pyramids halve with floor or ceil (4097 → 2048 or 2049); both are factor 2.
        """
        if self._level_factors is None:
            made = tuple(
                (
                    max(1, round(self.size_x / max(1, lv.size_x))),
                    max(1, round(self.size_y / max(1, lv.size_y))),
                )
                for lv in self.levels
            )
            object.__setattr__(self, "_level_factors", made)
        return self._level_factors  # type: ignore[return-value]

    def overridden_render(
        self,
        overrides: RenderOverrides,
        make: Callable[[ImageMeta, RenderOverrides], RenderSettings],
    ) -> RenderSettings:
        """`make(self, overrides)`, kept for the next request with equal overrides: a viewer
        sends the same `c`/`maps`/`m` with every tile of an image (resolving them took
        about 8 µs a tile). At most `OVERRIDDEN_KEPT` per metadata object."""
        made = self._overridden
        if made is None:
            made = BoundedLRU(OVERRIDDEN_KEPT)
            object.__setattr__(self, "_overridden", made)
        return made.get_or_make(overrides, make, self, overrides)


@record
class Selection:
    """A raw read: which channels, planes and rectangle of one level.

    Sources return an array shaped ``(len(channels), z_stop - z_start, box.h, box.w)`` in the
    image's native-endian dtype.
    """

    level: int
    t: int
    z_start: int
    z_stop: int
    channels: tuple[int, ...]
    box: Box


@record
class RegionRequest:
    """Everything that changes the output bytes of a rendered region, parsed once.

    `box` is in the coordinates of `level` and already clipped to it. `out_size`, when set,
    scales the rendered region to exactly (w, h) pixels (thumbnails).
    """

    image_id: int
    z: int
    t: int
    level: int
    box: Box
    render: RenderSettings
    projection: Projection = Projection.NORMAL
    proj_start: int = 0
    proj_end: int = 0
    flip_h: bool = False
    flip_v: bool = False
    fmt: Format = Format.JPEG
    quality: float = 0.85
    out_size: tuple[int, int] | None = None
    data_version: str = field(default="0")
    # IIIF/DeepZoom: box-average the raw read by (x, y) factors before rendering (levels the
    # pyramid does not store), rotate the result clockwise by 0/90/180/270 degrees after the
    # flips, and turn it grey or bitonal. The defaults leave webgateway requests untouched.
    downsample: tuple[int, int] = (1, 1)
    # Pixels added at the right and bottom by repeating the edge, after rendering and before
    # `out_size`: a floor-halved stored level is one pixel short of the ceil-halved level
    # size IIIF/DeepZoom clients ask for at the image's right and bottom edges.
    pad: tuple[int, int] = (0, 0)
    rotate: int = 0
    tone: Tone = Tone.DEFAULT

    def canonical(self) -> str:
        """A stable string of everything that changes the bytes; feeds keys and ETags."""
        projection = (
            "normal"
            if self.projection is Projection.NORMAL
            else f"{self.projection.value}|{self.proj_start}:{self.proj_end}"
        )
        quality = f"{self.quality:.4f}" if self.fmt in LOSSY_FORMATS else "-"
        out = f"{self.out_size[0]}x{self.out_size[1]}" if self.out_size else "-"
        # Only non-default IIIF transforms are spelled out, so webgateway keys are unchanged.
        extra = ""
        if self.downsample != (1, 1):
            extra += f";ds={self.downsample[0]}x{self.downsample[1]}"
        if self.pad != (0, 0):
            extra += f";pad={self.pad[0]}x{self.pad[1]}"
        if self.rotate:
            extra += f";rot={self.rotate}"
        if self.tone is not Tone.DEFAULT:
            extra += f";tone={self.tone.value}"
        return (
            f"v{RENDER_SCHEMA};img={self.image_id};dv={self.data_version};z={self.z};t={self.t}"
            f";l={self.level};box={self.box.x},{self.box.y},{self.box.w},{self.box.h}"
            f";p={projection};flip={int(self.flip_h)}{int(self.flip_v)};fmt={self.fmt.value}"
            f";q={quality};out={out}{extra};{self.render.canonical()}"
        )

    def key(self) -> str:
        """Short digest of `canonical()`, used as cache key and ETag."""
        return hashlib.blake2b(self.canonical().encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class HistogramRequest:
    """One channel's intensity histogram of one plane, counted over the pixels of `level`.

    `box` is the whole level; the bins span [low, high], the channel's slider range.
    """

    image_id: int
    z: int
    t: int
    c: int
    level: int
    box: Box
    low: float
    high: float
    bins: int
    data_version: str = "0"

    def canonical(self) -> str:
        """A stable string of everything that changes the counts; feeds keys and ETags."""
        return (
            f"hist{HISTOGRAM_SCHEMA};img={self.image_id};dv={self.data_version};z={self.z}"
            f";t={self.t};c={self.c};l={self.level}"
            f";box={self.box.x},{self.box.y},{self.box.w},{self.box.h}"
            f";range={float(self.low) + 0.0!r}:{float(self.high) + 0.0!r};bins={self.bins}"
        )

    def key(self) -> str:
        return hashlib.blake2b(self.canonical().encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class ChannelOverride:
    """One entry of webgateway's `c=` parameter; `index` is 0-based (the URL's is 1-based)."""

    index: int
    active: bool
    start: float | None = None
    end: float | None = None
    color: RGBA | None = None
    lut: str | None = None


@dataclass(frozen=True, slots=True)
class MapOverride:
    """One entry of `maps=`, aligned with the `c=` entries.

    `inverted` is None only when the entry itself is missing (list shorter than `c`); an entry
    present without an `inverted`/`reverse` key means False, as on OMERO.web.
    """

    inverted: bool | None = None
    family: Family | None = None
    coefficient: float | None = None


@dataclass(frozen=True, slots=True)
class RenderOverrides:
    """The request's rendering parameters before they meet an image's saved settings."""

    channels: tuple[ChannelOverride, ...] | None = None  # None: no `c` parameter at all
    maps: tuple[MapOverride, ...] | None = None  # None: no (or unparsable) `maps`
    model: ColorModel | None = None
