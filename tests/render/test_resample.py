"""Nearest-neighbour thumbnails, flips and area downsampling."""

from __future__ import annotations

import numpy as np
import pytest

from idrserve.render.resample import downsample_area, flip, resize_nearest


def coded(height: int, width: int) -> np.ndarray:
    """An RGB image whose pixel (y, x) stores y in R and x in G."""
    out = np.zeros((height, width, 3), dtype=np.uint8)
    out[..., 0] = np.arange(height)[:, None]
    out[..., 1] = np.arange(width)[None, :]
    return out


def test_resize_nearest_indices_downscale() -> None:
    # 10 → 4: floor(i·10/4) = 0, 2, 5, 7; 6 → 3: 0, 2, 4
    out = resize_nearest(coded(6, 10), 4, 3)
    assert out.shape == (3, 4, 3)
    assert out[:, 0, 0].tolist() == [0, 2, 4]
    assert out[0, :, 1].tolist() == [0, 2, 5, 7]


def test_resize_nearest_indices_upscale() -> None:
    # 3 → 7: floor(i·3/7) = 0, 0, 0, 1, 1, 2, 2
    out = resize_nearest(coded(1, 3), 7, 2)
    assert out[0, :, 1].tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert out.shape == (2, 7, 3)


def test_resize_nearest_stretches_to_exact_size() -> None:
    out = resize_nearest(coded(64, 96), 40, 40)
    assert out.shape == (40, 40, 3)
    assert out.flags.c_contiguous


def test_resize_to_same_size_is_a_copy_of_the_input() -> None:
    src = coded(5, 5)
    out = resize_nearest(src[:, ::-1], 5, 5)
    assert (out == src[:, ::-1]).all()
    assert out.flags.c_contiguous


def test_resize_1x1() -> None:
    src = np.array([[[1, 2, 3]]], dtype=np.uint8)
    assert resize_nearest(src, 3, 2).tolist() == [[[1, 2, 3]] * 3] * 2
    assert resize_nearest(coded(4, 4), 1, 1).tolist() == [[[0, 0, 0]]]


def test_resize_rejects_empty_target() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        resize_nearest(coded(2, 2), 0, 3)


def test_flips() -> None:
    src = coded(2, 3)
    assert flip(src, False, False).tolist() == src.tolist()
    assert flip(src, True, False)[0, :, 1].tolist() == [2, 1, 0]
    assert flip(src, False, True)[:, 0, 0].tolist() == [1, 0]
    both = flip(src, True, True)
    assert both[0, 0].tolist() == [1, 2, 0]
    assert both.flags.c_contiguous


def test_downsample_area_integer_rounds_half_up() -> None:
    raw = np.array([[[1, 2, 3, 4], [5, 6, 7, 8]]], dtype=np.uint16)
    # 2×2 boxes: (1+2+5+6)/4 = 3.5 → 4; (3+4+7+8)/4 = 5.5 → 6
    assert downsample_area(raw, 2, 2).tolist() == [[[4, 6]]]


def test_downsample_area_partial_edge_boxes() -> None:
    raw = np.arange(15, dtype=np.uint8).reshape(1, 3, 5)
    out = downsample_area(raw, 2, 2)
    # rows {0,1},{2}; cols {0,1},{2,3},{4}: top-left (0+1+5+6)/4 = 3; bottom-right 14 alone
    assert out.shape == (1, 2, 3)
    assert out[0, 0, 0] == 3
    assert out[0, 1, 2] == 14
    assert out[0, 1, 0] == 11  # (10 + 11)/2 = 10.5 → 11


def test_downsample_area_signed_and_float() -> None:
    raw = np.array([[[-3, -4]]], dtype=np.int16)
    assert downsample_area(raw, 2, 1).tolist() == [[[-3]]]  # −3.5 + 0.5 = −3 → floor −3
    f = np.array([[[1.0, 2.0], [3.0, 5.0]]], dtype=np.float32)
    out = downsample_area(f, 2, 2)
    assert out.dtype == np.float32
    assert out.tolist() == [[[2.75]]]


def test_downsample_area_factor_one_and_channels() -> None:
    raw = np.arange(2 * 4 * 4, dtype=np.uint16).reshape(2, 4, 4)
    assert (downsample_area(raw, 1, 1) == raw).all()
    out = downsample_area(raw, 4, 2)
    assert out.shape == (2, 2, 1)
    assert out[1, 0, 0] == 20  # channel 1 rows 0–1 hold 16..23: mean 19.5 → 20
