"""The renderer's inner loops, compiled with numba, and the numpy versions they equal.

Why compiled: a colour render is, per contributing (channel, component) pair, "look the raw
value up in a 256- or 65536-entry byte table and add it, saturating, into one byte of the
interleaved RGB output". numpy does that as `np.take` — which first converts the whole uint16
index plane to 8-byte intp — followed by a strided copy into every third byte: 0.21 ms for
three uint16 channels at 256² against 0.064 ms for one compiled pass that reads each index
once and writes the output byte in place (bench/bench_render.py). On a cold 256² tile that is
an eighth of the whole request.

numba is a dependency; if it cannot be imported (a platform without llvmlite wheels) the numpy
versions below run instead, with the same results: tests/render/test_kernels.py holds the
two to each other on random data, every index dtype and every saturation case. Setting
IDRSERVE_NO_NUMBA=1 in the environment forces the numpy versions (to rule numba out when
debugging; bench/bench_render.py times both).

The RGB loops take the output as (H, W, 3) uint8 and the index plane as a 2-D unsigned integer
array whose every value is a valid table index (8/16-bit raw bits into a full-range table, or
a quantized q into a 256-entry one), so no bounds are checked per pixel. The two plane loops
(`lut_plane`, `ycc_420`) write JPEG's Y, Cb and Cr planes of a one-channel render straight
from its composed tables (render/ycc.py), with no RGB image between; `ycc_420` reads one
packed uint32 a pixel (Y | Cb << 8 | Cr << 16) rather than three bytes from three tables.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
Index = npt.NDArray[np.unsignedinteger[Any]]


def lut_into_numpy(out: U8, component: int, table: U8, index: Index) -> None:
    """out[..., component] = table[index]."""
    out[..., component] = np.take(table, index)


def lut_add_into_numpy(out: U8, component: int, table: U8, index: Index) -> None:
    """out[..., component] = min(255, out[..., component] + table[index])."""
    dst = out[..., component]
    room = np.invert(dst)  # 255 − dst
    np.minimum(np.take(table, index), room, out=room)
    dst += room


def lut_grey_numpy(out: U8, table: U8, index: Index) -> None:
    """out[..., 0] = out[..., 1] = out[..., 2] = table[index] (the greyscale model)."""
    q = np.take(table, index)
    out[..., 0] = q
    out[..., 1] = q
    out[..., 2] = q


def lut_plane_numpy(out: U8, table: U8, index: Index) -> None:
    """out = table[index], for a 2-D `out` (the luma plane of render/ycc.py)."""
    out[...] = np.take(table, index)


def ycc_420_numpy(luma: U8, cb: U8, cr: U8, packed: U32, index: Index) -> None:
    """luma, Cb, Cr of `packed[index]` (Y | Cb << 8 | Cr << 16 per entry), the chroma averaged
    over 2×2 blocks libjpeg's way.

    libjpeg's `h2v2_downsample` sums the four samples and adds a bias that alternates 1, 2,
    1, 2 along the output row before dividing by 4 (so that halves round both ways); `index`
    has an even height and width.
    """
    full = np.take(packed, index)
    luma[...] = full & 0xFF
    bias = (np.arange(index.shape[1] // 2, dtype=np.uint32) & 1) + 1
    for shift, out in ((8, cb), (16, cr)):
        part = (full >> shift) & 0xFF
        total = part[0::2, 0::2] + part[0::2, 1::2] + part[1::2, 0::2] + part[1::2, 1::2]
        out[...] = (total + bias) >> 2


_Kernels = tuple[
    Callable[..., None],
    Callable[..., None],
    Callable[..., None],
    Callable[..., None],
    Callable[..., None],
]


def _compile() -> _Kernels | None:
    if os.environ.get("IDRSERVE_NO_NUMBA"):
        return None
    try:
        from numba import njit
    except ImportError:  # pragma: no cover - numba is a dependency; this is the safety net
        log.warning("numba is not importable: rendering with the slower numpy loops")
        return None

    # cache=True keeps the machine code beside this file (or in NUMBA_CACHE_DIR), so later
    # processes (workers, test runs) load it in milliseconds instead of compiling for ~1 s.
    jit = njit(nogil=True, cache=True, boundscheck=False, fastmath=False)

    @jit
    def lut_into(out: U8, component: int, table: U8, index: Index) -> None:
        h, w = index.shape
        for y in range(h):
            for x in range(w):
                out[y, x, component] = table[index[y, x]]

    @jit
    def lut_add_into(out: U8, component: int, table: U8, index: Index) -> None:
        h, w = index.shape
        for y in range(h):
            for x in range(w):
                v = np.int32(out[y, x, component]) + np.int32(table[index[y, x]])
                out[y, x, component] = 255 if v > 255 else v

    @jit
    def lut_grey(out: U8, table: U8, index: Index) -> None:
        h, w = index.shape
        for y in range(h):
            for x in range(w):
                q = table[index[y, x]]
                out[y, x, 0] = q
                out[y, x, 1] = q
                out[y, x, 2] = q

    @jit
    def lut_plane(out: U8, table: U8, index: Index) -> None:
        h, w = index.shape
        for y in range(h):
            for x in range(w):
                out[y, x] = table[index[y, x]]

    @jit
    def ycc_420(luma: U8, cb: U8, cr: U8, packed: U32, index: Index) -> None:
        h, w = index.shape
        for y in range(0, h, 2):
            for half in range(w // 2):
                x = 2 * half
                a, b = packed[index[y, x]], packed[index[y, x + 1]]
                c, d = packed[index[y + 1, x]], packed[index[y + 1, x + 1]]
                luma[y, x] = a & 0xFF
                luma[y, x + 1] = b & 0xFF
                luma[y + 1, x] = c & 0xFF
                luma[y + 1, x + 1] = d & 0xFF
                bias = np.uint32(1 + (half & 1))
                total = ((a >> 8) & 0xFF) + ((b >> 8) & 0xFF) + ((c >> 8) & 0xFF)
                cb[y // 2, half] = (total + ((d >> 8) & 0xFF) + bias) >> 2
                total = ((a >> 16) & 0xFF) + ((b >> 16) & 0xFF) + ((c >> 16) & 0xFF)
                cr[y // 2, half] = (total + ((d >> 16) & 0xFF) + bias) >> 2

    return lut_into, lut_add_into, lut_grey, lut_plane, ycc_420


_compiled = _compile()
COMPILED = _compiled is not None
lut_into: Callable[[U8, int, U8, Index], None]
lut_add_into: Callable[[U8, int, U8, Index], None]
lut_grey: Callable[[U8, U8, Index], None]
lut_plane: Callable[[U8, U8, Index], None]
ycc_420: Callable[[U8, U8, U8, U32, Index], None]
if _compiled is not None:
    lut_into, lut_add_into, lut_grey, lut_plane, ycc_420 = _compiled
else:
    lut_into, lut_add_into, lut_grey = lut_into_numpy, lut_add_into_numpy, lut_grey_numpy
    lut_plane, ycc_420 = lut_plane_numpy, ycc_420_numpy


def warm() -> None:
    """Compile (or load from the cache) the signatures the renderer uses, so that no request
    pays for it: read-only tables, uint8 and uint16 index planes, contiguous or not (a
    channel sliced from a (c, y, x) read is contiguous; a downsampled one may not be)."""
    out = np.zeros((2, 2, 3), dtype=np.uint8)
    plane, half = np.zeros((2, 2), dtype=np.uint8), np.zeros((1, 1), dtype=np.uint8)
    packed = np.zeros(65536, dtype=np.uint32)
    packed.setflags(write=False)
    for dtype in (np.uint8, np.uint16):
        table = np.zeros(256 if dtype is np.uint8 else 65536, dtype=np.uint8)
        table.setflags(write=False)  # the renderer's tables are all read-only
        for index in (np.zeros((2, 2), dtype=dtype), np.zeros((2, 4), dtype=dtype)[:, ::2]):
            lut_into(out, 0, table, index)
            lut_add_into(out, 0, table, index)
            lut_grey(out, table, index)
            lut_plane(plane, table, index)
            ycc_420(plane, half, half, packed, index)
