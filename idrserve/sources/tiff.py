"""`TiffSource`: TIFF-family files served directly (OME-TIFF, SVS, NDPI, SCN, generic tiled and
pyramidal TIFF), read tile by tile with tifffile, without converting them first.

Why read tiles ourselves rather than through zarr over tifffile's `ZarrTiffStore`: that store
decodes on zarr's event loop (or hops to a thread per chunk) and reads the file with a seek
under one lock; a tile costs several thread hand-offs. Here a region is read in the caller's
worker thread (the CPU pool job that also renders and encodes it, as `sources/direct.py` does
for Zarr v2): the tiles it covers are read with `os.pread` (no shared file position, so reads
of one file run in parallel) and decoded with tifffile's own per-segment decoder (`TiffPage.
decode`: every compression tifffile reads, JPEG tables and NDPI headers included), never a
whole level for one tile. Strips are tiles as wide as the image.

What a file holds is tifffile's view of it: `series[n]` (an OME-TIFF image, an SVS/NDPI
pyramid, a multi-file OME-TIFF set) with its `levels` (SubIFDs, reduced pages, NDPI levels).
Axes other than Y, X and samples (T, C, Z, and tifffile's generic ones when of size 1) map to
pages; RGB(A) samples are channels. Metadata comes from OME-XML (names, colours, physical
sizes and units) or vendor tags (SVS `MPP`, resolution tags), read by `sources/omexml.py` as
`idrserve convert` reads them, else the OME-Zarr fallbacks (`sources/ngff.py`: windows from
the lowest level, a palette, the first three channels active).

A catalog location may name a series: `…/slide.ome.tif#series=1`. Open files are kept in a
bounded LRU and closed on eviction. Local files only: over HTTP or S3 tifffile needs a
seekable file object, which would read a remote file a page header at a time (see
docs/tiff.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tifffile

from idrserve import errors
from idrserve.catalog import Location, Locator
from idrserve.flight import SingleFlight
from idrserve.lru import BoundedLRU
from idrserve.model import RGBA, Box, ImageMeta, Selection
from idrserve.settings import SourceSettings
from idrserve.sources import ngff, omexml
from idrserve.sources.base import check_selection

log = logging.getLogger(__name__)

# Names served by this source; anything else that is a regular file is sniffed (below).
TIFF_SUFFIXES = (
    ".ome.tif",
    ".ome.tiff",
    ".ome.btf",
    ".tif",
    ".tiff",
    ".btf",
    ".tf2",
    ".tf8",
    ".svs",
    ".ndpi",
    ".scn",
    ".bif",
    ".qptiff",
)
_SERIES = re.compile(r"#series=(\d{1,6})$")
# Magic numbers of formats people put in a catalog by mistake, for a 415 that says what it is.
_MAGIC = (
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"ZISRAWFILE", "Zeiss CZI"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"\x89HDF\r\n\x1a\n", "HDF5"),
    (b"PK\x03\x04", "ZIP"),
    (b"%PDF", "PDF"),
)
SUPPORTED = "OME-TIFF, SVS, NDPI, SCN, BIF, QPTIFF and tiled or pyramidal TIFF"
CONVERT_HINT = (
    "convert it to OME-Zarr (`idrserve convert`, or bioformats2raw for formats tifffile "
    "cannot read) and serve that"
)
# Auto windows read at most this many pixels per side of the coarsest level (as for Zarr).
STATS_MAX_SIDE = 2048
_ROLES = {"T": "t", "C": "c", "Z": "z"}


def split_location(location: Location) -> tuple[Path, int]:
    """The file and the series a location names (`path#series=N`, series 0 by default)."""
    text = str(location)
    match = _SERIES.search(text)
    series = int(match.group(1)) if match else 0
    return Path(text[: match.start()] if match else text), series


def is_tiff_name(location: Location) -> bool:
    """True when the location's name is one of the TIFF family's (no file-system call)."""
    path, _ = split_location(location)
    return path.name.lower().endswith(TIFF_SUFFIXES)


def sniff_format(head: bytes) -> str:
    """The format a file's first bytes announce, or "unknown"."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return "unknown"


@dataclass(slots=True)
class _Level:
    """One pyramid level of a series: its pages by plane, and how planes map to pages."""

    pages: tuple[Any, ...]  # TiffPage | TiffFrame, in the series' page order
    keyframe: Any  # the TiffPage describing every page of the level
    size_x: int
    size_y: int
    tile_x: int
    tile_y: int
    plane_shape: tuple[int, ...]  # sizes of the page axes (e.g. T, C, Z), in file order
    plane_roles: tuple[str, ...]  # "t", "c", "z" (or "" for an axis of size 1)


@dataclass(slots=True)
class _Tiff:
    """An opened series: the file, its levels and the metadata served."""

    tif: tifffile.TiffFile
    levels: tuple[_Level, ...]
    samples: int  # RGB(A) samples per pixel, served as channels
    image: ngff.NgffImage  # the series as a 5D image, for OME-Zarr's defaults
    meta: ImageMeta
    checked_at: float
    fingerprint: tuple[int, int]
    # Our own descriptor of every file the series' pages live in (a multi-file OME-TIFF set
    # has several; tifffile closes the ones it opened to read their headers), by path.
    fds: dict[str, int]

    def close(self) -> None:
        self.tif.close()
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


class TiffSource:
    """Reads TIFF-family images located by a catalog; see the module docstring."""

    name: ClassVar[str] = "tiff"

    def __init__(
        self, settings: SourceSettings, catalog: Locator, *, executor: Executor | None = None
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._executor = executor
        self._open: BoundedLRU[int, _Tiff] = BoundedLRU(
            max_entries=settings.tiff_open_files,
            on_evict=lambda _key, opened: opened.close(),
        )
        # Metadata loads are kept whoever asked first: finish them even if that caller left.
        self._loading: SingleFlight[int, _Tiff] = SingleFlight("tiff-open", cancel_abandoned=False)

    async def meta(self, image_id: int) -> ImageMeta:
        return (await self._image(image_id)).meta

    async def read(self, image_id: int, sel: Selection) -> np.ndarray:
        opened = await self._image(image_id)
        check_selection(opened.meta, sel)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _read, opened, sel)

    def sync_reader(self, image_id: int, sel: Selection) -> Callable[[], np.ndarray] | None:
        """A blocking read for the caller's own worker thread (read, render and encode in one
        job), for an image already open; None sends the caller through `read`."""
        opened = self._open.peek(image_id)
        if opened is None:
            return None
        check_selection(opened.meta, sel)
        return lambda: _read(opened, sel)

    def fresh_meta(self, image_id: int) -> ImageMeta | None:
        opened = self._open.peek(image_id)
        if opened is None or not self._fresh(opened):
            return None
        return opened.meta

    def fresh_data_version(self, image_id: int) -> str | None:
        meta = self.fresh_meta(image_id)
        return None if meta is None else meta.data_version

    def _fresh(self, opened: _Tiff) -> bool:
        return time.monotonic() - opened.checked_at < self._settings.rescan_interval_s

    async def aclose(self) -> None:
        await self._loading.aclose()
        self._open.clear()

    # ---- opening ------------------------------------------------------------------------

    async def _image(self, image_id: int) -> _Tiff:
        opened = self._open.get(image_id)
        if opened is not None and self._fresh(opened):
            return opened
        loaded, _joined = await self._loading.run(image_id, lambda: self._load(image_id, opened))
        return loaded

    async def _load(self, image_id: int, previous: _Tiff | None) -> _Tiff:
        location = await self._catalog.locate(image_id)
        if location is None:
            raise errors.NotFound(f"image {image_id} not found", param="image_id")
        if "://" in str(location):
            raise errors.UnsupportedFormat(
                f"image {image_id} is a TIFF in remote storage, which idrserve does not read "
                f"directly (tifffile reads a file a header at a time): {CONVERT_HINT}",
                internal=f"{location}: remote TIFF",
            )
        path, series = split_location(location)
        loop = asyncio.get_running_loop()
        try:
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError as exc:
            raise errors.NotFound(
                f"image {image_id} not found", param="image_id", internal=f"{path}: missing"
            ) from exc
        except OSError as exc:
            raise errors.SourceError(
                f"image {image_id}: the stored file could not be read",
                internal=f"{path}: {exc!r}",
            ) from exc
        fingerprint = (st.st_size, st.st_mtime_ns)
        if previous is not None and previous.fingerprint == fingerprint:
            previous.checked_at = time.monotonic()
            self._open.put(image_id, previous)
            return previous
        opened = await loop.run_in_executor(
            self._executor, _open_series, image_id, path, series, fingerprint
        )
        stats = await loop.run_in_executor(self._executor, _stats, opened)
        if stats:
            opened.meta = ngff.to_image_meta(
                opened.image,
                image_id,
                stats=stats,
                data_version=opened.meta.data_version,
                fallback_name=path.name,
            )
        self._open.put(image_id, opened)
        if previous is not None and previous is not opened:
            previous.close()
        return opened


def _open_series(image_id: int, path: Path, series: int, fingerprint: tuple[int, int]) -> _Tiff:
    """Open `path`, check it is a TIFF tifffile can serve, and describe `series` (a thread)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise errors.SourceError(
            f"image {image_id}: the stored file could not be read", internal=f"{path}: {exc!r}"
        ) from exc
    found = sniff_format(head)
    if found not in ("TIFF", "BigTIFF"):
        raise errors.UnsupportedFormat(
            f"image {image_id} is stored as {found if found != 'unknown' else 'a file'} "
            f"that idrserve cannot serve; it serves OME-Zarr and {SUPPORTED}: {CONVERT_HINT}",
            internal=f"{path}: format {found}",
        )
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error, …
        raise errors.SourceError(
            f"image {image_id}: the stored TIFF file is broken (it could not be parsed)",
            internal=f"{path}: {exc!r}",
        ) from exc
    try:
        return _describe(image_id, tif, series, path, fingerprint)
    except BaseException:
        tif.close()
        raise


def _describe(
    image_id: int, tif: tifffile.TiffFile, series: int, path: Path, fingerprint: tuple[int, int]
) -> _Tiff:
    if not tif.series:
        raise errors.SourceError(
            f"image {image_id}: the stored TIFF file is broken (it holds no image)",
            internal=f"{path}: no series",
        )
    if not 0 <= series < len(tif.series):
        raise errors.NotFound(
            f"image {image_id} not found: its file has {len(tif.series)} series",
            param="image_id",
            internal=f"{path}: no series {series}",
        )
    s = tif.series[series]
    keyframe = s.keyframe
    try:
        codec = tifffile.COMPRESSION(keyframe.compression).name
    except ValueError as exc:  # a compression tag value tifffile does not know
        raise errors.UnsupportedFormat(
            f"image {image_id} is a TIFF with an unknown compression "
            f"({int(keyframe.compression)}): {CONVERT_HINT}",
            internal=f"{path}: {exc!r}",
        ) from exc
    log.debug("image %d: %s, series %d, %s", image_id, path, series, codec)
    axes = s.axes.upper()
    samples = s.shape[axes.index("S")] if "S" in axes else 1
    if not ("Y" in axes and "X" in axes):
        raise errors.UnsupportedFormat(
            f"image {image_id} is a TIFF whose series has axes {axes}, not an image plane: "
            f"{CONVERT_HINT}",
        )
    levels = tuple(_level(image_id, lv) for lv in s.levels)
    image = _as_ngff(tif, s, series, levels, samples, path)
    digest = hashlib.blake2b(f"{path}:{series}:{fingerprint}".encode(), digest_size=6).hexdigest()
    meta = ngff.to_image_meta(
        image, image_id, stats={}, data_version=digest, fallback_name=path.name
    )
    fds: dict[str, int] = {}
    try:
        for level in levels:
            for page in level.pages:
                fh = page.parent.filehandle
                if fh.path not in fds:
                    fds[fh.path] = os.open(fh.path, os.O_RDONLY)
    except OSError as exc:
        for fd in fds.values():
            os.close(fd)
        raise errors.SourceError(
            f"image {image_id}: a file of the stored TIFF set could not be opened",
            internal=f"{path}: {exc!r}",
        ) from exc
    return _Tiff(tif, levels, samples, image, meta, time.monotonic(), fingerprint, fds)


def _level(image_id: int, level: Any) -> _Level:
    """Pages of one level, and which page axis is t, c or z."""
    axes = level.axes.upper()
    shape = level.shape
    keyframe = level.keyframe
    plane_axes = [a for a in axes if a not in "YXS"]
    plane_shape = tuple(shape[axes.index(a)] for a in plane_axes)
    roles = []
    for axis, size in zip(plane_axes, plane_shape, strict=True):
        role = _ROLES.get(axis)
        if role is None and size > 1:
            raise errors.UnsupportedFormat(
                f"image {image_id} is a TIFF with a {axis} axis of {size} planes, which maps "
                f"to neither t, c nor z: {CONVERT_HINT}"
            )
        roles.append(role or "")
    if len([r for r in roles if r]) != len({r for r in roles if r}):
        raise errors.UnsupportedFormat(f"image {image_id}: a TIFF with repeated axes {axes}")
    with level.parent.filehandle.lock:
        pages = tuple(level.pages)  # load every page once, under the file's lock
    if keyframe.is_tiled:
        tile_y, tile_x = keyframe.tilelength, keyframe.tilewidth
    else:
        tile_y, tile_x = keyframe.rowsperstrip or keyframe.imagelength, keyframe.imagewidth
    return _Level(
        pages,
        keyframe,
        shape[axes.index("X")],
        shape[axes.index("Y")],
        tile_x,
        tile_y,
        plane_shape,
        tuple(roles),
    )


# ---- metadata --------------------------------------------------------------------------------


def _as_ngff(
    tif: tifffile.TiffFile,
    series: Any,
    index: int,
    levels: Sequence[_Level],
    samples: int,
    path: Path,
) -> ngff.NgffImage:
    """The series described as a 5D (t, c, z, y, x) image, so OME-Zarr's defaults apply."""
    roles = dict(zip(levels[0].plane_roles, levels[0].plane_shape, strict=True))
    size_t, size_z = roles.get("t", 1), roles.get("z", 1)
    size_c = roles.get("c", 1) * samples
    dtype = np.dtype(levels[0].keyframe.dtype)
    ngff_levels = tuple(
        ngff.Level(
            path=str(i),
            shape=(size_t, size_c, size_z, lv.size_y, lv.size_x),
            chunks=(1, 1, 1, lv.tile_y, lv.tile_x),
            dtype=dtype,
        )
        for i, lv in enumerate(levels)
    )
    ome = _ome_facts(tif, index, series.name)
    px = _pixel_size(ome, series.keyframe)
    name = (ome.name if ome is not None else None) or series.name or path.name
    rgb = omexml.is_rgb(levels[0].keyframe.photometric, samples)
    names, colours = omexml.sample_channels(
        size_c,
        samples,
        ome.names if ome is not None else (),
        ome.colours if ome is not None else (),
        omexml.SAMPLE_RGBA,
    )
    omero = None
    if names or colours or rgb:
        # As `idrserve convert` writes them (convert/document.py): names and colours; for
        # display-ready RGB samples also full-range windows and the alpha channel off. The
        # rest is OME-Zarr's defaults.
        span = ngff.dtype_range(dtype) if rgb else None
        low, high = span if span is not None else (None, None)
        channels = tuple(
            ngff.OmeroChannel(
                label=names[c] if names else None,
                color=colours[c] if colours else None,
                active=False if rgb and c % samples == 3 else None,
                start=low,
                end=high,
                min=low,
                max=high,
            )
            for c in range(size_c)
        )
        omero = ngff.Omero(name=name, channels=channels, default_z=None, default_t=None, model=None)
    return ngff.NgffImage(
        version="tiff",
        name=name,
        description="",
        axes=("t", "c", "z", "y", "x"),
        levels=ngff_levels,
        dtype=dtype,
        pixel_size=px,
        omero=omero,
    )


@dataclass(frozen=True, slots=True)
class _OmeFacts:
    name: str | None
    names: tuple[str | None, ...]  # per OME channel (one per group of samples)
    colours: tuple[RGBA | None, ...]
    sizes: Mapping[str, omexml.PhysicalSize]


def _ome_facts(tif: tifffile.TiffFile, index: int, name: str | None) -> _OmeFacts | None:
    """Channel names and colours and physical sizes from the OME-XML, when there is one.

    The `Image` is the one `idrserve convert` picks for the same series (`omexml.read_image`):
    series N never borrows series 0's channels and pixel size.
    """
    xml = tif.ome_metadata if tif.is_ome else None
    if not xml:
        return None
    try:
        image = omexml.read_image(xml, index, name)
    except omexml.OmeXmlError:
        log.warning("%s: unreadable OME-XML, ignored", tif.filename)
        return None
    if image is None:
        return None
    names = tuple(ch.name for ch in image.channels)
    colours = tuple(ch.colour for ch in image.channels)
    return _OmeFacts(image.name, names, colours, image.sizes)


def _pixel_size(
    ome: _OmeFacts | None, keyframe: Any
) -> tuple[float | None, float | None, float | None]:
    """x, y, z in µm, taken as the converter takes them (`convert/tiffin.py`), so a served file
    and its converted output agree: the OME-XML's sizes, and where it gives no x, the vendor
    tags' x and y of the series' own page."""
    sizes = dict(ome.sizes) if ome is not None else {}
    if "x" not in sizes:
        sizes.update(omexml.vendor_sizes(keyframe))
    x, y, z = (sizes[role].micrometres if role in sizes else None for role in "xyz")
    return x, y, z


def _stats(opened: _Tiff) -> dict[int, ngff.ChannelStats]:
    """Auto windows from the coarsest level at the default plane (as for OME-Zarr)."""
    channels = ngff.channels_needing_stats(opened.image)
    if not channels:
        return {}
    meta = opened.meta
    level = len(meta.levels) - 1
    lm = meta.levels[level]
    w, h = min(lm.size_x, STATS_MAX_SIDE), min(lm.size_y, STATS_MAX_SIDE)
    box = Box((lm.size_x - w) // 2, (lm.size_y - h) // 2, w, h)
    sel = Selection(level, meta.default_t, meta.default_z, meta.default_z + 1, channels, box)
    try:
        planes = _read(opened, sel)
    except errors.IdrServeError as exc:
        log.warning("image %d: no auto windows (%s)", meta.image_id, exc.detail)
        return {}
    return {c: ngff.compute_window(p) for c, p in zip(channels, planes, strict=True)}


# ---- pixels ----------------------------------------------------------------------------------


def _read(opened: _Tiff, sel: Selection) -> np.ndarray:
    """`sel` as (c, z, y, x) in native byte order; tiles outside the box are never read."""
    level = opened.levels[sel.level]
    box = sel.box
    dtype = np.dtype(opened.meta.dtype)
    out = np.zeros((len(sel.channels), sel.z_stop - sel.z_start, box.h, box.w), dtype=dtype)
    samples = opened.samples
    try:
        for zi, z in enumerate(range(sel.z_start, sel.z_stop)):
            # channels stored as pages: one page each; RGB samples: one page for all
            by_page: dict[int, list[tuple[int, int]]] = {}
            for ci, c in enumerate(sel.channels):
                page_c, sample = divmod(c, samples)
                index = _page_index(level, sel.t, page_c, z)
                by_page.setdefault(index, []).append((ci, sample))
            for index, wanted in by_page.items():
                _read_page(level, level.pages[index], box, out, zi, wanted, opened.fds)
    except errors.IdrServeError:
        raise
    except Exception as exc:
        raise errors.SourceError(
            f"image {opened.meta.image_id}: a stored TIFF tile could not be read or decoded",
            internal=f"{opened.tif.filename}: {exc!r}",
        ) from exc
    return out


def _page_index(level: _Level, t: int, c: int, z: int) -> int:
    wanted = {"t": t, "c": c, "z": z}
    coords = [wanted.get(role, 0) if role else 0 for role in level.plane_roles]
    return int(np.ravel_multi_index(coords, level.plane_shape)) if coords else 0


def _read_page(
    level: _Level,
    page: Any,
    box: Any,
    out: np.ndarray,
    zi: int,
    wanted: list[tuple[int, int]],
    fds: dict[str, int],
) -> None:
    keyframe = page.keyframe  # pages of a multi-file set each have their own
    tl, tw = (
        (keyframe.tilelength, keyframe.tilewidth)
        if keyframe.is_tiled
        else (
            keyframe.rowsperstrip or keyframe.imagelength,
            keyframe.imagewidth,
        )
    )
    chunked = keyframe.chunked  # tiles along each axis of the page
    page_axes = keyframe.axes.upper()
    separate = keyframe.planarconfig == 2 and keyframe.samplesperpixel > 1
    fh = page.parent.filehandle
    fd, base = fds[fh.path], fh._offset  # _offset: a TIFF embedded in a larger file
    ty0, ty1 = box.y // tl, (box.y + box.h - 1) // tl
    tx0, tx1 = box.x // tw, (box.x + box.w - 1) // tw
    sample_sets = [[s for _, s in wanted]] if not separate else [[s] for _, s in wanted]
    for samples_here in sample_sets:
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                # the tile's index along each of the page's axes (e.g. YXS, SYX, ZYX): samples
                # stored apart are their own tiles, contiguous ones share one
                at = {"Y": ty, "X": tx, "S": samples_here[0] if separate else 0}
                coords = tuple(at.get(axis, 0) for axis in page_axes)
                tile = int(np.ravel_multi_index(coords, chunked))
                offset, count = page.dataoffsets[tile], page.databytecounts[tile]
                if not count:
                    continue  # sparse: the fill value (zeros)
                data = _pread(fd, base + offset, count)
                segment, _indices, _shape = keyframe.decode(
                    data, tile, jpegtables=page.jpegtables, jpegheader=keyframe.jpegheader
                )
                # segment: (depth, length, width, samples), cropped at the image's edges
                y0, x0 = ty * tl, tx * tw
                sy0, sx0 = max(box.y, y0), max(box.x, x0)
                sy1 = min(box.y + box.h, y0 + segment.shape[1])
                sx1 = min(box.x + box.w, x0 + segment.shape[2])
                if sy1 <= sy0 or sx1 <= sx0:
                    continue
                piece = segment[0, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
                for ci, sample in wanted:
                    if separate and sample != samples_here[0]:
                        continue
                    s = 0 if separate else sample
                    out[ci, zi, sy0 - box.y : sy1 - box.y, sx0 - box.x : sx1 - box.x] = piece[
                        ..., s
                    ]


def _pread(fd: int, offset: int, count: int) -> bytes:
    """Read without moving a shared file position (parallel reads of one file are safe)."""
    data = os.pread(fd, count, offset)
    if len(data) != count:
        raise OSError(f"short read: {len(data)} of {count} bytes at {offset} (truncated file?)")
    return data
