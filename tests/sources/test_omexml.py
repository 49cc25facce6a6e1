"""The shared OME-XML and vendor-tag reader, and its two callers agreeing on the same input:
`idrserve convert` (`convert/metadata.py`, `TiffInput`) and the TIFF source (`TiffSource`).

Each `test_both_*` pins one input on which the two used to disagree, with the behaviour kept."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import tifffile

from idrserve.catalog import Catalog
from idrserve.convert import metadata as md
from idrserve.convert.tiffin import TiffInput
from idrserve.model import ImageMeta
from idrserve.settings import SourceSettings
from idrserve.sources import omexml, tiff
from idrserve.sources.omexml import PhysicalSize
from tests.sources.conftest import ramp

OME = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
TWO_CHANNELS = '<Channel ID="Channel:0:0" Name="A"/><Channel ID="Channel:0:1" Name="B"/>'


def ome_xml(pixels: str = "", channels: str = TWO_CHANNELS, *, name: str = "img") -> str:
    """One `Image` of 2 × 16 × 16 uint8 planes that tifffile reads as an OME series."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><OME xmlns="{OME}">'
        f'<Image ID="Image:0" Name="{name}"><Pixels ID="Pixels:0" DimensionOrder="XYCZT"'
        ' Type="uint8" SizeX="16" SizeY="16" SizeC="2" SizeZ="1" SizeT="1"'
        f' {pixels}>{channels}<TiffData IFD="0" PlaneCount="2"/></Pixels></Image></OME>'
    )


def write_ome(path: Path, xml: str, **kw: Any) -> Path:
    data = ramp((2, 16, 16), "uint8")
    tifffile.imwrite(path, data, description=xml.encode(), metadata=None, **kw)  # Å: UTF-8
    return path


def converted(path: Path, series: int = 0) -> md.ImageInfo:
    image = TiffInput(path, series, 1)
    try:
        return image.info
    finally:
        image.close()


async def served(path: Path, series: int = 0) -> ImageMeta:
    catalog_csv = path.parent / "catalog.csv"
    catalog_csv.write_text(f"id,path\n1,{path.name}#series={series}\n")
    settings = SourceSettings(zarr_root=str(path.parent), catalog=str(catalog_csv))
    catalog = Catalog(settings)
    source = tiff.TiffSource(settings, catalog)
    try:
        return await source.meta(1)
    finally:
        await source.aclose()
        await catalog.aclose()


def stub_tif(xml: str) -> Any:
    return SimpleNamespace(is_ome=True, ome_metadata=xml, filename="stub.ome.tif")


def stub_page(description: str = "", **tags: Any) -> Any:
    return SimpleNamespace(
        description=description, tags={k: SimpleNamespace(value=v) for k, v in tags.items()}
    )


# ---- the reader ------------------------------------------------------------------------------


def test_image_of_a_series_by_index_then_name() -> None:
    xml = (
        f'<OME xmlns="{OME}"><Image Name="a"><Pixels PhysicalSizeX="1"/></Image>'
        '<Image Name="b"><Pixels PhysicalSizeX="2"><Channel Name="B" Color="-1"'
        ' SamplesPerPixel="3"/></Pixels></Image><Image Name="c"/></OME>'
    )
    first, second = omexml.read_image(xml, 0), omexml.read_image(xml, 1, "b")
    assert first == omexml.OmeXmlImage("a", (), {"x": PhysicalSize(1.0, "micrometer")})
    assert second is not None and second.name == "b"
    assert second.channels == (omexml.OmeChannel("B", (255, 255, 255, 255), 3),)
    assert omexml.read_image(xml, 7, "b") == second  # tifffile skipped some Images
    assert omexml.read_image(xml, 2) is None  # no Pixels
    assert omexml.read_image(xml, -1) is None  # not a series index, not the last Image
    assert omexml.read_image(xml, 3) is None
    with pytest.raises(omexml.OmeXmlError):
        omexml.read_image("<OME", 0)


@pytest.mark.parametrize(
    ("value", "rgba"),
    [
        ("-1", (255, 255, 255, 255)),
        ("4294967295", (255, 255, 255, 255)),  # the unsigned spelling of the same colour
        ("-16776961", (255, 0, 0, 255)),
        ("65535", (0, 0, 255, 255)),
        ("16711935", (0, 255, 0, 255)),
        ("0", (0, 0, 0, 0)),
        ("red", None),
        (None, None),
    ],
)
def test_ome_colour_is_signed_32_bit_rgba(value: str | None, rgba: tuple[int, ...] | None) -> None:
    assert omexml.ome_rgba(value) == rgba
    assert md.ome_colour(value) == (None if rgba is None else "{:02X}{:02X}{:02X}".format(*rgba))


def test_physical_sizes_in_micrometres() -> None:
    assert PhysicalSize(0.5, "inch").micrometres == 12700.0
    assert PhysicalSize(5000.0, "angstrom").micrometres == pytest.approx(0.5)
    assert PhysicalSize(2.0, None).micrometres is None
    assert PhysicalSize(2.0, "second").micrometres is None
    assert PhysicalSize(1e305, "kilometer").micrometres is None  # inf: JSON cannot carry it


def test_vendor_pixel_size_of_a_page() -> None:
    cm = {"ResolutionUnit": 3}
    svs = stub_page("Aperio x|MPP = 0.5", XResolution=(1, 1), **cm)
    assert omexml.page_pixel_size(svs) == (0.5, 0.5)  # MPP first
    page = stub_page(XResolution=(40000, 1), YResolution=(20000, 1), **cm)
    assert omexml.page_pixel_size(page) == (0.25, 0.5)
    no_unit = stub_page(XResolution=(40000, 1), ResolutionUnit=1)
    assert omexml.page_pixel_size(no_unit) == (None, None)


# ---- both callers, on the inputs they used to disagree about ---------------------------------


def test_both_give_a_series_no_image_describes_nothing() -> None:
    """Was: the TIFF source fell back to the only `Image` for any series; convert gave none."""
    xml = ome_xml('PhysicalSizeX="0.5"', name="only")
    assert md.parse_ome_xml(xml, 1, "other") is None
    assert tiff._ome_facts(stub_tif(xml), 1, "other") is None
    assert tiff._ome_facts(stub_tif(xml), 0, "only") is not None


def test_both_match_elements_by_local_name() -> None:
    """Was: the TIFF source looked for `Image` in the root's namespace only; convert in any."""
    xml = f'<OME xmlns="{OME}"><Image xmlns="" Name="n"><Pixels><Channel Name="A"/></Pixels>'
    xml += "</Image></OME>"
    image = md.parse_ome_xml(xml, 0)
    assert image is not None and image.channel_names == ("A",)
    facts = tiff._ome_facts(stub_tif(xml), 0, None)
    assert facts is not None and facts.names == ("A",)


def test_both_read_a_bad_samples_per_pixel_as_one() -> None:
    """Was: convert raised ValueError on SamplesPerPixel="x"; the TIFF source read 1.
    (tifffile itself refuses such a file, so only the parsers see it.)"""
    channels = '<Channel Name="A" SamplesPerPixel="x"/><Channel Name="" SamplesPerPixel="0"/>'
    xml = ome_xml(channels=channels)
    image = md.parse_ome_xml(xml, 0)
    assert image is not None and image.samples == 1
    assert image.channel_names == ("A", None)  # an empty Name is no name, in both
    facts = tiff._ome_facts(stub_tif(xml), 0, None)
    assert facts is not None and facts.names == ("A", None)


@pytest.mark.parametrize(
    ("pixels", "stored", "micrometres"),
    [
        # Was: convert kept 0.5 with no unit; the TIFF source read µm. The schema's default.
        ('PhysicalSizeX="0.5" PhysicalSizeXUnit=""', PhysicalSize(0.5, "micrometer"), 0.5),
        # Was: the TIFF source dropped OME symbols it had no factor for (Å, pm, dm, km, in, ft).
        ('PhysicalSizeX="5000" PhysicalSizeXUnit="Å"', PhysicalSize(5000.0, "angstrom"), 0.5),
        ('PhysicalSizeX="0.5" PhysicalSizeXUnit="in"', PhysicalSize(0.5, "inch"), 12700.0),
        # Was: convert refused UDUNITS-2 names as units (kept no unit); the TIFF source read them.
        ('PhysicalSizeX="50" PhysicalSizeXUnit="nanometer"', PhysicalSize(50.0, "nanometer"), 0.05),
        # Was: the TIFF source lower-cased symbols, reading megametres (Mm) as millimetres and
        # NM as nm; OME's symbols are case-sensitive, so neither is a unit either reads now.
        ('PhysicalSizeX="2" PhysicalSizeXUnit="Mm"', PhysicalSize(2.0, None), None),
        ('PhysicalSizeX="500" PhysicalSizeXUnit="NM"', PhysicalSize(500.0, None), None),
        # Not positive: no OME size, so the vendor tags count (the TIFF source used to read
        # none once an OME-XML was there).
        ('PhysicalSizeX="-1"', None, 0.25),
    ],
)
async def test_both_read_physical_size_units_alike(
    tmp_path: Path, pixels: str, stored: PhysicalSize | None, micrometres: float | None
) -> None:
    path = write_ome(
        tmp_path / "u.ome.tif",
        ome_xml(pixels),
        resolution=(40000, 40000),
        resolutionunit="CENTIMETER",
    )
    info = converted(path)
    assert info.sizes.get("x") == (stored or PhysicalSize(0.25, "micrometer"))
    meta = await served(path)
    assert meta.pixel_size[0] == (pytest.approx(micrometres) if micrometres else None)


async def test_both_fall_back_to_resolution_tags_without_ome_sizes(tmp_path: Path) -> None:
    """Was: the TIFF source read no pixel size from an OME-TIFF whose OME-XML gives none;
    convert read the resolution tags. OME-XML that states no size contradicts nothing."""
    path = write_ome(
        tmp_path / "r.ome.tif", ome_xml(), resolution=(40000, 20000), resolutionunit="CENTIMETER"
    )
    assert converted(path).sizes == {
        "x": PhysicalSize(0.25, "micrometer"),
        "y": PhysicalSize(0.5, "micrometer"),
    }
    assert (await served(path)).pixel_size == (0.25, 0.5, None)


async def test_both_read_each_series_own_resolution(tmp_path: Path) -> None:
    """Was: the TIFF source read the file's first page for every series; convert the series'
    own page (an SVS label image is not at the slide's MPP)."""
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as tw:
        for size, per_cm in ((32, 40000), (16, 20000)):
            data = np.zeros((size, size), np.uint8)
            tw.write(data, resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    assert converted(path, 1).sizes["x"] == PhysicalSize(0.5, "micrometer")
    assert (await served(path, 1)).pixel_size[:2] == (0.5, 0.5)


@pytest.mark.parametrize(
    ("description", "mpp"),
    [
        # Was: the TIFF source took the first number after any key ending in MPP.
        ("Aperio Image Library v1\r\n32x32 |OriginalMPP = 0.5|MPP = 0.25", 0.25),
        # Was: the TIFF source read no size from an SVS without a usable MPP; convert read the
        # resolution tags (here 20000 pixels per cm: 0.5 µm).
        ("Aperio Image Library v1\r\n32x32 |AppMag = 20|MPP = 0.25um", 0.5),
        ("Aperio Image Library v1\r\n32x32 |AppMag = 20", 0.5),
    ],
)
async def test_both_read_svs_mpp_alike(tmp_path: Path, description: str, mpp: float) -> None:
    path = tmp_path / "s.svs"
    tifffile.imwrite(
        path,
        np.zeros((32, 32, 3), np.uint8),
        photometric="rgb",
        description=description,
        resolution=(20000, 20000),
        resolutionunit="CENTIMETER",
    )
    assert converted(path).sizes["x"] == PhysicalSize(mpp, "micrometer")
    assert (await served(path)).pixel_size[:2] == (mpp, mpp)


def test_both_refuse_resolutions_that_are_not_positive() -> None:
    """Was: the TIFF source made a 0 µm pixel of a zero denominator (and a negative one of a
    negative rational), and needed both X and Y tags; convert refused those and read each
    axis on its own. PhysicalSize must be positive."""
    assert md.resolution_pixel_size((40000, 0), 3) is None
    assert md.resolution_pixel_size((-40000, 1), 3) is None
    cm = {"ResolutionUnit": 3}
    zero = stub_page(XResolution=(40000, 0), YResolution=(1, 0), **cm)
    assert tiff._pixel_size(None, zero) == (None, None, None)
    assert tiff._pixel_size(None, stub_page(XResolution=(40000, 1), **cm)) == (0.25, None, None)


def test_both_turn_samples_into_the_same_channels() -> None:
    """Was: the TIFF source repeated the channel's name and colour for every sample; convert
    named them Red, Green, Blue (Alpha) and coloured them so."""
    names, colours = omexml.sample_channels(4, 4, ("Slide",), (None,), omexml.SAMPLE_RGBA)
    assert names == ("Slide Red", "Slide Green", "Slide Blue", "Slide Alpha")
    assert colours == omexml.SAMPLE_RGBA
    assert md.channel_labels(4, 4, ("Slide",), (None,)) == (
        names,
        ("FF0000", "00FF00", "0000FF", "FFFFFF"),
    )
    assert omexml.sample_channels(2, 2, (), (), omexml.SAMPLE_RGBA) == (("0", "1"), (None, None))
    # one sample a pixel: kept when there is one per channel, else not trusted
    assert omexml.sample_channels(2, 1, ("a", "b"), (), omexml.SAMPLE_RGBA) == (("a", "b"), ())
    assert omexml.sample_channels(3, 1, ("a", "b"), (), omexml.SAMPLE_RGBA) == ((), ())
    # a document listing each sample as a channel names (and may colour) them itself
    listed = omexml.sample_channels(
        3, 3, ("R", None, "B"), (None, (9, 9, 9, 255), None), omexml.SAMPLE_RGBA
    )
    assert listed == (
        ("R", "Green", "B"),
        (omexml.SAMPLE_RGBA[0], (9, 9, 9, 255), omexml.SAMPLE_RGBA[2]),
    )
    assert omexml.is_rgb(2, 3) and omexml.is_rgb(6, 4)
    assert not omexml.is_rgb(1, 3) and not omexml.is_rgb(2, 2)
