"""Quantization against values worked out by hand from docs/rendering.md#windows onwards.

Every expected number below is derived in the comment next to it from the OMERO formulas
(`lin = a·x − a·s`, a = 255/(e − s); family map; Java `Math.round`, ties up; `(byte) & 0xFF`),
not by calling the code under test twice.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from idrserve.model import ChannelRender, Family
from idrserve.render.quantize import effective_window, quantize, quantize_table


def chan(start: float, end: float, **kw: object) -> ChannelRender:
    return ChannelRender(active=True, start=start, end=end, **kw)  # type: ignore[arg-type]


def q(values: list[float], dtype: str, start: float, end: float, **kw: object) -> list[int]:
    out: list[int] = quantize(np.array(values, dtype=dtype), chan(start, end, **kw), dtype).tolist()
    return out


# ---- families, uint8 window 0:255 (a = 1, so lin = x) ------------------------------------


def test_linear_is_identity_on_full_uint8_window() -> None:
    x = np.arange(256, dtype=np.uint8)
    assert quantize(x, chan(0, 255), "uint8").tolist() == list(range(256))


def test_polynomial_k2() -> None:
    # y = 255·lin²/255²: 128 → 64.25 → 64; 127 → 63.25 → 63; 254 → 253.004 → 253; 1 → 0.004
    got = q([0, 1, 127, 128, 254, 255], "uint8", 0, 255, family=Family.POLYNOMIAL, coefficient=2)
    assert got == [0, 0, 63, 64, 253, 255]


def test_linear_ignores_coefficient() -> None:
    assert q([128], "uint8", 0, 255, family=Family.LINEAR, coefficient=2) == [128]


def test_logarithmic() -> None:
    # y = 255·ln(lin)/ln 255: 2 → 255·0.693147/5.541264 = 31.897 → 32;
    # 100 → 255·4.605170/5.541264 = 211.92 → 212; 250 → 254.09 → 254; 1 → ln 1 = 0; 0 → ln(1)
    got = q([0, 1, 2, 100, 250, 255], "uint8", 0, 255, family=Family.LOGARITHMIC)
    assert got == [0, 0, 32, 212, 254, 255]


def test_logarithmic_below_one_wraps_like_java_byte() -> None:
    # uint16 window 0:1000, x = 1: lin = 0.255, y = 46.0185·ln(0.255) = −62.88 → −63,
    # and (byte) −63 & 0xFF = 256 − 63 = 193. OMERO really renders these pixels bright.
    assert q([1], "uint16", 0, 1000, family=Family.LOGARITHMIC) == [193]


def test_exponential_k1_lights_only_the_top_levels() -> None:
    # y = 255·(e^x − 1)/(e^255 − 1) ≈ 255·e^(x−255): 254 → 93.8 → 94; 253 → 34.5 → 35;
    # 249 → 0.632 → 1; 248 → 0.2325 → 0
    x = np.arange(256, dtype=np.uint8)
    got = quantize(x, chan(0, 255, family=Family.EXPONENTIAL, coefficient=1), "uint8")
    assert got[:249].max() == 0
    assert got[[249, 253, 254, 255]].tolist() == [1, 35, 94, 255]


def test_exponential_k15_overflows_to_black_except_at_window_end() -> None:
    # e^(255^1.5) = e^4072 overflows: a_norm = 255/inf = 0 → every in-window value is 0.
    # The table still maps x ≥ end to cdEnd = 255 (Quantization_8_16_bit's last loop).
    x = np.arange(256, dtype=np.uint8)
    got = quantize(x, chan(0, 255, family=Family.EXPONENTIAL, coefficient=1.5), "uint8")
    assert got[:255].max() == 0
    assert got[255] == 255


def test_exponential_k15_float_is_all_black() -> None:
    # The float path sends x ≥ end through the family map too (mid = end): 0·inf = NaN → 0.
    got = q(
        [0.0, 50.0, 100.0, 1000.0], "float32", 0, 100, family=Family.EXPONENTIAL, coefficient=1.5
    )
    assert got == [0, 0, 0, 0]


@pytest.mark.parametrize("k", [0.0, -1.0, math.nan, math.inf])
def test_bad_coefficient_rejected(k: float) -> None:
    with pytest.raises(ValueError, match="coefficient"):
        q([1], "uint8", 0, 255, family=Family.POLYNOMIAL, coefficient=k)


# ---- rounding ------------------------------------------------------------------------------


def test_java_round_ties_go_up() -> None:
    # uint16 window 0:510: a = 0.5 exactly. x=1 → 0.5 → 1; x=5 → 2.5 → 3 (banker's: 2);
    # x=9 → 4.5 → 5 (banker's: 4); x=253 → 126.5 → 127 (banker's: 126)
    assert q([1, 5, 9, 253], "uint16", 0, 510) == [1, 3, 5, 127]


def test_java_round_ties_with_offset_window() -> None:
    # window 10:520: a = 0.5, a·s = 5; x = 15 → 7.5 − 5 = 2.5 → 3; x = 11 → 0.5 → 1
    assert q([11, 15], "uint16", 10, 520) == [1, 3]


# ---- windows ---------------------------------------------------------------------------------


def test_uint8_window_wider_than_type_is_reset() -> None:
    # −50:300 spans 350 ≥ 2^8 → reset to 0:255 → identity
    x = np.arange(256, dtype=np.uint8)
    assert quantize(x, chan(-50, 300), "uint8").tolist() == list(range(256))
    assert effective_window("uint8", -50, 300) == (0.0, 255.0)


def test_uint8_valid_window_is_clamped_not_reset() -> None:
    # −50:200 spans 250 < 256 → clamp to 0:200; x = 40 → 255·40/200 = 51; 200 → 255
    assert effective_window("uint8", -50, 200) == (0.0, 200.0)
    assert q([0, 40, 199, 200], "uint8", -50, 200) == [0, 51, 254, 255]


def test_uint16_window_wider_than_type_is_reset_to_full_range() -> None:
    # −100:70000 → 0:65535, a = 255/65535 = 1/257: x = 257·k → k
    x = (np.arange(256) * 257).astype(np.uint16)
    assert quantize(x, chan(-100, 70000), "uint16").tolist() == list(range(256))


def test_uint16_span_limit_is_exclusive() -> None:
    # span 65536 (−1:65535) is reset; span 65535 (−1:65534) is kept and clamped to 0:65534
    assert effective_window("uint16", -1, 65535) == (0.0, 65535.0)
    assert effective_window("uint16", -1, 65534) == (0.0, 65534.0)
    assert q([65533, 65534], "uint16", -1, 65534) == [255, 255]  # 254.996 → 255; x ≥ e


def test_start_after_end_is_reset() -> None:
    assert effective_window("uint8", 200, 100) == (0.0, 255.0)
    assert q([0, 100, 200, 255], "uint8", 200, 100) == [0, 100, 200, 255]


def test_start_equal_end_is_a_step() -> None:
    assert q([0, 10, 11, 12, 65535], "uint16", 11, 11) == [0, 0, 255, 255, 255]


def test_value_equal_to_end_is_255() -> None:
    # window 0:1000: x = 999 → 254.745 → 255 by rounding; x = 1000 → 255 by `x ≥ e`;
    # x = 998 → 254.49 → 254
    assert q([998, 999, 1000, 5000], "uint16", 0, 1000) == [254, 255, 255, 255]


def test_fractional_window() -> None:
    # 10.5:20.5: a = 25.5, a·s = 267.75. x=10 < s → 0; 11 → 280.5 − 267.75 = 12.75 → 13;
    # 20 → 510 − 267.75 = 242.25 → 242; 21 ≥ e → 255
    assert q([10, 11, 20, 21], "uint8", 10.5, 20.5) == [0, 13, 242, 255]


def test_int16_negative_window() -> None:
    # −1020:−510: a = 0.5, a·s = −510. x = −765 → −382.5 + 510 = 127.5 → 128 (tie up);
    # −600 → −300 + 510 = 210; −1020 → 0; −1021 → below → 0; −510 → 255
    got = q([-32768, -1021, -1020, -765, -600, -510, 0, 32767], "int16", -1020, -510)
    assert got == [0, 0, 0, 128, 210, 255, 255, 255]


def test_int8_full_range() -> None:
    # −128:127, a = 1, lin = x + 128
    assert q([-128, -1, 0, 127], "int8", -128, 127) == [0, 127, 128, 255]


def test_int16_table_is_indexed_by_bits() -> None:
    table = quantize_table("int16", -32768, 32767)
    assert table.shape == (65536,)
    assert table[0] == 128  # value 0: lin = 255·32768/65535 = 127.502 → 128
    assert table[0x8000] == 0  # bits of −32768
    assert table[0xFFFF] == 127  # value −1: lin = 255·32767/65535 = 127.498 → 127
    assert not table.flags.writeable


def test_bool_window_is_always_the_type_range() -> None:
    # `bit` is in none of verifyInterval's lists → reset to 0..1: 0 → 0, 1 → 255
    assert q([False, True], "bool", 5, 3) == [0, 255]
    assert q([False, True], "bool", 0, 1000) == [0, 255]


# ---- 32-bit and float ------------------------------------------------------------------------


def test_float_bins_with_half_bin_offset() -> None:
    # window 0:256 → step 1. mid = floor(x) − 0.5 inside; q = round(255/256 · mid):
    # 255.5 → mid 254.5 → 253.51 → 254; 256 (= end) → mid 255.5 → 254.502 → 255;
    # 300 (> end) → mid = 256 → 255; 128 → 127.5 → 127.002 → 127; 2 → 1.5 → 1.494 → 1;
    # 0 (= start) → mid 0.5 → 0.498 → 0; −1 (< start) → mid = 0 → 0; NaN → 0
    values = [255.5, 256.0, 300.0, 128.0, 2.0, 0.0, -1.0, math.nan]
    assert q(values, "float32", 0, 256) == [254, 255, 255, 127, 1, 0, 0, 0]
    assert q(values, "float64", 0, 256) == [254, 255, 255, 127, 1, 0, 0, 0]


def test_float_infinities() -> None:
    assert q([math.inf, -math.inf], "float32", 0, 100) == [255, 0]


def test_float_window_never_reset_for_large_span() -> None:
    assert effective_window("float32", -1e6, 1e6) == (-1e6, 1e6)
    # but it is clamped to the ±2^31 type range and reset when reversed
    assert effective_window("float64", -1e12, 5) == (-(2.0**31), 5.0)
    assert effective_window("float32", 5, 1) == (-(2.0**31), 2.0**31 - 1)


def test_float_start_equal_end_is_black() -> None:
    # step = 0 and a = inf: a·mid − a·s is NaN (or the value is at start) → 0 everywhere
    assert q([0.0, 10.0, 11.0, 12.0], "float32", 11, 11) == [0, 0, 0, 0]


def test_int32_and_uint32_use_bins() -> None:
    # same bins as the float test: 255 → mid 254.5 → 254; 256 → 255; 128 → 127
    assert q([0, 128, 255, 256, -5], "int32", 0, 256) == [0, 127, 254, 255, 0]
    assert q([0, 128, 255, 256, 4000000000], "uint32", 0, 256) == [0, 127, 254, 255, 255]


def test_float_negative_window() -> None:
    # −256:0, step 1: x = −128 → bin 128 → mid −128.5 → a·mid − a·s = 255/256·127.5 = 127.0
    assert q([-128.0, -300.0, 5.0], "float32", -256, 0) == [127, 0, 255]


# ---- inversion -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "int32", "float32"])
def test_inversion_is_255_minus_normal(dtype: str) -> None:
    raw = np.linspace(-300, 3000, 97).astype(dtype)
    normal = quantize(raw, chan(10, 2000), dtype).astype(int)
    inverted = quantize(raw, chan(10, 2000, inverted=True), dtype).astype(int)
    assert (inverted == 255 - normal).all()


def test_inversion_by_hand() -> None:
    assert q([0, 100, 255], "uint8", 0, 255, inverted=True) == [255, 155, 0]


# ---- plumbing --------------------------------------------------------------------------------


def test_tables_are_cached() -> None:
    a = quantize_table("uint16", 3, 900, Family.POLYNOMIAL, 1.5, False)
    b = quantize_table("uint16", 3, 900, Family.POLYNOMIAL, 1.5, False)
    assert a is b


def test_output_keeps_shape_and_is_uint8() -> None:
    raw = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    out = quantize(raw, chan(0, 23), "uint16")
    assert out.shape == (2, 3, 4)
    assert out.dtype == np.uint8


def test_non_native_byte_order_is_converted() -> None:
    raw = np.array([0, 500, 1000], dtype=">u2")
    assert quantize(raw, chan(0, 1000), "uint16").tolist() == [0, 128, 255]  # 127.5 → 128


def test_unknown_dtype_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported pixel type"):
        quantize(np.zeros(3, dtype=np.int64), chan(0, 1), "int64")


def test_float_special_values_in_non_contiguous_input() -> None:
    # transposed (Fortran-ordered) input with values below, above, at start and NaN
    raw = np.array([[-1.0, 0.0], [300.0, math.nan], [128.0, 255.5]], dtype=np.float32).T
    assert not raw.flags.c_contiguous
    got = quantize(raw, chan(0, 256), "float32")
    # column by column of the original: −1 → 0, 300 → 255, 128 → 127; 0 → 0, NaN → 0, 255.5 → 254
    assert got.tolist() == [[0, 255, 127], [0, 0, 254]]


def test_float_path_spanning_several_blocks() -> None:
    # > 65536 pixels: processed in blocks, same hand-computed values as the bins test
    pattern = [255.5, 256.0, 300.0, 128.0, 2.0, 0.0, -1.0, math.nan]
    raw = np.tile(np.array(pattern, dtype=np.float32), 10_001).reshape(73, -1)  # 73 × 1096
    got = quantize(raw, chan(0, 256), "float32")
    assert got.shape == raw.shape
    assert got.reshape(-1).tolist() == [254, 255, 255, 127, 1, 0, 0, 0] * 10_001
