"""Every image as a read-only OME-Zarr store: metadata documents and chunks by store key.

Two layouts, chosen per image and Zarr format:

- **pass-through**: a local or remote Zarr v2 image whose levels use numcodecs codecs is shown
  with its own axes, chunk grid and encoding; array documents and chunks are the stored bytes,
  unchanged (a Zarr v3 view of it re-describes the same chunks when the codecs have a v3 name).
  A Zarr v3 image (sharded or not) whose codecs every reader knows is passed through the same
  way in its Zarr v3 view: its array documents and its chunk or shard objects, which clients
  read by byte range (a shard's index, then its inner chunks), each range read on its own.
- **generated**: anything else (Zarr v3 in the NGFF 0.4 view, other sources such as OMERO) is
  shown as 5D t,c,z,y,x with one plane of one channel per chunk, chunks the size of the
  source's tiles, and Blosc-LZ4 encoding; each chunk is one `PixelSource.read` of exactly its
  box, encoded on demand and cached like any rendered response.

Store keys follow what ome-zarr-py and zarr-python write: `.zgroup`, `.zattrs`, `{level}/.zarray`
and `{level}/{t}/{c}/{z}/{y}/{x}` for NGFF 0.4 (Zarr v2); `zarr.json`, `{level}/zarr.json` and
`{level}/c/{t}/{c}/{z}/{y}/{x}` for NGFF 0.5 (Zarr v3). A key outside the chunk grid, or a stored
chunk that does not exist, is "missing" (HTTP 404), which is how clients learn fill values.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
from numcodecs.registry import codec_registry

from idrserve.cache import CacheEntry, response_key
from idrserve.errors import NotFound
from idrserve.lru import BoundedLRU
from idrserve.model import Box, ImageMeta, Selection
from idrserve.ngffdocs import (
    chunk_separator,
    dumps,
    group_docs,
    level0_shape,
    level_scale,
    stored_v3_doc,
    v3_array_doc,
)
from idrserve.service import Deps, in_pool, render_slot
from idrserve.sources import ngff
from idrserve.sources.base import resolve_source
from idrserve.sources.zarr import (
    SpanOf,
    ZarrSource,
    arrays_store,
    local_file,
    read_failure,
    stored_bytes,
    stored_span,
)

# Bump when generated documents or chunk encoding change, so cached chunks are never reused.
VIEW_SCHEMA = 1
AXES_5D = ngff.AXES_5D
# Generated chunks: the source's tile, at most this many pixels per side (≤ 8 MiB of float64).
MAX_CHUNK_SIDE = 1024
# LZ4 keeps the server's encode cheap (≈ 1 GB/s per core) at ratios close to zstd's level 1.
_BLOSC = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
_V3_COMPRESSORS = ("blosc", "zstd", "gzip")
JSON_TYPE = "application/json"
CHUNK_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class ViewLevel:
    """One level as the view shows it."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    scale: tuple[float, ...]
    array_doc: bytes  # `.zarray` (v2) or `zarr.json` (v3), exactly as served
    separator: str  # between chunk indices in keys
    stored_path: str | None = None  # pass-through: the level's path in the store
    chunk_prefix: str = ""  # before the chunk indices: "c/" (or "c.") for Zarr v3 default keys


@dataclass(frozen=True, slots=True)
class ZarrView:
    """An image's store view in one Zarr format (2: NGFF 0.4, 3: NGFF 0.5)."""

    meta: ImageMeta
    zarr_format: int
    axes: tuple[str, ...]
    dtype: np.dtype[Any]  # as served (pass-through keeps the stored byte order)
    levels: tuple[ViewLevel, ...]
    group_docs: dict[str, bytes]
    store: Any = None  # pass-through: the zarr store the chunks are read from

    @property
    def passthrough(self) -> bool:
        return self.store is not None


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """A chunk key resolved to grid indices (in the view's axis order) of one level."""

    level: int
    index: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Blob:
    """A store value: its bytes, media type and a strong validator."""

    body: bytes
    media_type: str
    etag: str
    tier: str = "off"


# ---- key resolution --------------------------------------------------------------------------


def resolve_key(view: ZarrView, key: str) -> bytes | ChunkRef | None:
    """A metadata document's bytes, a chunk reference, or None for a key the store lacks."""
    doc = view.group_docs.get(key)
    if doc is not None:
        return doc
    head, sep, rest = key.partition("/")
    if not sep or not head.isdigit() or len(head) > 4 or int(head) >= len(view.levels):
        return None
    lv = view.levels[int(head)]
    if rest == (".zarray" if view.zarr_format == 2 else "zarr.json"):
        return lv.array_doc
    if not rest.startswith(lv.chunk_prefix):
        return None
    parts = rest[len(lv.chunk_prefix) :].split(lv.separator)
    if len(parts) != len(lv.shape):
        return None
    index = []
    for part, n, c in zip(parts, lv.shape, lv.chunks, strict=True):
        if not (part.isascii() and part.isdigit()) or len(part) > 10:
            return None
        i = int(part)
        if i >= -(-n // c):
            return None  # outside the chunk grid: a static store has no such file either
        index.append(i)
    return ChunkRef(int(head), tuple(index))


async def read_chunk(view: ZarrView, ref: ChunkRef, deps: Deps) -> Blob | None:
    """A chunk's encoded bytes: the stored object, or generated from one source read."""
    if view.passthrough:
        stored = stored_key(view, ref)
        path = local_file(view.store, stored)
        if path is not None:
            return await _local_chunk(view, path, stored, deps)
        body = await stored_bytes(view.store, stored, view.meta.image_id)
        if body is None:
            return None
        return Blob(body, CHUNK_TYPE, f'"{_stored_digest(view, stored)}"')
    return await _generated_chunk(view, ref, deps)


def stored_key(view: ZarrView, ref: ChunkRef) -> str:
    """The store key of a pass-through chunk (or shard)."""
    lv = view.levels[ref.level]
    return f"{lv.stored_path}/{lv.chunk_prefix}" + lv.separator.join(map(str, ref.index))


def stored_tag(view: ZarrView, ref: ChunkRef) -> str:
    """The ETag of a pass-through chunk, whole or any range of it (known without reading)."""
    return f'"{_stored_digest(view, stored_key(view, ref))}"'


def _stored_digest(view: ZarrView, stored: str) -> str:
    """From the image's data version and the key, as for every cached response: a range of a
    stored object is served without reading the rest, so its bytes cannot be hashed."""
    meta = view.meta
    return hashlib.blake2b(
        f"zarrchunk:{meta.image_id}:{meta.data_version}:{stored}".encode(), digest_size=16
    ).hexdigest()


async def read_chunk_span(
    view: ZarrView, ref: ChunkRef, span_of: SpanOf
) -> tuple[int, tuple[int, int] | None, bytes] | None:
    """Pass-through only: a stored chunk's size, the span `span_of(size)` picks and its bytes,
    read without the rest of the object; None when the object is absent."""
    return await stored_span(view.store, stored_key(view, ref), view.meta.image_id, span_of)


async def _local_chunk(view: ZarrView, path: Path, stored: str, deps: Deps) -> Blob | None:
    """A stored chunk file, through the in-process memory tier.

    Per chunk, the executor hop of a file read costs several times the CPU of a memory hit,
    and on a small machine the server's CPU is the client's (bench_zarr.py); the disk and
    Redis tiers would only copy a local file.
    """
    meta = view.meta
    digest = _stored_digest(view, stored)
    tag = f'"{digest}"'
    memory = deps.cache.memory if deps.cache is not None else None
    key = ""
    if deps.cache is not None and memory is not None:
        key = response_key(meta.image_id, await deps.cache.generation(meta.image_id), digest)
        entry = memory.get(key)
        if entry is not None:
            return Blob(entry.body, CHUNK_TYPE, tag, "memory")
    try:
        body = await asyncio.get_running_loop().run_in_executor(deps.cpu_pool, _read_file, path)
    except OSError as exc:  # permissions, I/O errors: the client learns the kind only
        fault = "a stored chunk could not be read"
        raise read_failure(exc, meta.image_id, fault, f"reading {path}") from exc
    if body is None:
        return None
    if memory is not None:
        memory.put(key, CacheEntry(body, CHUNK_TYPE))
    return Blob(body, CHUNK_TYPE, tag, "miss" if memory is not None else "off")


def _read_file(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def digest_tag(body: bytes) -> str:
    """A validator from the content (crc32 and length: cheap, and a strong enough ETag here)."""
    return f'"{zlib.crc32(body):08x}-{len(body):x}"'


async def _generated_chunk(view: ZarrView, ref: ChunkRef, deps: Deps) -> Blob:
    meta, lv = view.meta, view.levels[ref.level]
    t, c, z, cy, cx = ref.index
    th, tw = lv.chunks[3], lv.chunks[4]
    y0, x0 = cy * th, cx * tw
    box = Box(x0, y0, min(tw, lv.shape[4] - x0), min(th, lv.shape[3] - y0))
    canonical = (
        f"zarrview:v{VIEW_SCHEMA};img={meta.image_id};dv={meta.data_version};l={ref.level}"
        f";i={t}.{c}.{z}.{cy}.{cx};chunk={th}x{tw};codec=blosc-lz4-5"
    )
    digest = hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest()
    dtype = view.dtype

    async def produce() -> CacheEntry:
        sel = Selection(ref.level, t, z, z + 1, (c,), box)
        with render_slot(deps):
            data = await deps.source.read(meta.image_id, sel)
            body = await in_pool(deps.cpu_pool, partial(_encode_chunk, data, (th, tw), dtype))
        return CacheEntry(body, CHUNK_TYPE)

    if deps.cache is None:
        entry, tier = await produce(), "off"
    else:
        generation = await deps.cache.generation(meta.image_id)
        key = response_key(meta.image_id, generation, digest)
        entry, tier = await deps.cache.get_or_render(key, produce)
    return Blob(entry.body, entry.media_type, f'"{digest}"', tier)


def _encode_chunk(data: np.ndarray, chunk: tuple[int, int], dtype: np.dtype[Any]) -> bytes:
    """Pad an edge chunk to the full chunk shape (Zarr v2 chunks are never short) and encode."""
    plane: np.ndarray = data.reshape(data.shape[-2:])
    if tuple(plane.shape) != chunk:
        full = np.zeros(chunk, dtype=plane.dtype)
        full[: plane.shape[0], : plane.shape[1]] = plane
        plane = full
    return bytes(_BLOSC.encode(np.ascontiguousarray(plane, dtype=dtype)))


# ---- building views --------------------------------------------------------------------------


class ZarrViews:
    """Views by (image, format), rebuilt when the image's data version changes."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._views: BoundedLRU[tuple[int, int], ZarrView] = BoundedLRU(max_entries)

    async def get(self, deps: Deps, image_id: int, zarr_format: int) -> ZarrView:
        meta = await deps.source.meta(image_id)
        key = (image_id, zarr_format)
        view = self._views.get(key)
        if view is not None and view.meta.data_version == meta.data_version:
            return view
        view = await build_view(deps, image_id, zarr_format, meta)
        self._views.put(key, view)
        return view


async def build_view(deps: Deps, image_id: int, zarr_format: int, meta: ImageMeta) -> ZarrView:
    """The pass-through view when the stored encoding allows it, else the generated one."""
    concrete = await resolve_source(deps.source, image_id)
    source_axes = None
    if isinstance(concrete, ZarrSource):
        stored_meta, image, arrays = await concrete.stored_arrays(image_id)
        view = await _passthrough_view(stored_meta, image, arrays, zarr_format)
        if view is not None:
            return view
        source_axes = image.axes
    return generated_view(meta, zarr_format, source_axes)


async def _passthrough_view(
    meta: ImageMeta, image: ngff.NgffImage, arrays: tuple[Any, ...], zarr_format: int
) -> ZarrView | None:
    located = arrays_store(arrays)
    if located is None:
        return None
    store, paths = located
    if getattr(getattr(arrays[0], "metadata", None), "zarr_format", 2) == 3:
        if zarr_format != 3:
            return None  # no Zarr v2 document can describe v3 chunks (sharding above all)
        return await _stored_v3_view(meta, image, store, paths)
    raws = await asyncio.gather(
        *(stored_bytes(store, f"{p}/.zarray", meta.image_id) for p in paths)
    )
    levels = []
    dtype: np.dtype[Any] | None = None
    for i, (path, raw) in enumerate(zip(paths, raws, strict=True)):
        if raw is None:
            return None
        raw_bytes = raw
        doc = _eligible_v2(raw_bytes, image.levels[i].shape, zarr_format)
        if doc is None:
            return None
        dtype = np.dtype(doc["dtype"])
        sep = doc.get("dimension_separator") or "."
        if sep not in (".", "/"):
            return None
        shape, chunks = tuple(doc["shape"]), tuple(doc["chunks"])
        scale = level_scale(meta, image.axes, shape, level0_shape(meta, image.axes))
        if zarr_format == 2:
            array_doc = raw_bytes
        else:
            array_doc = v3_array_doc(doc, dtype, image.axes, sep, v2_keys=True)
        levels.append(ViewLevel(shape, chunks, scale, array_doc, sep, path))
    assert dtype is not None
    docs = group_docs(meta, image.axes, [lv.scale for lv in levels], zarr_format)
    return ZarrView(meta, zarr_format, image.axes, dtype, tuple(levels), docs, store)


async def _stored_v3_view(
    meta: ImageMeta, image: ngff.NgffImage, store: Any, paths: list[str]
) -> ZarrView | None:
    """A stored Zarr v3 image as it is: its array documents, chunk keys and objects."""
    raws = await asyncio.gather(
        *(stored_bytes(store, f"{p}/zarr.json", meta.image_id) for p in paths)
    )
    level0 = level0_shape(meta, image.axes)
    levels = []
    for level, path, raw in zip(image.levels, paths, raws, strict=True):
        found = None if raw is None else stored_v3_doc(raw, level.shape, image.axes)
        if found is None:
            return None
        doc, array_doc = found
        encoding = doc["chunk_key_encoding"]
        sep = chunk_separator(encoding)
        prefix = f"c{sep}" if encoding["name"] == "default" else ""
        shape = tuple(doc["shape"])
        chunks = tuple(doc["chunk_grid"]["configuration"]["chunk_shape"])
        scale = level_scale(meta, image.axes, shape, level0)
        levels.append(ViewLevel(shape, chunks, scale, array_doc, sep, path, prefix))
    docs = group_docs(meta, image.axes, [lv.scale for lv in levels], 3)
    dtype = np.dtype(image.dtype).newbyteorder("=")
    return ZarrView(meta, 3, image.axes, dtype, tuple(levels), docs, store)


def _eligible_v2(raw: bytes, shape: tuple[int, ...], zarr_format: int) -> dict[str, Any] | None:
    """The parsed `.zarray` if its chunks can be served as they are, else None."""
    try:
        doc = json.loads(raw)
        ok = (
            isinstance(doc, dict)
            and doc.get("zarr_format") == 2
            and tuple(doc.get("shape", ())) == shape
            and len(doc.get("chunks", ())) == len(shape)
            and np.dtype(doc["dtype"]).kind in "biuf"
            and doc.get("order", "C") in ("C", "F")
        )
    except (ValueError, TypeError, KeyError):
        return None
    if not ok:
        return None
    compressor, filters = doc.get("compressor"), doc.get("filters") or []
    codecs = ([compressor] if compressor else []) + list(filters)
    if not all(isinstance(c, dict) and c.get("id") in codec_registry for c in codecs):
        return None
    if zarr_format == 3 and (
        filters
        or doc.get("order", "C") != "C"
        or (compressor is not None and compressor.get("id") not in _V3_COMPRESSORS)
    ):
        return None
    return dict(doc)


def generated_view(
    meta: ImageMeta, zarr_format: int, source_axes: tuple[str, ...] | None = None
) -> ZarrView:
    """5D t,c,z,y,x, one channel plane per chunk, little-endian, Blosc-LZ4; `source_axes` are
    the axes the source itself has (None: unknown, taken as all five)."""
    dtype = np.dtype(meta.dtype).newbyteorder("<")
    level0 = (meta.size_t, meta.size_c, meta.size_z, meta.size_y, meta.size_x)
    levels = []
    for lm in meta.levels:
        shape = (meta.size_t, meta.size_c, meta.size_z, lm.size_y, lm.size_x)
        ty = max(1, min(lm.tile_y, MAX_CHUNK_SIDE, lm.size_y))
        tx = max(1, min(lm.tile_x, MAX_CHUNK_SIDE, lm.size_x))
        chunks = (1, 1, 1, ty, tx)
        scale = level_scale(meta, AXES_5D, shape, level0)
        if zarr_format == 2:
            doc: dict[str, Any] = {
                "zarr_format": 2,
                "shape": list(shape),
                "chunks": list(chunks),
                "dtype": dtype.str,
                "compressor": _BLOSC.get_config(),
                "fill_value": 0,
                "order": "C",
                "filters": None,
                "dimension_separator": "/",
            }
            array_doc = dumps(doc)
        else:
            v2 = {"shape": shape, "chunks": chunks, "fill_value": 0}
            v2["compressor"] = _BLOSC.get_config()
            array_doc = v3_array_doc(v2, dtype, AXES_5D, "/", v2_keys=False)
        prefix = "c/" if zarr_format == 3 else ""
        levels.append(ViewLevel(shape, chunks, scale, array_doc, "/", None, prefix))
    docs = group_docs(meta, AXES_5D, [lv.scale for lv in levels], zarr_format, source_axes)
    return ZarrView(meta, zarr_format, AXES_5D, dtype, tuple(levels), docs)


def not_found(image_id: int, key: str) -> NotFound:
    return NotFound(f"image {image_id}: no key {key!r} in the store", param="key")
