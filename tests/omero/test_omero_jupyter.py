"""Notebook clients on OMERO-backed images: `/zarr/` and `/api/v1/` over the stand-in OMERO.

An OMERO image has no stored chunks, so its store view is generated from `getTile` reads; these
tests read every level of each mirrored image through zarr-python, dask and numpy.load over
real HTTP and compare it, element for element, with the same image's own OME-Zarr.
"""

from __future__ import annotations

import asyncio
import io
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from idrserve.app import create_app
from idrserve.catalog import Catalog
from idrserve.model import Box, Selection
from idrserve.settings import SourceSettings, load_settings
from idrserve.sources.zarr import ZarrSource
from tests.omero.conftest import MIRRORED, Worker, omero_id


async def _expected(zarr_dir: Path, zarr_id: int) -> list[np.ndarray]:
    """Every level of the Zarr image as a 5D t,c,z,y,x array, read by idrserve's Zarr source."""
    settings = SourceSettings(zarr_root=str(zarr_dir))
    source = ZarrSource(settings, Catalog(settings))
    try:
        meta = await source.meta(zarr_id)
        levels = []
        for level, lv in enumerate(meta.levels):
            box = Box(0, 0, lv.size_x, lv.size_y)
            channels = tuple(range(meta.size_c))
            per_t = [
                await source.read(zarr_id, Selection(level, t, 0, meta.size_z, channels, box))
                for t in range(meta.size_t)
            ]
            levels.append(np.stack(per_t))
        return levels
    finally:
        await source.aclose()


@pytest.mark.parametrize("zarr_id", MIRRORED)
async def test_zarr_dask_and_numpy_read_omero_images_like_their_zarr(
    worker: Worker, zarr_dir: Path, aiohttp_client: Callable[..., Any], zarr_id: int
) -> None:
    import dask.array as da
    import zarr

    groups: dict[str, Any] = {
        "source": {"zarr_root": str(zarr_dir)},
        "omero": {"worker_url": worker.url},
    }
    client = await aiohttp_client(create_app(load_settings(groups)))
    base = str(client.make_url("")).rstrip("/")
    oid = omero_id(zarr_id)
    want = await _expected(zarr_dir, zarr_id)

    def read_all() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        group = zarr.open_group(f"{base}/zarr/{oid}.zarr", mode="r")
        got = [np.asarray(group[str(level)][:]) for level in range(len(want))]
        lazy = da.from_zarr(f"{base}/zarr/{oid}.zarr/{len(want) - 1}").compute()
        url = f"{base}/api/v1/images/{oid}/region?level=0&t=0&z=0&y=0:40&x=3:50&format=npy"
        with urllib.request.urlopen(url) as resp:
            region = np.load(io.BytesIO(resp.read()))
        return got, lazy, region

    got, lazy, region = await asyncio.to_thread(read_all)
    for level, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == w.dtype, level
        np.testing.assert_array_equal(g, w, err_msg=f"level {level}")
    np.testing.assert_array_equal(lazy, want[-1])
    np.testing.assert_array_equal(region, want[0][0, :, 0, 0:40, 3:50])
