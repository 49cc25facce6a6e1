"""ZarrSource behaviour beyond the conformance suite: defaults, errors, caching, loop hygiene."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from idrserve import errors
from idrserve.catalog import Catalog, Location
from idrserve.model import Box, ColorModel, Selection
from idrserve.settings import SourceSettings
from idrserve.sources import SOURCES, open_source
from idrserve.sources.base import PixelSource
from idrserve.sources.zarr import ZarrSource
from tests.sources.conftest import (
    STATIC_SERVER,
    chunks_for,
    free_port,
    multiscales,
    pyramid,
    ramp,
    wait_for_port,
    write_v2,
)


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[ZarrSource]:
    settings = SourceSettings(zarr_root=str(tmp_path), rescan_interval_s=0)
    src = open_source(settings)
    yield src
    await src.aclose()


def write_image(
    path: Path, data: np.ndarray, axes: str, omero: Any = None, n_levels: int = 2
) -> list[np.ndarray]:
    levels = pyramid(data, n_levels)
    attrs: dict[str, Any] = {"multiscales": [multiscales(axes, n_levels, version="0.4")]}
    if omero is not None:
        attrs["omero"] = omero
    write_v2(path, levels, attrs, chunks=chunks_for(levels, (64, 64)))
    return levels


def test_registry() -> None:
    assert {"zarr": ZarrSource} == SOURCES
    assert ZarrSource.name == "zarr"
    source = open_source(SourceSettings())
    assert isinstance(source, PixelSource)


async def test_malformed_omero_block_gives_documented_defaults(
    source: ZarrSource, tmp_path: Path
) -> None:
    omero = {
        "channels": [
            {"label": "hash", "color": "#ff0000", "window": {"start": 10, "end": 20}},
            {"label": "rgba", "color": "00ff0080", "active": "yes", "window": "none"},
            {"color": 255, "window": {"start": "a", "end": 5, "min": 0, "max": None}},
            "junk",
        ],
        "rdefs": {"defaultZ": 40, "model": 3},
    }
    data = ramp((4, 3, 100, 120), "uint16")
    levels = write_image(tmp_path / "11.zarr", data, "czyx", omero)
    meta = await source.meta(11)
    a, b, c, d = meta.channels
    assert (a.label, a.color, a.start, a.end) == ("hash", (255, 0, 0, 255), 10.0, 20.0)
    assert (b.label, b.color, b.active) == ("rgba", (0, 255, 0, 255), True)
    assert (c.label, c.color) == ("2", (255, 0, 255, 255))  # vizarr palette for 4 channels
    assert (d.label, d.active) == ("3", False)  # only the first 3 are active by default
    assert meta.default_z == 1  # defaultZ out of range: sizeZ // 2
    assert meta.default_model is ColorModel.COLOR
    # Channels without a usable window get p0.1/p99.9 of the coarsest level at defaultZ.
    plane = levels[-1][1, 1].astype(np.float64)
    lo, hi = np.percentile(plane[plane != 0], [0.1, 99.9])
    assert (b.start, b.end) == pytest.approx((lo, hi))


async def test_float_image_without_omero(source: ZarrSource, tmp_path: Path) -> None:
    data = (ramp((2, 90, 80), "float32") * 0.01).astype(np.float32)
    data[0, 0, 0] = np.nan
    levels = write_image(tmp_path / "12.zarr", data, "cyx")
    meta = await source.meta(12)
    assert meta.dtype == "float32"
    for c, ch in enumerate(meta.channels):
        low = levels[-1][c]
        finite = low[np.isfinite(low)]
        assert (ch.window_min, ch.window_max) == pytest.approx((finite.min(), finite.max()))
        assert ch.window_min <= ch.start < ch.end <= ch.window_max


async def test_uint8_single_channel_defaults(source: ZarrSource, tmp_path: Path) -> None:
    write_image(tmp_path / "13.zarr", ramp((50, 60), "uint8"), "yx", n_levels=1)
    meta = await source.meta(13)
    (ch,) = meta.channels
    assert (ch.start, ch.end, ch.window_min, ch.window_max) == (0, 255, 0, 255)
    assert ch.color == (255, 255, 255, 255)
    assert meta.default_model is ColorModel.GREYSCALE
    assert meta.name == "test-image"


async def test_bad_metadata_is_a_source_error(source: ZarrSource, tmp_path: Path) -> None:
    write_image(tmp_path / "21.zarr", ramp((40, 40), "uint16"), "yx")
    (tmp_path / "21.zarr" / ".zattrs").write_text("{not json")
    write_image(tmp_path / "22.zarr", ramp((40, 40), "uint16"), "yx")
    (tmp_path / "22.zarr" / "1" / ".zarray").unlink()
    write_image(tmp_path / "23.zarr", ramp((40, 40), "uint16"), "yx")
    (tmp_path / "23.zarr" / ".zattrs").write_text('{"multiscales": "nope"}')
    write_image(tmp_path / "24.zarr", ramp((40, 40), "uint16"), "yx")
    zarray = tmp_path / "24.zarr" / "0" / ".zarray"
    zarray.write_text(json.dumps({**json.loads(zarray.read_text()), "dtype": "|O"}))
    for image_id in (21, 22, 23, 24):
        with pytest.raises(errors.SourceError):
            await source.meta(image_id)


async def test_directory_without_metadata_is_not_found(source: ZarrSource, tmp_path: Path) -> None:
    (tmp_path / "31.zarr").mkdir()
    with pytest.raises(errors.NotFound):
        await source.meta(31)


async def test_corrupt_chunk_is_a_source_error(source: ZarrSource, tmp_path: Path) -> None:
    write_image(tmp_path / "41.zarr", ramp((1, 128, 128), "uint16"), "cyx")
    (tmp_path / "41.zarr" / "0" / "0" / "1" / "1").write_bytes(b"definitely not blosc")
    with pytest.raises(errors.SourceError):
        await source.read(41, Selection(0, 0, 0, 1, (0,), Box(60, 60, 10, 10)))
    # Chunks that are fine still read.
    got = await source.read(41, Selection(0, 0, 0, 1, (0,), Box(0, 0, 10, 10)))
    assert got.shape == (1, 1, 10, 10)


async def test_unreachable_store_is_unavailable(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(f"id,path\n51,http://127.0.0.1:{port}/51.zarr\n")
    settings = SourceSettings(catalog=catalog)
    src = open_source(settings)
    try:
        with pytest.raises(errors.SourceUnavailable):
            await src.meta(51)
    finally:
        await src.aclose()


async def test_data_version_follows_metadata(source: ZarrSource, tmp_path: Path) -> None:
    write_image(tmp_path / "61.zarr", ramp((2, 64, 64), "uint16"), "cyx")
    first = await source.meta(61)
    assert await source.meta(61) is first  # unchanged documents: same record
    attrs_path = tmp_path / "61.zarr" / ".zattrs"
    attrs = json.loads(attrs_path.read_text())
    attrs["omero"] = {"channels": [{"label": "new"}, {"label": "names"}]}
    attrs_path.write_text(json.dumps(attrs))
    second = await source.meta(61)
    assert second.data_version != first.data_version
    assert [ch.label for ch in second.channels] == ["new", "names"]
    # Same bytes, newer mtime (a rewrite in place): also a new version.
    stat = attrs_path.stat()
    os.utime(attrs_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert (await source.meta(61)).data_version != second.data_version


async def test_closing_leaves_no_task_behind(tmp_path: Path) -> None:
    """`open_source`'s catalog (a file: a loader, then a watcher task) and a load still in
    flight are closed with the source."""
    write_image(tmp_path / "81.zarr", ramp((32, 32), "uint8"), "yx", n_levels=1)
    (tmp_path / "c.csv").write_text("id,path\n81,81.zarr\n")
    src = open_source(SourceSettings(catalog=tmp_path / "c.csv", catalog_check_interval_s=60))
    before = asyncio.all_tasks()
    assert (await src.meta(81)).image_id == 81
    assert asyncio.all_tasks() - before  # the catalog's watcher
    pending = asyncio.create_task(src.meta(82))
    await asyncio.sleep(0)
    assert "zarr-record:82" in {t.get_name() for t in asyncio.all_tasks()}
    await src.aclose()
    await asyncio.gather(pending, return_exceptions=True)
    assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()


async def test_metadata_cache_is_bounded(tmp_path: Path) -> None:
    for image_id in (71, 72, 73):
        write_image(tmp_path / f"{image_id}.zarr", ramp((32, 32), "uint8"), "yx", n_levels=1)
    settings = SourceSettings(zarr_root=str(tmp_path), meta_cache_entries=2)
    src = open_source(settings)
    try:
        first = await src.meta(71)
        await src.meta(72)
        await src.meta(73)
        assert len(src._records) == 2
        assert await src.meta(71) is not first  # evicted, loaded again
    finally:
        await src.aclose()


class CountingCatalog(Catalog):
    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        self.calls = 0

    async def locate(self, image_id: int) -> Location | None:
        self.calls += 1
        await asyncio.sleep(0.01)
        return await super().locate(image_id)


async def test_concurrent_first_requests_share_one_load(tmp_path: Path) -> None:
    write_image(tmp_path / "81.zarr", ramp((2, 64, 64), "uint16"), "cyx")
    settings = SourceSettings(zarr_root=str(tmp_path))
    catalog = CountingCatalog(settings)
    src = ZarrSource(settings, catalog)
    try:
        metas = await asyncio.gather(*(src.meta(81) for _ in range(20)))
        assert catalog.calls == 1
        assert all(m is metas[0] for m in metas)
    finally:
        await src.aclose()


async def test_cancelled_waiter_does_not_cancel_the_shared_load(tmp_path: Path) -> None:
    write_image(tmp_path / "82.zarr", ramp((2, 64, 64), "uint16"), "cyx")
    settings = SourceSettings(zarr_root=str(tmp_path))
    src = ZarrSource(settings, CountingCatalog(settings))
    try:
        impatient = asyncio.ensure_future(src.meta(82))
        await asyncio.sleep(0)
        impatient.cancel()
        meta = await src.meta(82)
        assert meta.size_c == 2
    finally:
        await src.aclose()


async def test_big_read_does_not_block_the_loop(demo_dir: tuple[Path, Any]) -> None:
    root, _ = demo_dir
    settings = SourceSettings(zarr_root=str(root))
    src = open_source(settings)
    try:
        meta = await src.meta(1001)
        lv = meta.levels[1]
        sel = Selection(1, 0, 0, 1, (0, 1, 2), Box(0, 0, lv.size_x, lv.size_y))
        worst = 0.0
        done = False

        async def ticker() -> None:
            nonlocal worst
            while not done:
                t0 = time.perf_counter()
                await asyncio.sleep(0.01)
                worst = max(worst, time.perf_counter() - t0 - 0.01)

        tick = asyncio.ensure_future(ticker())
        await asyncio.sleep(0.02)
        data = await src.read(1001, sel)
        done = True
        await tick
        assert data.shape == (3, 1, lv.size_y, lv.size_x)
        assert worst < 0.1, f"event loop stalled for {worst * 1000:.0f} ms"
    finally:
        await src.aclose()


async def test_level_with_downsampled_z(source: ZarrSource, tmp_path: Path) -> None:
    """NGFF allows 3D pyramids: a level's planes map from full-resolution z."""
    full = ramp((4, 64, 64), "uint16")
    half = np.ascontiguousarray(full[::2, ::2, ::2])
    attrs = {"multiscales": [multiscales("zyx", 2, version="0.4")]}
    write_v2(tmp_path / "91.zarr", [full, half], attrs, chunks=[(1, 32, 32), (1, 32, 32)])
    got = await source.read(91, Selection(1, 0, 0, 4, (0,), Box(0, 0, 32, 32)))
    np.testing.assert_array_equal(got[0], half[[0, 0, 1, 1]])
    got = await source.read(91, Selection(1, 0, 3, 4, (0,), Box(5, 6, 7, 8)))
    np.testing.assert_array_equal(got[0], half[1:2, 6:14, 5:12])


@pytest.fixture
def doomed_server(tmp_path: Path) -> Iterator[tuple[Path, str, subprocess.Popen[bytes]]]:
    """A static HTTP server of our own that a test may stop: (directory, URL, process)."""
    root = tmp_path / "served"
    root.mkdir()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", STATIC_SERVER, str(root), str(port)])
    try:
        wait_for_port(port, proc)
        yield root, f"http://127.0.0.1:{port}", proc
    finally:
        proc.kill()
        proc.wait(10)


async def test_cached_metadata_survives_an_outage(
    doomed_server: tuple[Path, str, subprocess.Popen[bytes]],
) -> None:
    root, url, server = doomed_server
    write_image(root / "92.zarr", ramp((2, 64, 64), "uint16"), "cyx")
    src = open_source(SourceSettings(zarr_root=url, rescan_interval_s=0))
    try:
        first = await src.meta(92)
        server.kill()
        await asyncio.to_thread(server.wait, 10)
        assert await src.meta(92) is first  # revalidation failed: last good metadata
        with pytest.raises(errors.SourceUnavailable):
            await src.read(92, Selection(0, 0, 0, 1, (0,), Box(0, 0, 8, 8)))
    finally:
        await src.aclose()
