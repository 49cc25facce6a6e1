"""Compositing through `render_rgb`, against hand-computed pixels.

The rules: docs/rendering.md#colour-model-additive-compositing and
docs/rendering.md#greyscale-model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idrserve.model import ChannelRender, ColorModel, RenderSettings
from idrserve.render import render_rgb
from idrserve.render.lut import LutTable
from idrserve.render.make_luts import encode_lut

RED = (255, 0, 0, 255)
GREEN = (0, 255, 0, 255)
BLUE = (0, 0, 255, 255)
WHITE = (255, 255, 255, 255)


@pytest.fixture(scope="module")
def luts() -> LutTable:
    return LutTable(None)


def chan(
    color: tuple[int, int, int, int] = WHITE, active: bool = True, **kw: object
) -> ChannelRender:
    # Window 0:255 on uint8 data makes q equal to the raw value.
    return ChannelRender(active=active, start=0, end=255, color=color, **kw)  # type: ignore[arg-type]


def plane(*values: int, dtype: str = "uint8") -> np.ndarray:
    return np.array([values], dtype=dtype)  # one row


def render(
    planes: list[np.ndarray], channels: list[ChannelRender], luts: LutTable, **kw: object
) -> np.ndarray:
    settings = RenderSettings(tuple(channels), **kw)  # type: ignore[arg-type]
    stacked = np.stack(planes) if planes else np.zeros((0, 1, 3), dtype=np.uint8)
    return render_rgb(stacked, settings, "uint8", luts)


def test_single_red_channel(luts: LutTable) -> None:
    out = render([plane(0, 100, 255)], [chan(RED)], luts)
    assert out.tolist() == [[[0, 0, 0], [100, 0, 0], [255, 0, 0]]]


def test_three_primaries_fill_their_own_components(luts: LutTable) -> None:
    out = render([plane(10), plane(20), plane(30)], [chan(RED), chan(GREEN), chan(BLUE)], luts)
    assert out.tolist() == [[[10, 20, 30]]]


def test_additive_clamp(luts: LutTable) -> None:
    # two red channels with q = 200 each: 400 clamps to 255 (not 144 from wrapping)
    out = render([plane(200), plane(200)], [chan(RED), chan(RED)], luts)
    assert out.tolist() == [[[255, 0, 0]]]


def test_additive_without_overflow(luts: LutTable) -> None:
    out = render([plane(100), plane(50)], [chan(RED), chan(RED)], luts)
    assert out.tolist() == [[[150, 0, 0]]]


def test_saturating_add_over_three_channels(luts: LutTable) -> None:
    # R: 100 + 100 + 100 → 255; per-pixel mix of overflow and no overflow
    planes = [plane(100, 10), plane(100, 20), plane(100, 30)]
    out = render(planes, [chan(RED), chan(RED), chan(RED)], luts)
    assert out[0, :, 0].tolist() == [255, 60]


def test_colour_component_truncates(luts: LutTable) -> None:
    # colour 0x80: int(128/255.0 · 255) = 128; int(128/255.0 · 1) = int(0.502) = 0;
    # int(128/255.0 · 3) = int(1.506) = 1; int(128/255.0 · 100) = int(50.196) = 50
    out = render([plane(255, 1, 3, 100)], [chan((128, 128, 128, 255))], luts)
    assert out[0, :, 0].tolist() == [128, 0, 1, 50]


def test_zero_component_contributes_nothing(luts: LutTable) -> None:
    out = render([plane(255)], [chan((0, 64, 255, 255))], luts)
    # G: int(64/255.0 · 255) = 64
    assert out.tolist() == [[[0, 64, 255]]]


def test_alpha_multiplies_after_truncation(luts: LutTable) -> None:
    # red 255, alpha 128: r = int(1.0 · 200) = 200, then int(200 · (128/255f)) = int(100.39) = 100
    # q = 255: 255 · 0.50196 = 128.0 → 128; q = 3: int(3 · 0.50196) = 1
    out = render([plane(200, 255, 3)], [chan((255, 0, 0, 128))], luts)
    assert out[0, :, 0].tolist() == [100, 128, 1]


def test_alpha_of_one_channel_leaves_opaque_channels_alone(luts: LutTable) -> None:
    # the other channel has A = 255, so its factor is exactly 1
    out = render([plane(200), plane(77)], [chan((255, 0, 0, 128)), chan(GREEN)], luts)
    assert out.tolist() == [[[100, 77, 0]]]


def test_inactive_channels_are_skipped(luts: LutTable) -> None:
    # planes hold only the active channels, in order
    out = render([plane(40)], [chan(RED, active=False), chan(GREEN)], luts)
    assert out.tolist() == [[[0, 40, 0]]]


def test_no_active_channel_is_black(luts: LutTable) -> None:
    settings = RenderSettings((chan(RED, active=False),))
    out = render_rgb(np.zeros((0, 5, 7), dtype=np.uint16), settings, "uint16", luts)
    assert out.shape == (5, 7, 3)
    assert out.dtype == np.uint8
    assert not out.any()


def test_black_colour_channel_is_black(luts: LutTable) -> None:
    out = render([plane(255)], [chan((0, 0, 0, 255))], luts)
    assert out.tolist() == [[[0, 0, 0]]]


def test_plane_count_must_match_active_channels(luts: LutTable) -> None:
    with pytest.raises(ValueError, match="planes"):
        render([plane(1), plane(2)], [chan(RED)], luts)


# ---- greyscale -------------------------------------------------------------------------------


def test_greyscale_uses_first_active_channel_only(luts: LutTable) -> None:
    channels = [chan(RED, active=False), chan(GREEN), chan(BLUE)]
    settings = RenderSettings(tuple(channels), ColorModel.GREYSCALE)
    assert settings.active_indices() == (1,)
    out = render_rgb(np.stack([plane(0, 90, 255)]), settings, "uint8", luts)
    assert out.tolist() == [[[0, 0, 0], [90, 90, 90], [255, 255, 255]]]


def test_greyscale_ignores_colour_alpha_and_lut(luts: LutTable) -> None:
    settings = RenderSettings((chan((255, 0, 0, 10), lut="fire.lut"),), ColorModel.GREYSCALE)
    out = render_rgb(np.stack([plane(90)]), settings, "uint8", luts)
    assert out.tolist() == [[[90, 90, 90]]]


def test_greyscale_inverted(luts: LutTable) -> None:
    settings = RenderSettings((chan(inverted=True),), ColorModel.GREYSCALE)
    out = render_rgb(np.stack([plane(0, 90, 255)]), settings, "uint8", luts)
    assert out[0, :, 0].tolist() == [255, 165, 0]


# ---- inversion, LUTs -------------------------------------------------------------------------


def test_inverted_colour_render_is_255_minus_normal(luts: LutTable) -> None:
    raw = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    normal = render_rgb(raw, RenderSettings((chan(),)), "uint8", luts)
    inverted = render_rgb(raw, RenderSettings((chan(inverted=True),)), "uint8", luts)
    assert (inverted.astype(int) == 255 - normal.astype(int)).all()


def test_lut_channel_equals_lut_entries(luts: LutTable) -> None:
    cool = luts.get("cool.lut")
    assert cool is not None
    raw = np.arange(256, dtype=np.uint8).reshape(1, 1, 256)
    out = render_rgb(raw, RenderSettings((chan(RED, lut="cool.lut"),)), "uint8", luts)
    assert (out[0] == cool).all()


def test_lut_channel_ignores_alpha_and_adds_with_clamp(luts: LutTable) -> None:
    grays = luts.get("grays.lut")
    assert grays is not None
    # LUT term for q = 200 is (200, 200, 200); red channel q = 100 adds (100, 0, 0)
    out = render([plane(200), plane(100)], [chan((0, 0, 0, 5), lut="grays.lut"), chan(RED)], luts)
    assert out.tolist() == [[[255, 200, 200]]]


def test_unknown_lut_falls_back_to_colour(luts: LutTable) -> None:
    out = render([plane(77)], [chan(GREEN, lut="no-such.lut")], luts)
    assert out.tolist() == [[[0, 77, 0]]]


def test_path_traversal_lut_name_falls_back_to_colour(luts: LutTable) -> None:
    out = render([plane(77)], [chan(BLUE, lut="../../etc/passwd")], luts)
    assert out.tolist() == [[[0, 0, 77]]]


def test_operator_lut_overrides_builtin(tmp_path: Path) -> None:
    rgb = np.zeros((256, 3), dtype=np.uint8)
    rgb[:, 1] = 7  # constant green
    (tmp_path / "fire.lut").write_bytes(encode_lut(rgb))
    table = LutTable(tmp_path)
    settings = RenderSettings((chan(lut="fire.lut"),))
    out = render_rgb(np.stack([plane(0, 255)]), settings, "uint8", table)
    assert out.tolist() == [[[0, 7, 0], [0, 7, 0]]]


# ---- other pixel types go through the same compositing --------------------------------------


def test_uint16_colour_render(luts: LutTable) -> None:
    # window 0:1000: 500 → 127.5 → 128; colour red
    settings = RenderSettings((ChannelRender(True, 0, 1000, color=RED),))
    out = render_rgb(np.array([[[0, 500, 1000]]], dtype=np.uint16), settings, "uint16", luts)
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_float_colour_render(luts: LutTable) -> None:
    settings = RenderSettings((ChannelRender(True, 0, 256, color=GREEN),))
    raw = np.array([[[255.5, 256.0, np.nan]]], dtype=np.float32)
    out = render_rgb(raw, settings, "float32", luts)
    assert out[0, :, 1].tolist() == [254, 255, 0]
    assert not out[..., [0, 2]].any()


def test_int16_two_channel_overlap(luts: LutTable) -> None:
    # int16 −1020:−510 (a = 0.5): −765 → 128, −600 → 210; yellow + red: R = 128 + 210 → 255
    settings = RenderSettings(
        (
            ChannelRender(True, -1020, -510, color=(255, 255, 0, 255)),
            ChannelRender(True, -1020, -510, color=RED),
        )
    )
    raw = np.array([[[-765]], [[-600]]], dtype=np.int16)
    assert render_rgb(raw, settings, "int16", luts).tolist() == [[[255, 128, 0]]]


def test_output_is_c_contiguous_uint8(luts: LutTable) -> None:
    raw = np.zeros((2, 4, 6), dtype=np.uint16)
    settings = RenderSettings((ChannelRender(True, 0, 10, color=RED), ChannelRender(True, 0, 10)))
    out = render_rgb(raw[:, :, ::2], settings, "uint16", luts)  # non-contiguous input
    assert out.shape == (4, 3, 3)
    assert out.flags.c_contiguous
    assert out.dtype == np.uint8


def test_matches_naive_reference_on_random_data(luts: LutTable) -> None:
    """The table path against a per-pixel transcription of the colour model (alpha, clamp)."""
    rng = np.random.default_rng(7)
    raw = rng.integers(0, 4096, size=(3, 8, 8), dtype=np.uint16)
    colours = [(255, 128, 0, 255), (0, 200, 255, 200), (90, 255, 90, 255)]
    channels = tuple(ChannelRender(True, 100 * i, 3000 + i, color=c) for i, c in enumerate(colours))
    out = render_rgb(raw, RenderSettings(channels), "uint16", luts)
    expected = np.zeros((8, 8, 3), dtype=np.int64)
    for k, ch in enumerate(channels):
        s, e = ch.start, ch.end
        a = 255.0 / (e - s)
        for y in range(8):
            for x in range(8):
                v = int(raw[k, y, x])
                qv = 0 if v < s else 255 if v >= e else int(np.floor(a * v - a * s + 0.5))
                for c in range(3):
                    ratio = ch.color[c] / 255.0 if ch.color[c] > 0 else 0.0
                    term = int(ratio * qv)
                    if ch.color[3] != 255:
                        term = int(np.float32(term) * (np.float32(ch.color[3]) / np.float32(255)))
                    expected[y, x, c] = min(255, expected[y, x, c] + term)
    assert (out == expected).all()
