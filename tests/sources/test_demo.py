"""The demo set: every image opens as written, writing is deterministic and idempotent."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from idrserve.demo import DEMO_VERSION, MARKER, DemoImage, write_demo
from idrserve.model import Box, ColorModel, Selection
from idrserve.settings import SourceSettings
from idrserve.sources import open_source
from idrserve.sources.zarr import ZarrSource

# id: (size_x, size_y, size_z, size_c, size_t, levels, dtype, labels)
EXPECTED = {
    1001: (4096, 4096, 1, 3, 1, 6, "uint16", ["DAPI", "GFP", "mCherry"]),
    1002: (512, 512, 9, 2, 1, 3, "uint16", ["Hoechst", "Spots"]),
    1003: (600, 400, 1, 1, 1, 1, "uint8", ["0"]),
    1004: (1024, 768, 1, 2, 1, 2, "float32", ["Ratio", "Counts"]),
    1005: (2048, 2048, 1, 2, 1, 3, "uint16", ["DAPI", "Actin"]),
    1006: (256, 192, 3, 2, 3, 2, "uint16", ["Moving", "Inverse"]),
}


@pytest.fixture
async def demo_source(demo_dir: tuple[Path, list[DemoImage]]) -> AsyncIterator[ZarrSource]:
    src = open_source(SourceSettings(zarr_root=str(demo_dir[0])))
    yield src
    await src.aclose()


def test_demo_list(demo_dir: tuple[Path, list[DemoImage]]) -> None:
    _, images = demo_dir
    assert [im.id for im in images] == sorted(EXPECTED)
    assert all(im.image_id == im.id and im.name and im.description for im in images)


async def test_every_demo_image_opens_as_written(
    demo_source: ZarrSource, demo_dir: tuple[Path, list[DemoImage]]
) -> None:
    for image in demo_dir[1]:
        meta = await demo_source.meta(image.id)
        sx, sy, sz, sc, st, n_levels, dtype, labels = EXPECTED[image.id]
        got = (meta.size_x, meta.size_y, meta.size_z, meta.size_c, meta.size_t, len(meta.levels))
        assert got == (sx, sy, sz, sc, st, n_levels)
        assert meta.dtype == dtype
        assert meta.name == image.name
        assert meta.description == image.description
        assert [ch.label for ch in meta.channels] == labels
        for i, lv in enumerate(meta.levels):  # floor-halved
            assert (lv.size_x, lv.size_y) == (sx >> i, sy >> i)
            assert (lv.tile_x, lv.tile_y) == (min(256, sx >> i), min(256, sy >> i))
        last = meta.levels[-1]
        z, box = meta.default_z, Box(0, 0, last.size_x, last.size_y)
        sel = Selection(len(meta.levels) - 1, meta.default_t, z, z + 1, tuple(range(sc)), box)
        data = await demo_source.read(image.id, sel)
        assert data.shape == (sc, 1, last.size_y, last.size_x)
        assert np.ptp(data) > 0  # not blank


async def test_demo_rendering_metadata(demo_source: ZarrSource) -> None:
    cells = await demo_source.meta(1001)
    assert [ch.color[:3] for ch in cells.channels] == [(0, 0, 255), (0, 255, 0), (255, 0, 0)]
    assert all(ch.active for ch in cells.channels)
    assert cells.default_model is ColorModel.COLOR
    assert cells.pixel_size == pytest.approx((0.325, 0.325, None))
    zstack = await demo_source.meta(1002)
    assert zstack.default_z == 4
    assert zstack.pixel_size == pytest.approx((0.2, 0.2, 1.0))
    plain = await demo_source.meta(1003)  # no omero block: defaults
    assert plain.default_model is ColorModel.GREYSCALE
    assert (plain.channels[0].start, plain.channels[0].end) == (0, 255)
    floats = await demo_source.meta(1004)
    assert [(ch.start, ch.end) for ch in floats.channels] == [(-1.0, 1.0), (25.5, 600.5)]


async def test_timelapse_blob_moves_with_t(demo_source: ZarrSource) -> None:
    columns = []
    for t in range(3):
        sel = Selection(0, t, 1, 2, (0,), Box(0, 0, 256, 192))
        plane = (await demo_source.read(1006, sel))[0, 0].astype(np.float64)
        columns.append(int(np.argmax(plane.sum(axis=0))))
    assert columns[0] < columns[1] < columns[2]


def tree_digest(root: Path, sample_every: int) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    picked = [p for i, p in enumerate(files) if i % sample_every == 0 or p.name.startswith(".z")]
    picked += [p for p in files if p.name == "zarr.json"]
    return {str(p.relative_to(root)): hashlib.blake2b(p.read_bytes()).hexdigest() for p in picked}


def test_demo_is_deterministic(
    demo_dir: tuple[Path, list[DemoImage]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    again = tmp_path_factory.mktemp("demo-again")
    write_demo(again)
    first, second = tree_digest(demo_dir[0], 7), tree_digest(again, 7)
    assert len(first) > 100
    assert first == second


def test_demo_is_idempotent_and_repairs_partial_images(tmp_path: Path) -> None:
    images = write_demo(tmp_path)
    marker = tmp_path / "1003.zarr" / MARKER
    assert marker.read_text() == DEMO_VERSION
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.zarr/" + MARKER)}
    assert write_demo(tmp_path) == images
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.zarr/" + MARKER)} == before
    # An image without its marker (interrupted write) is written again.
    marker.unlink()
    (tmp_path / "1003.zarr" / "0" / "0" / "0").unlink()
    write_demo(tmp_path)
    assert marker.exists()
    assert (tmp_path / "1003.zarr" / "0" / "0" / "0").exists()
    assert not list(tmp_path.glob(".*.tmp"))
