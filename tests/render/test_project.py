"""Z projections with OMERO's quirks (docs/rendering.md#projections; conformance case 19)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from idrserve.model import Projection
from idrserve.render.project import project


def stack(values_per_plane: list[list[float]], dtype: str) -> np.ndarray:
    """(1 channel, Z planes, 1 row, W) from per-plane rows."""
    return np.array([[[row] for row in values_per_plane]], dtype=dtype)


def test_intmax_uses_every_plane_inclusive() -> None:
    # planes 1..3 of case 19 handed over as a 3-plane stack; the max sits in the last one
    s = stack([[1, 9], [5, 2], [7, 3]], "uint16")
    assert project(s, Projection.INTMAX).tolist() == [[[7, 9]]]


def test_intmax_accumulator_starts_at_zero() -> None:
    s = stack([[-5, -1, 3], [-7, -2, -4]], "int16")
    assert project(s, Projection.INTMAX).tolist() == [[[0, 0, 3]]]


def test_intmax_float_ignores_nan() -> None:
    s = stack([[math.nan, -1.5, 2.5], [1.0, math.nan, math.nan]], "float32")
    assert project(s, Projection.INTMAX).tolist() == [[[1.0, 0.0, 2.5]]]


def test_intmean_skips_last_plane_and_truncates() -> None:
    # planes 1..3: mean of planes 1 and 2 only. (10 + 15)/2 = 12.5 → 12; (3 + 4)/2 = 3.5 → 3;
    # the last plane (1000) is ignored
    s = stack([[10, 3], [15, 4], [1000, 1000]], "uint16")
    assert project(s, Projection.INTMEAN).tolist() == [[[12, 3]]]


def test_intmean_negative_truncates_toward_zero() -> None:
    # (−3 + −4)/2 = −3.5 → −3 (toward zero, not floor)
    s = stack([[-3], [-4], [99]], "int16")
    assert project(s, Projection.INTMEAN).tolist() == [[[-3]]]


def test_intmean_of_single_plane_is_zero() -> None:
    # start == end: no plane is summed, 0/0 → (int) NaN = 0
    s = stack([[500, 7]], "uint16")
    assert project(s, Projection.INTMEAN).tolist() == [[[0, 0]]]


def test_intmean_of_single_float_plane_is_nan() -> None:
    # floats keep Java's 0/0 = NaN (which then renders as 0)
    out = project(stack([[5.0]], "float32"), Projection.INTMEAN)
    assert math.isnan(float(out[0, 0, 0]))


def test_intmean_float_accumulates_in_double() -> None:
    # float32 mean of 1e8 and 1: computed in double = 50000000.5, then rounded to float32
    out = project(stack([[1e8], [1.0], [0.0]], "float32"), Projection.INTMEAN)
    assert out.dtype == np.float32
    assert float(out[0, 0, 0]) == float(np.float32(50000000.5))


def test_intsum_skips_last_plane_and_clamps_at_type_max() -> None:
    # case 19 with 5 planes 0..4: sums planes 0..3; 20000·4 = 80000 → 65535; 1+2+3+4 = 10
    s = stack([[20000, 1], [20000, 2], [20000, 3], [20000, 4], [20000, 60000]], "uint16")
    out = project(s, Projection.INTSUM)
    assert out.dtype == np.uint16
    assert out.tolist() == [[[65535, 10]]]


def test_intsum_uint8() -> None:
    s = stack([[200, 5], [100, 6], [0, 0]], "uint8")
    assert project(s, Projection.INTSUM).tolist() == [[[255, 11]]]


def test_intsum_signed_below_min_wraps_like_java_short() -> None:
    # −20000 + −20000 = −40000 → (short) = −40000 + 65536 = 25536 (OMERO clamps only the max)
    s = stack([[-20000], [-20000], [0]], "int16")
    assert project(s, Projection.INTSUM).tolist() == [[[25536]]]


def test_intsum_float_clamps_at_int_max() -> None:
    # PixelData's maximum for float is Bio-Formats' 2^31 − 1
    s = stack([[3e9, 5.5], [1.0, 1.0], [0.0, 0.0]], "float64")
    assert project(s, Projection.INTSUM).tolist() == [[[2147483647.0, 6.5]]]


def test_uint32_saturates_at_java_int_max() -> None:
    # stored through (int): values above 2^31 − 1 come back as 2147483647
    s = stack([[3_000_000_000, 7], [1, 9]], "uint32")
    assert project(s, Projection.INTMAX).tolist() == [[[2147483647, 9]]]


def test_int32_sum_saturates_at_java_int_min() -> None:
    s = stack([[-2_000_000_000], [-2_000_000_000], [0]], "int32")
    assert project(s, Projection.INTSUM).tolist() == [[[-2147483648]]]


def test_shape_and_channels_preserved() -> None:
    rng = np.random.default_rng(1)
    s = rng.integers(0, 1000, size=(3, 4, 5, 6), dtype=np.uint16)
    for kind in (Projection.INTMAX, Projection.INTMEAN, Projection.INTSUM):
        out = project(s, kind)
        assert out.shape == (3, 5, 6)
        assert out.dtype == np.uint16
    assert (project(s, Projection.INTMAX) == s.max(axis=1)).all()
    assert (project(s, Projection.INTSUM) == s[:, :3].sum(axis=1, dtype=np.int64)).all()


def test_bool_stack() -> None:
    s = stack([[0, 1, 0], [0, 0, 1]], "bool")
    assert project(s, Projection.INTMAX).tolist() == [[[False, True, True]]]
    assert project(s, Projection.INTSUM).tolist() == [[[False, True, False]]]


def test_normal_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a projection"):
        project(stack([[1]], "uint8"), Projection.NORMAL)


def test_bad_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="shaped"):
        project(np.zeros((2, 3, 4), dtype=np.uint8), Projection.INTMAX)
