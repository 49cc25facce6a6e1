"""Property tests: quantize always yields uint8; render_rgb never raises on valid settings;
one-channel YCbCr planes encode to the RGB path's JPEG."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from idrserve.encode.jpeg import encode_jpeg, encode_jpeg_planes
from idrserve.model import ChannelRender, ColorModel, Family, RenderSettings
from idrserve.render import render_rgb, render_ycc
from idrserve.render.lut import LutTable
from idrserve.render.quantize import TYPE_RANGES, quantize

DTYPES = sorted(TYPE_RANGES)
LUTS = LutTable(None)

windows = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.integers(-(2**33), 2**33)
coefficients = st.floats(min_value=0.01, max_value=20.0)


@st.composite
def channel(draw: st.DrawFn) -> ChannelRender:
    colour = draw(st.tuples(*[st.integers(0, 255)] * 4))
    return ChannelRender(
        active=draw(st.booleans()),
        start=float(draw(windows)),
        end=float(draw(windows)),
        color=colour,
        lut=draw(st.none() | st.sampled_from([*LUTS.names(), "missing.lut", "../x.lut"])),
        family=draw(st.sampled_from(list(Family))),
        coefficient=draw(coefficients),
        inverted=draw(st.booleans()),
    )


def raw_arrays(dtype: str, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.dtype(dtype), shape)  # full range, NaN and ±inf for floats


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=st.sampled_from(DTYPES), ch=channel())
def test_quantize_is_always_uint8(data: st.DataObject, dtype: str, ch: ChannelRender) -> None:
    raw = data.draw(raw_arrays(dtype, (3, 5)))
    out = quantize(raw, ch, dtype)
    assert out.dtype == np.uint8
    assert out.shape == raw.shape


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=st.sampled_from(DTYPES), model=st.sampled_from(list(ColorModel)))
def test_render_rgb_never_raises(data: st.DataObject, dtype: str, model: ColorModel) -> None:
    channels = tuple(data.draw(st.lists(channel(), min_size=1, max_size=5)))
    render = RenderSettings(channels, model)
    height, width = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    n = len(render.active_indices())
    planes = data.draw(raw_arrays(dtype, (n, height, width)))
    out = render_rgb(planes, render, dtype, LUTS)
    assert out.shape == (height, width, 3)
    assert out.dtype == np.uint8
    assert out.flags.c_contiguous
    if n == 0:
        assert not out.any()


@settings(max_examples=200, deadline=None)
@given(
    dtype=st.sampled_from(["uint8", "int8", "uint16", "int16"]),
    start=st.integers(-70000, 70000),
    span=st.integers(1, 70000),
    data=st.data(),
)
def test_integer_quantize_is_monotonic_linear(
    dtype: str, start: int, span: int, data: st.DataObject
) -> None:
    """Linear, non-inverted quantization never decreases with the raw value."""
    low, high = TYPE_RANGES[dtype]
    raw = np.arange(int(low), int(high) + 1, max(1, int(high - low) // 997)).astype(dtype)
    out = quantize(raw, ChannelRender(True, float(start), float(start + span)), dtype).astype(int)
    assert (np.diff(out) >= 0).all()


def test_infinite_window_start_found_by_hypothesis() -> None:
    """Hypothesis' find (CI, 2026-12-02): the window inf..inf (kept reversed after clamping,
    start inf) made `x − s` warn (inf − inf), an error under warnings-as-errors. Now: no
    warning, and NaN codes take bin 0 as Java's `(int) NaN` does."""
    raw = np.array([[np.inf, -np.inf, np.nan, 0.0, 1e30]], dtype=np.float32)
    windows = [(np.inf, np.inf), (1e300, np.inf), (np.inf, 2.0**31 - 1), (-np.inf, np.inf)]
    for start, end in windows:
        ch = ChannelRender(active=True, start=start, end=end, color=(255, 255, 255, 255))
        out = quantize(raw, ch, "float32")
        assert out.dtype == np.uint8 and out.shape == raw.shape
        assert np.array_equal(out, quantize(raw.copy(), ch, "float32"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=st.sampled_from(DTYPES), model=st.sampled_from(list(ColorModel)))
def test_ycc_planes_give_the_rgb_jpeg_or_nothing(
    data: st.DataObject, dtype: str, model: ColorModel
) -> None:
    """Whatever the settings, data and size, `render_ycc` gives the planes of the very JPEG the
    RGB path encodes, or None (render/ycc.py)."""
    channels = tuple(data.draw(st.lists(channel(), min_size=1, max_size=3)))
    render = RenderSettings(channels, model)
    height = data.draw(st.sampled_from([1, 2, 6, 16, 34]))
    width = data.draw(st.sampled_from([1, 2, 10, 16, 32, 48]))
    n = len(render.active_indices())
    planes = data.draw(raw_arrays(dtype, (n, height, width)))
    quality = data.draw(st.sampled_from([0.3, 0.9, 1.0]))
    got = render_ycc(planes, render, dtype, LUTS)
    if got is None:
        return
    assert n == 1 and height % 2 == 0 and width % 2 == 0
    rgb = encode_jpeg(render_rgb(planes, render, dtype, LUTS), quality)
    assert encode_jpeg_planes(got.y, got.cb, got.cr, quality) == rgb
