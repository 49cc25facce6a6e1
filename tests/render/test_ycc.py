"""One-channel renders as YCbCr planes (render/ycc.py): the same JPEG bytes as the RGB path.

The promise is byte equality with `encode_jpeg(render_rgb(...))` wherever `render_ycc` gives
planes, and None wherever it could not keep it; both halves are checked here, over the
colour and greyscale models, LUTs, families, inversion, every pixel type and tile shapes at
and around the limits.
"""

from __future__ import annotations

import numpy as np
import pytest

from idrserve.encode.jpeg import encode_jpeg, encode_jpeg_planes
from idrserve.model import ChannelRender, ColorModel, Family, RenderSettings
from idrserve.render import clear_caches, kernels, render_rgb, render_ycc, ycc
from idrserve.render.lut import LutTable
from idrserve.render.ycc import ycc_of_rgb

DTYPES = ["uint8", "int8", "uint16", "int16", "int32", "uint32", "float32", "float64"]
# Windows that clip at both ends for each type's test data below.
WINDOWS = {"uint8": (20, 200), "int8": (-60, 90), "uint16": (800, 9000), "int16": (-900, 7000)}


@pytest.fixture(scope="module")
def luts() -> LutTable:
    return LutTable(None)


def data(dtype: str, shape: tuple[int, ...], seed: int = 3) -> np.ndarray:
    """Smooth structure plus noise, so that tiles have edges, flat parts and clipped parts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[-2], 0 : shape[-1]]
    base = 0.5 + 0.4 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    values = np.clip(base + rng.normal(0, 0.15, size=shape), 0, 1)
    if dtype.startswith("float"):
        return (values * 5000 - 1000).astype(dtype)
    info = np.iinfo(dtype)
    span = min(float(info.max) - float(info.min), 20000.0)
    low = max(float(info.min), -span / 2) if info.min < 0 else 0.0
    return (low + values * span).astype(dtype)


def channel(dtype: str, **kw: object) -> ChannelRender:
    start, end = WINDOWS.get(dtype, (0.0, 3000.0))
    return ChannelRender(active=True, start=start, end=end, **kw)  # type: ignore[arg-type]


def rgb_jpeg(
    raw: np.ndarray, settings: RenderSettings, dtype: str, luts: LutTable, q: float
) -> bytes:
    return encode_jpeg(render_rgb(raw, settings, dtype, luts), q)


def planes_jpeg(
    raw: np.ndarray, settings: RenderSettings, dtype: str, luts: LutTable, q: float
) -> bytes | None:
    planes = render_ycc(raw, settings, dtype, luts)
    return None if planes is None else encode_jpeg_planes(planes.y, planes.cb, planes.cr, q)


COLOURED = {
    "red": {"color": (255, 0, 0, 255)},
    "green": {"color": (0, 255, 0, 255)},
    "yellow": {"color": (255, 255, 0, 255)},
    "teal, half alpha": {"color": (0, 140, 160, 128)},
    "lut": {"lut": "cool.lut"},
    "inverted magenta": {"color": (255, 0, 255, 255), "inverted": True},
    "logarithmic orange": {"color": (255, 128, 0, 255), "family": Family.LOGARITHMIC},
}
GREY = {
    "white": {},
    "grey colour": {"color": (128, 128, 128, 255)},
    "black": {"color": (0, 0, 0, 255)},
    "polynomial": {"family": Family.POLYNOMIAL, "coefficient": 2.0},
    "inverted": {"inverted": True},
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", [*COLOURED, *GREY])
def test_one_channel_colour_render_gives_the_rgb_paths_bytes(
    dtype: str, name: str, luts: LutTable
) -> None:
    kw = COLOURED.get(name) or GREY[name]
    settings = RenderSettings((channel(dtype, **kw),))
    raw = data(dtype, (1, 64, 40))
    for q in (0.9, 0.5, 1.0):
        got = planes_jpeg(raw, settings, dtype, luts, q)
        # 40 is even but not a multiple of 16: grey renders only.
        if name in COLOURED:
            assert got is None
        else:
            assert got == rgb_jpeg(raw, settings, dtype, luts, q)
    raw = data(dtype, (1, 34, 96), seed=4)
    for q in (0.9, 0.75):
        got = planes_jpeg(raw, settings, dtype, luts, q)
        assert got is not None
        assert got == rgb_jpeg(raw, settings, dtype, luts, q)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kw", [{}, {"inverted": True}, {"family": Family.EXPONENTIAL}])
def test_greyscale_model_gives_the_rgb_paths_bytes(
    dtype: str, kw: dict[str, object], luts: LutTable
) -> None:
    # The greyscale model renders the first active channel only, whatever its colour.
    settings = RenderSettings(
        (
            ChannelRender(active=False, start=0, end=1),
            channel(dtype, color=(255, 0, 0, 255), **kw),  # type: ignore[arg-type]
            channel(dtype, color=(0, 255, 0, 255)),
        ),
        model=ColorModel.GREYSCALE,
    )
    for shape in [(1, 256, 256), (1, 2, 2), (1, 100, 30), (1, 18, 1026)]:
        raw = data(dtype, shape)
        got = planes_jpeg(raw, settings, dtype, luts, 0.9)
        assert got is not None
        assert got == rgb_jpeg(raw, settings, dtype, luts, 0.9)


@pytest.mark.parametrize(
    "shape",
    [(1, 37, 64), (1, 64, 37), (1, 1, 1), (1, 1, 16), (1, 255, 256), (1, 3, 2)],
)
def test_odd_sizes_take_the_rgb_path(shape: tuple[int, ...], luts: LutTable) -> None:
    # libjpeg-turbo reads planar input in whole 2×2 blocks: odd sizes would not give the same
    # bytes (or would be read past their end).
    for model in (ColorModel.COLOR, ColorModel.GREYSCALE):
        settings = RenderSettings((channel("uint16"),), model=model)
        assert render_ycc(data("uint16", shape), settings, "uint16", luts) is None


@pytest.mark.parametrize("width", [16, 32, 256, 512])
def test_coloured_chroma_at_multiples_of_16(width: int, luts: LutTable) -> None:
    settings = RenderSettings((channel("uint16", color=(0, 255, 0, 255)),))
    raw = data("uint16", (1, 40, width))
    got = planes_jpeg(raw, settings, "uint16", luts, 0.9)
    assert got is not None
    assert got == rgb_jpeg(raw, settings, "uint16", luts, 0.9)


@pytest.mark.parametrize("width", [2, 8, 24, 100, 250])
def test_coloured_chroma_at_other_widths_takes_the_rgb_path(width: int, luts: LutTable) -> None:
    # From RGB, libjpeg pads the full-size image's right edge before averaging chroma; from
    # planes, it pads the averaged plane: the padding blocks would differ.
    settings = RenderSettings((channel("uint16", color=(0, 255, 0, 255)),))
    assert render_ycc(data("uint16", (1, 40, width)), settings, "uint16", luts) is None


def test_the_width_rule_is_needed() -> None:
    # Without the multiple-of-16 rule, coloured chroma at width 24 changes the file: the test
    # above would otherwise pin a limit that does not exist.
    rng = np.random.default_rng(5)
    rgb = np.zeros((40, 24, 3), dtype=np.uint8)
    rgb[..., 1] = rng.integers(0, 256, size=(40, 24), dtype=np.uint8)
    y, cb, cr = ycc_of_rgb(rgb[..., 0], rgb[..., 1], rgb[..., 2])
    assert encode_jpeg_planes(y, down(cb), down(cr), 0.9) != encode_jpeg(rgb, 0.9)


def down(plane: np.ndarray) -> np.ndarray:
    """libjpeg's h2v2 downsampling, written out."""
    p = plane.astype(np.int64)
    total = p[0::2, 0::2] + p[0::2, 1::2] + p[1::2, 0::2] + p[1::2, 1::2]
    bias = 1 + (np.arange(total.shape[1]) % 2)
    return ((total + bias) >> 2).astype(np.uint8)


@pytest.mark.parametrize("shape", [(256, 256), (64, 32), (2, 16)])
def test_ycc_of_rgb_is_libjpegs_conversion(shape: tuple[int, int]) -> None:
    # Any RGB image, not only one-channel renders: the formulas are libjpeg's.
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    y, cb, cr = ycc_of_rgb(rgb[..., 0], rgb[..., 1], rgb[..., 2])
    for q in (0.5, 0.9, 1.0):
        assert encode_jpeg_planes(y, down(cb), down(cr), q) == encode_jpeg(rgb, q)


def test_several_channels_take_the_rgb_path(luts: LutTable) -> None:
    settings = RenderSettings((channel("uint16"), channel("uint16", color=(255, 0, 0, 255))))
    assert render_ycc(data("uint16", (2, 64, 64)), settings, "uint16", luts) is None


def test_no_channel_renders_black_on_the_rgb_path(luts: LutTable) -> None:
    settings = RenderSettings((ChannelRender(active=False, start=0, end=1),))
    assert render_ycc(np.zeros((0, 64, 64), dtype=np.uint16), settings, "uint16", luts) is None


def test_bad_shapes_are_refused_as_render_rgb_refuses_them(luts: LutTable) -> None:
    settings = RenderSettings((channel("uint16"),))
    with pytest.raises(ValueError, match="shaped"):
        render_ycc(np.zeros((64, 64), dtype=np.uint16), settings, "uint16", luts)
    with pytest.raises(ValueError, match="planes for"):
        render_ycc(np.zeros((2, 64, 64), dtype=np.uint16), settings, "uint16", luts)


def test_composed_tables_are_cached_and_read_only(luts: LutTable) -> None:
    clear_caches()
    settings = RenderSettings((channel("uint16", color=(0, 255, 0, 255)),))
    raw = data("uint16", (1, 32, 32))
    first = render_ycc(raw, settings, "uint16", luts)
    second = render_ycc(raw, settings, "uint16", luts)
    assert first is not None and second is not None
    np.testing.assert_array_equal(first.y, second.y)
    (entry,) = ycc._COMPOSED.values()
    composed = entry[1]
    assert composed.packed is not None  # green: coloured chroma
    assert not composed.luma.flags.writeable and not composed.packed.flags.writeable
    # Packed Y | Cb << 8 | Cr << 16, libjpeg's values.
    entry_tables = entry[0]
    assert entry_tables[1] is not None
    y, cb, cr = ycc_of_rgb(np.zeros(65536), entry_tables[1], np.zeros(65536))
    np.testing.assert_array_equal(composed.packed & 0xFF, y)
    np.testing.assert_array_equal((composed.packed >> 8) & 0xFF, cb)
    np.testing.assert_array_equal(composed.packed >> 16, cr)
    clear_caches()
    assert not ycc._COMPOSED


# The plane loops against their numpy definitions (as tests/render/test_kernels.py does for
# the RGB loops).


def _index(dtype: type[np.unsignedinteger], contiguous: bool) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(8)
    size = 256 if dtype is np.uint8 else 65536
    tables = tuple(rng.integers(0, 256, size=size, dtype=np.uint8) for _ in range(3))
    for t in tables:
        t.setflags(write=False)
    index = rng.integers(0, size, size=(38, 92), dtype=dtype)
    if not contiguous:
        index = index[::-1, ::2]
    return (index, *tables)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("contiguous", [True, False])
def test_plane_loops_equal_numpy(dtype: type[np.unsignedinteger], contiguous: bool) -> None:
    assert kernels.ycc_420 is not kernels.ycc_420_numpy  # compiled, as the RGB loops
    index, ty, tcb, tcr = _index(dtype, contiguous)
    packed = ty.astype(np.uint32) | tcb.astype(np.uint32) << 8 | tcr.astype(np.uint32) << 16
    packed.setflags(write=False)
    h, w = index.shape
    got = [np.zeros((h, w), np.uint8), np.zeros((h // 2, w // 2), np.uint8)]
    got.append(np.zeros_like(got[1]))
    want = [np.ones_like(p) for p in got]
    kernels.ycc_420(got[0], got[1], got[2], packed, index)
    kernels.ycc_420_numpy(want[0], want[1], want[2], packed, index)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(got[0], ty[index])
    np.testing.assert_array_equal(got[1], down(tcb[index]))
    np.testing.assert_array_equal(got[2], down(tcr[index]))
    plane, plane_np = np.zeros((h, w), np.uint8), np.ones((h, w), np.uint8)
    kernels.lut_plane(plane, ty, index)
    kernels.lut_plane_numpy(plane_np, ty, index)
    np.testing.assert_array_equal(plane, ty[index])
    np.testing.assert_array_equal(plane_np, ty[index])


def test_composed_tables_are_safe_across_threads() -> None:
    # Renders run on the event loop and in the CPU pool's threads at once; with more table
    # sets than the cache holds, lookups and evictions interleave.
    import sys
    import threading

    sets = []
    for i in range(300):
        table = np.full(256, i % 256, dtype=np.uint8)
        table.setflags(write=False)
        sets.append((table, None, table))
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for n in range(600):
                tables = sets[(offset * 37 + n * 7) % len(sets)]
                composed = ycc.composed_tables(tables)  # type: ignore[arg-type]
                assert composed.luma[0] == ycc_of_rgb(tables[0], tables[0] * 0, tables[2])[0][0]
        except BaseException as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
        clear_caches()
    assert not errors, errors[:3]
