"""The conformance suite every pixel source passes: shapes, dtypes, levels, edges.

How a new source joins it: CONTRIBUTING.md#adding-a-pixel-source.

Subclass `SourceConformance` in a `test_*.py` module and provide an async `case` fixture that
writes an image and returns a `Case` holding the source and the arrays exactly as written. Each
test then compares what the source returns with the writer's arrays, slice for slice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import pytest

from idrserve import errors
from idrserve.model import Box, Selection
from idrserve.sources.base import PixelSource

UNKNOWN_ID = 987654321


@dataclass
class Case:
    source: PixelSource
    image_id: int
    axes: str  # roles of the written arrays, e.g. "czyx"
    levels: list[np.ndarray]  # as written, in array order
    tiles: list[tuple[int, int]] = field(default_factory=list)  # (tile_x, tile_y) per level

    def tczyx(self, level: int) -> np.ndarray:
        """The written level as a native-endian t,c,z,y,x array."""
        data = self.levels[level]
        order = list(self.axes)
        for role in "tczyx":
            if role not in order:
                data = data[np.newaxis]
                order.insert(0, role)
        data = np.transpose(data, [order.index(r) for r in "tczyx"])
        return data.astype(data.dtype.newbyteorder("="))

    def expected(self, sel: Selection) -> np.ndarray:
        full = self.tczyx(sel.level)[sel.t]
        b = sel.box
        out = full[list(sel.channels), sel.z_start : sel.z_stop, b.y : b.y + b.h, b.x : b.x + b.w]
        return out


class SourceConformance:
    """Tests shared by every backend; subclasses override the `case` fixture."""

    @pytest.fixture
    async def case(self) -> Case:
        raise NotImplementedError

    async def check(self, case: Case, sel: Selection) -> None:
        got = await case.source.read(case.image_id, sel)
        want = case.expected(sel)
        assert got.shape == (len(sel.channels), sel.z_stop - sel.z_start, sel.box.h, sel.box.w)
        assert got.dtype == want.dtype
        assert got.dtype.isnative
        assert got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)

    async def test_meta_matches_written_arrays(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        full = case.tczyx(0)
        assert (meta.size_t, meta.size_c, meta.size_z, meta.size_y, meta.size_x) == full.shape
        assert meta.dtype == full.dtype.name
        assert len(meta.levels) == len(case.levels)
        for i, lv in enumerate(meta.levels):
            shape = case.tczyx(i).shape
            assert (lv.size_y, lv.size_x) == shape[-2:]
        if case.tiles:
            assert [(lv.tile_x, lv.tile_y) for lv in meta.levels] == case.tiles
        assert len(meta.channels) == meta.size_c
        assert 0 <= meta.default_z < meta.size_z
        assert 0 <= meta.default_t < meta.size_t
        assert meta.data_version
        assert meta.data_version != "0"

    async def test_every_level_whole(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        for level, lv in enumerate(meta.levels):
            for t in range(meta.size_t):
                sel = Selection(
                    level, t, 0, meta.size_z, tuple(range(meta.size_c)),
                    Box(0, 0, lv.size_x, lv.size_y),
                )  # fmt: skip
                await self.check(case, sel)

    async def test_random_boxes(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        rng = np.random.default_rng(42)
        for _ in range(25):
            level = int(rng.integers(0, len(meta.levels)))
            lv = meta.levels[level]
            x, y = int(rng.integers(0, lv.size_x)), int(rng.integers(0, lv.size_y))
            w = int(rng.integers(1, lv.size_x - x + 1))
            h = int(rng.integers(1, lv.size_y - y + 1))
            z0 = int(rng.integers(0, meta.size_z))
            z1 = int(rng.integers(z0 + 1, meta.size_z + 1))
            n = int(rng.integers(1, meta.size_c + 1))
            channels = tuple(int(c) for c in rng.permutation(meta.size_c)[:n])
            t = int(rng.integers(0, meta.size_t))
            await self.check(case, Selection(level, t, z0, z1, channels, Box(x, y, w, h)))

    async def test_edges_and_corners(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        last_t, all_c = meta.size_t - 1, tuple(range(meta.size_c))
        for level, lv in enumerate(meta.levels):
            sx, sy = lv.size_x, lv.size_y
            boxes = [
                Box(0, 0, 1, 1),
                Box(sx - 1, sy - 1, 1, 1),
                Box(sx - 1, 0, 1, sy),  # last column
                Box(0, sy - 1, sx, 1),  # last row
                Box(max(0, sx - 37), max(0, sy - 29), min(37, sx), min(29, sy)),
                # Across the first chunk boundary, as a tile straddling two chunks would
                # (a level smaller than its chunk: across its last pixels).
                Box(
                    max(0, min(lv.tile_x, sx) - 3),
                    max(0, min(lv.tile_y, sy) - 2),
                    min(6, sx),
                    min(5, sy),
                ),
            ]
            for b in boxes:
                w, h = min(b.w, sx - b.x), min(b.h, sy - b.y)
                box = Box(b.x, b.y, w, h)
                await self.check(case, Selection(level, last_t, 0, meta.size_z, all_c, box))

    async def test_channel_order_follows_selection(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        lv = meta.levels[-1]
        channels = tuple(reversed(range(meta.size_c)))
        sel = Selection(len(meta.levels) - 1, 0, 0, 1, channels, Box(0, 0, lv.size_x, lv.size_y))
        await self.check(case, sel)

    async def test_concurrent_reads(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        lv = meta.levels[0]
        sels = [
            Selection(0, 0, z % meta.size_z, z % meta.size_z + 1, (z % meta.size_c,),
                      Box(0, 0, min(lv.size_x, 64 + z), min(lv.size_y, 50)))
            for z in range(12)
        ]  # fmt: skip
        await asyncio.gather(*(self.check(case, sel) for sel in sels))

    async def test_unknown_image_is_not_found(self, case: Case) -> None:
        with pytest.raises(errors.NotFound):
            await case.source.meta(UNKNOWN_ID)
        with pytest.raises(errors.NotFound):
            await case.source.read(UNKNOWN_ID, Selection(0, 0, 0, 1, (0,), Box(0, 0, 1, 1)))

    async def test_out_of_range_selection_is_not_found(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        lv = meta.levels[0]
        ok = Selection(0, 0, 0, 1, (0,), Box(0, 0, 1, 1))
        bad = [
            Selection(len(meta.levels), 0, 0, 1, (0,), Box(0, 0, 1, 1)),
            Selection(0, meta.size_t, 0, 1, (0,), Box(0, 0, 1, 1)),
            Selection(0, 0, 0, meta.size_z + 1, (0,), Box(0, 0, 1, 1)),
            Selection(0, 0, 1, 1, (0,), Box(0, 0, 1, 1)),
            Selection(0, 0, 0, 1, (meta.size_c,), Box(0, 0, 1, 1)),
            Selection(0, 0, 0, 1, (), Box(0, 0, 1, 1)),
            Selection(0, 0, 0, 1, (0,), Box(lv.size_x, 0, 1, 1)),
            Selection(0, 0, 0, 1, (0,), Box(0, 0, lv.size_x, lv.size_y + 1)),
            Selection(0, 0, 0, 1, (0,), Box(-1, 0, 2, 1)),
            Selection(0, 0, 0, 1, (0,), Box(0, 0, 0, 1)),
        ]
        await case.source.read(case.image_id, ok)
        for sel in bad:
            with pytest.raises(errors.NotFound):
                await case.source.read(case.image_id, sel)
