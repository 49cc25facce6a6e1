"""Catalog: CSV/JSON files, nested scans, rescans, remote roots probed over real HTTP."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from idrserve.catalog import Catalog, open_object_store, read_catalog, scan_root
from idrserve.settings import SourceSettings
from tests.sources.conftest import multiscales, ramp, write_v2


def make_zarr(path: Path) -> Path:
    """A minimal valid NGFF 0.4 image (the catalog only looks at names, the probe at metadata)."""
    attrs = {"multiscales": [multiscales("yx", 1, version="0.4")]}
    write_v2(path, [ramp((8, 8), "uint8")], attrs, chunks=[(8, 8)])
    return path


def test_csv_id_path_with_relative_absolute_and_urls(tmp_path: Path) -> None:
    sub = tmp_path / "cat"
    sub.mkdir()
    (sub / "catalog.csv").write_text(
        "id,path\n"
        "1,images/a.zarr\n"
        f"2,{tmp_path}/b.zarr\n"
        "3,https://example.org/idr/zarr/v0.4/3.zarr\n"
        "4,s3://idr/zarr/v0.5/4.zarr\n"
        "5,file:///data/5.zarr\n"
        "x,skipped.zarr\n"
        "6,\n"
    )
    got = read_catalog(sub / "catalog.csv")
    assert got == {
        1: (sub / "images" / "a.zarr").resolve(),
        2: tmp_path / "b.zarr",
        3: "https://example.org/idr/zarr/v0.4/3.zarr",
        4: "s3://idr/zarr/v0.5/4.zarr",
        5: Path("/data/5.zarr"),
    }


def test_csv_image_id_uri_header(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("image_id,uri\n10, ./x.zarr \n")
    assert read_catalog(tmp_path / "c.csv") == {10: (tmp_path / "x.zarr").resolve()}


def test_json_object_and_list(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"7": "seven.zarr", "nope": "x.zarr"}))
    assert read_catalog(tmp_path / "a.json") == {7: (tmp_path / "seven.zarr").resolve()}
    rows = [
        {"id": 8, "path": "eight.zarr"},
        {"image_id": "9", "uri": "https://h/9.zarr"},
        {"path": "no-id.zarr"},
        "junk",
    ]
    (tmp_path / "b.json").write_text(json.dumps(rows))
    assert read_catalog(tmp_path / "b.json") == {
        8: (tmp_path / "eight.zarr").resolve(),
        9: "https://h/9.zarr",
    }


async def test_catalog_file_wins_and_unknown_is_none(tmp_path: Path) -> None:
    make_zarr(tmp_path / "root" / "100.zarr")
    (tmp_path / "cat.json").write_text(json.dumps({"100": "elsewhere/100.zarr"}))
    settings = SourceSettings(zarr_root=str(tmp_path / "root"), catalog=tmp_path / "cat.json")
    catalog = Catalog(settings)
    assert await catalog.locate(100) == (tmp_path / "elsewhere" / "100.zarr").resolve()
    assert await catalog.locate(101) is None
    assert await catalog.ids() == [100]


def test_scan_finds_nested_images_and_respects_limits(tmp_path: Path) -> None:
    make_zarr(tmp_path / "v0.4" / "idr0062A" / "6001240.zarr")
    make_zarr(tmp_path / "v0.5" / "idr0010" / "6001241.ome.zarr")
    make_zarr(tmp_path / "7.zarr")
    make_zarr(tmp_path / "7.zarr" / "labels" / "8.zarr")  # inside an image: not an image
    make_zarr(tmp_path / ".hidden" / "9.zarr")
    make_zarr(tmp_path / "plate.zarr" / "10.zarr")  # inside a non-id .zarr: not descended
    make_zarr(tmp_path / "a" / "b" / "c" / "d" / "11.zarr")  # depth 5
    (tmp_path / "12.zarr.txt").write_text("a file, not a directory")
    found = scan_root(tmp_path, max_depth=6)
    assert found == {
        6001240: tmp_path / "v0.4" / "idr0062A" / "6001240.zarr",
        6001241: tmp_path / "v0.5" / "idr0010" / "6001241.ome.zarr",
        7: tmp_path / "7.zarr",
        11: tmp_path / "a" / "b" / "c" / "d" / "11.zarr",
    }
    assert 11 not in scan_root(tmp_path, max_depth=4)
    assert set(scan_root(tmp_path, max_depth=1)) == {7}


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
    assert await eager.ids() == [1, 2]


async def test_concurrent_lookups_scan_once(tmp_path: Path) -> None:
    for i in range(5):
        make_zarr(tmp_path / f"{i}.zarr")
    catalog = Catalog(SourceSettings(zarr_root=str(tmp_path)))
    got = await asyncio.gather(*(catalog.locate(i) for i in range(5)))
    assert got == [tmp_path / f"{i}.zarr" for i in range(5)]


async def test_no_root_and_no_file(tmp_path: Path) -> None:
    catalog = Catalog(SourceSettings())
    assert await catalog.locate(1) is None
    assert await catalog.ids() == []


async def test_http_root_probes_on_first_use(http_root: tuple[Path, str]) -> None:
    root, url = http_root
    base = root / "probe"
    shutil.rmtree(base, ignore_errors=True)
    make_zarr(base / "500.zarr")
    catalog = Catalog(SourceSettings(zarr_root=f"{url}/probe/", rescan_interval_s=0))
    assert await catalog.locate(500) == f"{url}/probe/500.zarr"
    assert await catalog.locate(501) is None
    assert await catalog.ids() == [500]
    make_zarr(base / "501.zarr")
    assert await catalog.locate(501) == f"{url}/probe/501.zarr"


@pytest.mark.parametrize("bad", ["ftp://host/x", "s3://"])
def test_open_object_store_rejects_other_schemes(bad: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        open_object_store(bad, SourceSettings())


async def test_unusable_catalog_file_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_zarr(tmp_path / "root" / "3.zarr")
    (tmp_path / "bad.json").write_text("{nope")
    for path in (tmp_path / "bad.json", tmp_path / "missing.csv"):
        catalog = Catalog(SourceSettings(zarr_root=str(tmp_path / "root"), catalog=path))
        assert await catalog.locate(3) == tmp_path / "root" / "3.zarr"
        assert await catalog.locate(4) is None
    assert "unusable" in caplog.text
