"""`ZarrSource`: OME-NGFF 0.1–0.5 images from local disk, HTTP(S) or S3-compatible storage.

Reader choice, measured by `bench/bench_readers.py` (`bench/results/readers-*.md`, 2 vCPUs;
medians, speed relative to zarr-python's default pipeline):

| workload | zarr + zarrs | tensorstore |
|---|---|---|
| local, 256 concurrent 256² tiles, v2 | 2.5× | 2.9× |
| local, same, v3 sharded | 4.0× | 5.1× |
| local, one 512² region (4 / 9 chunks) | 3.4× / 2.9× | 2.9× / 4.1× |
| HTTP +20 ms, 64 concurrent tiles, v2 / v3 sharded | 0.13× / 0.04× | 0.88× / 0.89× |
| HTTP +20 ms, one 1024² region, v3 sharded (25 inner chunks) | 0.15× | 2.3× |

- Local files: zarr-python 3.1.6 with the zarrs codec pipeline over zarr's `LocalStore` (obstore's
  LocalStore was slower under zarrs). tensorstore was 10–30 % faster on tile storms, i.e.
  0.03–0.05 ms per tile, well under the cost of rendering and encoding that tile.
- HTTP(S)/S3: zarr-python's default pipeline over obstore (`ObjectStore` of `HTTPStore`/`S3Store`),
  the fastest for tiles (tensorstore 0.88–0.89×). zarrs fetched chunks one after another while
  holding the GIL: 7–25× slower and stalling the event loop for up to 2.6 s, so never remote.
  zarr 3.1.6 reads inner chunks of a shard serially (zarr-python#3004, fixed in 3.3 which needs
  Python 3.12), so multi-chunk regions of remote *sharded* data are 2.3× slower than tensorstore.

So one reader, zarr's async API, with one per-array switch: the zarrs pipeline for local,
native-endian arrays, zarr's default pipeline otherwise (zarrs also refuses big-endian data, e.g.
`>u2` from old bioformats2raw). tensorstore would add a second metadata model, its own kvstore
configuration per store type and string-matching of its error statuses.

- Arrays are built from the fetched metadata documents with zero extra requests; image records
  (metadata, open arrays, computed windows) sit in a bounded LRU and are re-validated (documents
  re-fetched, digest compared) at most every `rescan_interval_s`.
- One process-wide semaphore bounds concurrent reads (`max_concurrent_reads`); zarr's own
  `async.concurrency` is per call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import zarr
from obstore.exceptions import PermissionDeniedError
from zarr.abc.store import RangeByteRequest
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata import ArrayV2Metadata, ArrayV3Metadata
from zarr.experimental.cache_store import CacheStore
from zarr.storage import LocalStore, ObjectStore, StorePath, WrapperStore

from idrserve import errors
from idrserve.catalog import Catalog, Location, Locator, open_object_store
from idrserve.flight import SingleFlight
from idrserve.lru import BoundedLRU
from idrserve.model import Box, ImageMeta, Selection
from idrserve.settings import SourceSettings
from idrserve.sources import ngff
from idrserve.sources.base import check_selection
from idrserve.sources.bloscchunks import checked, checked_codecs
from idrserve.sources.direct import DirectV2Array, open_direct

log = logging.getLogger(__name__)

_ZARRS = {"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"}
# Auto windows are computed from at most this many pixels per side of the coarsest level.
STATS_MAX_SIDE = 2048
# Post-processing (byte swap, channel assembly) above this size runs in the executor.
_OFFLOAD_BYTES = 1 << 20
_UNREACHABLE = re.compile(
    r"connect|timed? ?out|unreachable|dns|error sending request|broken pipe|reset by peer"
    r"|status code: 5\d\d|service unavailable",
    re.IGNORECASE,
)


@dataclass(slots=True)
class _Record:
    meta: ImageMeta
    image: ngff.NgffImage
    arrays: tuple[AsyncArray[Any], ...]
    digest: str
    checked_at: float
    # Per level: a direct chunk reader for local Zarr v2 arrays (see `sources/direct.py`).
    direct: tuple[DirectV2Array | None, ...] = ()
    # Bytes charged against `source.meta_cache_max_bytes` (see `record_cost`).
    cost: int = 0


# A loaded record's memory is ~8 KiB of fixed objects (zarr arrays, codecs, ImageMeta) plus
# parsed JSON at ~4× its text; tracemalloc over 200 demo images measured 11.5 KiB a record
# where this estimate charges 12-35 KiB (deliberately on the high side).
RECORD_BASE_BYTES = 8 * 1024
RECORD_BYTES_PER_DOC_BYTE = 4


def record_cost(doc_bytes: int) -> int:
    """The estimated memory of one cached image record whose metadata documents total
    `doc_bytes` (images with thousands of channels or levels cost accordingly more)."""
    return RECORD_BASE_BYTES + RECORD_BYTES_PER_DOC_BYTE * doc_bytes


def _record_cost(_image_id: int, rec: _Record) -> int:
    return rec.cost


class ZarrSource:
    """Reads OME-Zarr images located by a `Catalog`; see the module docstring."""

    name: ClassVar[str] = "zarr"

    def __init__(
        self,
        settings: SourceSettings,
        catalog: Locator,
        *,
        executor: Executor | None = None,
        owns_catalog: bool = False,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        # Closed by `aclose` when no one else holds it (`open_source`): a catalog file starts
        # a loader and a watcher task on first use.
        self._owns_catalog = owns_catalog
        self._executor = executor  # None: the loop's default executor
        # Bounded in entries and in bytes; the record just loaded always stays.
        self._records: BoundedLRU[int, _Record] = BoundedLRU(
            settings.meta_cache_entries,
            settings.meta_cache_max_bytes,
            cost=_record_cost,
            keep_newest=True,
        )
        # Concurrent first requests for an image share one load, which runs on (its record is
        # kept) when they leave.
        self._loading: SingleFlight[int, _Record] = SingleFlight(
            "zarr-record", cancel_abandoned=False
        )
        self._sem = asyncio.Semaphore(settings.max_concurrent_reads)

    async def meta(self, image_id: int) -> ImageMeta:
        return (await self._record(image_id)).meta

    async def read(self, image_id: int, sel: Selection) -> np.ndarray:
        rec = await self._record(image_id)
        check_selection(rec.meta, sel)
        return await self._read(rec, sel)

    async def stored_arrays(
        self, image_id: int
    ) -> tuple[ImageMeta, ngff.NgffImage, tuple[AsyncArray[Any], ...]]:
        """Capability: the parsed NGFF image and its open level arrays (metadata, store path).

        For layers that pass stored chunks through unchanged (`zarrview.py`); the three values
        come from one record, so they always describe the same version of the image.
        """
        rec = await self._record(image_id)
        return rec.meta, rec.image, rec.arrays

    def fresh_meta(self, image_id: int) -> ImageMeta | None:
        """The loaded image's metadata while it needs no re-validation, else None.

        A synchronous peek for the paths that answer before a request object exists
        (`http/fastpath.py`, `http/coldpath.py`): None sends the request down the normal
        path, which re-validates the metadata.
        """
        rec = self._records.peek(image_id)
        if rec is None or time.monotonic() - rec.checked_at >= self._settings.rescan_interval_s:
            return None
        return rec.meta

    def fresh_data_version(self, image_id: int) -> str | None:
        meta = self.fresh_meta(image_id)
        return None if meta is None else meta.data_version

    @property
    def meta_cache_bytes(self) -> int:
        """The sum of the cached records' `cost`."""
        return self._records.bytes

    async def aclose(self) -> None:
        await self._loading.aclose()
        self._records.clear()
        if self._owns_catalog and isinstance(self._catalog, Catalog):
            await self._catalog.aclose()

    # ---- metadata ------------------------------------------------------------------------

    async def _record(self, image_id: int) -> _Record:
        rec = self._records.get(image_id)
        if rec is not None and time.monotonic() - rec.checked_at < self._settings.rescan_interval_s:
            return rec
        loaded, _ = await self._loading.run(image_id, partial(self._load_and_keep, image_id, rec))
        return loaded

    async def _load_and_keep(self, image_id: int, previous: _Record | None) -> _Record:
        rec = await self._load(image_id, previous)
        self._records.put(image_id, rec)
        return rec

    async def _load(self, image_id: int, previous: _Record | None) -> _Record:
        location = await self._catalog.locate(image_id)
        if location is None:
            raise errors.NotFound(f"image {image_id} not found", param="image_id")
        try:
            store = _open_store(location, self._settings)
            fmt, ms, docs = await self._fetch_docs(image_id, location, store)
            mtimes = await _local_mtimes(location, list(docs))
        except (FileNotFoundError, NotADirectoryError) as exc:
            # Catalogued, but the data is not there (moved, deleted, a stale catalog): the
            # client learns only that the image does not exist; the log gets the location.
            raise errors.NotFound(
                f"image {image_id} not found",
                param="image_id",
                internal=f"no data at {_where(location)}: {_describe(exc)}",
            ) from exc
        except Exception as exc:
            failure = read_failure(
                exc, image_id, "its metadata could not be read", f"reading {_where(location)}"
            )
            if previous is not None and isinstance(failure, errors.SourceUnavailable):
                # Serve the last good metadata through a storage blip (reads will tell).
                log.warning("image %d: keeping cached metadata: %s", image_id, failure)
                previous.checked_at = time.monotonic()
                return previous
            if failure is exc:
                raise
            raise failure from exc
        raw = b"\0".join(docs.values()) + mtimes.encode()
        digest = hashlib.blake2b(raw, digest_size=6).hexdigest()
        if previous is not None and previous.digest == digest:
            previous.checked_at = time.monotonic()
            return previous
        try:
            level_docs = [json.loads(docs[_array_key(p, fmt)]) for p in ms.paths]
            infos = [ngff.parse_array(doc) for doc in level_docs]
            image = ngff.build_image(ms, infos)
            arrays = tuple(
                _open_array(
                    _chunk_store(store, location, self._settings),
                    path,
                    doc,
                    info,
                    local=isinstance(location, Path),
                )
                for path, doc, info in zip(ms.paths, level_docs, infos, strict=True)
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise errors.SourceError(
                f"image {image_id}: bad OME-NGFF metadata",
                internal=f"{_where(location)}: {_describe(exc)}",
            ) from exc
        direct: tuple[DirectV2Array | None, ...] = ()
        if isinstance(location, Path) and fmt == 2 and self._settings.direct_reads:
            direct = tuple(
                open_direct(location / path, docs[_array_key(path, fmt)]) for path in ms.paths
            )
        fallback_name = Path(str(location).rstrip("/")).name
        draft = ngff.to_image_meta(image, image_id, stats={}, data_version=digest)
        stats = await self._stats(image, arrays, draft)
        meta = ngff.to_image_meta(
            image, image_id, stats=stats, data_version=digest, fallback_name=fallback_name
        )
        return _Record(meta, image, arrays, digest, time.monotonic(), direct, record_cost(len(raw)))

    async def _fetch_docs(
        self, image_id: int, location: Location, store: Any
    ) -> tuple[int, ngff.Multiscale, dict[str, bytes]]:
        """Zarr format, parsed multiscale, and every metadata document (group first) by key."""
        v3, v2 = await asyncio.gather(_get(store, "zarr.json"), _get(store, ".zattrs"))
        if v3 is not None:
            group_key, group_raw, fmt = "zarr.json", v3, 3
        elif v2 is not None:
            group_key, group_raw, fmt = ".zattrs", v2, 2
        else:
            raise errors.NotFound(
                f"image {image_id} not found",
                param="image_id",
                internal=f"no OME-Zarr metadata (zarr.json, .zattrs) at {_where(location)}",
            )
        try:
            attrs = ngff.ngff_attrs(json.loads(group_raw), fmt)
            if "plate" in attrs and "multiscales" not in attrs:
                # An HCS plate is not an image: say where its grid is rather than a 502.
                raise errors.NotFound(
                    f"image {image_id} not found: its location holds an HCS plate, "
                    "whose grid is /webgateway/plate/<plate id>/",
                    param="image_id",
                    internal=f"plate metadata at {_where(location)}",
                )
            ms = ngff.parse_multiscale(attrs)
        except (ValueError, TypeError, AttributeError) as exc:
            raise errors.SourceError(
                f"image {image_id}: bad OME-NGFF metadata",
                internal=f"{_where(location)}/{group_key}: {_describe(exc)}",
            ) from exc
        keys = [_array_key(p, fmt) for p in ms.paths]
        found = await asyncio.gather(*(_get(store, key) for key in keys))
        docs = {group_key: group_raw}
        for key, raw in zip(keys, found, strict=True):
            if raw is None:
                raise errors.SourceError(
                    f"image {image_id}: bad OME-NGFF metadata (a level's array metadata is "
                    "missing)",
                    internal=f"{_where(location)}/{key} is missing",
                )
            docs[key] = raw
        return fmt, ms, docs

    async def _stats(
        self, image: ngff.NgffImage, arrays: Sequence[AsyncArray[Any]], draft: ImageMeta
    ) -> dict[int, ngff.ChannelStats]:
        """Auto windows from the coarsest level at the default plane.

        The rule and its fallbacks: docs/rendering.md#default-settings-without-an-omero-block.
        """
        channels = ngff.channels_needing_stats(image)
        if not channels:
            return {}
        level = len(image.levels) - 1
        lm = draft.levels[level]
        w, h = min(lm.size_x, STATS_MAX_SIDE), min(lm.size_y, STATS_MAX_SIDE)
        box = Box((lm.size_x - w) // 2, (lm.size_y - h) // 2, w, h)
        z = draft.default_z
        sel = Selection(level, draft.default_t, z, z + 1, channels, box)
        rec = _Record(draft, image, tuple(arrays), "", 0.0)  # stats read through zarr
        try:
            planes = await self._read(rec, sel)
        except errors.SourceError as exc:
            log.warning("image %d: no auto windows (%s)", draft.image_id, exc)
            return {}
        loop = asyncio.get_running_loop()
        computed = await loop.run_in_executor(
            self._executor, lambda: [ngff.compute_window(p) for p in planes]
        )
        return dict(zip(channels, computed, strict=True))

    # ---- pixels --------------------------------------------------------------------------

    async def _read(self, rec: _Record, sel: Selection) -> np.ndarray:
        image, arr = rec.image, rec.arrays[sel.level]
        direct = rec.direct[sel.level] if rec.direct else None
        z_levels = _level_planes(image, sel)
        runs = _runs(sel.channels)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(
                        self._read_run(
                            rec.meta.image_id, arr, direct, image.axes, sel, c0, c1, z_levels
                        )
                    )
                    for c0, c1 in runs
                ]
        except* errors.IdrServeError as group:
            raise group.exceptions[0] from None
        parts = [t.result() for t in tasks]
        nbytes = sum(p.nbytes for p in parts)
        if nbytes <= _OFFLOAD_BYTES:
            return _assemble(parts, z_levels, sel.z_start)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _assemble, parts, z_levels, sel.z_start)

    async def _read_run(
        self,
        image_id: int,
        arr: AsyncArray[Any],
        direct: DirectV2Array | None,
        axes: tuple[str, ...],
        sel: Selection,
        c0: int,
        c1: int,
        z_levels: list[int],
    ) -> np.ndarray:
        """One basic-slice read of channels [c0, c1) as (c, z, y, x) in stored byte order."""
        selector = _selector(axes, sel, c0, c1, z_levels)
        try:
            async with self._sem:
                if direct is not None:
                    loop = asyncio.get_running_loop()
                    data = await loop.run_in_executor(self._executor, direct.read, selector)
                else:
                    data = np.asarray(await arr.getitem(selector))
        except Exception as exc:
            where = f"reading {_where(str(arr.store_path))} {_describe_selector(selector)}"
            raise read_failure(exc, image_id, _chunk_fault(exc), where) from exc
        return _to_czyx(data, axes)

    def sync_reader(self, image_id: int, sel: Selection) -> Callable[[], np.ndarray] | None:
        """A blocking read of `sel`, for callers that run it in their own worker thread.

        Only for images whose metadata is loaded and whose level is a local Zarr v2 array
        (the direct path): the service then reads, renders and encodes in one executor job
        instead of three hops. None means "use `read`".
        """
        rec = self._records.peek(image_id)
        if rec is None or not rec.direct:
            return None
        direct = rec.direct[sel.level] if 0 <= sel.level < len(rec.direct) else None
        if direct is None:
            return None
        check_selection(rec.meta, sel)
        image = rec.image
        z_levels = _level_planes(image, sel)
        runs = _runs(sel.channels)

        def read() -> np.ndarray:
            try:
                parts = [
                    _to_czyx(direct.read(_selector(image.axes, sel, c0, c1, z_levels)), image.axes)
                    for c0, c1 in runs
                ]
            except Exception as exc:
                where = f"reading {direct.root} level {sel.level}"
                raise read_failure(exc, image_id, _chunk_fault(exc), where) from exc
            return _assemble(parts, z_levels, sel.z_start)

        return read


def _selector(
    axes: tuple[str, ...], sel: Selection, c0: int, c1: int, z_levels: list[int]
) -> tuple[int | slice, ...]:
    b = sel.box
    wanted: dict[str, int | slice] = {
        "t": sel.t,
        "c": slice(c0, c1),
        "z": slice(z_levels[0], z_levels[-1] + 1),
        "y": slice(b.y, b.y + b.h),
        "x": slice(b.x, b.x + b.w),
    }
    return tuple(wanted[role] for role in axes)


def _to_czyx(data: np.ndarray, axes: tuple[str, ...]) -> np.ndarray:
    """Arrays read with `_selector` (t dropped) as (c, z, y, x), adding missing axes."""
    kept = [role for role in axes if role != "t"]
    for role in ("z", "c"):
        if role not in kept:
            data = data[np.newaxis]
            kept.insert(0, role)
    return np.transpose(data, [kept.index(role) for role in "czyx"])


def _assemble(parts: list[np.ndarray], z_levels: list[int], z_start: int) -> np.ndarray:
    """Concatenate channel runs, pick the level's planes, and convert to native byte order."""
    data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    if z_levels != list(range(z_levels[0], z_levels[0] + len(z_levels))):
        data = data[:, [z - z_levels[0] for z in z_levels]]  # z downsampled at this level
    dtype = data.dtype.newbyteorder("=")
    return np.ascontiguousarray(data, dtype=dtype)


def _level_planes(image: ngff.NgffImage, sel: Selection) -> list[int]:
    """The level's z index for each requested full-resolution plane."""
    size_z, level_z = image.size("z"), image.size("z", sel.level)
    return [z * level_z // size_z for z in range(sel.z_start, sel.z_stop)]


def _runs(channels: Sequence[int]) -> list[tuple[int, int]]:
    """Group channel indices into [start, stop) runs of consecutive ascending indices."""
    runs: list[tuple[int, int]] = []
    for c in channels:
        if runs and runs[-1][1] == c:
            runs[-1] = (runs[-1][0], c + 1)
        else:
            runs.append((c, c + 1))
    return runs


# ---- stores ----------------------------------------------------------------------------------


def _open_store(location: Location, settings: SourceSettings) -> Any:
    if isinstance(location, Path):
        return LocalStore(location, read_only=True)
    return ObjectStore(open_object_store(location, settings), read_only=True)


def _chunk_store(store: Any, location: Location, settings: SourceSettings) -> Any:
    """Remote chunks through a local disk cache, so repeated reads never go back to S3/HTTP.

    zarr's `CacheStore` keeps whole objects in a `LocalStore` under `chunk_cache_dir` (one
    directory per image location) and byte ranges (shard reads) in memory, both within
    `chunk_cache_max_bytes`, least recently used out first. Only arrays read through it: the
    metadata documents are fetched from the store itself, so re-validation still sees changes.
    Local data is never cached again.
    """
    if isinstance(location, Path) or settings.chunk_cache_dir is None:
        return store
    name = hashlib.blake2b(str(location).encode(), digest_size=10).hexdigest()
    cache = LocalStore(settings.chunk_cache_dir / name)
    return CacheStore(store, cache_store=cache, max_size=settings.chunk_cache_max_bytes)


def _array_key(path: str, fmt: int) -> str:
    return f"{path}/zarr.json" if fmt == 3 else f"{path}/.zarray"


async def _get(store: Any, key: str) -> bytes | None:
    try:
        buf = await store.get(key, prototype=default_buffer_prototype())
    except PermissionDeniedError:
        return None  # S3 answers 403 for a missing key when listing is not allowed
    return None if buf is None else bytes(buf.to_bytes())


async def _local_mtimes(location: Location, keys: Sequence[str]) -> str:
    """Modification times of local metadata documents (part of the data version)."""
    if not isinstance(location, Path):
        return ""

    def stat() -> str:
        return ",".join(str(os.stat(location / key).st_mtime_ns) for key in keys)

    return await asyncio.to_thread(stat)


def _open_array(
    store: Any, path: str, doc: dict[str, Any], info: ngff.ArrayInfo, *, local: bool
) -> AsyncArray[Any]:
    """An array from its metadata document (no requests); zarrs for local native-endian data."""
    config = _ZARRS if local and info.dtype.isnative else {}
    metadata: ArrayV2Metadata | ArrayV3Metadata
    if info.zarr_format == 2:
        metadata = ArrayV2Metadata.from_dict(doc)
        if not config:  # zarr's own pipeline: refuse Blosc chunks cut short (bloscchunks.py)
            metadata = dataclasses.replace(metadata, compressor=checked(metadata.compressor))
    else:
        metadata = ArrayV3Metadata.from_dict(doc)
        if not config:
            metadata = dataclasses.replace(metadata, codecs=checked_codecs(metadata.codecs))
    with zarr.config.set(config), warnings.catch_warnings():
        # zarrs falls back (with a warning) to zarr's pipeline for arrays it cannot read.
        warnings.simplefilter("ignore", UserWarning)
        return AsyncArray(metadata=metadata, store_path=StorePath(store, path))


def read_failure(exc: Exception, image_id: int, fault: str, where: str) -> errors.IdrServeError:
    """Map a store/codec exception to SourceUnavailable (network) or SourceError (data).

    The public detail names the image and the kind of fault (`fault` for data errors); where
    it happened (a path or URL) and the exception itself go to the log only (`internal`).
    """
    if isinstance(exc, errors.IdrServeError):
        return exc
    text = _describe(exc)
    internal = f"{where}: {text}"
    if isinstance(exc, TimeoutError | ConnectionError) or _UNREACHABLE.search(text):
        return errors.SourceUnavailable(f"image {image_id}: storage unreachable", internal=internal)
    return errors.SourceError(f"image {image_id}: {fault}", internal=internal)


def _chunk_fault(exc: Exception) -> str:
    """The public kind of a failed pixel read: the storage refused it, or the bytes are bad."""
    if isinstance(exc, OSError):
        return "a stored chunk could not be read"
    return "a stored chunk could not be decoded"


def _describe(exc: BaseException) -> str:
    """An exception for the log: class and message, bounded."""
    return f"{type(exc).__name__}: {exc}"[:500]


def _describe_selector(selector: tuple[int | slice, ...]) -> str:
    parts = [str(s) if isinstance(s, int) else f"{s.start}:{s.stop}" for s in selector]
    return f"[{', '.join(parts)}]"


def _where(location: Location | str) -> str:
    """A location for the log, without any password in a URL."""
    return errors.redact_credentials(str(location))


# ---- stored objects, for layers that pass them through unchanged (zarrview.py) ---------------


def arrays_store(arrays: tuple[AsyncArray[Any], ...]) -> tuple[Any, list[str]] | None:
    """The one store holding all of `arrays` and each array's key prefix in it, or None."""
    if not arrays:
        return None
    store = arrays[0].store_path.store
    if any(a.store_path.store is not store for a in arrays):
        return None
    return store, [str(a.store_path.path) for a in arrays]


def local_file(store: Any, key: str) -> Path | None:
    """The file behind `key` when `store` is a local directory store, else None."""
    if isinstance(store, LocalStore):
        return Path(store.root) / key
    return None


async def stored_bytes(store: Any, key: str, image_id: int) -> bytes | None:
    """One stored object (a chunk or a metadata document) of an image as bytes; None when
    absent. A store that fails is SourceUnavailable or SourceError, as for reads."""
    try:
        buf = await store.get(key, prototype=default_buffer_prototype())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except Exception as exc:
        fault = "a stored object could not be read"
        raise read_failure(
            exc, image_id, fault, f"reading {key!r} from {_where(str(store))}"
        ) from exc
    return None if buf is None else bytes(buf.to_bytes())


# [start, stop) of an object of the given size, or None (as `http/zarrstore.parse_range`).
SpanOf = Callable[[int], tuple[int, int] | None]


async def stored_span(
    store: Any, key: str, image_id: int, span_of: SpanOf
) -> tuple[int, tuple[int, int] | None, bytes] | None:
    """Part of one stored object: its size, the span `span_of(size)` picks and the bytes of
    that span (none unless 0 ≤ start < stop); None when the object is absent.

    Only the span is read, so a shard's index or one inner chunk costs its own bytes, not the
    shard's. Local files are read in a thread; other stores are asked the size first.
    """
    path = local_file(store, key)
    try:
        if path is not None:
            return await asyncio.to_thread(_local_span, path, span_of)
        size = await _size_store(store).getsize(key)
        span = span_of(size)
        if span is None or not 0 <= span[0] < span[1]:
            return size, span, b""
        buf = await store.get(
            key, prototype=default_buffer_prototype(), byte_range=RangeByteRequest(*span)
        )
    except (FileNotFoundError, NotADirectoryError, PermissionDeniedError):
        return None  # S3 answers 403 for a missing key when listing is not allowed
    except Exception as exc:
        fault = "a stored object could not be read"
        raise read_failure(
            exc, image_id, fault, f"reading part of {key!r} from {_where(str(store))}"
        ) from exc
    return None if buf is None else (size, span, bytes(buf.to_bytes()))


def _size_store(store: Any) -> Any:
    """The store to ask an object's size: a wrapper's (the chunk cache's `CacheStore`) would
    read the whole object to learn it (zarr's default `Store.getsize`), so its inner store."""
    while isinstance(store, WrapperStore):
        store = store._store  # zarr keeps the wrapped store there (no public accessor)
    return store


def _local_span(path: Path, span_of: SpanOf) -> tuple[int, tuple[int, int] | None, bytes]:
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        span = span_of(size)
        if span is None or not 0 <= span[0] < span[1]:
            return size, span, b""
        return size, span, os.pread(fh.fileno(), span[1] - span[0], span[0])
