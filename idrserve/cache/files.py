"""The disk tier's blocking file operations (run in executors by `disk.DiskTier`).

File layout: a 16-byte header (magic, format version, media-type length, key length, body
length, CRC-32 of everything after the header), then the media type, the key and the body.
A file whose header, length or checksum does not match is deleted and read as a miss, so a
crash mid-write (no fsync, by design: this is a cache) costs one render, never an error.

Writers write a uniquely named temporary file in the target directory and `os.replace` it
into place, so readers see the old file, the new file or none, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import os
import resource
import secrets
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from idrserve.cache.entry import CacheEntry
from idrserve.lru import BoundedLRU

MAGIC = b"IDRC"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<4sBBHII")
BLOCK = 4096
# A hit refreshes the file's mtime (its LRU age) at most this often: one inode write per
# file per 10 minutes instead of one per hit.
TOUCH_AFTER_S = 600.0
# Temporary files older than this were left by a crashed writer.
TEMP_MAX_AGE_S = 3600.0
GENERATIONS = "generations"
_HEX = frozenset("0123456789abcdef")


class CorruptEntry(Exception):
    """A cache file that is not a complete, valid entry."""


# Linux ≥ 4.14: read only what is already in the page cache.
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)


def disk_cost(size: int) -> int:
    """Bytes a file of `size` bytes counts against the budget (whole 4 KiB blocks)."""
    return max(1, -(-size // BLOCK)) * BLOCK


def pack_file(key: str, entry: CacheEntry) -> bytes:
    media = entry.media_type.encode("ascii")
    key_bytes = key.encode()
    if len(media) > 255 or len(key_bytes) > 65535 or len(entry.body) >= 2**32:
        raise ValueError("entry does not fit the disk cache header")
    crc = zlib.crc32(entry.body, zlib.crc32(key_bytes, zlib.crc32(media)))
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(media), len(key_bytes), len(entry.body), crc)
    return b"".join((header, media, key_bytes, entry.body))


def unpack_file(data: bytes | bytearray, key: str, verify: bool = True) -> CacheEntry | None:
    """The entry in `data`; None if it is a valid entry of another key; raises `CorruptEntry`.

    `verify=False` skips only the checksum (lengths are always checked): for a file this
    process has already verified and still holds open, whose bytes a key never changes.
    """
    if len(data) < _HEADER.size:
        raise CorruptEntry("short header")
    magic, version, media_len, key_len, body_len, crc = _HEADER.unpack_from(data)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise CorruptEntry("bad magic or version")
    start = _HEADER.size
    if len(data) != start + media_len + key_len + body_len:
        raise CorruptEntry("length mismatch")
    view = memoryview(data)
    media = view[start : start + media_len]
    stored_key = view[start + media_len : start + media_len + key_len]
    body = view[start + media_len + key_len :]
    if verify and zlib.crc32(body, zlib.crc32(stored_key, zlib.crc32(media))) != crc:
        raise CorruptEntry("checksum mismatch")
    if stored_key != key.encode():
        return None
    try:
        media_type = bytes(media).decode("ascii")
    except UnicodeDecodeError as exc:
        raise CorruptEntry("media type") from exc
    return CacheEntry(body=bytes(body), media_type=media_type)


@dataclass(slots=True)
class _HotFile:
    fd: int
    size: int
    mtime: float
    verified: bool


@dataclass(slots=True)
class ScanResult:
    bytes: int
    files: int


class DiskStore:
    """The blocking file operations; thread-safe, run in executors by `DiskTier`."""

    def __init__(self, root: Path, open_files: int = 0) -> None:
        self.root = root
        self._root = str(root)
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft_limit != resource.RLIM_INFINITY:
            open_files = min(open_files, soft_limit // 4)
        # Event-loop thread only (`read_if_cached`): path → an open, already verified file,
        # closed when it leaves.
        self._hot: BoundedLRU[str, _HotFile] = BoundedLRU(
            max(0, open_files), on_evict=lambda _path, hot: os.close(hot.fd)
        )

    def path_for(self, key: str) -> str:
        name = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
        return f"{self._root}/{name[:2]}/{name[2:4]}/{name}"

    def read(self, key: str) -> tuple[CacheEntry | None, bool]:
        """`(entry, corrupt)`; a corrupt file is removed. Raises OSError on an I/O error."""
        path = self.path_for(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None, False
        try:
            st = os.fstat(fd)
            data = os.read(fd, st.st_size)
            while len(data) < st.st_size:  # only for very large files
                more = os.read(fd, st.st_size - len(data))
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
        try:
            entry = unpack_file(data, key)
        except CorruptEntry:
            _unlink_quietly(path)
            return None, True
        if entry is not None and time.time() - st.st_mtime > TOUCH_AFTER_S:
            # Read-only or vanished: the LRU age is only a hint.
            with contextlib.suppress(OSError):
                os.utime(path)
        return entry, False

    def read_if_cached(self, key: str) -> tuple[CacheEntry | None, bool] | None:
        """Like `read`, but only from the page cache, on the caller's thread; None = go async.

        `preadv2(RWF_NOWAIT)` returns the bytes only when no disk I/O is needed, so a hot entry is
        served without an executor hop (docs/benchmarks.md#cache-hits: 16 600 vs 12 000 hits/s) and
        a cold one never blocks the event loop on the device. Only the open() of a file whose
        directory entry is not cached can still wait on the disk.

        The most recently read files stay open, checksum verified once (as nginx's
        `open_file_cache` keeps descriptors): a hot hit is then one `preadv2`, no open, fstat,
        close or CRC, which is a third of a disk hit's cost in this process. A key names its
        bytes, so an open file can only ever hold the right response; one that eviction unlinks
        is served until it leaves this small set, then its space is freed.
        """
        if _RWF_NOWAIT is None:
            return None
        path = self.path_for(key)
        hot = self._hot.get(path)
        transient = False
        if hot is None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                return None, False
            except OSError:
                return None
            try:
                st = os.fstat(fd)
            except OSError:
                os.close(fd)
                return None
            hot = _HotFile(fd, st.st_size, st.st_mtime, verified=False)
            transient = not self._hot.put(path, hot)  # an LRU of size 0 keeps nothing
        try:
            return self._read_open(path, hot, key)
        finally:
            if transient:
                os.close(hot.fd)

    def _read_open(
        self, path: str, hot: _HotFile, key: str
    ) -> tuple[CacheEntry | None, bool] | None:
        assert _RWF_NOWAIT is not None
        buf = bytearray(hot.size)
        try:
            got = os.preadv(hot.fd, [buf], 0, _RWF_NOWAIT)
        except BlockingIOError:
            return None  # not in the page cache: the executor reads it
        except OSError:
            self._forget(path)
            return None
        if got != hot.size:
            self._forget(path)
            return None
        try:
            entry = unpack_file(buf, key, verify=not hot.verified)
        except CorruptEntry:
            self._forget(path)
            return None  # let the executor path re-read, count and remove it
        if entry is None:
            return None, False
        hot.verified = True
        now = time.time()
        if now - hot.mtime > TOUCH_AFTER_S:
            with contextlib.suppress(OSError):
                os.utime(path)  # the LRU age, as in `read`
            hot.mtime = now
        return entry, False

    def _forget(self, path: str) -> None:
        hot = self._hot.pop(path)
        if hot is not None:
            os.close(hot.fd)

    def close(self) -> None:
        """Close the files `read_if_cached` keeps open (event-loop thread)."""
        self._hot.clear()

    def write(self, key: str, entry: CacheEntry) -> int:
        """Store `entry` atomically; returns the bytes added, 0 if the key is already stored."""
        path = self.path_for(key)
        if os.path.exists(path):
            return 0  # a key names its bytes: the stored file is the same response
        data = pack_file(key, entry)
        directory, name = path.rsplit("/", 1)
        tmp = f"{directory}/.{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return disk_cost(len(data))

    def scan(self, stop: threading.Event, need: int = 0) -> tuple[ScanResult, list[str]]:
        """Total size and count of the entries; with `need` > 0 also the oldest paths that
        together hold at least `need` bytes (a max-heap keeps only those). Removes stale
        temporary files. Stops early (partial totals) when `stop` is set."""
        total = files = 0
        heap: list[tuple[float, int, str]] = []  # (-mtime, cost, path): newest on top
        heap_bytes = 0
        now = time.time()
        for directory in self._shard_dirs(stop):
            if stop.is_set():
                break
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except OSError:
                continue
            for item in entries:
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                if item.name.startswith("."):
                    if item.name.endswith(".tmp") and now - st.st_mtime > TEMP_MAX_AGE_S:
                        _unlink_quietly(item.path)
                    continue
                cost = disk_cost(st.st_size)
                total += cost
                files += 1
                if need <= 0:
                    continue
                if heap_bytes < need or st.st_mtime < -heap[0][0]:
                    heapq.heappush(heap, (-st.st_mtime, cost, item.path))
                    heap_bytes += cost
                    while heap and heap_bytes - heap[0][1] >= need:
                        heap_bytes -= heapq.heappop(heap)[1]
        return ScanResult(total, files), [path for _, _, path in heap]

    def _shard_dirs(self, stop: threading.Event) -> list[str]:
        out: list[str] = []
        for top in _hex_dirs(self._root):
            if stop.is_set():
                break
            out.extend(_hex_dirs(top))
        return out

    def remove(self, paths: list[str]) -> tuple[int, int]:
        """Delete files; returns (bytes freed, files removed)."""
        freed = removed = 0
        for path in paths:
            try:
                size = os.stat(path).st_size
                os.unlink(path)
            except OSError:
                continue
            freed += disk_cost(size)
            removed += 1
        return freed, removed

    def generation_path(self, image_id: int) -> str:
        return f"{self._root}/{GENERATIONS}/{image_id}"

    def read_generation(self, image_id: int) -> int:
        try:
            with open(self.generation_path(image_id), "rb") as f:
                return max(0, int(f.read(32).strip() or b"0"))
        except (FileNotFoundError, NotADirectoryError, ValueError):
            return 0

    def write_generation(self, image_id: int, generation: int) -> None:
        path = self.generation_path(image_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(b"%d\n" % generation)
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise


def _hex_dirs(parent: str) -> list[str]:
    try:
        with os.scandir(parent) as it:
            return [
                e.path
                for e in it
                if len(e.name) == 2 and set(e.name) <= _HEX and e.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return []


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
