"""Raw channel planes → RGB, reproducing the OMERO rendering engine pixel for pixel.

Pure, synchronous functions on numpy arrays (CONTRIBUTING.md#how-the-code-is-layered): no I/O
beyond loading LUT files, no settings. `render_rgb` is the entry point; `quantize`, `colour`,
`project` and `resample` hold the stages, `lut` the lookup tables. The rules they implement,
in order: docs/rendering.md. `render_ycc` gives a one-channel render as the YCbCr planes a
JPEG of it is encoded from (`ycc`), skipping the encoder's own colour conversion.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from idrserve.model import ColorModel, RenderSettings
from idrserve.render import colour, ycc
from idrserve.render import quantize as _quantize
from idrserve.render.colour import Contribution, channel_tables, composite, render_greyscale
from idrserve.render.lut import LutTable
from idrserve.render.quantize import LUT_TYPES, checked_planes, index_plane
from idrserve.render.ycc import YccPlanes, render_ycc

_IDENTITY = np.arange(256, dtype=np.uint8)
_IDENTITY.setflags(write=False)

# The function `quantize` is not re-exported: it would shadow the `render.quantize` module.
__all__ = ["LutTable", "YccPlanes", "clear_caches", "render_rgb", "render_ycc"]


def clear_caches() -> None:
    """Drop every cached quantization and colour table (benchmarks measure cold renders)."""
    for cached in (
        _quantize.quantize_table,
        _quantize.bin_table,
        colour._tables_for_raw,
        colour._tables_for_q,
    ):
        cached.cache_clear()
    ycc.clear_cache()


def render_rgb(
    planes: npt.NDArray[Any],
    settings: RenderSettings,
    dtype: str,
    luts: LutTable,
) -> npt.NDArray[np.uint8]:
    """Render the planes of the contributing channels into a C-contiguous (H, W, 3) uint8.

    `planes` is (n, H, W) and holds, in order, the channels `settings.active_indices()`
    names (n = 0 gives black). `dtype` is the image's pixel type as a numpy name; the planes
    are converted to it if they differ. LUT names are looked up in `luts`; an unknown name
    renders the channel with its colour, as OMERO does.
    """
    indices = settings.active_indices()
    arr = checked_planes(planes, indices, dtype)
    n, height, width = arr.shape
    if n == 0:
        return np.zeros((height, width, 3), dtype=np.uint8)
    if settings.model is ColorModel.GREYSCALE:
        ch = settings.channels[indices[0]]
        if dtype in LUT_TYPES:
            table = _quantize.quantize_table(
                dtype, ch.start, ch.end, ch.family, ch.coefficient, ch.inverted
            )
            return render_greyscale(table, index_plane(arr[0], dtype))
        return render_greyscale(_IDENTITY, _quantize.quantize(arr[0], ch, dtype))

    per_component: tuple[list[Contribution], ...] = ([], [], [])
    for k, c in enumerate(indices):
        ch = settings.channels[c]
        lut = luts.get(ch.lut) if ch.lut else None  # unknown LUT: render with the colour
        tables = channel_tables(dtype, ch, lut)
        if all(t is None for t in tables):
            continue  # a black colour (or LUT) adds nothing
        # 8/16-bit tables already include quantization; wider types are quantized first.
        index = (
            index_plane(arr[k], dtype)
            if dtype in LUT_TYPES
            else _quantize.quantize(arr[k], ch, dtype)
        )
        for component, entry in enumerate(tables):
            if entry is not None:
                per_component[component].append((entry, index))
    # Components no channel lights stay zero: start from zeros only when there are some.
    alloc = np.empty if all(per_component) else np.zeros
    out = alloc((height, width, 3), dtype=np.uint8)
    for component, parts in enumerate(per_component):
        if parts:
            composite(parts, out, component)
    return out
