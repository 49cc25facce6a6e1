"""Local disk tier: one file per entry in sharded directories (format in `files`).

Size is tracked in memory after a background scan; eviction (oldest modification time first,
refreshed at most every `TOUCH_AFTER_S` on a hit because `relatime` makes atime useless) runs
in a background job, never on the request path. Several processes may share one directory:
each one counts its own writes and rescans periodically, so the budget can be exceeded by
what the other processes wrote since the last rescan. A full or read-only disk pauses writes
(a circuit breaker with backoff); reads go on.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from pathlib import Path
from typing import TypeVar

from idrserve.cache.breaker import CircuitBreaker
from idrserve.cache.entry import CacheEntry
from idrserve.cache.files import DiskStore
from idrserve.cache.metrics import TierStats

log = logging.getLogger(__name__)
T = TypeVar("T")

# Eviction removes the oldest files until the total is at this fraction of the budget.
LOW_WATER = 0.9
# Errors that will repeat on every write: stop writing (back off) at once.
HARD_WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
)


class DiskTier:
    """The disk tier seen from the event loop: executors, stats, write backoff, eviction."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        stats: TierStats,
        breaker: CircuitBreaker,
        read_pool: Executor,
        write_pool: Executor,
        scan_pool: Executor,
        rescan_interval_s: float = 60.0,
        open_files: int = 0,
    ) -> None:
        self.store = DiskStore(root, open_files)
        self.max_bytes = max_bytes
        self.stats = stats
        self.breaker = breaker
        self._read_pool = read_pool
        self._write_pool = write_pool
        self._scan_pool = scan_pool
        self._rescan_interval_s = rescan_interval_s
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._written_since_scan = 0
        self._during_scan = [0, 0]  # bytes, entries written since the current walk began
        self.scans = 0
        self.evicted = 0
        self._scan_lock = asyncio.Lock()  # one walk at a time: two would each free `need`

    async def _run(self, pool: Executor, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def start(self) -> None:
        try:
            await self._run(self._write_pool, partial(os.makedirs, self.store.root, exist_ok=True))
        except OSError as exc:
            log.warning(
                "cache dir %s cannot be created (%s): disk writes will fail", self.store.root, exc
            )

    async def get(self, key: str) -> CacheEntry | None:
        try:
            fast = self.store.read_if_cached(key)
            if fast is not None:
                entry, corrupt = fast
            else:
                entry, corrupt = await self._run(self._read_pool, self.store.read, key)
        except OSError as exc:
            self.stats.errors += 1
            log.warning("disk cache read failed: %s", exc)
            return None
        if corrupt:
            self.stats.errors += 1
            self.stats.entries = max(0, self.stats.entries - 1)
            log.warning("dropped a corrupt disk cache entry for %s", key)
        if entry is None:
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        return entry

    @property
    def writable(self) -> bool:
        return not self.breaker.is_open

    async def put(self, key: str, entry: CacheEntry) -> None:
        """Write one entry (a background job); failures back off, never raise."""
        if not self.breaker.allow():
            self.stats.dropped_writes += 1
            return
        try:
            added = await self._run(self._write_pool, self.store.write, key, entry)
        except (OSError, ValueError) as exc:
            self.stats.write_errors += 1
            was_open = self.breaker.is_open
            if isinstance(exc, OSError) and exc.errno in HARD_WRITE_ERRNOS:
                self.breaker.trip()
            else:
                self.breaker.record_failure()
            if self.breaker.is_open and not was_open:
                log.warning("disk cache writes paused: %s", exc)
            return
        if self.breaker.state != "closed":
            log.info("disk cache writes resumed")
        self.breaker.record_success()
        if not added:
            self.stats.skipped_writes += 1
            return
        self.stats.writes += 1
        self.stats.bytes += added
        self.stats.entries += 1
        self._written_since_scan += added
        self._during_scan[0] += added
        self._during_scan[1] += 1
        if self.stats.bytes > self.max_bytes:
            self._wake.set()

    async def maintain(self) -> None:
        """Background loop: scan at start, then rescan and evict when over budget or due."""
        await self._scan_logged()
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(self._rescan_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                if not self._written_since_scan:
                    continue  # nothing new from this process: no reason to walk the tree
            self._wake.clear()
            if not self._stop.is_set():
                await self._scan_logged()

    async def _scan_logged(self) -> None:
        try:
            await self.scan_and_evict()
        except Exception:
            log.exception("disk cache scan failed")

    async def scan_and_evict(self) -> None:
        async with self._scan_lock:
            await self._scan_and_evict()

    async def _scan_and_evict(self) -> None:
        self._written_since_scan = 0
        # Writes that finish while the walk runs may or may not be seen by it; count them on
        # top (an overcount only brings the next rescan forward, an undercount would let the
        # directory grow past its budget).
        self._during_scan = [0, 0]
        result, _ = await self._run(self._scan_pool, self.store.scan, self._stop)
        self.scans += 1
        self.stats.bytes = result.bytes + self._during_scan[0]
        self.stats.entries = result.files + self._during_scan[1]
        if self.stats.bytes <= self.max_bytes or self._stop.is_set():
            return
        if self._during_scan[1]:
            self._wake.set()  # the total may count some writes twice: settle it with one more walk
        # What to free comes from the walk alone: the writes counted on top may have been seen
        # by it too, and a slow walk under heavy writes once counted every file twice and
        # emptied the whole directory. Writes it missed are caught by the next rescan.
        need = result.bytes - int(self.max_bytes * LOW_WATER)
        if need <= 0:
            return
        _, oldest = await self._run(self._scan_pool, self.store.scan, self._stop, need)
        freed, removed = await self._run(self._scan_pool, self.store.remove, oldest)
        self.evicted += removed
        self.stats.bytes = max(0, self.stats.bytes - freed)
        self.stats.entries = max(0, self.stats.entries - removed)
        log.info("disk cache evicted %d files (%d bytes)", removed, freed)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.store.close()

    async def read_generation(self, image_id: int) -> int | None:
        try:
            return await self._run(self._read_pool, self.store.read_generation, image_id)
        except OSError as exc:
            self.stats.errors += 1
            log.warning("disk cache generation read failed: %s", exc)
            return None

    async def write_generation(self, image_id: int, generation: int) -> None:
        await self._run(self._write_pool, self.store.write_generation, image_id, generation)

    async def usage(self) -> dict[str, int]:
        """A fresh scan (for `idrserve cache stats`; walks the whole directory)."""
        result, _ = await self._run(self._scan_pool, self.store.scan, threading.Event())
        return {"bytes": result.bytes, "entries": result.files, "max_bytes": self.max_bytes}
