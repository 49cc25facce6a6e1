"""Compositing quantized channels into RGB: OMERO's colour and greyscale models.

OMERO's `RenderHSBRegionTask.renderPackedInt` and `GreyScaleStrategy`; the rules:
docs/rendering.md#colour-model-additive-compositing and docs/rendering.md#greyscale-model.

Per active channel and output component, OMERO adds a term `t(q)` that depends only on the
quantized value q: `lut[q]` for a LUT channel, otherwise `(int)(R/255.0 · q)` and, when the
alpha is not 255, `(int)((float) that · (float) A/255f)` (Java float arithmetic, so float32
here). The RE multiplies by alpha only when some active channel has A ≠ 255, but A = 255 gives
a factor of exactly 1.0f, so applying each channel's own alpha is the same thing. Sums are
clamped at 255 after each addition, which equals `min(255, Σ)` because every term is ≥ 0.

Speed (docs/benchmarks.md#rendering): for 8/16-bit data each channel's term tables are
composed with its quantization table into one raw→term table per output component (65536
entries for uint16, cached), so a channel costs one `np.take` per component it contributes to, and
components a channel cannot light (e.g. G and B of a pure red channel) cost nothing. For
32-bit and float data the channel is quantized first and the 256-entry term tables are indexed
by q. Several contributions to one component are added with a saturating uint8 add
(`a + min(b, 255 − a)`); the loops are compiled (render/kernels.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from idrserve.model import RGBA, ChannelRender, Family
from idrserve.render import kernels
from idrserve.render.quantize import LUT_TYPES, quantize_table

U8 = npt.NDArray[np.uint8]
# Per output component: the term table, or None when the channel never adds to it.
Component = U8 | None
ComponentTables = tuple[Component, Component, Component]


def colour_terms(color: RGBA) -> U8:
    """(256, 3) uint8: the amount a colour channel adds to R, G, B for each q."""
    r, g, b, a = (max(0, min(255, int(v))) for v in color)
    q = np.arange(256, dtype=np.float64)
    ratios = np.array([v / 255.0 if v > 0 else 0.0 for v in (r, g, b)], dtype=np.float64)
    terms = np.trunc(ratios[None, :] * q[:, None])  # `(int) (redRatio * discreteValue)`
    if a != 255:
        alpha = np.float32(a) / np.float32(255)  # `Integer.valueOf(A).floatValue() / 255`
        terms = np.trunc(terms.astype(np.float32) * alpha).astype(np.float64)
    return terms.astype(np.uint8)


def lut_terms(lut: npt.NDArray[np.uint8]) -> U8:
    """(256, 3) uint8 term table of a LUT channel: the LUT itself (colour and alpha unused)."""
    table = np.asarray(lut, dtype=np.uint8)
    if table.shape != (256, 3):
        raise ValueError(f"a LUT must be 256×3, got {table.shape}")
    return table


def _component(table: U8) -> Component:
    if not table.any():
        return None
    table.setflags(write=False)
    return table


def _split(terms: U8) -> ComponentTables:
    r, g, b = (_component(np.ascontiguousarray(terms[:, c])) for c in range(3))
    return r, g, b


@lru_cache(maxsize=128)
def _tables_for_q(color: RGBA, lut_bytes: bytes | None) -> ComponentTables:
    if lut_bytes is not None:
        terms = lut_terms(np.frombuffer(lut_bytes, dtype=np.uint8).reshape(256, 3))
    else:
        terms = colour_terms(color)
    return _split(terms)


@lru_cache(maxsize=128)
def _tables_for_raw(
    dtype: str,
    start: float,
    end: float,
    family: Family,
    coefficient: float,
    inverted: bool,
    color: RGBA,
    lut_bytes: bytes | None,
) -> ComponentTables:
    # Worst case 128 × 3 × 64 KiB ≈ 24 MiB for uint16; the key is everything the table depends
    # on, so the cache never needs invalidating.
    qtable = quantize_table(dtype, start, end, family, coefficient, inverted)
    by_q = _tables_for_q(color, lut_bytes)
    r, g, b = (None if comp is None else _component(np.take(comp, qtable)) for comp in by_q)
    return r, g, b


def channel_tables(
    dtype: str, ch: ChannelRender, lut: npt.NDArray[np.uint8] | None
) -> ComponentTables:
    """Per-component term tables of one channel.

    For 8/16-bit types they are indexed by the raw bits (see `quantize.index_plane`), for the
    others by the quantized value q.
    """
    lut_bytes = None if lut is None else lut_terms(lut).tobytes()
    if dtype in LUT_TYPES:
        return _tables_for_raw(
            dtype,
            ch.start,
            ch.end,
            ch.family,
            ch.coefficient,
            ch.inverted,
            ch.color,
            lut_bytes,
        )
    return _tables_for_q(ch.color, lut_bytes)


# (term table, index plane: raw bits or q)
Contribution = tuple[U8, npt.NDArray[np.unsignedinteger[Any]]]


def composite(parts: Sequence[Contribution], out: npt.NDArray[np.uint8], component: int) -> None:
    """Write `min(255, Σ table[index])` over `parts` (at least one) into component
    `component` of the (H, W, 3) `out`, straight into the interleaved bytes (kernels.py)."""
    (table, index), *rest = parts
    kernels.lut_into(out, component, table, index)
    for table, index in rest:
        kernels.lut_add_into(out, component, table, index)


def render_greyscale(table: U8, index: npt.NDArray[np.unsignedinteger[Any]]) -> U8:
    """(H, W, 3) with R = G = B = table[index] (greyscale model): the channel's quantization
    table (or the bin table of a wide type) applied once and written to all three components."""
    out = np.empty((*index.shape, 3), dtype=np.uint8)
    kernels.lut_grey(out, table, index)
    return out
