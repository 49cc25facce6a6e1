"""Every in-process cache and pool is bounded in bytes, and admission slots are honest."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from idrserve.admission import Admission
from idrserve.catalog import Catalog
from idrserve.errors import Overloaded
from idrserve.http.fastpath import MEMO_OVERHEAD, UrlIndex
from idrserve.service import in_pool
from idrserve.settings import load_settings
from idrserve.sources.zarr import ZarrSource, record_cost


@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory, demo_data: Path) -> Path:
    """120 image ids, each a link to one of the demo images."""
    root = tmp_path_factory.mktemp("many")
    for i in range(120):
        os.symlink(demo_data / f"{(1001, 1003, 1004, 1006)[i % 4]}.zarr", root / f"{5000 + i}.zarr")
    return root


async def test_metadata_cache_is_bounded_in_bytes(many_images: Path) -> None:
    limit = 100 * 1024
    settings = load_settings(
        {"source": {"zarr_root": str(many_images), "meta_cache_max_bytes": limit}}
    )
    source = ZarrSource(settings.source, Catalog(settings.source))
    try:
        for i in range(60):
            await source.meta(5000 + i)
            assert source.meta_cache_bytes <= limit
        kept = len(source._records)
        assert 2 <= kept < 60
        assert source.meta_cache_bytes == sum(r.cost for r in source._records.values())
        assert (await source.meta(5000)).image_id == 5000  # evicted ones load again
    finally:
        await source.aclose()


async def test_record_cost_is_not_an_underestimate(many_images: Path) -> None:
    """tracemalloc: what a loaded image record really holds ≤ what it is charged."""
    settings = load_settings({"source": {"zarr_root": str(many_images)}})
    source = ZarrSource(settings.source, Catalog(settings.source))
    try:
        await source.meta(5000)  # imports, catalog scan, first-use caches
        await source.meta(5001)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(2, 82):
            await source.meta(5000 + i)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        charged = sum(source._records[5000 + i].cost for i in range(2, 82))
        print(f"80 records: {used / 80:.0f} B measured, {charged / 80:.0f} B charged each")
        assert used <= charged
        assert record_cost(0) > 0
    finally:
        await source.aclose()


def test_url_index_is_bounded_in_bytes() -> None:
    index = UrlIndex(max_entries=1_000_000, max_bytes=64 * 1024)
    for i in range(2000):
        url = f"/webgateway/render_image_region/1/0/0/?tile=0,{i},0&c=" + "1|0:255$FF0000," * 40
        index.remember(url, f"1:0:{i:032x}", 1, "dv", 0)
        assert index.bytes <= index.max_bytes
    assert 0 < len(index) < 2000
    per = index.bytes / len(index)
    assert per > MEMO_OVERHEAD + 600  # long URLs are charged by their length
    # the most recent URL is still there, the oldest went first
    assert index.lookup(url) is not None
    assert index.lookup("/webgateway/render_image_region/1/0/0/?tile=0,0,0&c=") is None


async def test_render_slots_refuse_beyond_the_bound() -> None:
    admission = Admission(max_requests=10, max_renders=2)
    with admission.render(), admission.render():
        with pytest.raises(Overloaded) as info, admission.render():
            pass
        assert info.value.status == 503 and info.value.retry_after_s == 1
    assert admission.renders == 0 and admission.refused_renders == 1


async def test_render_slot_outlives_a_cancelled_request_until_its_thread_finishes() -> None:
    """A thread cannot be interrupted: its slot stays taken until it is really done, so
    expired deadlines cannot pile zombie jobs into the pool behind the bound."""
    admission = Admission(max_requests=10, max_renders=1)
    release = threading.Event()
    pool = ThreadPoolExecutor(1)

    async def request() -> None:
        with admission.render():
            await in_pool(pool, lambda: release.wait(10))

    task = asyncio.create_task(request())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert admission.renders == 1  # the job still runs
    with pytest.raises(Overloaded), admission.render():
        pass
    release.set()
    for _ in range(100):
        if admission.renders == 0:
            break
        await asyncio.sleep(0.01)
    assert admission.renders == 0
    pool.shutdown()
