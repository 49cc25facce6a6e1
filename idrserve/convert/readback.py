"""Read a finished output back through idrserve's own Zarr source before it is renamed.

What the server will see: the NGFF documents parse, the sizes, levels, dtype and channels
are what was planned, a tile of every level reads, and level 0's first tile holds the
input's pixels.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from idrserve import errors
from idrserve.catalog import Location
from idrserve.convert.options import ConvertError
from idrserve.convert.plan import Layout
from idrserve.model import Box, Selection
from idrserve.settings import SourceSettings
from idrserve.sources.zarr import ZarrSource

_IMAGE_ID = 1


class _One:
    """A catalog of one image: the output being checked."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def locate(self, image_id: int) -> Location | None:
        return self._path if image_id == _IMAGE_ID else None


def read_back(root: Path, layout: Layout, first_tile: np.ndarray) -> None:
    """Raise `ConvertError` when the server would not read what was written.

    `first_tile` is level 0's top-left tile of plane t=0, z=0, every channel, (c, h, w),
    as read from the input.
    """
    try:
        asyncio.run(_read_back(root, layout, first_tile))
    except errors.IdrServeError as exc:
        raise ConvertError(f"the output does not read back through idrserve: {exc}") from exc


async def _read_back(root: Path, layout: Layout, first_tile: np.ndarray) -> None:
    source = ZarrSource(SourceSettings(rescan_interval_s=0), _One(root))
    try:
        meta = await source.meta(_IMAGE_ID)
        found = (meta.size_t, meta.size_c, meta.size_z, meta.size_y, meta.size_x, meta.dtype)
        lv0 = layout.levels[0]
        expected = (layout.size_t, layout.size_c, layout.size_z, lv0.height, lv0.width)
        if found != (*expected, layout.dtype.name) or len(meta.levels) != len(layout.levels):
            raise ConvertError(f"the output reads back as {found}, not {expected}")
        for level, lv in enumerate(layout.levels):
            box = Box(0, 0, min(layout.chunk, lv.width), min(layout.chunk, lv.height))
            sel = Selection(level, 0, 0, 1, tuple(range(layout.size_c)), box)
            tile = await source.read(_IMAGE_ID, sel)
            if tile.shape != (layout.size_c, 1, box.h, box.w):
                raise ConvertError(f"level {level} reads back as {tile.shape}")
            nan = layout.dtype.kind == "f"
            if level == 0 and not np.array_equal(tile[:, 0], first_tile, equal_nan=nan):
                raise ConvertError("level 0 does not read back as the input's pixels")
    finally:
        await source.aclose()
