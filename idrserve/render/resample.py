"""Resizing and flipping: thumbnails (nearest neighbour), `flip=`, and area downsampling."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

AnyArray = npt.NDArray[Any]


def _nearest_indices(src: int, dst: int) -> npt.NDArray[np.intp]:
    # floor(i · src / dst) in exact integer arithmetic.
    return (np.arange(dst, dtype=np.int64) * src // dst).astype(np.intp)


def resize_nearest(rgb: npt.NDArray[np.uint8], out_w: int, out_h: int) -> npt.NDArray[np.uint8]:
    """Scale an (H, W, C) image to (out_h, out_w, C) by nearest neighbour.

    Destination pixel (x, y) takes source pixel (⌊x·W/out_w⌋, ⌊y·H/out_h⌋), AWT
    `drawImage`'s nearest-neighbour mapping used for OMERO thumbnails.
    """
    if out_w < 1 or out_h < 1:
        raise ValueError(f"output size must be at least 1×1, got {out_w}×{out_h}")
    arr = np.asarray(rgb)
    if arr.ndim < 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"cannot resize an image shaped {arr.shape}")
    height, width = arr.shape[:2]
    if (height, width) == (out_h, out_w):
        return np.ascontiguousarray(arr)
    rows = _nearest_indices(height, out_h)
    cols = _nearest_indices(width, out_w)
    return np.ascontiguousarray(arr[rows[:, None], cols[None, :]])


def flip(rgb: npt.NDArray[np.uint8], h: bool, v: bool) -> npt.NDArray[np.uint8]:
    """Mirror left-right (`h`) and/or top-bottom (`v`); returns a C-contiguous copy."""
    arr = np.asarray(rgb)
    if h:
        arr = arr[:, ::-1]
    if v:
        arr = arr[::-1]
    return np.ascontiguousarray(arr)


def downsample_area(raw: AnyArray, factor_x: int, factor_y: int) -> AnyArray:
    """Box-average (C, H, W) raw values by integer factors, keeping the dtype.

    The output is ⌈H/factor_y⌉ × ⌈W/factor_x⌉; edge boxes average only the pixels they
    cover. Means are taken in float64; integer types round half up and stay in range, bool
    becomes "at least half set", floats are cast (NaN propagates).
    """
    if factor_x < 1 or factor_y < 1:
        raise ValueError(f"factors must be ≥ 1, got {factor_x}×{factor_y}")
    arr = np.asarray(raw)
    if arr.ndim != 3:
        raise ValueError(f"raw must be shaped (C, H, W), got {arr.shape}")
    if factor_x == factor_y == 1:
        return np.ascontiguousarray(arr)
    channels, height, width = arr.shape
    out_h, out_w = -(-height // factor_y), -(-width // factor_x)
    # Sum each box with reduceat along both axes, then divide by the box's real pixel count.
    rows = np.arange(0, height, factor_y)
    cols = np.arange(0, width, factor_x)
    values = arr.astype(np.float64)
    if height and width:
        sums = np.add.reduceat(np.add.reduceat(values, rows, axis=1), cols, axis=2)
    else:
        sums = np.zeros((channels, out_h, out_w))
    row_counts = np.minimum(rows + factor_y, height) - rows
    col_counts = np.minimum(cols + factor_x, width) - cols
    means = sums / (row_counts[:, None] * col_counts[None, :])[None]
    dtype = arr.dtype
    out: AnyArray
    if dtype.kind == "f":
        out = means.astype(dtype)
    elif dtype.kind == "b":
        out = means >= 0.5
    else:
        info = np.iinfo(dtype)
        out = np.clip(np.floor(means + 0.5), info.min, info.max).astype(dtype)
    return out


def rotate(rgb: npt.NDArray[np.uint8], degrees: int) -> npt.NDArray[np.uint8]:
    """Rotate clockwise by a multiple of 90 degrees (IIIF rotation); C-contiguous result."""
    if degrees % 90:
        raise ValueError(f"only multiples of 90 degrees are supported, got {degrees}")
    return np.ascontiguousarray(np.rot90(np.asarray(rgb), k=-(degrees // 90) % 4))


def to_tone(rgb: npt.NDArray[np.uint8], bitonal: bool) -> npt.NDArray[np.uint8]:
    """IIIF `gray` (Rec. 601 luma, rounded) or `bitonal` (luma ≥ 128 is white), still RGB.

    The result stays (H, W, 3) so every encoder takes it unchanged.
    """
    arr = np.asarray(rgb, dtype=np.uint32)
    luma = (299 * arr[..., 0] + 587 * arr[..., 1] + 114 * arr[..., 2] + 500) // 1000
    grey = np.where(luma >= 128, 255, 0) if bitonal else luma
    return np.ascontiguousarray(np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2))
