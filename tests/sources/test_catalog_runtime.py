"""The server's `Catalog`: loading once in the background, swaps, roots, the paged listing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from idrserve import errors
from idrserve.catalog import Catalog
from idrserve.catalog.locate import INLINE_BUILD_BYTES, _union_page, index_path_for
from idrserve.settings import SourceSettings
from tests.sources.test_catalog import make_zarr


def big_csv(path: Path, n: int, start: int = 1_000_000, prefix: str = "v0.4") -> Path:
    """A catalog file over the in-thread threshold, so it is indexed by a child process."""
    with open(path, "w") as f:
        f.write("id,path\n")
        f.writelines(f"{i},{prefix}/idr{i % 50:04d}A/{i}.zarr\n" for i in range(start, start + n))
    assert path.stat().st_size > INLINE_BUILD_BYTES
    return path


async def test_catalog_file_wins_and_unknown_is_none(tmp_path: Path) -> None:
    make_zarr(tmp_path / "root" / "100.zarr")
    make_zarr(tmp_path / "root" / "101.zarr")
    (tmp_path / "cat.json").write_text(json.dumps({"100": "elsewhere/100.zarr"}))
    settings = SourceSettings(zarr_root=str(tmp_path / "root"), catalog=tmp_path / "cat.json")
    catalog = Catalog(settings)
    assert await catalog.locate(100) == tmp_path / "elsewhere" / "100.zarr"
    assert await catalog.locate(101) == tmp_path / "root" / "101.zarr"
    assert await catalog.locate(102) is None
    page = await catalog.page(0, 10)
    assert (page.ids, page.total) == ([100, 101], 2)
    await catalog.aclose()


async def test_rescan_finds_new_images(tmp_path: Path) -> None:
    make_zarr(tmp_path / "1.zarr")
    eager = Catalog(SourceSettings(zarr_root=str(tmp_path), rescan_interval_s=0))
    lazy = Catalog(SourceSettings(zarr_root=f"file://{tmp_path}", rescan_interval_s=3600))
    assert await eager.locate(1) == tmp_path / "1.zarr"
    assert await lazy.locate(1) == tmp_path / "1.zarr"
    assert await eager.locate(2) is None
    assert await lazy.locate(2) is None
    make_zarr(tmp_path / "deeper" / "2.zarr")
    assert await eager.locate(2) == tmp_path / "deeper" / "2.zarr"
    assert await lazy.locate(2) is None  # not rescanned within the interval
    assert (await eager.page()).ids == [1, 2]


async def test_concurrent_lookups_scan_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(5):
        make_zarr(tmp_path / f"{i}.zarr")
    catalog = Catalog(SourceSettings(zarr_root=str(tmp_path)))
    with caplog.at_level(logging.INFO, "idrserve.catalog"):
        got = await asyncio.gather(*(catalog.locate(i) for i in range(5)))
    assert got == [tmp_path / f"{i}.zarr" for i in range(5)]
    assert caplog.text.count("scanned") == 1


async def test_no_root_and_no_file() -> None:
    catalog = Catalog(SourceSettings())
    assert await catalog.locate(1) is None
    assert (await catalog.page()).total == 0


async def test_http_root_probes_on_first_use(http_root: tuple[Path, str]) -> None:
    root, url = http_root
    base = root / "probe"
    shutil.rmtree(base, ignore_errors=True)
    make_zarr(base / "500.zarr")
    catalog = Catalog(SourceSettings(zarr_root=f"{url}/probe/", rescan_interval_s=0))
    assert await catalog.locate(500) == f"{url}/probe/500.zarr"
    assert await catalog.locate(501) is None
    assert (await catalog.page()).ids == [500]
    make_zarr(base / "501.zarr")
    assert await catalog.locate(501) == f"{url}/probe/501.zarr"
    assert (await catalog.page()).ids == [500, 501]


async def test_study_prefixes_are_roots(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    root, url = http_root
    shutil.rmtree(root / "idr0099", ignore_errors=True)
    make_zarr(root / "idr0099" / "77.zarr")
    make_zarr(tmp_path / "studies" / "idr0062A" / "sub" / "6001240.zarr")
    (tmp_path / "c.csv").write_text(
        f"id,path\nstudy:idr0062A,studies/idr0062A\nstudy:idr0099,{url}/idr0099/\n5,x/5.zarr\n"
    )
    catalog = Catalog(SourceSettings(catalog=tmp_path / "c.csv"))
    assert await catalog.locate(6001240) == tmp_path / "studies/idr0062A/sub/6001240.zarr"
    assert await catalog.locate(77) == f"{url}/idr0099/77.zarr"
    assert await catalog.locate(78) is None
    page = await catalog.page(0, 10)
    assert page.ids == [5, 77, 6001240]
    await catalog.aclose()


async def test_unusable_catalog_file_keeps_the_root(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_zarr(tmp_path / "root" / "3.zarr")
    (tmp_path / "bad.json").write_text("{nope")
    for path in (tmp_path / "bad.json", tmp_path / "missing.csv"):
        catalog = Catalog(SourceSettings(zarr_root=str(tmp_path / "root"), catalog=path))
        assert await catalog.locate(3) == tmp_path / "root" / "3.zarr"
        assert await catalog.locate(4) is None
        assert catalog.state == "failed"
        summary = catalog.summary()
        assert "see the server log" in summary["error"]
        assert str(tmp_path) not in json.dumps(summary)
        assert str(path) in json.dumps(catalog.summary(expose=True))
        await catalog.aclose()
    assert "unusable" in caplog.text


async def test_loading_in_a_child_process_once_for_fifty_first_requests(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server's catalog: 503 CatalogLoading while a child process indexes it, one build."""
    csv_path = big_csv(tmp_path / "big.csv", 150_000)
    settings = SourceSettings(catalog=csv_path, catalog_index_dir=tmp_path / "idx")
    catalog = Catalog(settings, wait_for_load=False)
    with caplog.at_level(logging.INFO, "idrserve.catalog"):
        catalog.start()
        outcomes = await asyncio.gather(
            *(catalog.locate(1_000_000 + i) for i in range(50)), return_exceptions=True
        )
        assert all(isinstance(o, errors.CatalogLoading) for o in outcomes)
        assert outcomes[0].status == 503 and outcomes[0].retry_after_s > 0  # type: ignore[union-attr]
        assert catalog.summary()["state"] == "loading"
        with pytest.raises(errors.CatalogLoading):
            await catalog.page(0, 10)
        await asyncio.wait_for(catalog.wait_loaded(), 60)
    assert catalog.state == "ready"
    assert await catalog.locate(1_000_007) == tmp_path / "v0.4" / "idr0007A" / "1000007.zarr"
    assert caplog.text.count("indexing") == 1
    assert caplog.text.count("catalog ready") == 1
    assert index_path_for(csv_path, tmp_path / "idx").exists()
    await catalog.aclose()

    # A restart with the file unchanged reuses the index: no second child process.
    caplog.clear()
    again = Catalog(settings, wait_for_load=False)
    with caplog.at_level(logging.INFO, "idrserve.catalog"):
        again.start()
        await asyncio.wait_for(again.wait_loaded(), 30)
    assert "indexing" not in caplog.text
    assert len(again.index) == 150_000
    await again.aclose()


async def test_two_workers_build_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    csv_path = big_csv(tmp_path / "big.csv", 150_000)
    settings = SourceSettings(catalog=csv_path, catalog_index_dir=tmp_path / "idx")
    workers = [Catalog(settings, wait_for_load=False) for _ in range(2)]
    with caplog.at_level(logging.INFO, "idrserve.catalog"):
        for w in workers:
            w.start()
        await asyncio.wait_for(asyncio.gather(*(w.wait_loaded() for w in workers)), 60)
    assert [w.state for w in workers] == ["ready", "ready"]
    assert caplog.text.count("indexing") == 1
    for w in workers:
        await w.aclose()


async def test_a_changed_catalog_is_swapped_while_lookups_run(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("id,path\n" + "".join(f"{i},old/{i}.zarr\n" for i in range(1, 2001)))
    settings = SourceSettings(catalog=path, catalog_check_interval_s=0.05)
    catalog = Catalog(settings, wait_for_load=False)
    catalog.start()
    await catalog.wait_loaded()
    seen: set[str] = set()
    stop = asyncio.Event()

    async def lookups() -> None:
        while not stop.is_set():
            for i in (1, 1000, 2000):
                found = await catalog.locate(i)
                assert found is not None  # never a half-built catalog
                seen.add(Path(found).parent.name)
            await asyncio.sleep(0)

    runner = asyncio.ensure_future(lookups())
    await asyncio.sleep(0.1)
    tmp = tmp_path / "c.csv.new"
    tmp.write_text("id,path\n" + "".join(f"{i},new/{i}.zarr\n" for i in range(1, 2001)))
    os.replace(tmp, path)
    for _ in range(100):
        await asyncio.sleep(0.05)
        if await catalog.locate(1) == tmp_path / "new" / "1.zarr":
            break
    await asyncio.sleep(0.1)
    stop.set()
    await runner
    assert seen == {"old", "new"}
    assert await catalog.locate(2000) == tmp_path / "new" / "2000.zarr"

    # A reload that fails keeps the catalog that works.
    path.write_text("{not json")
    catalog.request_reload()
    await asyncio.sleep(0.5)
    assert await catalog.locate(5) == tmp_path / "new" / "5.zarr"
    assert catalog.summary()["state"] == "ready" and "error" in catalog.summary()
    await catalog.aclose()


async def test_request_reload_rereads_an_unchanged_looking_file(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("id,path\n1,a.zarr\n")
    catalog = Catalog(SourceSettings(catalog=path, catalog_check_interval_s=3600))
    assert await catalog.locate(1) == tmp_path / "a.zarr"
    stat = path.stat()
    path.write_text("id,path\n1,b.zarr\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime
    catalog.request_reload()
    for _ in range(50):
        await asyncio.sleep(0.02)
        if await catalog.locate(1) == tmp_path / "b.zarr":
            break
    assert await catalog.locate(1) == tmp_path / "b.zarr"
    await catalog.aclose()


def test_union_page_matches_a_sorted_merge() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        values = rng.choice(1000, rng.integers(0, 60), replace=False)
        cut = rng.random(len(values)) < 0.5
        a, b = np.sort(values[cut]), np.sort(values[~cut])
        merged = sorted(values.tolist())
        offset, limit = int(rng.integers(0, 70)), int(rng.integers(1, 20))
        assert _union_page(a, b, offset, limit) == merged[offset : offset + limit]
