"""Every background task the app starts has an owner that stops it when the app closes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from idrserve.app import create_app
from idrserve.settings import load_settings
from tests.http.conftest import P, S


async def test_closing_the_app_leaves_no_task_behind(
    zarr_root: Path, tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    """A catalog file (loader, watcher), a disk tier (maintenance, writes), renders shared
    through single flights and Zarr loads: all stopped by the app's cleanup."""
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(f"id,path\n{P},{zarr_root}/study/{P}.zarr\n")
    settings = load_settings(
        {
            "source": {"zarr_root": str(zarr_root), "catalog": str(catalog)},
            "cache": {"dir": str(tmp_path / "cache"), "dir_max_bytes": 1 << 26},
        }
    )
    before = asyncio.all_tasks()
    client: TestClient = await aiohttp_client(create_app(settings))
    tile = f"/webgateway/render_image_region/{P}/0/0/?tile=0,0,0,256,256"
    statuses = await asyncio.gather(*(client.get(tile) for _ in range(4)))
    assert [r.status for r in statuses] == [200] * 4
    assert (await client.get(tile)).headers["X-Cache"] == "memory"
    # Leave work in flight: a render and a metadata load nobody waits for any more.
    abandoned = [
        asyncio.create_task(client.get(f"/webgateway/render_image_region/{P}/0/0/?tile=1,1,1")),
        asyncio.create_task(client.get(f"/webgateway/imgData/{S}/")),
    ]
    await asyncio.sleep(0.01)
    started = {t.get_name() for t in asyncio.all_tasks() - before}
    await client.close()
    for task in abandoned:
        task.cancel()
    await asyncio.gather(*abandoned, return_exceptions=True)
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert left == set(), f"started {sorted(started)}, left {[t.get_name() for t in left]}"
