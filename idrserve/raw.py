"""Raw pixel regions for `/api/v1/images/{id}/region`: parse, bound, read, encode, cache.

A region is a window per axis (t, c, z, y, x) of one level; an axis given as an index is
dropped from the output. Only the window is read (one `PixelSource.read` per timepoint), and
the size is checked against `limits.max_api_bytes` before anything is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial

import numpy as np
import tifffile
from multidict import MultiMapping

from idrserve.cache import CacheEntry, response_key
from idrserve.errors import BadRequest, TooLarge
from idrserve.model import Box, ImageMeta, Selection
from idrserve.service import Deps, in_pool, render_slot

AXES = ("t", "c", "z", "y", "x")
# Bump when the bytes of a region response change for the same request.
RAW_SCHEMA = 1
KNOWN = frozenset({"level", "format", *AXES})
MAX_DIGITS = 10
# Timepoints read at once; each read is already parallel over chunks inside the source.
_T_CONCURRENCY = 4


class RawFormat(StrEnum):
    NPY = "npy"
    RAW = "raw"
    TIFF = "tiff"


MEDIA = {
    RawFormat.NPY: "application/x-npy",
    RawFormat.RAW: "application/octet-stream",
    RawFormat.TIFF: "image/tiff",
}


@dataclass(frozen=True, slots=True)
class AxisSpec:
    """One axis of the query: an index (dropped from the output) or a start:stop window."""

    start: int | None
    stop: int | None
    index: bool


@dataclass(frozen=True, slots=True)
class RegionQuery:
    level: int
    axes: tuple[AxisSpec | None, ...]  # t, c, z, y, x; None = the whole axis
    fmt: RawFormat


@dataclass(frozen=True, slots=True)
class RawRequest:
    """A resolved region: concrete [start, stop) per axis within the level."""

    image_id: int
    data_version: str
    level: int
    windows: tuple[tuple[int, int], ...]  # t, c, z, y, x
    dropped: tuple[bool, ...]
    dtype: str
    fmt: RawFormat

    @property
    def out_axes(self) -> tuple[str, ...]:
        return tuple(a for a, d in zip(AXES, self.dropped, strict=True) if not d)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(b - a for (a, b), d in zip(self.windows, self.dropped, strict=True) if not d)

    @property
    def out_dtype(self) -> str:
        return np.dtype(self.dtype).newbyteorder("<").str

    @property
    def nbytes(self) -> int:
        n = 1
        for a, b in self.windows:
            n *= b - a
        return n * np.dtype(self.dtype).itemsize

    def key(self) -> str:
        text = (
            f"raw:v{RAW_SCHEMA};img={self.image_id};dv={self.data_version};l={self.level}"
            f";w={self.windows};d={self.dropped};fmt={self.fmt.value}"
        )
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _parse_int(text: str, name: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > MAX_DIGITS:
        raise BadRequest(
            f"{name}: expected a non-negative integer index or start:stop, got {text[:40]!r}",
            param=name,
        )
    return int(text)


def parse_axis(value: str, name: str) -> AxisSpec:
    """`5` (an index) or `a:b`, `a:`, `:b` (a window); no negatives, no steps."""
    if ":" not in value:
        return AxisSpec(_parse_int(value, name), None, True)
    first, _, last = value.partition(":")
    if ":" in last:
        raise BadRequest(f"{name}: steps are not supported, expected start:stop", param=name)
    start = _parse_int(first, name) if first else None
    stop = _parse_int(last, name) if last else None
    if start is not None and stop is not None and stop <= start:
        raise BadRequest(
            f"{name}={value}: stop must be greater than start (an empty or reversed window)",
            param=name,
        )
    return AxisSpec(start, stop, False)


def parse_region_query(query: Mapping[str, str]) -> RegionQuery:
    """The query string's syntax (bounds are checked against the image in `resolve_region`)."""
    for name in query:
        if name not in KNOWN:
            raise BadRequest(
                f"unknown parameter {name[:40]!r}; expected {', '.join(sorted(KNOWN))}",
                param=name[:40],
            )
        if isinstance(query, MultiMapping) and len(query.getall(name)) > 1:
            raise BadRequest(f"{name}: given more than once", param=name)
    level = _parse_int(query.get("level", "0"), "level")
    fmt_text = query.get("format", "npy").lower()
    fmt_text = "tiff" if fmt_text == "tif" else fmt_text
    try:
        fmt = RawFormat(fmt_text)
    except ValueError:
        raise BadRequest(
            f"format: expected npy, raw or tiff, got {fmt_text[:20]!r}", param="format"
        ) from None
    axes = tuple(parse_axis(query[a], a) if a in query and query[a] != "" else None for a in AXES)
    return RegionQuery(level, axes, fmt)


def resolve_region(query: RegionQuery, meta: ImageMeta, max_bytes: int) -> RawRequest:
    """Concrete windows within the level; 400 when out of range, 413 when over `max_bytes`."""
    if query.level >= len(meta.levels):
        raise BadRequest(
            f"level={query.level}: the image has levels 0..{len(meta.levels) - 1}", param="level"
        )
    lv = meta.levels[query.level]
    sizes = (meta.size_t, meta.size_c, meta.size_z, lv.size_y, lv.size_x)
    windows, dropped = [], []
    for name, spec, size in zip(AXES, query.axes, sizes, strict=True):
        if spec is None:
            windows.append((0, size))
            dropped.append(False)
            continue
        if spec.index:
            assert spec.start is not None
            if spec.start >= size:
                raise BadRequest(
                    f"{name}={spec.start} is out of range: level {query.level} has {name} "
                    f"0..{size - 1}",
                    param=name,
                )
            windows.append((spec.start, spec.start + 1))
            dropped.append(True)
            continue
        start = 0 if spec.start is None else spec.start
        stop = size if spec.stop is None else spec.stop
        if stop > size or start >= stop:
            raise BadRequest(
                f"{name}={start}:{stop} is out of range: level {query.level} has {name} "
                f"0..{size} (start:stop, stop exclusive)",
                param=name,
            )
        windows.append((start, stop))
        dropped.append(False)
    if query.fmt is RawFormat.TIFF and sum(not d for d in dropped) < 2:
        raise BadRequest(
            "format=tiff needs at least two axes given as windows (e.g. y and x); "
            "use format=npy or raw for a single pixel or a line",
            param="format",
        )
    req = RawRequest(
        meta.image_id,
        meta.data_version,
        query.level,
        tuple(windows),
        tuple(dropped),
        meta.dtype,
        query.fmt,
    )
    if req.nbytes > max_bytes:
        raise TooLarge(_paging_hint(req, max_bytes), param="region")
    return req


def _paging_hint(req: RawRequest, max_bytes: int) -> str:
    """Say the limit and how to page: rows per request for the y window, or fewer planes."""
    (t0, t1), (c0, c1), (z0, z1), (y0, y1), (x0, x1) = req.windows
    itemsize = np.dtype(req.dtype).itemsize
    row = (t1 - t0) * (c1 - c0) * (z1 - z0) * (x1 - x0) * itemsize
    rows = max_bytes // row if row else 0
    if rows >= 1:
        pages = -(-(y1 - y0) // rows)
        how = (
            f"page along y: {pages} requests of at most {rows} rows, e.g. y={y0}:{y0 + rows}, "
            f"then y={y0 + rows}:{min(y1, y0 + 2 * rows)}, …"
        )
    else:
        how = "request one t, c and z at a time (t=0&c=0&z=0) and page along y and x"
    return (
        f"the region is {req.nbytes} bytes, over the limit of {max_bytes} bytes per request "
        f"(limits.max_api_bytes); {how}; or use a coarser level, or open the image lazily "
        f"with zarr/dask at /zarr/{req.image_id}.zarr"
    )


@dataclass(slots=True)
class RawOut:
    body: bytes
    media_type: str
    tier: str


async def cached_region(req: RawRequest, deps: Deps, key: str) -> RawOut:
    """Through the response cache when the result is small enough to be worth keeping."""

    async def produce() -> CacheEntry:
        with render_slot(deps):
            data = await read_region(req, deps)
            body = await in_pool(deps.cpu_pool, partial(encode_region, data, req))
        return CacheEntry(body, MEDIA[req.fmt])

    if deps.cache is None or req.nbytes > 8 * 1024 * 1024:
        entry = await produce()
        return RawOut(entry.body, entry.media_type, "off")
    generation = await deps.cache.generation(req.image_id)
    entry, tier = await deps.cache.get_or_render(
        response_key(req.image_id, generation, key), produce
    )
    return RawOut(entry.body, entry.media_type, tier)


async def read_region(req: RawRequest, deps: Deps) -> np.ndarray:
    """Exactly the window, as (t, c, z, y, x) in native byte order."""
    (t0, t1), (c0, c1), (z0, z1), (y0, y1), (x0, x1) = req.windows
    box = Box(x0, y0, x1 - x0, y1 - y0)
    channels = tuple(range(c0, c1))
    sem = asyncio.Semaphore(_T_CONCURRENCY)

    async def one(t: int) -> np.ndarray:
        async with sem:
            sel = Selection(req.level, t, z0, z1, channels, box)
            return await deps.source.read(req.image_id, sel)

    parts = await asyncio.gather(*(one(t) for t in range(t0, t1)))
    return np.stack(parts) if len(parts) > 1 else parts[0][np.newaxis]


def encode_region(data: np.ndarray, req: RawRequest) -> bytes:
    """Drop indexed axes, make it little-endian and C-ordered, and encode."""
    index = tuple(0 if d else slice(None) for d in req.dropped)
    # asarray, not ascontiguousarray: the latter turns a 0-d result (every axis an index) 1-d.
    out = np.asarray(data[index], dtype=np.dtype(req.out_dtype), order="C")
    if req.fmt is RawFormat.RAW:
        return out.tobytes()
    buf = io.BytesIO()
    if req.fmt is RawFormat.NPY:
        # The header, then the pixels copied once into the body: write_array into a BytesIO
        # and getvalue() copied them twice (tracemalloc, a 16 MiB region: 32 MiB at the peak
        # of encoding, now 16). At most five axes: the header always fits format 1.0.
        header = np.lib.format.header_data_from_array_1_0(out)
        np.lib.format.write_array_header_1_0(buf, header)
        return b"".join((buf.getvalue(), out.data))
    # tifffile's "shaped" description keeps the n-D shape, so imread gives it back.
    tifffile.imwrite(buf, out, photometric="minisblack")
    return buf.getvalue()
