"""The catalog index: image id → location for millions of images, memory-mapped.

Why this storage (measured by `bench/bench_catalog.py`, committed under `bench/results/`):
a sorted `int64` id array searched in place answers a lookup in about a microsecond without a
thread hop, pages the listing by offset in O(limit) (SQLite's `OFFSET` walks the rows it
skips), opens in well under a second (nothing is parsed, only checked), and its pages live in
the OS page cache, shared by every worker process instead of one Python dict per worker
(a dict of 5.3 M paths is about 2.7 GB per process).

File layout (little-endian; every section starts on an 8-byte boundary, in this order):

    header     `_HEADER`: magic, format version, section counts, CRC-32 of everything after it
    ids        int64[n]     image ids, strictly increasing
    dir_index  uint32[n]    each image's directory, an index into the dirs string table
    name_off   uint64[n+1]  offsets into the names blob; an empty name means `<id>.zarr`
    dir_off    uint64[d+1]  offsets into the dirs blob
    range_lo   int64[r]     id ranges (inclusive), sorted, disjoint: every id in a range is
    range_hi   int64[r]       `<dir>/<id>.zarr` under the range's directory
    range_dir  uint32[r]
    names      bytes        UTF-8 (surrogate escapes for undecodable file names)
    dirs       bytes        UTF-8; a local absolute directory or a URL prefix
    meta       JSON         where it was built from (sources with size and mtime), counts,
                            and the study prefixes that are scanned or probed instead

A location is `dir + "/" + (name or f"{id}.zarr")`: the IDR layout (`…/idr0062A/6001240.zarr`)
costs 12 bytes an image plus its study's one directory string.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"IDRCAT\r\n"  # the CR LF catches a file mangled by a text-mode copy
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sIIQQQQQQI4x")  # magic, version, header size, counts, lengths, crc
HEADER_SIZE = 128  # room to grow; sections start after it
assert _HEADER.size <= HEADER_SIZE

Location = Path | str  # a local directory, or an http(s):// or s3:// URL


class CatalogFormatError(ValueError):
    """An index file that is truncated, corrupt, or of another format or version."""


def _align(n: int) -> int:
    return (n + 7) & ~7


@dataclass(frozen=True, slots=True)
class Layout:
    """Byte offsets of every section, computed from the header's counts alone."""

    n: int
    n_dirs: int
    n_ranges: int
    names_len: int
    dirs_len: int
    meta_len: int
    offsets: dict[str, int] = field(default_factory=dict)
    total: int = 0

    @classmethod
    def of(
        cls, n: int, n_dirs: int, n_ranges: int, names_len: int, dirs_len: int, meta_len: int
    ) -> Layout:
        sizes = (
            ("ids", 8 * n),
            ("dir_index", 4 * n),
            ("name_off", 8 * (n + 1)),
            ("dir_off", 8 * (n_dirs + 1)),
            ("range_lo", 8 * n_ranges),
            ("range_hi", 8 * n_ranges),
            ("range_dir", 4 * n_ranges),
            ("names", names_len),
            ("dirs", dirs_len),
            ("meta", meta_len),
        )
        offsets: dict[str, int] = {}
        pos = HEADER_SIZE
        for name, size in sizes:
            offsets[name] = pos
            pos = _align(pos + size)
        return cls(n, n_dirs, n_ranges, names_len, dirs_len, meta_len, offsets, pos)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class CatalogIndex:
    """An immutable id → location map over arrays (memory-mapped from a file or in memory).

    Every method is O(log n) or O(limit) and runs on the caller's thread: a lookup is a
    binary search over the id array plus two short string reads, about a microsecond.
    """

    def __init__(
        self,
        ids: np.ndarray,
        dir_index: np.ndarray,
        name_off: np.ndarray,
        names: bytes | memoryview,
        dir_off: np.ndarray,
        dirs: bytes | memoryview,
        ranges: tuple[np.ndarray, np.ndarray, np.ndarray],
        meta: dict[str, Any],
        *,
        path: Path | None = None,
        keep: object = None,
    ) -> None:
        self.ids = ids
        self._dir_index = dir_index
        self._name_off = name_off
        self._names = names
        self._dir_off = dir_off
        self._dirs = dirs
        self._range_lo, self._range_hi, self._range_dir = ranges
        self.meta = meta
        self.path = path
        self._keep = keep  # the mmap the arrays view, kept open as long as they are
        # Python ints, for bisect on a memoryview: ~2x faster than numpy for one scalar.
        self._ids_view = ids.data.cast("B").cast("q") if len(ids) else None
        self._dir_cache: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def studies(self) -> list[dict[str, str]]:
        """Study prefixes without id ranges: roots the catalog scans (local) or probes."""
        return list(self.meta.get("studies", []))

    def _position(self, image_id: int) -> int:
        from bisect import bisect_left

        view = self._ids_view
        if view is None:
            return -1
        i = bisect_left(view, image_id)
        return i if i < len(view) and view[i] == image_id else -1

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, int) and self._position(image_id) >= 0

    def _dir(self, d: int) -> str:
        text = self._dir_cache.get(d)
        if text is None:
            text = _decode(bytes(self._dirs[int(self._dir_off[d]) : int(self._dir_off[d + 1])]))
            if len(self._dir_cache) < 65536:
                self._dir_cache[d] = text
        return text

    def locate(self, image_id: int) -> Location | None:
        """Where `image_id` is: an explicit entry, else the range it falls in, else None."""
        i = self._position(image_id)
        if i >= 0:
            a, b = int(self._name_off[i]), int(self._name_off[i + 1])
            name = _decode(bytes(self._names[a:b])) if b > a else f"{image_id}.zarr"
            return _join(self._dir(int(self._dir_index[i])), name)
        if len(self._range_lo):
            r = int(np.searchsorted(self._range_lo, image_id, side="right")) - 1
            if r >= 0 and image_id <= int(self._range_hi[r]):
                return _join(self._dir(int(self._range_dir[r])), f"{image_id}.zarr")
        return None

    def page(self, offset: int, limit: int) -> list[int]:
        """Explicitly catalogued ids, ascending, `limit` of them from `offset`."""
        return [int(i) for i in self.ids[offset : offset + limit]]

    def count_below(self, value: int) -> int:
        """How many catalogued ids are < `value`."""
        return int(np.searchsorted(self.ids, value, side="left"))

    def contains_many(self, values: np.ndarray) -> np.ndarray:
        """A boolean mask: which of `values` are catalogued ids (vectorised)."""
        if not len(self.ids) or not len(values):
            return np.zeros(len(values), dtype=bool)
        pos = np.minimum(np.searchsorted(self.ids, values), len(self.ids) - 1)
        return np.asarray(self.ids[pos] == values)

    def close(self) -> None:
        """Drop the arrays; the mmap closes once no view of it is left (GC)."""
        self._ids_view = None


def _join(directory: str, name: str) -> Location:
    joined = f"{directory}/{name}" if directory else f"/{name}"
    return joined if "://" in directory else Path(joined)


def empty_index(meta: dict[str, Any] | None = None) -> CatalogIndex:
    zero8 = np.zeros(1, dtype="<u8")
    none_i8 = np.zeros(0, dtype="<i8")
    return CatalogIndex(
        none_i8,
        np.zeros(0, dtype="<u4"),
        zero8,
        b"",
        zero8,
        b"",
        (none_i8, none_i8, np.zeros(0, dtype="<u4")),
        meta or {},
    )


# ---- files ------------------------------------------------------------------------------


def _raw(values: np.ndarray, dtype: str) -> memoryview:
    return np.ascontiguousarray(values, dtype=dtype).view(np.uint8).data


def _sections(index: CatalogIndex, meta_raw: bytes) -> Iterator[tuple[str, bytes | memoryview]]:
    yield "ids", _raw(index.ids, "<i8")
    yield "dir_index", _raw(index._dir_index, "<u4")
    yield "name_off", _raw(index._name_off, "<u8")
    yield "dir_off", _raw(index._dir_off, "<u8")
    yield "range_lo", _raw(index._range_lo, "<i8")
    yield "range_hi", _raw(index._range_hi, "<i8")
    yield "range_dir", _raw(index._range_dir, "<u4")
    yield "names", index._names
    yield "dirs", index._dirs
    yield "meta", meta_raw


def write_index(index: CatalogIndex, out: Path) -> None:
    """Write `index` to `out` atomically (a temporary file in the same directory, renamed)."""
    meta_raw = json.dumps(index.meta, separators=(",", ":")).encode()
    layout = Layout.of(
        len(index.ids),
        len(index._dir_off) - 1,
        len(index._range_lo),
        len(index._names),
        len(index._dirs),
        len(meta_raw),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    crc = 0
    try:
        with open(tmp, "wb") as f:
            f.write(b"\0" * HEADER_SIZE)
            for name, data in _sections(index, meta_raw):
                pad = layout.offsets[name] - f.tell()
                if pad:
                    f.write(b"\0" * pad)
                    crc = zlib.crc32(b"\0" * pad, crc)
                f.write(data)
                crc = zlib.crc32(data, crc)
            tail = layout.total - f.tell()
            f.write(b"\0" * tail)
            crc = zlib.crc32(b"\0" * tail, crc)
            f.seek(0)
            header = _HEADER.pack(
                MAGIC,
                FORMAT_VERSION,
                HEADER_SIZE,
                layout.n,
                layout.n_dirs,
                layout.n_ranges,
                layout.names_len,
                layout.dirs_len,
                layout.meta_len,
                crc,
            )
            f.write(header)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_index_file(path: Path) -> bool:
    """True when `path` starts with the index magic (whatever its name)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def open_index(path: Path, *, verify: bool = True) -> CatalogIndex:
    """Map an index file; `CatalogFormatError` says what is wrong with a bad one.

    `verify` checks the CRC-32 of the whole file and that the ids are strictly increasing
    (about 0.1 s for 5 M images, and it pulls the id pages into the page cache).
    """
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, the mmap outlives it
    except OSError as exc:
        raise CatalogFormatError(f"cannot open the catalog index: {exc.strerror}") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(HEADER_SIZE)
        if len(head) < HEADER_SIZE or not head.startswith(MAGIC):
            raise CatalogFormatError("not an idrserve catalog index (bad magic or too short)")
        (_, version, header_size, n, n_dirs, n_ranges, names_len, dirs_len, meta_len, crc) = (
            _HEADER.unpack_from(head)
        )
        if version != FORMAT_VERSION or header_size != HEADER_SIZE:
            raise CatalogFormatError(
                f"catalog index format {version} is not the supported {FORMAT_VERSION}; "
                "rebuild it with `idrserve catalog index`"
            )
        layout = Layout.of(n, n_dirs, n_ranges, names_len, dirs_len, meta_len)
        if size != layout.total:
            raise CatalogFormatError(
                f"catalog index is {size} bytes where its header says {layout.total}: "
                "truncated or corrupt; rebuild it"
            )
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    body = memoryview(mm)
    if verify and zlib.crc32(body[HEADER_SIZE:]) != crc:
        raise CatalogFormatError("catalog index checksum mismatch: corrupt; rebuild it")
    off = layout.offsets

    def arr(name: str, dtype: str, count: int) -> np.ndarray:
        return np.frombuffer(mm, dtype=dtype, count=count, offset=off[name])

    ids = arr("ids", "<i8", n)
    name_off = arr("name_off", "<u8", n + 1)
    dir_off = arr("dir_off", "<u8", n_dirs + 1)
    dir_index = arr("dir_index", "<u4", n)
    ranges = (arr("range_lo", "<i8", n_ranges), arr("range_hi", "<i8", n_ranges))
    range_dir = arr("range_dir", "<u4", n_ranges)
    try:
        meta = json.loads(bytes(body[off["meta"] : off["meta"] + meta_len]))
    except ValueError as exc:
        raise CatalogFormatError("catalog index metadata is not JSON: corrupt") from exc
    if verify:
        bad = (
            (n > 1 and bool(np.any(ids[1:] <= ids[:-1])))
            or int(name_off[0]) != 0
            or int(name_off[-1]) != names_len
            or int(dir_off[0]) != 0
            or int(dir_off[-1]) != dirs_len
            or (n > 0 and int(dir_index.max()) >= n_dirs)
            or (n_ranges > 0 and int(range_dir.max()) >= n_dirs)
        )
        if bad:
            raise CatalogFormatError("catalog index sections are inconsistent: corrupt")
    names = body[off["names"] : off["names"] + names_len]
    dirs = body[off["dirs"] : off["dirs"] + dirs_len]
    return CatalogIndex(
        ids,
        dir_index,
        name_off,
        names,
        dir_off,
        dirs,
        (*ranges, range_dir),
        meta,
        path=path,
        keep=mm,
    )
