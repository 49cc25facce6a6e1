"""The direct chunk reader for local Zarr v2 arrays equals zarr-python, chunk for chunk."""

from __future__ import annotations

from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from idrserve import errors
from idrserve.catalog import Catalog
from idrserve.model import Box, Selection
from idrserve.settings import SourceSettings
from idrserve.sources.bloscchunks import CheckedBlosc
from idrserve.sources.direct import DirectV2Array, open_direct
from idrserve.sources.zarr import ZarrSource
from tests.sources.conftest import multiscales, ramp, write_v2


def make_array(
    path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str, **kw: object
) -> tuple[zarr.Array, DirectV2Array]:
    arr = zarr.create_array(
        str(path), shape=shape, chunks=chunks, dtype=dtype, zarr_format=2, fill_value=7, **kw
    )
    arr[...] = ramp(shape, dtype)
    direct = open_direct(path, (path / ".zarray").read_bytes())
    assert direct is not None
    return arr, direct


@pytest.mark.parametrize(
    ("dtype", "kw"),
    [
        ("uint16", {"chunk_key_encoding": {"name": "v2", "separator": "/"}}),
        ("uint8", {"chunk_key_encoding": {"name": "v2", "separator": "."}}),
        (">u2", {"compressors": numcodecs.Zstd(level=1)}),
        ("float32", {"compressors": None}),
        ("int16", {"compressors": numcodecs.Zlib(level=1)}),
    ],
)
def test_equals_zarr(tmp_path: Path, dtype: str, kw: dict[str, object]) -> None:
    arr, direct = make_array(tmp_path / "a", (3, 130, 170), (1, 64, 50), dtype, **kw)
    for sel in [
        (slice(0, 3), slice(0, 130), slice(0, 170)),
        (1, slice(64, 128), slice(50, 100)),  # exactly one chunk: decoded in place
        (slice(1, 3), slice(5, 129), slice(49, 51)),
        (2, slice(129, 130), slice(169, 170)),
    ]:
        got = direct.read(sel)
        np.testing.assert_array_equal(got, arr[sel])
        assert got.dtype == arr.dtype


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_boxes_equal_zarr(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    path = tmp_path_factory.mktemp("rand") / "a"
    arr, direct = make_array(path, (2, 97, 61), (1, 16, 32), "uint16")
    y0 = data.draw(st.integers(0, 96))
    y1 = data.draw(st.integers(y0 + 1, 97))
    x0 = data.draw(st.integers(0, 60))
    x1 = data.draw(st.integers(x0 + 1, 61))
    sel = (slice(0, 2), slice(y0, y1), slice(x0, x1))
    np.testing.assert_array_equal(direct.read(sel), arr[sel])


def test_whole_chunk_reads_take_the_short_path_and_equal_zarr(tmp_path: Path) -> None:
    arr, direct = make_array(tmp_path / "a", (2, 128, 100), (1, 64, 50), "uint16")
    (tmp_path / "a" / "1.1.0").unlink()  # a missing whole chunk: its fill value
    for sel in [(0, slice(0, 64), slice(50, 100)), (1, slice(64, 128), slice(0, 50))]:
        assert direct._whole_chunk(sel) is not None
        np.testing.assert_array_equal(direct.read(sel), arr[sel])
    assert (direct.read((1, slice(64, 128), slice(0, 50))) == 7).all()
    # Not one whole chunk: the general loop.
    for sel in [(0, slice(0, 63), slice(0, 50)), (slice(0, 2), slice(0, 64), slice(0, 50))]:
        assert direct._whole_chunk(sel) is None
        np.testing.assert_array_equal(direct.read(sel), arr[sel])


def test_missing_chunk_reads_fill_value(tmp_path: Path) -> None:
    _arr, direct = make_array(tmp_path / "a", (1, 64, 64), (1, 32, 32), "uint16")
    (tmp_path / "a" / "0.1.1").unlink()
    out = direct.read((0, slice(0, 64), slice(0, 64)))
    assert (out[32:, 32:] == 7).all()
    assert (out[:32, :32] != 7).any()


@pytest.mark.parametrize(
    "doc",
    [
        {
            "zarr_format": 2,
            "shape": [4],
            "chunks": [2],
            "dtype": "<u2",
            "filters": [{"id": "delta", "dtype": "<u2"}],
        },
        {"zarr_format": 2, "shape": [4], "chunks": [2], "dtype": "<u2", "order": "F"},
        {"zarr_format": 3},
        {"zarr_format": 2, "shape": [4], "chunks": [2], "dtype": "|O"},
        {"zarr_format": 2, "shape": [4]},
    ],
)
def test_unsupported_arrays_fall_back_to_zarr(tmp_path: Path, doc: dict[str, object]) -> None:
    assert DirectV2Array.from_doc(tmp_path, doc) is None


async def test_corrupt_chunk_is_a_source_error(tmp_path: Path) -> None:
    levels = [ramp((1, 64, 64), "uint16")]
    write_v2(
        tmp_path / "5.zarr",
        levels,
        {"multiscales": [multiscales("cyx", 1, version="0.4")]},
        chunks=[(1, 32, 32)],
    )
    (tmp_path / "5.zarr" / "0" / "0" / "0" / "0").write_bytes(b"not blosc at all")
    settings = SourceSettings(zarr_root=str(tmp_path))
    source = ZarrSource(settings, Catalog(settings))
    try:
        await source.meta(5)
        sel = Selection(0, 0, 0, 1, (0,), Box(0, 0, 64, 64))
        with pytest.raises(errors.SourceError):
            await source.read(5, sel)
        reader = source.sync_reader(5, sel)
        assert reader is not None
        with pytest.raises(errors.SourceError):
            reader()
        ok = source.sync_reader(5, Selection(0, 0, 0, 1, (0,), Box(32, 32, 32, 32)))
        assert ok is not None
        np.testing.assert_array_equal(ok()[0, 0], levels[0][0, 32:, 32:])
    finally:
        await source.aclose()


@pytest.mark.parametrize("shuffle", [0, 1, 2])
def test_blosc_whole_chunks_decode_as_the_codec_does(tmp_path: Path, shuffle: int) -> None:
    # Whole Blosc chunks skip Blosc.decode's buffer checks (numcodecs.blosc.decompress
    # straight into the plane): the same values.
    codec = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=shuffle)
    arr, direct = make_array(tmp_path / "a", (2, 64, 64), (1, 32, 32), "uint16", compressors=codec)
    assert type(direct.codec) is CheckedBlosc  # the plain Blosc, checked (bloscchunks.py)
    sel = (1, slice(32, 64), slice(0, 32))
    assert direct._whole_chunk(sel) is not None
    np.testing.assert_array_equal(direct.read(sel), arr[sel])
    # A chunk cut short, even by one byte, is refused before c-blosc sees it: c-blosc itself
    # misses a short cut, and with no shuffle this ramp is stored uncompressed (the MEMCPYED
    # flag), which it copies from past the end of the bytes without an error.
    chunk = tmp_path / "a" / "1.1.0"
    raw = chunk.read_bytes()
    assert bool(raw[2] & 0x02) == (shuffle == 0)
    for cut in (len(raw) - 1, 40, 10):
        chunk.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=f"Blosc chunk of {cut} bytes"):
            direct.read(sel)
    chunk.write_bytes(raw + b"\0")  # or with bytes after it
    with pytest.raises(ValueError, match="its header says"):
        direct.read(sel)
    # Part of that chunk (the general loop, decoding into a new buffer): refused alike.
    chunk.write_bytes(raw[:-1])
    part = (1, slice(40, 64), slice(0, 32))
    assert direct._whole_chunk(part) is None
    with pytest.raises(ValueError, match="its header says"):
        direct.read(part)
