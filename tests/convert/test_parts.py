"""The converter's pure parts: level planning, the 2×2 mean, metadata parsing, the chunk and
shard encoder (against zarr-python's own writes) and the read-back check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec

from idrserve.convert import ConvertError, Options, OptionsError
from idrserve.convert import metadata as md
from idrserve.convert.output import Output
from idrserve.convert.plan import Layout, LevelPlan, downsample, plan_levels
from idrserve.convert.readback import read_back
from tests.convert.conftest import reference_mean


def test_plan_auto_halves_until_256() -> None:
    levels = plan_levels([(1000, 3000)], None)
    assert [(lv.height, lv.width) for lv in levels] == [
        (1000, 3000),
        (500, 1500),
        (250, 750),
        (125, 375),
        (62, 187),
    ]
    assert [lv.source for lv in levels] == [0, None, None, None, None]
    assert plan_levels([(256, 100)], None) == (LevelPlan(256, 100, 0),)


def test_plan_uses_input_levels_of_the_right_size() -> None:
    # An SVS-like pyramid by 4, ceil-sized: serves levels 2 and 4.
    sizes = [(1001, 1503), (251, 376), (63, 94), (10, 10)]
    levels = plan_levels(sizes, 5)
    assert [lv.source for lv in levels] == [0, None, 1, None, 2]
    assert (levels[3].height, levels[3].width) == (125, 188)  # floor of the file's level
    # A level off by more than rounding is not used.
    assert [lv.source for lv in plan_levels([(1000, 1000), (480, 500)], 2)] == [0, None]


def test_plan_explicit_levels() -> None:
    assert len(plan_levels([(64, 64)], 1)) == 1
    assert len(plan_levels([(64, 64)], 7)) == 7  # down to 1 × 1
    with pytest.raises(OptionsError, match="a 64×64 image has at most 7 levels"):
        plan_levels([(64, 64)], 8)


@pytest.mark.parametrize(
    "dtype", ["uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"]
)
def test_downsample_integers_is_the_rounded_mean(dtype: str) -> None:
    info = np.iinfo(np.dtype(dtype))
    rng = np.random.default_rng(1)
    lo, hi = max(int(info.min), -(2**62)), min(int(info.max), 2**62)
    data = rng.integers(lo, hi, (2, 9, 13), endpoint=True).astype(dtype)
    data[0, :2, :2] = info.max  # sums that would overflow the dtype
    data[1, :2, :2] = info.min
    data[0, 2:4, 0:2] = [[1, 2], [1, 2]] if info.min == 0 else [[-1, -2], [-1, -2]]  # halves
    out = downsample(data)
    assert out.dtype == data.dtype and out.shape == (2, 4, 6)
    if np.dtype(dtype).itemsize < 8:
        np.testing.assert_array_equal(out, reference_mean(data))
    assert out[0, 0, 0] == info.max and out[1, 0, 0] == info.min
    assert out[0, 1, 0] == (2 if info.min == 0 else -1)  # 1.5 → 2, -1.5 → -1 (half up)


def test_downsample_floats() -> None:
    data = np.random.default_rng(2).normal(0, 1e3, (3, 10, 11)).astype(np.float32)
    data[0, 0, 0] = np.nan
    out = downsample(data)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, reference_mean(data))
    assert np.isnan(out[0, 0, 0])


def test_ome_colour_and_units() -> None:
    assert md.ome_colour("-1") == "FFFFFF"  # signed RGBA: opaque white
    assert md.ome_colour("65535") == "0000FF"
    assert md.ome_colour("16711935") == "00FF00"
    assert md.ome_colour("x") is None
    xml = (
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
        '<Image ID="Image:0" Name="a"><Pixels PhysicalSizeX="0.5" PhysicalSizeY="0.5"/></Image>'
        '<Image ID="Image:1" Name="b"><Pixels PhysicalSizeX="20" PhysicalSizeXUnit="nm"'
        ' PhysicalSizeZ="3" PhysicalSizeZUnit="furlong" TimeIncrement="2"'
        ' TimeIncrementUnit="ms"><Channel Name="A" Color="-16776961"/><Channel/></Pixels>'
        "</Image></OME>"
    )
    first = md.parse_ome_xml(xml, 0)
    assert first is not None and first.sizes["x"] == md.PhysicalSize(0.5, "micrometer")
    second = md.parse_ome_xml(xml, 1, "b")
    assert second is not None
    assert second.sizes == {
        "x": md.PhysicalSize(20.0, "nanometer"),
        "z": md.PhysicalSize(3.0, None),  # a unit NGFF has no name for: none rather than a guess
        "t": md.PhysicalSize(2.0, "millisecond"),
    }
    assert second.channel_names == ("A", None) and second.channel_colours == ("FF0000", None)
    assert md.parse_ome_xml(xml, 5, "b") == second  # found by name
    assert md.parse_ome_xml("<not xml", 0) is None


def test_vendor_pixel_sizes() -> None:
    assert md.svs_pixel_size("Aperio Image Library v1\r\n1x1 |AppMag = 20|MPP = 0.2520") == 0.252
    assert md.svs_pixel_size("Aperio Image Library v1|MPP = bad") is None
    assert md.svs_pixel_size("ImageJ=1.5") is None
    assert md.resolution_pixel_size((40000, 1), 3) == 0.25  # NDPI: pixels per centimetre
    assert md.resolution_pixel_size((254, 100), 2) == 10000.0  # inch
    assert md.resolution_pixel_size((72, 1), 1) is None  # no unit
    sizes = md.imagej_sizes({"unit": "\\u00B5m", "spacing": 0.8, "finterval": 2}, 4.0)
    assert sizes["x"] == md.PhysicalSize(0.25, "micrometer") and sizes["z"].value == 0.8
    assert sizes["t"] == md.PhysicalSize(2.0, "second")


def test_channel_labels_for_samples() -> None:
    names, colours = md.channel_labels(3, 3, ("RGB",), ())
    assert names == ("RGB Red", "RGB Green", "RGB Blue")
    assert colours == ("FF0000", "00FF00", "0000FF")
    assert md.channel_labels(2, 1, ("a",), ()) == ((), ())  # counts differ: not trusted


def _layout(dtype: str, shard: int | None, width: int = 300, height: int = 200) -> Layout:
    return Layout(
        axes="cyx",
        size_t=1,
        size_c=2,
        size_z=1,
        samples=1,
        dtype=np.dtype(dtype),
        levels=(LevelPlan(height, width, 0),),
        chunk=64,
        shard=shard,
        band=shard or 64,
    )


@pytest.mark.parametrize(
    ("ngff", "shard", "compressor"),
    [("0.4", None, "blosc-lz4"), ("0.5", None, "zstd"), ("0.5", 256, "blosc-zstd")],
)
def test_chunk_writer_matches_what_zarr_reads(
    tmp_path: Path, ngff: str, shard: int | None, compressor: str
) -> None:
    """Bands stored by the chunk writer read back through zarr-python as written, edge
    chunks, shards with inner chunks outside the array and all."""
    options = Options(
        tmp_path / "in", tmp_path / "o.zarr", ngff=ngff, chunks=64, shard=shard,  # type: ignore[arg-type]
        compressor=compressor,  # type: ignore[arg-type]
    )  # fmt: skip
    layout = _layout("uint16", shard)
    root = tmp_path / "o.zarr"
    root.mkdir()
    output = Output(root, layout, options, create=True)
    data = np.random.default_rng(3).integers(0, 65535, (2, 200, 300), dtype=np.uint16)
    for c in range(2):
        for band in range(layout.bands(0)):
            start, stop = layout.rows(0, band)
            crcs = output.write(0, (0, c, 0), band, data[c : c + 1, start:stop])
            assert output.verify(crcs)
    np.testing.assert_array_equal(zarr.open_array(root / "0", mode="r")[:], data)
    start, stop = layout.rows(0, 1)
    np.testing.assert_array_equal(output.read(0, (0, 1, 0), 1), data[1:2, start:stop])


def test_shard_index_agrees_with_zarr_python(tmp_path: Path) -> None:
    """The same data written by zarr-python and by the chunk writer decode alike, and the
    shard index leaves out the same inner chunks."""
    data = np.arange(2 * 200 * 300, dtype=np.uint16).reshape(2, 200, 300)
    theirs = zarr.create_array(
        tmp_path / "theirs.zarr", shape=data.shape, chunks=(1, 64, 64), shards=(1, 256, 256),
        dtype="uint16", compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        zarr_format=3, fill_value=0,
    )  # fmt: skip
    theirs[:] = data
    options = Options(tmp_path / "in", tmp_path / "mine.zarr", ngff="0.5", chunks=64, shard=256)
    layout = _layout("uint16", 256)
    root = tmp_path / "mine.zarr"
    root.mkdir()
    output = Output(root, layout, options, create=True)
    for c in range(2):
        output.write(0, (0, c, 0), 0, data[c : c + 1])
    for key in ("0/c/0/0/1", "1/c/1/0/0"):
        mine = (root / "0" / "c" / key.split("/", 2)[2]).read_bytes()[-(16 * 16 + 4) :]
        ref = (tmp_path / "theirs.zarr" / key.split("/", 1)[1]).read_bytes()
        index_mine = np.frombuffer(mine[:-4], "<u8").reshape(4, 4, 2)
        index_ref = np.frombuffer(ref[-(16 * 16 + 4) : -4], "<u8").reshape(4, 4, 2)
        np.testing.assert_array_equal(index_mine == 2**64 - 1, index_ref == 2**64 - 1)
    np.testing.assert_array_equal(zarr.open_array(root / "0", mode="r")[:], theirs[:])


def test_read_back_refuses_other_pixels(tmp_path: Path) -> None:
    options = Options(tmp_path / "in", tmp_path / "o.zarr", chunks=64)
    layout = _layout("uint8", None, width=100, height=80)
    root = tmp_path / "o.zarr"
    root.mkdir()
    output = Output(root, layout, options, create=True)
    data = np.full((2, 80, 100), 7, np.uint8)
    for c in range(2):
        for band in range(layout.bands(0)):
            start, stop = layout.rows(0, band)
            output.write(0, (0, c, 0), band, data[c : c + 1, start:stop])
    axes = [{"name": a, "type": "channel" if a == "c" else "space"} for a in "cyx"]
    scale = [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]
    output.set_attributes(
        {"multiscales": [{"version": "0.4", "axes": axes,
                          "datasets": [{"path": "0", "coordinateTransformations": scale}]}]}
    )  # fmt: skip
    read_back(root, layout, data[:, :64, :64])
    with pytest.raises(ConvertError, match="does not read back as the input's pixels"):
        read_back(root, layout, data[:, :64, :64] + 1)
