"""Blosc chunks cut short are refused before c-blosc reads past them (sources/bloscchunks.py),
on every path that decodes with numcodecs: the direct reader (tests/sources/test_direct.py)
and zarr-python's own pipeline, which serves remote stores and big-endian data."""

from __future__ import annotations

import shutil
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec
from zarr.storage import LocalStore

from idrserve import errors
from idrserve.catalog import Catalog
from idrserve.model import Box, Selection
from idrserve.settings import SourceSettings
from idrserve.sources.bloscchunks import CheckedBlosc, check_blosc_length, checked
from idrserve.sources.zarr import ZarrSource
from tests.sources.conftest import multiscales, ramp, write_v2


def test_a_chunk_is_exactly_its_headers_length() -> None:
    raw = numcodecs.Blosc(cname="lz4", shuffle=1).encode(ramp((32, 32), "uint16"))
    check_blosc_length(raw)
    check_blosc_length(np.frombuffer(raw, dtype=np.uint8))  # as zarr's pipeline passes it
    for bad in (raw[:-1], raw + b"\0", raw[:15], b""):
        with pytest.raises(ValueError, match=f"Blosc chunk of {len(bad)} bytes"):
            check_blosc_length(bad)


def test_only_plain_blosc_gets_the_checked_twin() -> None:
    codec = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=2, blocksize=0)
    twin = checked(codec)
    assert type(twin) is CheckedBlosc and twin.get_config() == codec.get_config()
    other = numcodecs.Zstd(level=1)
    assert checked(other) is other


@pytest.mark.parametrize("direct_reads", [True, False])
async def test_a_cut_big_endian_chunk_is_a_source_error(tmp_path: Path, direct_reads: bool) -> None:
    # Big-endian data is read by zarr's own pipeline (zarrs takes native byte order only) when
    # direct reads are off, and by the direct reader's copying path when they are on.
    levels = [ramp((1, 64, 64), ">u2")]
    write_v2(
        tmp_path / "5.zarr",
        levels,
        {"multiscales": [multiscales("cyx", 1, version="0.4")]},
        chunks=[(1, 32, 32)],
        compressor=numcodecs.Blosc(cname="lz4", clevel=5, shuffle=0),
    )
    chunk = tmp_path / "5.zarr" / "0" / "0" / "0" / "0"
    raw = chunk.read_bytes()
    chunk.write_bytes(raw[:-1])
    settings = SourceSettings(zarr_root=str(tmp_path), direct_reads=direct_reads)
    await _cut_chunk_refused(settings, levels[0])


@pytest.mark.parametrize("zarr_format", [2, 3])
async def test_a_cut_chunk_over_http_is_a_source_error(
    http_root: tuple[Path, str], tmp_path: Path, zarr_format: int
) -> None:
    # A remote store: zarr's own pipeline, for Zarr v2 (numcodecs' Blosc) and v3 (BloscCodec).
    root, url = http_root
    image = root / "cut" / f"v{zarr_format}.zarr"
    shutil.rmtree(image, ignore_errors=True)
    levels = [ramp((1, 64, 64), "uint16")]
    if zarr_format == 2:
        attrs = {"multiscales": [multiscales("cyx", 1, version="0.4")]}
        write_v2(image, levels, attrs, chunks=[(1, 32, 32)])
        chunk = image / "0" / "0" / "0" / "0"
    else:
        # lz4: c-blosc misses a one-byte cut there (zstd, write_v3's codec, notices it itself).
        group = zarr.open_group(LocalStore(image), mode="w", zarr_format=3)
        group.attrs.update(
            {"ome": {"version": "0.5", "multiscales": [multiscales("cyx", 1, version=None)]}}
        )
        group.create_array(
            "0",
            data=levels[0],
            chunks=(1, 32, 32),
            compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
            dimension_names=list("cyx"),
        )
        chunk = image / "0" / "c" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-1])
    catalog = tmp_path / "catalog.csv"
    catalog.write_text(f"id,path\n5,{url}/cut/v{zarr_format}.zarr\n")
    settings = SourceSettings(catalog=catalog)
    await _cut_chunk_refused(settings, levels[0])


async def _cut_chunk_refused(settings: SourceSettings, plane: np.ndarray) -> None:
    """Image 5's first 32² chunk (cut) is a source error; the last one reads as written."""
    source = ZarrSource(settings, Catalog(settings))
    try:
        await source.meta(5)
        with pytest.raises(errors.SourceError):
            await source.read(5, Selection(0, 0, 0, 1, (0,), Box(0, 0, 32, 32)))
        whole = await source.read(5, Selection(0, 0, 0, 1, (0,), Box(32, 32, 32, 32)))
        np.testing.assert_array_equal(whole[0, 0], plane[0, 32:, 32:])
    finally:
        await source.aclose()
