"""`Catalog`: where each image lives, loaded once at start-up and swapped when it changes.

Three places an image can be found, in this order:

1. the catalog (`source.catalog`): a built index (`idrserve catalog index`), or a CSV/JSON
   file that is indexed at start-up: small files in a thread, large ones by a separate
   `idrserve catalog index` process into `source.catalog_index_dir` (one build per machine
   whatever the number of workers, reused on restart while the file is unchanged; a child
   process keeps the event loop free and gives its memory back when it exits);
2. the catalog's study prefixes (`study:NAME` rows) and `source.zarr_root`: local directories
   are scanned for `<id>.zarr` (in a thread, at most every `rescan_interval_s` when an unknown
   id is asked for), URL prefixes probed (`<prefix>/<id>.zarr`, one HEAD, remembered);
3. nowhere: None, which the sources turn into a 404.

While the catalog loads, `locate` raises `errors.CatalogLoading` (503 + Retry-After) in the
server and `/readyz` says `loading` with progress; library callers (`wait_for_load=True`)
simply wait. A changed catalog file (checked every `catalog_check_interval_s`, or at once on
SIGHUP) is re-read in the background and swapped in one assignment: a request sees the old
catalog or the new one, never half of either. Ids are ints, so a request can never name a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from idrserve import errors
from idrserve.catalog.build import CatalogSourceError, build_index, source_fingerprint
from idrserve.catalog.index import (
    CatalogFormatError,
    CatalogIndex,
    Location,
    empty_index,
    is_index_file,
    open_index,
)
from idrserve.catalog.metrics import CatalogStats
from idrserve.catalog.stores import (
    ObjectStoreLike,
    exists_any,
    open_object_store,
    parse_root,
    scan_root,
)
from idrserve.lru import BoundedLRU
from idrserve.settings import SourceSettings

log = logging.getLogger("idrserve.catalog")

# Catalog files up to this size are indexed in a thread of the server (about 0.3 s);
# larger ones by a child process (see the module docstring).
INLINE_BUILD_BYTES = 4 * 1024 * 1024
# Remote probe results remembered (found or not), per root.
MAX_PROBES = 100_000
POLL_S = 0.25


class Locator(Protocol):
    """What a pixel source needs of a catalog."""

    async def locate(self, image_id: int) -> Location | None: ...


@dataclass(frozen=True, slots=True)
class CatalogPage:
    """One page of the listing: ids ascending, and how many there are in all."""

    ids: list[int]
    total: int
    offset: int
    limit: int


class _LocalRoot:
    """A local directory scanned for `<id>.zarr` (lazily, at most every `trust_s`)."""

    def __init__(self, path: Path, max_depth: int, trust_s: float) -> None:
        self.path = path
        self._max_depth = max_depth
        self._trust_s = trust_s
        self.found: dict[int, Path] = {}
        self.version = 0  # bumped whenever `found` changes (the listing recomputes)
        self.scanned_at: float | None = None
        self._lock = asyncio.Lock()

    async def locate(self, image_id: int) -> Location | None:
        hit = self.found.get(image_id)
        if hit is not None:
            return hit
        if self.scanned_at is None or time.monotonic() - self.scanned_at >= self._trust_s:
            await self.rescan()
        return self.found.get(image_id)

    async def rescan(self) -> bool:
        """Scan unless another task did while we waited; True when the set changed."""
        started = time.monotonic()
        async with self._lock:
            if self.scanned_at is not None and self.scanned_at >= started:
                return False
            found = await asyncio.to_thread(scan_root, self.path, self._max_depth)
            changed = found.keys() != self.found.keys()
            self.found = found
            self.version += changed
            self.scanned_at = time.monotonic()
            log.info("scanned %s: %d images", self.path, len(found))
            return changed


class _RemoteRoot:
    """A URL prefix under which `<id>.zarr` is probed on first use (bounded memory)."""

    def __init__(self, url: str, settings: SourceSettings) -> None:
        self.url = url.rstrip("/")
        self._settings = settings
        self._store: ObjectStoreLike | None = None
        # id → (found, when probed); forgetting a found id changes the found set too.
        self.probed: BoundedLRU[int, tuple[bool, float]] = BoundedLRU(
            MAX_PROBES, on_evict=self._forgot
        )
        self.version = 0  # bumped whenever the found set changes

    async def locate(self, image_id: int) -> Location | None:
        location = f"{self.url}/{image_id}.zarr"
        seen = self.probed.peek(image_id)
        now = time.monotonic()
        if seen is not None and (seen[0] or now - seen[1] < self._settings.rescan_interval_s):
            self.probed.touch(image_id)
            return location if seen[0] else None
        if self._store is None:
            self._store = open_object_store(self.url, self._settings)
        found = await exists_any(
            self._store, (f"{image_id}.zarr/zarr.json", f"{image_id}.zarr/.zattrs")
        )
        self.version += found != (seen is not None and seen[0])
        self.probed.put(image_id, (found, now))
        return location if found else None

    def _forgot(self, _image_id: int, probe: tuple[bool, float]) -> None:
        self.version += probe[0]

    def found_ids(self) -> list[int]:
        return [i for i, (found, _) in self.probed.items() if found]


_Root = _LocalRoot | _RemoteRoot


async def _stop(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def default_index_dir() -> Path:
    """Where indexes built from CSV/JSON catalogs go when `catalog_index_dir` is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "idrserve" / "catalog"


def index_path_for(source: Path, index_dir: Path | None) -> Path:
    """The built index of a catalog file: named after the file, unique per absolute path."""
    digest = hashlib.blake2b(os.path.abspath(source).encode(), digest_size=6).hexdigest()
    return (index_dir or default_index_dir()) / f"{source.stem}-{digest}.idrcat"


def _fingerprint_matches(index: CatalogIndex, source: Path) -> bool:
    try:
        now = source_fingerprint(source)
    except OSError:
        return False
    built = index.meta.get("sources") or [{}]
    return len(built) == 1 and all(built[0].get(k) == now[k] for k in ("path", "size", "mtime_ns"))


def _union_page(a: np.ndarray, b: np.ndarray, offset: int, limit: int) -> list[int]:
    """Ids `offset .. offset+limit` of the union of two sorted, disjoint arrays, O(log + limit)."""
    if not len(b):
        return [int(i) for i in a[offset : offset + limit]]
    lo, hi = max(0, offset - len(b)), min(offset, len(a))
    while lo < hi:  # i ids from a and offset-i from b come first
        i = (lo + hi) // 2
        j = offset - i
        if j > 0 and i < len(a) and b[j - 1] > a[i]:
            lo = i + 1
        else:
            hi = i
    i, j = lo, offset - lo
    merged = np.concatenate((a[i : i + limit], b[j : j + limit]))
    merged.sort()
    return [int(v) for v in merged[:limit]]


class Catalog:
    """Maps image ids to locations; see the module docstring."""

    def __init__(self, settings: SourceSettings, *, wait_for_load: bool = True) -> None:
        self._settings = settings
        self._file = settings.catalog
        self._wait = wait_for_load
        self._index: CatalogIndex = empty_index()
        self.state = "idle" if self._file is not None else "ready"
        self.error: str | None = None  # why the last load failed (no paths)
        self.progress: dict[str, Any] = {}
        self.loaded_at: float | None = None
        self.load_seconds: float | None = None
        self._loaded_fingerprint: tuple[int, int, int] | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._force = False
        self._loaded: asyncio.Event | None = None
        root = parse_root(settings.zarr_root)
        self._base_roots: list[_Root] = [] if root is None else [self._make_root(root)]
        self._roots: list[_Root] = list(self._base_roots)
        self._extras = np.zeros(0, dtype=np.int64)
        self._extras_key: tuple[Any, ...] = ()
        self.stats = CatalogStats()

    def _make_root(self, root: Location) -> _Root:
        if isinstance(root, Path):
            s = self._settings
            return _LocalRoot(root, s.scan_max_depth, s.rescan_interval_s)
        return _RemoteRoot(root, self._settings)

    # ---- life cycle ---------------------------------------------------------------------

    @property
    def index(self) -> CatalogIndex:
        return self._index

    def start(self) -> None:
        """Begin loading the catalog file (once) and watching it for changes."""
        if self._file is None or self._load_task is not None:
            return
        self._loaded = asyncio.Event()
        self._wake = asyncio.Event()
        self.state = "loading"
        self._load_task = asyncio.ensure_future(self._first_load())

    async def aclose(self) -> None:
        """Stop loading and watching (both tasks are this catalog's own)."""
        await _stop(self._load_task)
        await _stop(self._watch_task)  # read only now: the loader starts it as it ends

    def request_reload(self) -> None:
        """Re-read the catalog now (SIGHUP), whether or not the file looks changed."""
        if self._wake is not None:
            self._force = True
            self._wake.set()

    def loads_inline(self) -> bool:
        """True when the catalog is read in this process (an index file, or a small CSV/JSON):
        quick enough for a server to wait for it before it starts listening."""
        if self._file is None:
            return False
        try:
            return is_index_file(self._file) or self._file.stat().st_size <= INLINE_BUILD_BYTES
        except OSError:
            return True  # the load fails at once

    async def wait_loaded(self) -> None:
        self.start()
        if self._loaded is not None:
            await self._loaded.wait()

    async def _first_load(self) -> None:
        assert self._loaded is not None
        try:
            await self._load()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.state = "failed"
            self.error = _public_reason(exc)
            log.error("catalog %s unusable, serving without it: %s", self._file, exc)
        finally:
            self._loaded.set()
        if self._settings.catalog_check_interval_s > 0:
            self._watch_task = asyncio.ensure_future(self._watch())

    async def _load(self) -> None:
        assert self._file is not None
        path = self._file
        started = time.monotonic()
        self.progress = {"rows": 0, "bytes": 0, "total_bytes": 0}
        st = await asyncio.to_thread(os.stat, path)
        if await asyncio.to_thread(is_index_file, path):
            index = await asyncio.to_thread(open_index, path)
        elif st.st_size <= INLINE_BUILD_BYTES:
            index = (await asyncio.to_thread(build_index, [path]))[0]
        else:
            index = await self._build_external(path, st.st_size)
        self._swap(index)
        self._loaded_fingerprint = (st.st_size, st.st_mtime_ns, st.st_ino)
        self.load_seconds = time.monotonic() - started
        self.loaded_at = time.time()
        self.state = "ready"
        self.error = None
        report = index.meta.get("report", {})
        log.info(
            "catalog ready: %d images, %d id ranges, %d study prefixes (%d rows skipped, "
            "%d duplicate ids: last wins) in %.1f s",
            len(index),
            report.get("ranges", 0),
            len(index.studies),
            report.get("skipped", 0),
            report.get("duplicates", 0),
            self.load_seconds,
        )

    def _swap(self, index: CatalogIndex) -> None:
        """Make `index` the catalog in one assignment, with the roots its studies name."""
        roots = list(self._base_roots)
        for study in index.studies:
            root = parse_root(study["prefix"])
            if root is not None:
                roots.append(self._make_root(root))
        old, self._index, self._roots = self._index, index, roots
        self._extras_key = ()
        if old is not index:
            old.close()

    async def _build_external(self, path: Path, size: int) -> CatalogIndex:
        """Index a large catalog file in a child process, once per machine (a file lock)."""
        out = index_path_for(path, self._settings.catalog_index_dir)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            out = index_path_for(path, Path(tempfile.gettempdir()) / "idrserve-catalog")
            out.parent.mkdir(parents=True, exist_ok=True)
        progress_file = out.with_name(out.name + ".progress")
        self.progress = {"rows": 0, "bytes": 0, "total_bytes": size}
        lock_path = out.with_name(out.name + ".lock")
        with await asyncio.to_thread(open, lock_path, "a+b") as lock:
            while True:
                reused = await asyncio.to_thread(self._reuse, out, path)
                if reused is not None:
                    return reused
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another worker builds it: follow its progress
                    self._read_progress(progress_file)
                    await asyncio.sleep(POLL_S)
                    continue
                try:
                    reused = await asyncio.to_thread(self._reuse, out, path)
                    if reused is not None:
                        return reused
                    await self._run_builder(path, out, progress_file)
                    return await asyncio.to_thread(open_index, out)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def _reuse(out: Path, source: Path) -> CatalogIndex | None:
        if not out.exists():
            return None
        try:
            index = open_index(out)
        except CatalogFormatError:
            return None
        if _fingerprint_matches(index, source):
            return index
        index.close()
        return None

    async def _run_builder(self, source: Path, out: Path, progress_file: Path) -> None:
        log.info("indexing catalog %s in a child process into %s", source, out)
        cmd = [sys.executable, "-m", "idrserve", "catalog", "index", str(source)]
        cmd += ["-o", str(out), "--progress-file", str(progress_file), "--quiet"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        assert proc.stderr is not None
        stderr = asyncio.ensure_future(proc.stderr.read())
        try:
            while proc.returncode is None:
                self._read_progress(progress_file)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), POLL_S)
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        finally:
            err = (await stderr).decode(errors="replace")
        if proc.returncode != 0:
            raise CatalogSourceError(
                f"`idrserve catalog index` exited with {proc.returncode}: {err.strip()[-500:]}"
            )

    def _read_progress(self, progress_file: Path) -> None:
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(progress_file.read_bytes())
            self.progress.update(
                {k: state[k] for k in ("rows", "bytes", "total_bytes") if k in state}
            )

    async def _watch(self) -> None:
        """Re-read the catalog when its file changes (size, mtime or inode) or on SIGHUP."""
        assert self._file is not None
        assert self._wake is not None
        interval = self._settings.catalog_check_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            force, self._force = self._force, False
            try:
                st = await asyncio.to_thread(os.stat, self._file)
            except OSError as exc:
                log.warning("catalog %s cannot be checked: %s", self._file, exc.strerror)
                continue
            if not force and (st.st_size, st.st_mtime_ns, st.st_ino) == self._loaded_fingerprint:
                continue
            log.info("catalog %s changed: re-reading it", self._file)
            self.stats.reloads += 1
            try:
                await self._load()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The previous catalog keeps serving.
                self.stats.reload_failures += 1
                self.error = _public_reason(exc)
                log.error("catalog %s: re-reading failed, keeping the old one: %s", self._file, exc)

    # ---- lookups ------------------------------------------------------------------------

    def _check_ready(self) -> bool:
        """True when lookups may run; raises CatalogLoading in a server that is loading."""
        if self.state in ("ready", "failed"):
            return True
        if self._file is not None and not self._wait:
            self.start()
            raise errors.CatalogLoading(
                "the image catalog is still loading; retry shortly", param="image_id"
            )
        return False

    async def locate(self, image_id: int) -> Location | None:
        """The location of `image_id`, or None if it is not known (after a rescan if due)."""
        if not self._check_ready():
            await self.wait_loaded()
        started = time.perf_counter()
        index, roots = self._index, self._roots
        found = index.locate(image_id)
        if found is not None:
            self.stats.record("index", time.perf_counter() - started)
            return found
        for root in roots:
            found = await root.locate(image_id)
            if found is not None:
                self.stats.record("root", time.perf_counter() - started)
                return found
        self.stats.record("unknown", time.perf_counter() - started)
        return None

    async def page(self, offset: int = 0, limit: int = 100) -> CatalogPage:
        """Known ids in ascending order, `limit` from `offset`: O(log n + limit).

        Known: catalogued ids, and those found by scans and probes of the roots (ids covered
        only by a range are not listed: which of them exist is not known without probing).
        """
        if not self._check_ready():
            await self.wait_loaded()
        index = self._index
        for root in self._roots:
            if isinstance(root, _LocalRoot) and root.scanned_at is None:
                await root.rescan()
        extras = await self._extras_for(index)
        total = len(index) + len(extras)
        ids = _union_page(index.ids, extras, offset, limit) if offset < total else []
        return CatalogPage(ids, total, offset, limit)

    async def _extras_for(self, index: CatalogIndex) -> np.ndarray:
        """Ids the roots found that the index does not hold, sorted (recomputed on change)."""
        key = (id(index), *(root.version for root in self._roots))
        if key != self._extras_key:
            found: list[int] = []
            for root in self._roots:
                found.extend(root.found if isinstance(root, _LocalRoot) else root.found_ids())

            def compute() -> np.ndarray:
                values = np.unique(np.fromiter(found, dtype=np.int64, count=len(found)))
                kept: np.ndarray = values[~index.contains_many(values)]
                return kept

            self._extras = await asyncio.to_thread(compute) if len(found) > 4096 else compute()
            self._extras_key = key
        return self._extras

    def summary(self, *, expose: bool = False) -> dict[str, Any]:
        """The catalog's state for /readyz (paths only with `expose`)."""
        out: dict[str, Any] = {"state": self.state}
        if self._file is not None:
            out["images"] = len(self._index)
            report = self._index.meta.get("report", {})
            for key in ("ranges", "skipped", "duplicates"):
                if key in report:
                    out[key] = report[key]
            out["studies"] = len(self._index.studies)
            if self.state == "loading":
                out["progress"] = self.progress
            if self.load_seconds is not None:
                out["load_seconds"] = round(self.load_seconds, 2)
            if self.error:
                out["error"] = self.error
            if expose:
                out["path"] = str(self._file)
        return out


def _public_reason(exc: BaseException) -> str:
    """Why a catalog could not be read, without paths or exception text."""
    if isinstance(exc, CatalogFormatError | CatalogSourceError):
        return "the catalog file is not a valid catalog (see the server log)"
    if isinstance(exc, OSError):
        return "the catalog file cannot be read (see the server log)"
    return "the catalog could not be loaded (see the server log)"
