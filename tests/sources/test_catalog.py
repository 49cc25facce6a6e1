"""Catalog building: CSV/JSON rows, ranges, study prefixes, bad input, the index file format."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from idrserve.catalog import CatalogFormatError, open_index, scan_root
from idrserve.catalog.build import CatalogSourceError, build_index
from idrserve.catalog.index import HEADER_SIZE, CatalogIndex, write_index
from idrserve.catalog.stores import open_object_store, redact
from idrserve.settings import SourceSettings
from tests.sources.conftest import multiscales, ramp, write_v2


def make_zarr(path: Path) -> Path:
    """A minimal valid NGFF 0.4 image (the catalog only looks at names, the probe at metadata)."""
    attrs = {"multiscales": [multiscales("yx", 1, version="0.4")]}
    write_v2(path, [ramp((8, 8), "uint8")], attrs, chunks=[(8, 8)])
    return path


def build(path: Path) -> CatalogIndex:
    return build_index([path])[0]


def test_csv_id_path_with_relative_absolute_and_urls(tmp_path: Path) -> None:
    sub = tmp_path / "cat"
    sub.mkdir()
    (sub / "catalog.csv").write_text(
        "id,path\n"
        "1,images/a.zarr\n"
        f"2,{tmp_path}/b.zarr\n"
        "3,https://example.org/idr/zarr/v0.4/3.zarr\n"
        "4,s3://idr/zarr/v0.5/4.zarr/\n"
        "5,file:///data/5%20five.zarr\n"
        "x,skipped.zarr\n"
        "6,\n"
        "7,ftp://host/7.zarr\n"
    )
    index, report = build_index([sub / "catalog.csv"])
    assert {i: index.locate(i) for i in range(1, 8)} == {
        1: sub / "images" / "a.zarr",
        2: tmp_path / "b.zarr",
        3: "https://example.org/idr/zarr/v0.4/3.zarr",
        4: "s3://idr/zarr/v0.5/4.zarr",
        5: Path("/data/5 five.zarr"),
        6: None,
        7: None,
    }
    assert (report.rows, report.images, report.skipped) == (8, 5, 3)


def test_headers_aliases_no_header_bom_crlf_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(
        "\ufeffImage_ID , URI\r\n\r\n10, ./x.zarr \r\n,\r\n11,y y/ünï.zarr\r\n".encode()
    )
    index, report = build_index([tmp_path / "a.csv"])
    assert index.locate(10) == tmp_path / "x.zarr"
    assert index.locate(11) == tmp_path / "y y" / "ünï.zarr"
    assert report.skipped == 1  # the "," row: no id, no path
    (tmp_path / "b.csv").write_text("12,p/12.zarr\n13,q.zarr\n")  # no header at all
    assert build(tmp_path / "b.csv").locate(12) == tmp_path / "p" / "12.zarr"
    (tmp_path / "c.csv").write_text("name,where\n1,2\n")
    with pytest.raises(CatalogSourceError, match="header must name an id column"):
        build(tmp_path / "c.csv")


def test_duplicates_last_wins_and_are_counted(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("id,path\n5,first.zarr\n6,six.zarr\n5,second.zarr\n")
    index, report = build_index([tmp_path / "d.csv"])
    assert index.locate(5) == tmp_path / "second.zarr"
    assert (len(index), report.duplicates) == (2, 1)
    assert index.meta["report"]["duplicates"] == 1


def test_dotdot_allowed_inside_the_tree_only(tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    cat.mkdir()
    (cat / "c.csv").write_text(
        "id,path\n1,a/../b/1.zarr\n2,../outside/2.zarr\n3,a/../../cat/3.zarr\n4,/abs/../x/4.zarr\n"
    )
    index, report = build_index([cat / "c.csv"])
    assert index.locate(1) == cat / "b" / "1.zarr"
    assert index.locate(2) is None
    assert index.locate(3) == cat / "3.zarr"  # leaves and re-enters: resolves inside
    assert index.locate(4) == Path("/x/4.zarr")  # absolute paths are the operator's
    assert report.skipped == 1
    assert "may not leave" in report.warnings[0]


def test_credentials_are_never_echoed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "c.csv").write_text(
        "id,path\n1,https://alice:s3cret@host.example/1.zarr\nbad,https://bob:hunter2@h/x.zarr\n"
    )
    with caplog.at_level(logging.WARNING):
        index, report = build_index([tmp_path / "c.csv"])
    assert index.locate(1) == "https://alice:s3cret@host.example/1.zarr"  # needed to read it
    assert "hunter2" not in caplog.text and "bob" not in caplog.text
    assert "hunter2" not in json.dumps(report.warnings)
    assert redact("https://u:p@h:1/a") == "https://***@h:1/a"
    assert redact("/local/path") == "/local/path"


def test_json_object_list_ranges_and_studies(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(
        json.dumps(
            {
                "7": "seven.zarr",
                "nope": "x.zarr",
                "100-199": "s3://idr/v0.4/idr0001A/",
                "study:idr0062A": "v0.4/idr0062A",
            }
        )
    )
    index, report = build_index([tmp_path / "a.json"])
    assert index.locate(7) == tmp_path / "seven.zarr"
    assert index.locate(150) == "s3://idr/v0.4/idr0001A/150.zarr"
    assert index.locate(200) is None
    assert index.studies == [{"name": "idr0062A", "prefix": str(tmp_path / "v0.4/idr0062A")}]
    assert report.skipped == 1
    rows = [
        {"id": 8, "path": "eight.zarr"},
        {"image_id": "9", "uri": "https://h/9.zarr"},
        {"path": "no-id.zarr"},
        {"study": "idr0010", "path": "https://h/idr0010/"},
        "junk",
    ]
    (tmp_path / "b.json").write_text(json.dumps(rows))
    index = build(tmp_path / "b.json")
    assert (index.locate(8), index.locate(9)) == (tmp_path / "eight.zarr", "https://h/9.zarr")
    assert index.studies[0]["name"] == "idr0010"
    (tmp_path / "c.json").write_text("{nope")
    with pytest.raises(CatalogSourceError, match="not valid JSON"):
        build(tmp_path / "c.json")


def test_ranges_explicit_rows_win_overlaps_skipped(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text(
        "id,path\n"
        "1000-1999,/data/idr0001A/\n"
        "1500-2500,/data/other/\n"  # overlaps: skipped
        "2000-2999,/data/idr0002A\n"
        "1234,/data/special/x.zarr\n"
        "5-3,/data/empty\n"
    )
    index, report = build_index([tmp_path / "r.csv"])
    assert index.locate(1000) == Path("/data/idr0001A/1000.zarr")
    assert index.locate(1999) == Path("/data/idr0001A/1999.zarr")
    assert index.locate(2999) == Path("/data/idr0002A/2999.zarr")
    assert index.locate(1234) == Path("/data/special/x.zarr")
    assert index.locate(999) is None and index.locate(3000) is None
    assert (report.ranges, report.skipped) == (2, 2)


def test_non_default_names_and_ids_at_the_limits(tmp_path: Path) -> None:
    big = 2**63 - 1
    (tmp_path / "n.csv").write_text(
        f"id,path\n0,/d/zero.ome.zarr\n{big},/d/{big}.zarr\n{big + 1},/d/x.zarr\n-5,/d/y\n"
    )
    index, report = build_index([tmp_path / "n.csv"])
    assert index.locate(0) == Path("/d/zero.ome.zarr")
    assert index.locate(big) == Path(f"/d/{big}.zarr")
    assert report.skipped == 2


def test_index_file_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ids = rng.choice(10**9, 5000, replace=False)

    def row(i: int) -> str:
        directory = "s3://b/p" if i % 3 == 0 else f"/d/{i % 7}"
        name = i if i % 5 else f"n{i}"
        return f"{i},{directory}/{name}.zarr"

    lines = ["id,path"] + [row(i) for i in ids.tolist()]
    lines += ["10-20,/ranges/a", "study:s1,/studies/s1"]
    (tmp_path / "big.csv").write_text("\n".join(lines) + "\n")
    built = build(tmp_path / "big.csv")
    write_index(built, tmp_path / "big.idrcat")
    opened = open_index(tmp_path / "big.idrcat")
    assert len(opened) == len(built) == 5000
    for i in [*ids[:500].tolist(), 15, 21, 7]:
        assert opened.locate(i) == built.locate(i)
    assert opened.page(100, 50) == sorted(ids.tolist())[100:150]
    assert opened.studies == built.studies
    assert 15 not in opened and int(ids[0]) in opened


def test_corrupt_and_truncated_index_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("id,path\n" + "".join(f"{i},/d/{i}.zarr\n" for i in range(99)))
    write_index(build(tmp_path / "c.csv"), tmp_path / "good.idrcat")
    raw = (tmp_path / "good.idrcat").read_bytes()
    cases = {
        "truncated": raw[:-9],
        "flipped": raw[: HEADER_SIZE + 40]
        + bytes([raw[HEADER_SIZE + 40] ^ 1])
        + raw[HEADER_SIZE + 41 :],
        "magic": b"NOTACAT!" + raw[8:],
        "empty": b"",
    }
    messages = {
        "truncated": "truncated",
        "flipped": "checksum",
        "magic": "not an idrserve catalog",
        "empty": "not an idrserve catalog",
    }
    for name, data in cases.items():
        (tmp_path / f"{name}.idrcat").write_bytes(data)
        with pytest.raises(CatalogFormatError, match=messages[name]):
            open_index(tmp_path / f"{name}.idrcat")


def test_cli_index_and_info(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("id,path\n1,a/1.zarr\n2,b.zarr\nx,y\n")
    (tmp_path / "c2.json").write_text(json.dumps({"2": "later.zarr", "3": "c.zarr"}))
    out = tmp_path / "out" / "cat.idrcat"
    cmd = [sys.executable, "-m", "idrserve", "catalog", "index"]
    done = subprocess.run(
        [*cmd, str(tmp_path / "c.csv"), str(tmp_path / "c2.json"), "-o", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads(done.stdout)
    assert (summary["images"], summary["skipped"], summary["duplicates"]) == (3, 1, 1)
    index = open_index(out)
    assert index.locate(2) == tmp_path / "later.zarr"  # a later source wins
    info = subprocess.run(
        [sys.executable, "-m", "idrserve", "catalog", "info", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(info.stdout)["images"] == 3
    out.write_bytes(out.read_bytes()[:200])
    bad = subprocess.run(
        [sys.executable, "-m", "idrserve", "catalog", "info", str(out)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "truncated" in bad.stderr
    missing = subprocess.run(
        [*cmd, str(tmp_path / "nope.csv"), "-o", str(out)], capture_output=True
    )
    assert missing.returncode == 2


def test_directory_sources_are_scanned(tmp_path: Path) -> None:
    make_zarr(tmp_path / "v0.4" / "idr0062A" / "6001240.zarr")
    make_zarr(tmp_path / "v0.5" / "idr0010" / "6001241.ome.zarr")
    index = build_index([tmp_path])[0]
    assert index.locate(6001240) == tmp_path / "v0.4" / "idr0062A" / "6001240.zarr"
    assert index.locate(6001241) == tmp_path / "v0.5" / "idr0010" / "6001241.ome.zarr"


def test_a_million_rows_build_in_bounded_time(tmp_path: Path) -> None:
    """1 M rows, shuffled, IDR-shaped paths: built, written and reopened (a few seconds)."""
    rng = np.random.default_rng(7)
    ids = rng.permutation(np.arange(3_000_000, 4_000_000))
    with open(tmp_path / "m.csv", "w") as f:
        f.write("id,path\n")
        f.writelines(f"{i},v0.4/idr{i % 300:04d}A/{i}.zarr\n" for i in ids.tolist())
    index, report = build_index([tmp_path / "m.csv"])
    assert report.seconds < 30
    write_index(index, tmp_path / "m.idrcat")
    opened = open_index(tmp_path / "m.idrcat")
    assert len(opened) == 1_000_000
    assert opened.locate(3_123_456) == tmp_path / "v0.4" / "idr0156A" / "3123456.zarr"
    assert opened.page(999_990, 100) == list(range(3_999_990, 4_000_000))
    # IDR-shaped names cost nothing: the names section is empty
    assert (tmp_path / "m.idrcat").stat().st_size < 21 * 1_000_000


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


@pytest.mark.parametrize("bad", ["ftp://host/x", "s3://"])
def test_open_object_store_rejects_other_schemes(bad: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        open_object_store(bad, SourceSettings())
