"""Z projections with OMERO's quirks (omero-server `ProjectionBean`; docs/rendering.md#projections).

The stack holds planes start..end inclusive. What OMERO does, and so what this does:

* intmax: maximum over **all** planes, with an accumulator that starts at 0 — all-negative
  signed data projects to 0; NaN never wins a comparison.
* intmean / intsum: over all planes **but the last** (the RE loops `z < end`). Sums are
  accumulated plane by plane in doubles, the mean divides by the plane count (a single-plane
  stack gives 0/0), and the result is clamped at the type's maximum only (`PixelData`
  maximum, which Bio-Formats gives as 2^31 − 1 for float and double).
* storing into the type is Java's narrowing cast: truncation toward zero via `int`
  (saturating at ±2^31, NaN → 0), then the low 8/16 bits for (u)int8/(u)int16 — so a signed
  sum below the type minimum wraps around, uint32 values above 2^31 − 1 saturate there, and
  the empty mean is 0 for integers but NaN for floats (rendered as 0 anyway).

`bool` stacks (which OMERO cannot project) use the same rules with "nonzero → 1".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from idrserve.model import Projection

AnyArray = npt.NDArray[Any]

_JAVA_INT_MIN, _JAVA_INT_MAX = -(2.0**31), 2.0**31 - 1
# `PixelData.getMaximum()` per type (Bio-Formats `defaultMinMax`).
_TYPE_MAX: dict[str, float] = {
    "bool": 1.0,
    "int8": 127.0,
    "uint8": 255.0,
    "int16": 32767.0,
    "uint16": 65535.0,
    "int32": _JAVA_INT_MAX,
    "uint32": 4294967295.0,
    "float32": _JAVA_INT_MAX,
    "float64": _JAVA_INT_MAX,
}


def _store(values: npt.NDArray[np.float64], dtype: np.dtype[Any]) -> AnyArray:
    """`PixelData.setPixelValue(double)`: Java's narrowing conversion into `dtype`."""
    out: AnyArray
    if dtype.kind == "f":
        out = values.astype(dtype)  # `(float) value` rounds to nearest; NaN stays NaN
        return out
    if dtype.kind == "b":
        out = values != 0  # NaN != 0 sets the bit, as Java's `value == 0` test does
        return out
    with np.errstate(invalid="ignore"):
        as_int = np.nan_to_num(np.trunc(values), nan=0.0)
    as_int = np.clip(as_int, _JAVA_INT_MIN, _JAVA_INT_MAX).astype(np.int64)
    if dtype.itemsize < 4:
        bits = 8 * dtype.itemsize
        # (byte)/(short) keep the low bits of the int; read back as the stored type.
        unsigned = (as_int & ((1 << bits) - 1)).astype(f"u{dtype.itemsize}")
        out = unsigned.view(dtype)
        return out
    # (int): saturated 32-bit pattern, read back as int32 or uint32.
    out = as_int.astype(np.int32).view(dtype)
    return out


def project(stack: AnyArray, kind: Projection) -> AnyArray:
    """Project a (C, Z, H, W) stack of planes start..end inclusive to (C, H, W), same dtype."""
    arr = np.asarray(stack)
    if arr.ndim != 4:
        raise ValueError(f"stack must be shaped (C, Z, H, W), got {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError("cannot project an empty stack")
    dtype = arr.dtype
    if dtype.name not in _TYPE_MAX:
        raise ValueError(f"unsupported pixel type {dtype.name!r}")
    if kind is Projection.INTMAX:
        return _intmax(arr)
    if kind in (Projection.INTMEAN, Projection.INTSUM):
        return _sum_or_mean(arr, mean=kind is Projection.INTMEAN)
    raise ValueError(f"not a projection: {kind!r}")


def _intmax(arr: AnyArray) -> AnyArray:
    top: AnyArray
    if arr.dtype.kind == "b":
        top = np.asarray(arr.any(axis=1))
        return top
    if arr.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            top = np.fmax.reduce(arr, axis=1)  # NaN loses every comparison
            # `stackValue > projectedValue` from 0: keeps +0.0 for -0.0 and NaN.
            top = np.where(top > 0, top, 0).astype(arr.dtype)
        return top
    top = arr.max(axis=1)
    if arr.dtype.name == "uint32":
        return _store(top.astype(np.float64), arr.dtype)  # saturates at 2^31 − 1
    out: AnyArray = np.maximum(top, 0).astype(arr.dtype)
    return out


def _sum_or_mean(arr: AnyArray, *, mean: bool) -> AnyArray:
    planes = arr.shape[1] - 1  # the RE stops before the end plane
    acc = np.zeros((arr.shape[0], *arr.shape[2:]), dtype=np.float64)
    for z in range(planes):
        acc += arr[:, z]  # sequential double accumulation, as Java's loop
    with np.errstate(invalid="ignore", divide="ignore"):
        if mean:
            acc = acc / planes if planes else np.full_like(acc, np.nan)  # 0/0
        acc = np.where(acc > _TYPE_MAX[arr.dtype.name], _TYPE_MAX[arr.dtype.name], acc)
    return _store(acc, arr.dtype)
