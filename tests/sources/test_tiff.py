"""TiffSource against TIFF files written by tifffile in the test: the conformance suite for every
flavour (OME-TIFF pyramids in SubIFDs, reduced-page pyramids, an SVS-like JPEG RGB pyramid,
multi-file OME-TIFF, BigTIFF, big-endian strips, 5-D), metadata, and every bad input."""

from __future__ import annotations

import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from idrserve import errors
from idrserve.catalog import Catalog
from idrserve.model import Box, Selection
from idrserve.settings import SourceSettings
from idrserve.sources.tiff import TiffSource, is_tiff_name, sniff_format, split_location
from tests.sources.conformance import UNKNOWN_ID, Case, SourceConformance
from tests.sources.conftest import ramp

IMAGE_ID = 5151


def pyramid_of(data: np.ndarray, levels: int) -> list[np.ndarray]:
    """2×2 subsampled levels of the last two axes (exact, what the file stores)."""
    out = [data]
    for _ in range(levels - 1):
        out.append(np.ascontiguousarray(out[-1][..., ::2, ::2]))
    return out


async def open_case(
    root: Path, axes: str, levels: list[np.ndarray], tiles: list[tuple[int, int]]
) -> AsyncIterator[Case]:
    settings = SourceSettings(zarr_root=str(root))
    catalog = Catalog(settings)
    source = TiffSource(settings, catalog)
    try:
        yield Case(source, IMAGE_ID, axes, levels, tiles)
    finally:
        await source.aclose()
        await catalog.aclose()


def write_ome_subifds(
    path: Path, data: np.ndarray, axes: str, *, levels: int, tile: int, **kw: Any
) -> list[np.ndarray]:
    """An OME-TIFF whose pyramid levels are SubIFDs of each full-resolution page."""
    levs = pyramid_of(data, levels)
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"tile": (tile, tile), "compression": "zlib", "photometric": "minisblack"} | kw
    with tifffile.TiffWriter(path, bigtiff=kw.pop("bigtiff", False)) as tw:
        tw.write(
            levs[0],
            subifds=levels - 1,
            metadata={
                "axes": axes.upper(),
                "Channel": {"Name": [f"ch{i}" for i in range(data.shape[axes.index("c")])]}
                if "c" in axes
                else {},
                "PhysicalSizeX": 0.25,
                "PhysicalSizeXUnit": "µm",
                "PhysicalSizeY": 0.25,
                "PhysicalSizeYUnit": "µm",
            },
            **opts,
        )
        for lev in levs[1:]:
            tw.write(lev, subfiletype=1, **opts)
    return levs


class TestOmeTiffSubIfds(SourceConformance):
    """OME-TIFF, CZYX uint16, 3 levels in SubIFDs, 64² zlib tiles (Bio-Formats' layout)."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        data = ramp((2, 3, 300, 250), "uint16")
        levels = write_ome_subifds(
            tmp_path / f"{IMAGE_ID}.ome.tif", data, "czyx", levels=3, tile=64
        )
        async for c in open_case(tmp_path, "czyx", levels, [(64, 64)] * 3):
            yield c

    async def test_ome_metadata_is_used(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        assert [ch.label for ch in meta.channels] == ["ch0", "ch1"]
        assert meta.pixel_size[:2] == (0.25, 0.25)
        assert meta.channels[0].start < meta.channels[0].end  # auto windows


class TestTiledPyramidReducedPages(SourceConformance):
    """A generic pyramidal TIFF: float32, levels as reduced pages after the full one."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        data = ramp((333, 517), "float32")
        levels = pyramid_of(data, 3)
        with tifffile.TiffWriter(tmp_path / f"{IMAGE_ID}.tif") as tw:
            for i, lev in enumerate(levels):
                tw.write(lev, tile=(128, 128), subfiletype=1 if i else 0, compression="zlib")
        async for c in open_case(tmp_path, "yx", levels, [(128, 128)] * 3):
            yield c


class TestSvsLikeJpegRgb(SourceConformance):
    """An SVS-like slide: RGB uint8, JPEG-compressed 256² tiles, reduced-page levels, `MPP`."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        rng = np.random.default_rng(3)
        smooth = rng.integers(0, 255, (60, 90, 3)).astype(np.uint8)
        data = np.repeat(np.repeat(smooth, 10, axis=0), 10, axis=1)  # 600×900×3
        path = tmp_path / f"{IMAGE_ID}.svs"
        with tifffile.TiffWriter(path) as tw:
            description = (
                "Aperio Image Library v12.0.0\n"
                "900x600 [0,0 900x600] (256x256) JPEG/RGB Q=90|MPP = 0.4990"
            )
            for i, lev in enumerate((data, np.ascontiguousarray(data[::2, ::2]))):
                tw.write(
                    lev, tile=(256, 256), compression="jpeg", photometric="rgb",
                    description=description if i == 0 else None, subfiletype=1 if i else 0,
                )  # fmt: skip
        # JPEG is lossy: compare with what tifffile itself decodes, level by level
        levels = [tifffile.imread(path, level=i) for i in range(2)]
        async for c in open_case(tmp_path, "yxc", levels, [(256, 256)] * 2):
            yield c

    async def test_rgb_samples_are_channels_and_mpp_the_pixel_size(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        assert (meta.size_c, meta.dtype) == (3, "uint8")
        assert meta.pixel_size[:2] == (0.499, 0.499)


class TestBigEndianStripsFiveD(SourceConformance):
    """Big-endian BigTIFF, uint16, TCZYX in rows-per-strip 16 (no tiles, no pyramid)."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        data = ramp((2, 3, 4, 70, 90), "uint16")
        tifffile.imwrite(
            tmp_path / f"{IMAGE_ID}.ome.tif", data, byteorder=">", bigtiff=True,
            rowsperstrip=16, metadata={"axes": "TCZYX"},
        )  # fmt: skip
        async for c in open_case(tmp_path, "tczyx", [data], [(90, 16)]):
            yield c


class TestMultiFileOmeTiff(SourceConformance):
    """A multi-file OME-TIFF set: one channel per file, the OME-XML naming each file by UUID."""

    @pytest.fixture
    async def case(self, tmp_path: Path) -> AsyncIterator[Case]:
        data = ramp((2, 80, 100), "uint16")
        ids = [f"urn:uuid:{uuid.uuid4()}" for _ in range(2)]
        names = [f"{IMAGE_ID}.ome.tif", "part-1.ome.tif"]
        tiffdata = "".join(
            f'<TiffData FirstC="{c}" IFD="0" PlaneCount="1"><UUID FileName="{names[c]}">'
            f"{ids[c]}</UUID></TiffData>"
            for c in range(2)
        )
        for c in range(2):
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
                f'UUID="{ids[c]}"><Image ID="Image:0" Name="multi"><Pixels ID="Pixels:0" '
                'DimensionOrder="XYCZT" Type="uint16" SizeX="100" SizeY="80" SizeC="2" '
                'SizeZ="1" SizeT="1"><Channel ID="Channel:0:0" Name="left" SamplesPerPixel="1"/>'
                '<Channel ID="Channel:0:1" Name="right" SamplesPerPixel="1"/>'
                f"{tiffdata}</Pixels></Image></OME>"
            )
            tifffile.imwrite(
                tmp_path / names[c], data[c], description=xml, metadata=None, tile=(32, 32)
            )
        async for c in open_case(tmp_path, "cyx", [data], [(32, 32)]):
            yield c

    async def test_both_files_are_one_image(self, case: Case) -> None:
        meta = await case.source.meta(case.image_id)
        assert [ch.label for ch in meta.channels] == ["left", "right"]


# ---- bad input -------------------------------------------------------------------------------


@pytest.fixture
async def bad_source(tmp_path: Path) -> AsyncIterator[tuple[TiffSource, Path]]:
    rows = ["id,path"]
    data = ramp((64, 64), "uint16")
    tifffile.imwrite(tmp_path / "ok.tif", data, tile=(32, 32), compression="zlib")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 200)
    (tmp_path / "scan.czi").write_bytes(b"ZISRAWFILE" + b"\0" * 200)
    (tmp_path / "fake.tif").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 200)  # a JPEG named .tif
    whole = (tmp_path / "ok.tif").read_bytes()
    (tmp_path / "truncated.tif").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "garbage.tif").write_bytes(b"II*\x00" + b"\xff" * 64)
    tifffile.imwrite(tmp_path / "odd.tif", data, tile=(32, 32))
    with tifffile.TiffFile(tmp_path / "odd.tif") as tf:
        offset = tf.pages.first.tags["Compression"].valueoffset
    raw = bytearray((tmp_path / "odd.tif").read_bytes())
    raw[offset : offset + 2] = struct.pack("<H", 60123)  # no such compression
    (tmp_path / "odd.tif").write_bytes(bytes(raw))
    for i, name in enumerate(
        ["ok.tif", "photo.jpg", "scan.czi", "fake.tif", "truncated.tif", "garbage.tif",
         "odd.tif", "missing.tif", "ok.tif#series=3"]
    ):  # fmt: skip
        rows.append(f"{i + 1},{name}")
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    settings = SourceSettings(catalog=tmp_path / "c.csv")
    catalog = Catalog(settings)
    source = TiffSource(settings, catalog)
    yield source, tmp_path
    await source.aclose()
    await catalog.aclose()


@pytest.mark.parametrize(
    ("image_id", "error", "words"),
    [
        (2, errors.UnsupportedFormat, "stored as JPEG"),
        (3, errors.UnsupportedFormat, "stored as Zeiss CZI"),
        (4, errors.UnsupportedFormat, "stored as JPEG"),
        (6, errors.SourceError, "broken"),
        (7, errors.UnsupportedFormat, "unknown compression (60123)"),
        (8, errors.NotFound, "image 8 not found"),
        (9, errors.NotFound, "image 9 not found"),
    ],
)
async def test_bad_files_are_named_not_crashed(
    bad_source: tuple[TiffSource, Path], image_id: int, error: type[Exception], words: str
) -> None:
    source, root = bad_source
    with pytest.raises(error) as info:
        await source.meta(image_id)
    exc = info.value
    assert isinstance(exc, errors.IdrServeError)
    assert words in exc.detail
    assert str(root) not in exc.detail  # never a path in what clients see
    if isinstance(exc, errors.UnsupportedFormat):
        assert exc.status == 415 and "OME-Zarr" in exc.detail and "convert" in exc.detail


async def test_a_truncated_file_is_a_502_when_read(bad_source: tuple[TiffSource, Path]) -> None:
    source, root = bad_source
    meta = await source.meta(5)  # the header survived; the tiles did not
    lv = meta.levels[0]
    whole = Selection(0, 0, 0, 1, (0,), Box(0, 0, lv.size_x, lv.size_y))
    with pytest.raises(errors.SourceError) as info:
        await source.read(5, whole)
    assert str(root) not in info.value.detail and info.value.status == 502


async def test_unknown_id_and_good_neighbour(bad_source: tuple[TiffSource, Path]) -> None:
    source, _ = bad_source
    with pytest.raises(errors.NotFound):
        await source.meta(UNKNOWN_ID)
    meta = await source.meta(1)
    assert (meta.size_x, meta.size_y) == (64, 64)


def test_names_and_series() -> None:
    assert is_tiff_name(Path("/d/a.OME.TIFF")) and is_tiff_name("/d/x.svs#series=2")
    assert not is_tiff_name(Path("/d/1.zarr")) and not is_tiff_name(Path("/d/a.jpg"))
    assert split_location(Path("/d/x.ndpi#series=12")) == (Path("/d/x.ndpi"), 12)
    assert split_location("/d/x.tif") == (Path("/d/x.tif"), 0)
    assert sniff_format(b"MM\x00+\x00\x08") == "BigTIFF"
    assert sniff_format(b"\x00\x01") == "unknown"


async def test_each_series_of_an_ome_tiff_has_its_own_metadata(tmp_path: Path) -> None:
    """tifffile makes one series per OME `Image`: `#series=1` is described by the second
    `Image` (its name, channels and pixel size), never by the first."""
    path = tmp_path / "two.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        for name, labels, size in (("first", ["A0", "A1"], 1.0), ("second", ["B0", "B1"], 2.0)):
            meta = {"axes": "CYX", "Name": name, "Channel": {"Name": labels}}
            meta |= {"PhysicalSizeX": size, "PhysicalSizeY": size}
            tw.write(ramp((2, 32, 32), "uint16"), tile=(16, 16), metadata=meta)
    (tmp_path / "c.csv").write_text("id,path\n1,two.ome.tif\n2,two.ome.tif#series=1\n")
    settings = SourceSettings(zarr_root=str(tmp_path), catalog=str(tmp_path / "c.csv"))
    catalog = Catalog(settings)
    source = TiffSource(settings, catalog)
    try:
        described = {}
        for image_id in (1, 2):
            meta = await source.meta(image_id)
            described[image_id] = (
                meta.name,
                [c.label for c in meta.channels],
                meta.pixel_size[0],
            )
    finally:
        await source.aclose()
        await catalog.aclose()
    assert described == {1: ("first", ["A0", "A1"], 1.0), 2: ("second", ["B0", "B1"], 2.0)}
