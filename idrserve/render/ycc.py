"""One-channel renders straight into JPEG's YCbCr planes, byte for byte the RGB path's JPEG.

Why: a JPEG encoder given RGB first converts every pixel to YCbCr and averages the chroma
over 2×2 blocks (4:2:0); libjpeg-turbo spends about 30 µs of a 256² tile's ~160 µs encode on
that. When a render draws on one index plane only (one active channel in the colour model,
or the greyscale model), each output pixel's R, G and B, and so its Y, Cb and Cr, are
functions of that pixel's index alone: the conversion can be folded into the channel's
lookup tables once (cached), and a tile becomes one table lookup per plane sample handed to
the encoder as planes (`simplejpeg.encode_jpeg_yuv_planes`). Measured in
docs/benchmarks.md#one-channel-tiles-from-ycbcr-planes.

Exactness: the tables use libjpeg's fixed-point conversion (jccolor.c: 16 fraction bits,
`FIX(x) = round(x · 65536)`, Cb and Cr offset by 128 and rounded with `ONE_HALF − 1`), and the
chroma average is libjpeg's `h2v2_downsample` (the sum of four plus a bias alternating 1, 2
along the row, divided by 4); libjpeg-turbo's SIMD versions of both give the same bytes as
its C code. Where the planes path would not give the same file, `render_ycc` returns None and
the caller renders RGB:

- an odd width or height (libjpeg-turbo's planar input is read in whole 2×2 blocks);
- chroma that varies, with a width that is not a multiple of 16: from RGB, libjpeg pads the
  right edge of the full-size image before averaging, from planes it pads the averaged
  plane, so the padding blocks differ. Grey renders (Cb = Cr = 128 everywhere) have no such
  edge and take any even width.

Several channels would need Y = Σ of per-channel terms rounded once, which a byte table per
channel cannot hold; computing it per pixel costs more than the encoder's SIMD conversion
saves (docs/benchmarks.md), so those stay on the RGB path.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from idrserve.model import ColorModel, RenderSettings
from idrserve.render import kernels
from idrserve.render import quantize as _quantize
from idrserve.render.colour import ComponentTables, channel_tables
from idrserve.render.lut import LutTable
from idrserve.render.quantize import LUT_TYPES, checked_planes, index_plane

U8 = npt.NDArray[np.uint8]
YccTables = tuple[U8, U8, U8]

_IDENTITY = np.arange(256, dtype=np.uint8)
_IDENTITY.setflags(write=False)


def _fix(x: float) -> int:
    """libjpeg's FIX(): a coefficient with 16 fraction bits, rounded."""
    return int(x * 65536 + 0.5)


_ONE_HALF = 1 << 15
_CBCR_OFFSET = 128 << 16
# (R, G, B) coefficients and the constant added, per output: jccolor.c's rgb_ycc_tab.
_Y = (_fix(0.29900), _fix(0.58700), _fix(0.11400), _ONE_HALF)
_CB = (-_fix(0.16874), -_fix(0.33126), _fix(0.5), _CBCR_OFFSET + _ONE_HALF - 1)
_CR = (_fix(0.5), -_fix(0.41869), -_fix(0.08131), _CBCR_OFFSET + _ONE_HALF - 1)


@dataclass(frozen=True, slots=True)
class YccPlanes:
    """A tile as JPEG's planes: Y full size, Cb and Cr half size in each direction."""

    y: U8
    cb: U8
    cr: U8


def ycc_of_rgb(r: npt.NDArray[Any], g: npt.NDArray[Any], b: npt.NDArray[Any]) -> YccTables:
    """Y, Cb, Cr of R, G, B values (uint8 arrays of one shape), as libjpeg computes them."""
    rgb = [np.asarray(v, dtype=np.int64) for v in (r, g, b)]
    out = []
    for kr, kg, kb, add in (_Y, _CB, _CR):
        value = (kr * rgb[0] + kg * rgb[1] + kb * rgb[2] + add) >> 16
        out.append(value.astype(np.uint8))
    return out[0], out[1], out[2]


@dataclass(frozen=True, slots=True)
class Composed:
    """A channel's tables for the planes: Y alone when its chroma is 128 throughout (a grey
    colour or LUT: any even width then gives the RGB path's bytes), else Y, Cb and Cr packed
    into one uint32 an entry (Y | Cb << 8 | Cr << 16), so a pixel costs one lookup rather than
    three: three 64 KiB tables do not fit the L1 cache together (render+encode of one green
    channel, bench/results/render-vm-2026-12-06-b.md)."""

    luma: U8
    packed: npt.NDArray[np.uint32] | None


# Composed tables by the identities of the component tables they come from (those are cached
# themselves: colour.py), holding those tables so an identity is never reused while its entry
# lives. Bounded like colour.py's caches (at most 256 KiB an entry).
_COMPOSED: OrderedDict[tuple[int, int, int], tuple[ComponentTables, Composed]] = OrderedDict()
_COMPOSED_MAX = 128
_LOCK = threading.Lock()


def composed_tables(tables: ComponentTables) -> Composed:
    """The channel's composed tables (read-only), cached."""
    key = (id(tables[0]), id(tables[1]), id(tables[2]))
    with _LOCK:  # renders run on the loop and in the CPU pool's threads
        hit = _COMPOSED.get(key)
        if hit is not None and all(a is b for a, b in zip(hit[0], tables, strict=True)):
            _COMPOSED.move_to_end(key)
            return hit[1]
    # A black channel (no table) is indexed like any other: by raw bits up to 16 wide.
    size = next((len(t) for t in tables if t is not None), 65536)
    zeros = np.zeros(size, dtype=np.uint8)
    r, g, b = (zeros if t is None else t for t in tables)
    y, cb, cr = ycc_of_rgb(r, g, b)
    y.setflags(write=False)
    packed: npt.NDArray[np.uint32] | None = None
    if not ((cb == 128).all() and (cr == 128).all()):
        packed = y.astype(np.uint32)
        packed |= cb.astype(np.uint32) << 8
        packed |= cr.astype(np.uint32) << 16
        packed.setflags(write=False)
    composed = Composed(y, packed)
    with _LOCK:
        _COMPOSED[key] = (tables, composed)
        if len(_COMPOSED) > _COMPOSED_MAX:
            _COMPOSED.popitem(last=False)
    return composed


def clear_cache() -> None:
    with _LOCK:
        _COMPOSED.clear()
    _neutral.cache_clear()


@lru_cache(maxsize=16)
def _neutral(height: int, width: int) -> U8:
    """A read-only chroma plane of 128s: grey has no colour."""
    plane = np.full((height, width), 128, dtype=np.uint8)
    plane.setflags(write=False)
    return plane


def render_ycc(
    planes: npt.NDArray[Any],
    settings: RenderSettings,
    dtype: str,
    luts: LutTable,
) -> YccPlanes | None:
    """The planes of `render_rgb(planes, settings, dtype, luts)` as JPEG 4:2:0 would compute
    them, or None when that render is not one whose JPEG the planes reproduce exactly (several
    channels, an odd size, coloured chroma at a width that is not a multiple of 16).

    Arguments as `render_rgb`'s.
    """
    indices = settings.active_indices()
    arr = checked_planes(planes, indices, dtype)
    n, height, width = arr.shape
    if n != 1 or height % 2 or width % 2:
        return None
    ch = settings.channels[indices[0]]
    index: npt.NDArray[Any]
    if settings.model is ColorModel.GREYSCALE:
        if dtype in LUT_TYPES:
            table = _quantize.quantize_table(
                dtype, ch.start, ch.end, ch.family, ch.coefficient, ch.inverted
            )
            index = index_plane(arr[0], dtype)
        else:
            table = _IDENTITY
            index = _quantize.quantize(arr[0], ch, dtype)
        luma = np.empty((height, width), dtype=np.uint8)
        kernels.lut_plane(luma, table, index)
        neutral = _neutral(height // 2, width // 2)
        return YccPlanes(luma, neutral, neutral)
    lut = luts.get(ch.lut) if ch.lut else None
    tables = channel_tables(dtype, ch, lut)
    if dtype in LUT_TYPES:
        index = index_plane(arr[0], dtype)
    else:
        index = _quantize.quantize(arr[0], ch, dtype)
    composed = composed_tables(tables)
    luma = np.empty((height, width), dtype=np.uint8)
    if composed.packed is None:
        kernels.lut_plane(luma, composed.luma, index)
        neutral = _neutral(height // 2, width // 2)
        return YccPlanes(luma, neutral, neutral)
    if width % 16:
        return None
    cb = np.empty((height // 2, width // 2), dtype=np.uint8)
    cr = np.empty((height // 2, width // 2), dtype=np.uint8)
    kernels.ycc_420(luma, cb, cr, composed.packed, index)
    return YccPlanes(luma, cb, cr)
