"""Bad input and bad options: one line on stderr, a non-zero exit status, and nothing at the
output path (nor a partial directory that could be mistaken for one)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import tifffile

from idrserve.cli import main
from tests.convert.conftest import (
    patch_compression,
    pattern,
    write_multifile_ome,
    write_ome_subifds,
)

REPO = Path(__file__).resolve().parents[2]


def tiled(path: Path) -> Path:
    tifffile.imwrite(path, pattern((300, 400), "uint16"), tile=(64, 64), compression="zlib")
    return path


def not_a_tiff(d: Path) -> Path:
    (d / "notes.tif").write_text("these are not pixels\n" * 20)
    return d / "notes.tif"


def jpeg(d: Path) -> Path:
    rgb = np.ascontiguousarray(pattern((64, 96, 3), "uint8"))
    (d / "photo.tif").write_bytes(simplejpeg.encode_jpeg(rgb))  # a TIFF name does not help
    return d / "photo.tif"


def czi(d: Path) -> Path:
    # The start of a Zeiss CZI file: its first segment's id, then a header tifffile cannot use.
    (d / "stack.czi").write_bytes(b"ZISRAWFILE".ljust(16, b"\0") + bytes(512))
    return d / "stack.czi"


def empty(d: Path) -> Path:
    (d / "empty.tif").write_bytes(b"")
    return d / "empty.tif"


def cut_header(d: Path) -> Path:
    src = tiled(d / "a.tif")
    src.write_bytes(src.read_bytes()[:40])
    return src


def truncated(d: Path) -> Path:
    src = tiled(d / "a.tif")
    src.write_bytes(src.read_bytes()[:-5000])
    return src


def unknown_codec(d: Path) -> Path:
    src = tiled(d / "a.tif")
    patch_compression(src, 34666)
    return src


def missing_file_of_a_set(d: Path) -> Path:
    return write_multifile_ome(d, pattern((3, 100, 120), "uint16"), drop=1)


def complex_pixels(d: Path) -> Path:
    tifffile.imwrite(d / "c.tif", np.ones((64, 64), np.complex64))
    return d / "c.tif"


def plain_directory(d: Path) -> Path:
    (d / "dir.zarr").mkdir()
    return d / "dir.zarr"


def missing(d: Path) -> Path:
    return d / "nowhere.tif"


CASES: list[tuple[Callable[[Path], Path], str]] = [
    (not_a_tiff, "not a readable TIFF file"),
    (jpeg, "a JPEG file, not a TIFF; idrserve convert reads OME-Zarr and OME-TIFF, SVS"),
    (
        czi,
        "a Zeiss CZI file, not a TIFF; idrserve convert reads OME-Zarr and OME-TIFF, SVS, NDPI,"
        " SCN, BIF, QPTIFF and tiled or pyramidal TIFF (bioformats2raw converts other formats to"
        " OME-Zarr)",
    ),
    (empty, "not a readable TIFF file"),
    (cut_header, "not a readable TIFF file"),
    (truncated, "truncated"),
    (unknown_codec, "cannot decode"),
    (missing_file_of_a_set, "planes missing"),
    (complex_pixels, "pixel type complex64 is not supported"),
    (plain_directory, "not an OME-Zarr image"),
    (missing, "no such file"),
]


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not (out.parent / f".{out.name}.partial").exists()


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("idrserve convert: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize(("make", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Path], message: str
) -> None:
    src = make(tmp_path)
    out = tmp_path / "out.zarr"
    assert main(["convert", str(src), str(out)]) == 1
    captured = capsys.readouterr()
    assert message in one_line(captured.err) and captured.out == ""
    assert_nothing_written(out)


@pytest.mark.parametrize(
    ("make", "message"),
    [CASES[0], CASES[1], CASES[5], CASES[7]],
    ids=["not_a_tiff", "jpeg", "truncated", "set"],
)
def test_bad_input_from_the_command_line(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    """The real process: tifffile's own log lines and tracebacks must not reach stderr."""
    src = make(tmp_path)
    out = tmp_path / "out.zarr"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "idrserve", "convert", str(src), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert message in one_line(done.stderr) and done.stdout == ""
    assert_nothing_written(out)


def test_missing_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tiled(tmp_path / "a.tif")
    out = tmp_path / "out.zarr"
    assert main(["convert", str(src), str(out), "--series", "3"]) == 1
    assert "--series 3: a.tif has 1 series (0–0)" in one_line(capsys.readouterr().err)
    assert_nothing_written(out)


def test_corrupt_tile_mid_way_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tile that only fails when its band is reached: the partial output is removed."""
    src = tiled(tmp_path / "a.tif")
    with tifffile.TiffFile(src) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[-3], page.databytecounts[-3]
    raw = bytearray(src.read_bytes())
    raw[offset : offset + count] = b"\xff" * count
    src.write_bytes(bytes(raw))
    out = tmp_path / "out.zarr"
    assert main(["convert", str(src), str(out), "--chunks", "64"]) == 1
    assert "cannot read rows" in one_line(capsys.readouterr().err)
    assert_nothing_written(out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard"], "--shard needs --ngff 0.5"),
        (["--ngff", "0.5", "--shard", "300"], "--shard 300: a multiple of --chunks 256"),
        (["--chunks", "100"], "--chunks 100: a multiple of 16"),
        (["--levels", "0"], "--levels 0: at least 1"),
        (["--levels", "12"], "--levels 12: a 300×400 image has at most 9 levels"),
        (["--compressor", "zstd", "--level", "30"], "--level 30: zstd takes 1..22"),
        (["--workers", "0"], "--workers 0: at least 1"),
        (["--catalog-out", "rows.csv"], "--catalog-out needs an image id"),
    ],
)
def test_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    src = tiled(tmp_path / "a.tif")
    out = tmp_path / "out.zarr"
    assert main(["convert", str(src), str(out), *args]) == 2
    assert message in one_line(capsys.readouterr().err)
    assert_nothing_written(out)


def test_existing_output_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "cells.ome.tif"
    write_ome_subifds(src, pattern((2, 1, 100, 120), "uint16"), levels=1)
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "keep").write_text("mine")
    assert main(["convert", str(src), str(out)]) == 1
    assert "exists (--overwrite replaces it)" in one_line(capsys.readouterr().err)
    assert (out / "keep").read_text() == "mine"


def test_output_directory_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tiled(tmp_path / "a.tif")
    assert main(["convert", str(src), str(tmp_path / "no" / "out.zarr")]) == 1
    assert "no such directory" in one_line(capsys.readouterr().err)


def test_series_named_twice_differently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tiled(tmp_path / "a.tif")
    out = tmp_path / "out.zarr"
    assert main(["convert", f"{src}#series=0", str(out), "--series", "1"]) == 1
    assert "--series 1 and a.tif#series=0 name different series" in one_line(
        capsys.readouterr().err
    )
    assert_nothing_written(out)
