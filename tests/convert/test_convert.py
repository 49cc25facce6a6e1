"""`idrserve convert` round trips: every TIFF flavour written by tifffile here, converted,
then read by ome-zarr-py, validated by ome-zarr-models, and compared with tifffile's own
read (levels from the file's pyramid) or an independent 2×2 mean (levels computed)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models import open_ome_zarr
from ome_zarr_models.v04 import Image as ImageV04
from ome_zarr_models.v05 import Image as ImageV05

from idrserve.cli import main
from tests.convert.conftest import (
    as_output,
    pattern,
    reference_mean,
    write_generic_pyramid,
    write_multifile_ome,
    write_ome_5d,
    write_ome_subifds,
    write_svs_like,
)


def run(*args: str) -> int:
    return main(["convert", *args, "--quiet"])


def convert(src: Path, out: Path, *args: str) -> Path:
    assert run(str(src), str(out), *args) == 0
    assert out.is_dir()
    assert not (out.parent / f".{out.name}.partial").exists()
    assert not list(out.rglob(".idrserve-convert*"))
    return out


def ngff(out: Path) -> dict[str, Any]:
    """The NGFF keys of the output group, 0.4 or 0.5 alike."""
    group = zarr.open_group(out, mode="r")
    attrs = dict(group.attrs)
    return dict(attrs["ome"]) if "ome" in attrs else attrs


def expected_levels(path: Path, out_axes: str, n: int, series: int = 0) -> list[np.ndarray]:
    """What every output level must hold: tifffile's own read of the file's levels where
    their size fits level k, else the independent 2×2 mean of level k - 1."""
    with tifffile.TiffFile(path) as tif:
        s = tif.series[series]
        own = [as_output(lv.asarray(), lv.axes, out_axes) for lv in s.levels]
    levels = [own[0]]
    for k in range(1, n):
        h0, w0 = levels[0].shape[-2:]
        fit = next(
            (
                a
                for a in own[1:]
                if h0 >> k <= a.shape[-2] <= -(-h0 >> k) and w0 >> k <= a.shape[-1] <= -(-w0 >> k)
            ),
            None,
        )
        levels.append(fit if fit is not None else reference_mean(levels[-1]))
    return levels


def check(out: Path, levels: list[np.ndarray], version: str) -> dict[str, Any]:
    """Valid NGFF (ome-zarr-models), read by ome-zarr-py with every level's values."""
    model = open_ome_zarr(zarr.open_group(out, mode="r"))
    assert isinstance(model, ImageV05 if version == "0.5" else ImageV04)
    nodes = list(Reader(parse_url(str(out)))())
    data = nodes[0].data
    assert len(data) == len(levels)
    for k, (found, want) in enumerate(zip(data, levels, strict=True)):
        got = np.asarray(found)
        assert got.dtype == want.dtype.newbyteorder("="), k
        np.testing.assert_array_equal(got, want, err_msg=f"level {k}")
    return ngff(out)


def channel(attrs: dict[str, Any], c: int) -> dict[str, Any]:
    return dict(attrs["omero"]["channels"][c])


def axes_units(attrs: dict[str, Any]) -> dict[str, str | None]:
    return {a["name"]: a.get("unit") for a in attrs["multiscales"][0]["axes"]}


def level0_scale(attrs: dict[str, Any]) -> list[float]:
    transforms = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    return list(transforms[0]["scale"])


@pytest.mark.parametrize(("version", "extra"), [("0.4", []), ("0.5", ["--shard", "256"])])
def test_ome_tiff_pyramid_with_subifds(tmp_path: Path, version: str, extra: list[str]) -> None:
    src = tmp_path / "cells.ome.tif"
    write_ome_subifds(src, pattern((2, 3, 300, 520), "uint16"))
    out = convert(src, tmp_path / "cells.zarr", "--ngff", version, "--chunks", "64", *extra)
    levels = expected_levels(src, "czyx", 3)
    attrs = check(out, levels, version)
    assert [d["path"] for d in attrs["multiscales"][0]["datasets"]] == ["0", "1", "2"]
    assert channel(attrs, 0)["label"] == "DAPI" and channel(attrs, 0)["color"] == "0000FF"
    assert channel(attrs, 1)["label"] == "GFP" and channel(attrs, 1)["color"] == "00FF00"
    assert axes_units(attrs) == {"c": None, "z": "micrometer", "y": "micrometer", "x": "micrometer"}
    assert level0_scale(attrs) == [1.0, 1.5, 0.325, 0.325]
    scale2 = attrs["multiscales"][0]["datasets"][2]["coordinateTransformations"][0]["scale"]
    assert scale2 == [1.0, 1.5, 1.3, 1.3]
    assert attrs["omero"]["name"] == "cells"
    assert attrs["omero"]["rdefs"] == {"defaultZ": 1, "defaultT": 0, "model": "color"}


def test_levels_auto_halves_to_256(tmp_path: Path) -> None:
    src = tmp_path / "wide.tif"
    tifffile.imwrite(src, pattern((700, 1100), "uint8"), tile=(128, 128), compression="zlib")
    out = convert(src, tmp_path / "wide.zarr", "--chunks", "128")
    levels = expected_levels(src, "cyx", 4)  # 1100 → 550 → 275 → 137
    attrs = check(out, levels, "0.4")
    assert [np.asarray(a).shape for a in levels][-1] == (1, 87, 137)
    assert "unit" not in attrs["multiscales"][0]["axes"][-1]  # no physical size in the file


def test_ome_5d_with_z_and_t(tmp_path: Path) -> None:
    src = tmp_path / "timelapse.ome.tif"
    write_ome_5d(src, pattern((3, 2, 4, 140, 150), "float32"))  # uncompressed, contiguous
    out = convert(src, tmp_path / "t.zarr", "--chunks", "64", "--levels", "2")
    levels = expected_levels(src, "tczyx", 2)
    attrs = check(out, levels, "0.4")
    assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == list("tczyx")
    assert axes_units(attrs)["t"] == "second"
    assert level0_scale(attrs) == [30.0, 1.0, 2.0, 0.5, 0.5]
    assert [channel(attrs, c)["label"] for c in (0, 1)] == ["Moving", "Still"]
    for c in range(2):  # 0.1/99.9 percentiles of the coarsest level's t 0, middle z plane
        plane = levels[-1][0, c, 2].astype(np.float64)
        start, end = np.percentile(plane[plane != 0], [0.1, 99.9])
        window = channel(attrs, c)["window"]
        assert (window["start"], window["end"]) == (start, end)
        assert (window["min"], window["max"]) == (plane.min(), plane.max())
    assert attrs["omero"]["rdefs"]["defaultZ"] == 2


def test_ome_tiff_with_separate_pages_and_bigtiff(tmp_path: Path) -> None:
    src = tmp_path / "pages.ome.tif"
    data = pattern((3, 200, 330), "uint8")
    tifffile.imwrite(src, data, ome=True, bigtiff=True, metadata={"axes": "ZYX"}, tile=(64, 64))
    with tifffile.TiffFile(src) as tif:
        assert tif.is_bigtiff and len(tif.pages) == 3
    out = convert(src, tmp_path / "p.zarr", "--chunks", "64")
    check(out, expected_levels(src, "czyx", 2), "0.4")


def test_multi_file_ome_tiff(tmp_path: Path) -> None:
    first = write_multifile_ome(tmp_path, pattern((3, 200, 300), "uint16"))
    out = convert(first, tmp_path / "m.zarr", "--chunks", "64", "--ngff", "0.5")
    attrs = check(out, expected_levels(first, "cyx", 2), "0.5")
    assert [channel(attrs, c)["label"] for c in range(3)] == ["ch0", "ch1", "ch2"]
    assert axes_units(attrs)["x"] == "nanometer" and level0_scale(attrs)[-1] == 0.1


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_svs_like_jpeg_rgb_pyramid(tmp_path: Path, version: str) -> None:
    src = tmp_path / "slide.svs"
    rgb = np.moveaxis(pattern((3, 1000, 1500), "uint8"), 0, -1).copy()
    write_svs_like(src, rgb)
    out = convert(src, tmp_path / "s.zarr", "--ngff", version, "--levels", "5")
    levels = expected_levels(src, "cyx", 5)  # 1500 → 750 → 375 (file) → 187 → 94 (file)
    with tifffile.TiffFile(src) as tif:
        assert [lv.shape[:2] for lv in tif.series[0].levels] == [(1000, 1500), (250, 375), (63, 94)]
    attrs = check(out, levels, version)
    assert [channel(attrs, c)["label"] for c in range(3)] == ["Red", "Green", "Blue"]
    assert [channel(attrs, c)["color"] for c in range(3)] == ["FF0000", "00FF00", "0000FF"]
    assert channel(attrs, 0)["window"] == {"min": 0.0, "max": 255.0, "start": 0.0, "end": 255.0}
    assert axes_units(attrs)["x"] == "micrometer" and level0_scale(attrs)[-1] == 0.499
    assert attrs["omero"]["name"] == "slide"


@pytest.mark.parametrize(
    ("dtype", "byteorder"),
    [("uint8", "<"), ("uint16", ">"), ("float32", ">"), ("int16", "<"), ("float32", "<")],
)
@pytest.mark.parametrize("pages", [False, True])
def test_generic_pyramid_dtypes_and_byte_orders(
    tmp_path: Path, dtype: str, byteorder: str, pages: bool
) -> None:
    src = tmp_path / "plain.tif"
    write_generic_pyramid(src, pattern((260, 390), dtype), pages=pages, byteorder=byteorder)
    out = convert(src, tmp_path / "g.zarr", "--chunks", "64", "--levels", "4")
    attrs = check(out, expected_levels(src, "cyx", 4), "0.4")
    assert axes_units(attrs)["y"] == "micrometer"
    assert level0_scale(attrs) == pytest.approx([1.0, 0.25, 0.25])
    window = channel(attrs, 0)["window"]
    if dtype == "float32":  # a float channel's slider range is its data range
        assert window["min"] < window["start"] < window["end"] < window["max"] < 1000


def test_imagej_hyperstack_uncompressed(tmp_path: Path) -> None:
    src = tmp_path / "ij.tif"
    meta = {"axes": "ZCYX", "spacing": 2.5, "unit": "um", "finterval": 5}
    data = pattern((2, 3, 150, 170), "uint16")
    tifffile.imwrite(src, data, imagej=True, metadata=meta, resolution=(5.0, 5.0))
    out = convert(src, tmp_path / "ij.zarr", "--chunks", "32", "--levels", "3")
    attrs = check(out, expected_levels(src, "czyx", 3), "0.4")
    assert level0_scale(attrs) == [1.0, 2.5, 0.2, 0.2]
    assert axes_units(attrs) == {"c": None, "z": "micrometer", "y": "micrometer", "x": "micrometer"}


@pytest.mark.parametrize("compressor", ["blosc-lz4", "blosc-zstd", "zstd"])
def test_compressors(tmp_path: Path, compressor: str) -> None:
    src = tmp_path / "c.tif"
    tifffile.imwrite(src, pattern((2, 130, 150), "uint16"), tile=(64, 64), metadata={"axes": "CYX"})
    out = convert(src, tmp_path / "c.zarr", "--chunks", "64", "--compressor", compressor)
    check(out, expected_levels(src, "cyx", 1), "0.4")
    zarray = json.loads((out / "0" / ".zarray").read_text())
    assert zarray["dimension_separator"] == "/"
    codec = zarray["compressor"]
    assert codec["id"] == ("zstd" if compressor == "zstd" else "blosc")
    if codec["id"] == "blosc":
        assert codec["cname"] == compressor[6:] and codec["clevel"] == 5


def test_rechunk_ome_zarr_keeps_values_and_metadata(tmp_path: Path) -> None:
    src = tmp_path / "cells.ome.tif"
    write_ome_subifds(src, pattern((2, 3, 300, 520), "uint16"))
    first = convert(src, tmp_path / "first.zarr", "--chunks", "64")
    before = ngff(first)
    second = convert(first, tmp_path / "second.zarr", "--ngff", "0.5", "--chunks", "128")
    levels = [np.asarray(zarr.open_array(first / str(k), mode="r")[:]) for k in range(3)]
    after = check(second, levels, "0.5")
    assert after["omero"]["channels"] == before["omero"]["channels"]
    assert after["multiscales"][0]["axes"] == before["multiscales"][0]["axes"]
    assert zarr.open_array(second / "0", mode="r").chunks == (1, 1, 128, 128)


def test_bioformats2raw_layout_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """bioformats2raw's output holds each series as a group named by its number."""
    layout = tmp_path / "b2r.zarr"
    layout.mkdir()
    (layout / ".zgroup").write_text('{"zarr_format": 2}')
    (layout / ".zattrs").write_text('{"bioformats2raw.layout": 3}')
    for n, size in enumerate([(200, 300), (150, 170)]):
        tifffile.imwrite(tmp_path / f"{n}.tif", pattern(size, "uint16"))
        convert(tmp_path / f"{n}.tif", layout / str(n), "--chunks", "64")
    out = convert(layout, tmp_path / "one.zarr", "--series", "1", "--chunks", "128")
    check(out, [np.asarray(zarr.open_array(layout / "1" / "0", mode="r")[:])], "0.4")
    assert ngff(out)["omero"]["name"] == "1"  # the series' own name, as its group has it
    assert run(str(layout), str(tmp_path / "two.zarr"), "--series", "2") == 1
    assert "--series 2: b2r.zarr has no series 2" in capsys.readouterr().err
    assert run(str(out), str(tmp_path / "three.zarr"), "--series", "1") == 1
    assert "an OME-Zarr image has one series (0)" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["--series", "#series="])
def test_series_picks_an_svs_associated_image(tmp_path: Path, how: str) -> None:
    """`--series 2`, or the input named as a catalog location names a series."""
    src = tmp_path / "slide.svs"
    write_svs_like(src, np.moveaxis(pattern((3, 600, 900), "uint8"), 0, -1).copy())
    args = ["--series", "2"] if how == "--series" else []
    out = convert(Path(f"{src}#series=2" if not args else src), tmp_path / "label.zarr", *args)
    check(out, expected_levels(src, "cyx", 1, series=2), "0.4")


def test_catalog_out_rows(tmp_path: Path) -> None:
    src = tmp_path / "x.tif"
    tifffile.imwrite(src, pattern((100, 120), "uint8"))
    (tmp_path / "data").mkdir()
    rows = tmp_path / "rows.csv"
    convert(src, tmp_path / "data" / "123.zarr", "--catalog-out", str(rows))
    convert(src, tmp_path / "other.zarr", "--catalog-out", str(rows), "--id", "7")
    assert rows.read_text().splitlines() == ["id,path", "123,data/123.zarr", "7,other.zarr"]


def test_overwrite_replaces_an_existing_output(tmp_path: Path) -> None:
    src = tmp_path / "x.tif"
    tifffile.imwrite(src, pattern((100, 120), "uint8"))
    out = convert(src, tmp_path / "x.zarr")
    tifffile.imwrite(src, pattern((100, 120), "uint8", seed=3))
    convert(src, out, "--overwrite")
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[0], tifffile.imread(src))


def test_progress_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "x.tif"
    tifffile.imwrite(src, pattern((100, 120), "uint8"))
    assert main(["convert", str(src), str(tmp_path / "x.zarr")]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # no bar when stderr is not a terminal
    summary = json.loads(out)
    assert summary["shape"] == [1, 100, 120] and summary["levels"] == [[100, 120, 0]]
    assert summary["peak_rss_mb"] > 0


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal, stderr shows tqdm's bar: bytes done of the total, throughput and ETA."""
    src = tmp_path / "x.tif"
    tifffile.imwrite(src, pattern((600, 800), "uint16"), tile=(64, 64))
    main_fd, term_fd = pty.openpty()
    # A new pty is 0 × 0, where tqdm hides every bar: size it as a terminal window.
    fcntl.ioctl(term_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "idrserve", "convert", str(src), str(tmp_path / "x.zarr")]
    with os.fdopen(main_fd, "rb", buffering=0) as term:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=term_fd)
        os.close(term_fd)
        shown = b""
        while True:
            try:
                piece = term.read(4096)
            except OSError:  # EIO: the child closed its end
                break
            if not piece:
                break
            shown += piece
        assert proc.wait(timeout=120) == 0
    last = shown.decode().replace("\r", "\n").strip().splitlines()[-1]
    assert re.fullmatch(r"converting: 100%\|.*\| 938k/938k \[\d\d:\d\d<00:00, .*B/s\]", last), last
