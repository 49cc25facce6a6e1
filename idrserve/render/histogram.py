"""Intensity histograms of one channel plane, binned as OMERO's `RawPixelsStore.getHistogram`.

OMERO counts value by value, in doubles: a value below `low` or above `high` is skipped;
any other goes to bin `(int) ((v − low) / ((high − low) / bins))`, and a value on the top edge
(bin == bins) to the last bin. Two consequences are kept on purpose: NaN fails both
comparisons, so it is counted, and Java's int conversion puts it in bin 0; with low == high the
division is 0 / 0, so every counted value lands in bin 0 as well.

8- and 16-bit data (and bool) are counted per possible value first (`np.bincount` over the raw
bits), then each value's bin is computed once: exact, and 2.5 ms instead of 21 ms for a 1024²
uint16 plane (this 2-core machine). Wider types are binned pixel by pixel (13 ms for 1024²
float32) in blocks of 1 Mi values, to keep the float64 temporaries small.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
BOOL = npt.NDArray[np.bool_]
BLOCK = 1 << 20


def _bins(values: npt.NDArray[np.float64], low: float, high: float, bins: int) -> tuple[I64, BOOL]:
    """Each value's bin (clipped to 0..bins−1) and whether OMERO counts it at all."""
    counted = ~((values < low) | (values > high))
    with np.errstate(divide="ignore", invalid="ignore"):
        position = (values - low) / ((high - low) / bins)
    position = np.where(np.isnan(position), 0.0, position)
    # Counted values have position ≥ 0, so truncation is the floor; the clip also takes the
    # top edge (position == bins) to the last bin, as OMERO does.
    return np.clip(position, 0, bins - 1).astype(np.int64), counted


def bin_counts(plane: npt.NDArray[np.generic], low: float, high: float, bins: int) -> I64:
    """Counts of the plane's values in `bins` equal bins spanning [low, high] (see above)."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    data = np.asarray(plane)
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    if data.dtype.kind in "biu" and data.dtype.itemsize <= 2:
        raw = np.dtype(f"u{data.dtype.itemsize}")
        per_value = np.bincount(data.view(raw).ravel(), minlength=1 << (8 * raw.itemsize))
        values = np.arange(per_value.size, dtype=raw)
        if data.dtype.kind == "i":
            values = values.view(data.dtype)
        index, counted = _bins(values.astype(np.float64), low, high, bins)
        weighted = np.bincount(index[counted], weights=per_value[counted], minlength=bins)
        return np.rint(weighted).astype(np.int64)
    out = np.zeros(bins, dtype=np.int64)
    flat = data.reshape(-1)
    for start in range(0, flat.size, BLOCK):
        index, counted = _bins(flat[start : start + BLOCK].astype(np.float64), low, high, bins)
        out += np.bincount(index[counted], minlength=bins)
    return out
