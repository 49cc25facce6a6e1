"""`convert(options)`: stream an input into OME-Zarr with bounded memory, resumably.

Every level is written in bands of `Layout.band` rows. The driver pulls: band b of a computed
level is the 2×2 mean of bands 2b and 2b + 1 of the level above, fetched recursively, so the
input is read once, band after band, and at most two bands per level are alive (plus the
bands queued for writing, at most `workers + 1`). A band whose objects the journal already
vouches for is skipped, or read back from the output when a coarser band still needs it, so
an interrupted run resumes without re-reading what it finished.

Everything goes into a hidden directory beside the output (`.<name>.partial`), renamed into
place only after the NGFF attributes are written and the result reads back through idrserve's
Zarr source, so nothing at the output path is ever incomplete.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zarr

from idrserve.convert import document
from idrserve.convert.inputs import InputImage, Unit, open_input
from idrserve.convert.options import ConvertError, Options
from idrserve.convert.output import JOURNAL, Journal, Output
from idrserve.convert.plan import Layout, downsample, plan_levels
from idrserve.convert.readback import read_back
from idrserve.sources.ngff import ChannelStats, compute_window

log = logging.getLogger(__name__)

# Windows are computed from at most this many pixels a side of the coarsest level (as the
# server does for images without windows, `sources/zarr.py`).
STATS_MAX_SIDE = 2048


class Progress(Protocol):
    def start(self, total: int, done: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Report:
    output: Path
    axes: str
    shape: tuple[int, ...]
    dtype: str
    levels: tuple[tuple[int, int, int | None], ...]  # height, width, input level or None
    input_bytes: int  # level 0, uncompressed
    stored_bytes: int
    bands_written: int
    bands_resumed: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "axes": self.axes,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "levels": [list(lv) for lv in self.levels],
            "input_mb": round(self.input_bytes / 1e6, 1),
            "stored_mb": round(self.stored_bytes / 1e6, 1),
            "bands_written": self.bands_written,
            "bands_resumed": self.bands_resumed,
            "seconds": round(self.seconds, 2),
            "mb_per_s": round(self.input_bytes / 1e6 / max(self.seconds, 1e-9), 1),
        }


def partial_path(output: Path) -> Path:
    """The hidden working directory beside `output` (not a `<id>.zarr` name: never scanned)."""
    return output.parent / f".{output.name}.partial"


def convert(
    options: Options, progress: Progress | None = None, *, crash_after: int | None = None
) -> Report:
    """Convert `options.input` to `options.output`; `ConvertError` for anything it refuses.

    `crash_after` (tests only) ends the process abruptly after that many bands are recorded.
    """
    options.validate()
    started = time.monotonic()
    target = options.output
    if not target.parent.is_dir():
        raise ConvertError(f"{target.parent}: no such directory")
    if target.exists() and not options.overwrite:
        raise ConvertError(f"{target} exists (--overwrite replaces it)")
    source = open_input(options.input, options.series, options.workers)
    try:
        layout = _layout(source, options)
        source.check(sorted({lv.source for lv in layout.levels if lv.source is not None}))
        tmp = partial_path(target)
        output, journal = _prepare(tmp, layout, options, _header(source, layout, options))
        resumed = journal.bands_done
        try:
            config = {"async.concurrency": 4 * options.workers + 4}
            config["threading.max_workers"] = options.workers
            with zarr.config.set(config):
                driver = _Driver(source, output, journal, options.workers, progress, crash_after)
                driver.run()
                windows = _windows(output, layout)
                attrs = document.attributes(layout, source.info, windows, options.ngff)
                output.set_attributes(attrs)
                read_back(tmp, layout, _first_tile(source, layout, driver.first_tiles))
        except ConvertError:
            journal.close()
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        journal.remove()
        stored = output.stored_bytes()
        _replace(tmp, target)
        if options.catalog_out is not None:
            append_catalog_row(options.catalog_out, options.catalog_id(), target)
        return Report(
            output=target,
            axes=layout.axes,
            shape=layout.shape(0),
            dtype=layout.dtype.name,
            levels=tuple((lv.height, lv.width, lv.source) for lv in layout.levels),
            input_bytes=layout.nbytes(0),
            stored_bytes=stored,
            bands_written=driver.written,
            bands_resumed=resumed,
            seconds=time.monotonic() - started,
        )
    finally:
        source.close()


def _layout(source: InputImage, options: Options) -> Layout:
    shape = source.shape
    return Layout(
        axes=shape.axes,
        size_t=shape.size_t,
        size_c=shape.size_c,
        size_z=shape.size_z,
        samples=shape.samples,
        dtype=shape.dtype,
        levels=plan_levels(shape.level_sizes, options.levels),
        chunk=options.chunks,
        shard=options.shard,
        band=options.band,
    )


def _header(source: InputImage, layout: Layout, options: Options) -> dict[str, Any]:
    """What a partial output must have been started with for `--resume` to continue it."""
    return {
        "input": source.identity,
        "ngff": options.ngff,
        "chunks": options.chunks,
        "shard": options.shard,
        "compressor": options.compressor,
        "clevel": options.clevel,
        "axes": layout.axes,
        "dtype": layout.dtype.str,
        "levels": [[lv.height, lv.width, lv.source] for lv in layout.levels],
    }


def _prepare(
    tmp: Path, layout: Layout, options: Options, header: dict[str, Any]
) -> tuple[Output, Journal]:
    if tmp.exists() and options.resume and (tmp / JOURNAL).exists():
        Journal.check_header(tmp, header)
        output = Output(tmp, layout, options, create=False)
        return output, Journal.open(tmp, output.verify)
    if tmp.exists():
        log.warning("discarding %s, left by an earlier run (--resume continues one)", tmp.name)
        shutil.rmtree(tmp)
    tmp.mkdir()
    output = Output(tmp, layout, options, create=True)
    return output, Journal.create(tmp, header)


class _Driver:
    """Pulls bands through the pyramid and hands them to writer threads."""

    def __init__(
        self,
        source: InputImage,
        output: Output,
        journal: Journal,
        workers: int,
        progress: Progress | None,
        crash_after: int | None,
    ) -> None:
        self._source = source
        self._output = output
        self._layout = output.layout
        self._journal = journal
        self._workers = workers
        self._progress = progress
        self._crash_after = crash_after
        self._slots = threading.BoundedSemaphore(workers + 1)
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.written = 0
        # Level 0's top-left tile of each channel group at t 0, z 0, kept for the read-back
        # check so the input is not decoded again for it.
        self.first_tiles: dict[int, np.ndarray] = {}

    def _row_bytes(self, level: int) -> int:
        lay = self._layout
        return lay.samples * lay.levels[level].width * lay.dtype.itemsize

    def run(self) -> None:
        lay = self._layout
        n = len(lay.levels)
        if self._progress is not None:
            done = sum(
                (stop - start) * self._row_bytes(0)
                for unit in lay.units()
                for b in range(lay.bands(0))
                if self._journal.done(0, unit, b)
                for start, stop in [lay.rows(0, b)]
            )
            self._progress.start(lay.nbytes(0), done)
        # The coarsest level of each run of computed levels pulls everything above it.
        bottoms = [k for k in range(n) if k == n - 1 or lay.levels[k + 1].source is not None]
        with ThreadPoolExecutor(self._workers, thread_name_prefix="idrserve-convert") as pool:
            self._pool = pool
            for unit in lay.units():
                for k in bottoms:
                    for b in range(lay.bands(k)):
                        self._produce(k, unit, b, want=False)
        if self._error is not None:
            raise self._error

    def _finished(self, level: int, unit: Unit, band: int) -> bool:
        """This band and every band it is computed from are in the journal."""
        if not self._journal.done(level, unit, band):
            return False
        if self._layout.levels[level].source is not None:
            return True
        above = self._layout.bands(level - 1)
        children = [c for c in (2 * band, 2 * band + 1) if c < above]
        return all(self._finished(level - 1, unit, c) for c in children)

    def _produce(self, level: int, unit: Unit, band: int, *, want: bool) -> np.ndarray | None:
        if self._finished(level, unit, band):
            return self._output.read(level, unit, band) if want else None
        lay = self._layout
        lv = lay.levels[level]
        start, stop = lay.rows(level, band)
        if lv.source is not None:
            data = self._source.read(lv.source, unit, start, stop)
            if data.shape[1:] != (stop - start, lv.width):
                raise ConvertError(f"input level {lv.source} read as {data.shape}")
            t, g, z = unit
            if level == 0 and band == 0 and t == 0 and z == 0:
                self.first_tiles[g] = data[:, : lay.chunk, : lay.chunk].copy()
        else:
            above = lay.bands(level - 1)
            halves = []
            for c in (2 * band, 2 * band + 1):
                if c < above:
                    part = self._produce(level - 1, unit, c, want=True)
                    assert part is not None
                    halves.append(downsample(part))
            data = halves[0] if len(halves) == 1 else np.concatenate(halves, axis=1)
        if not self._journal.done(level, unit, band):
            self._submit(level, unit, band, data)
        return data if want else None

    def _submit(self, level: int, unit: Unit, band: int, data: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        assert self._pool is not None
        self._slots.acquire()  # bounds the bands waiting for a writer (memory)
        future = self._pool.submit(self._write, level, unit, band, data)
        future.add_done_callback(self._written)

    def _write(self, level: int, unit: Unit, band: int, data: np.ndarray) -> None:
        crcs = self._output.write(level, unit, band, data)
        with self._lock:
            self._journal.record(level, unit, band, crcs)
            self.written += 1
            if self._crash_after is not None and self.written >= self._crash_after:
                os._exit(75)  # tests: an abrupt end, as a kill would be
            if level == 0 and self._progress is not None:
                self._progress.advance(data.shape[1] * self._row_bytes(0))

    def _written(self, future: Future[None]) -> None:
        self._slots.release()
        exc = future.exception()
        if exc is not None and self._error is None:
            self._error = exc


def _windows(output: Output, layout: Layout) -> list[ChannelStats]:
    """Per channel: 0.1/99.9 percentiles of the coarsest level's default plane (t 0, middle
    z), sampled to at most STATS_MAX_SIDE a side, read band by band."""
    k = len(layout.levels) - 1
    lv = layout.levels[k]
    step = max(1, -(-max(lv.height, lv.width) // STATS_MAX_SIDE))
    out = []
    for g in range(layout.groups):
        unit = (0, g, layout.size_z // 2)
        rows = []
        for b in range(layout.bands(k)):
            start, _ = layout.rows(k, b)
            rows.append(output.read(k, unit, b)[:, (-start) % step :: step, ::step])
        plane = np.concatenate(rows, axis=1)
        out += [compute_window(plane[s]) for s in range(layout.samples)]
    return out


def _first_tile(source: InputImage, layout: Layout, kept: dict[int, np.ndarray]) -> np.ndarray:
    """Level 0's top-left tile of plane t 0, z 0, every channel: kept by the driver, or read
    again for the groups a resumed run did not read."""
    lv = layout.levels[0]
    h, w = min(layout.chunk, lv.height), min(layout.chunk, lv.width)
    parts = [
        kept[g] if g in kept else source.read(0, (0, g, 0), 0, h)[:, :, :w]
        for g in range(layout.groups)
    ]
    return np.concatenate(parts, axis=0)


def _replace(tmp: Path, target: Path) -> None:
    """Rename the finished output into place (over an old one with --overwrite)."""
    if not target.exists():
        tmp.rename(target)
        return
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def append_catalog_row(catalog: Path, image_id: int, output: Path) -> None:
    """Append `id,path` (a header first when the file is new); the path relative to the
    catalog's directory when the output is under it, as the catalog resolves it."""
    target = output.resolve()
    try:
        path = target.relative_to(catalog.resolve().parent).as_posix()
    except ValueError:
        path = str(target)
    new = not catalog.exists() or catalog.stat().st_size == 0
    with catalog.open("a+b") as fh:
        if not new:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
    with catalog.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        if new:
            writer.writerow(["id", "path"])
        writer.writerow([image_id, path])
