"""Planning `histogram_json`: what was asked, plus the image's metadata and the limits →
`HistogramRequest` (pure, like `http/plan.py`; the counting is `render/histogram.py`).

Which pixels: OMERO counts the whole plane at the largest resolution level that fits its
maximum plane size (3192² by default). idrserve counts the coarsest level that is still at
least 512 pixels on each side (or as wide and as high as the image, when that is smaller), so
a histogram reads about a megapixel at most whatever the image's size: the shape of a
256-bin histogram hardly changes between levels, its read cost does (docs/iviewer.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from idrserve.errors import NotFound, TooLarge
from idrserve.http.plan import check_plane
from idrserve.model import Box, HistogramRequest, ImageMeta, LevelMeta
from idrserve.settings import LimitSettings

HISTOGRAM_MIN_SIDE = 512


@dataclass(frozen=True, slots=True)
class HistogramAsk:
    """`histogram_json/{id}/channel/{c}/?theZ=&theT=&bins=`, parsed."""

    image_id: int
    c: int
    z: int
    t: int
    bins: int


def histogram_level(levels: tuple[LevelMeta, ...], max_pixels: int) -> int:
    """The coarsest level at least `HISTOGRAM_MIN_SIDE` on each side (or the full size, when
    smaller), then coarser still while it is over `max_pixels`."""
    full = levels[0]
    need_x, need_y = min(HISTOGRAM_MIN_SIDE, full.size_x), min(HISTOGRAM_MIN_SIDE, full.size_y)
    level = max(i for i, lv in enumerate(levels) if lv.size_x >= need_x and lv.size_y >= need_y)
    while level + 1 < len(levels) and levels[level].size_x * levels[level].size_y > max_pixels:
        level += 1
    return level


def plan_histogram(ask: HistogramAsk, meta: ImageMeta, limits: LimitSettings) -> HistogramRequest:
    """Channel and plane checks (404, as OMERO.web's Http404), level, bin range, size bounds."""
    if ask.c >= meta.size_c:
        raise NotFound(
            f"channel {ask.c} is out of range: the image has {meta.size_c} channels (0-based)",
            param="c",
        )
    check_plane(meta, ask.z, ask.t)
    level = histogram_level(meta.levels, limits.max_region_pixels)
    lv = meta.levels[level]
    pixels = lv.size_x * lv.size_y
    nbytes = pixels * np.dtype(meta.dtype).itemsize
    if pixels > limits.max_region_pixels or nbytes > limits.max_read_bytes:
        raise TooLarge(
            f"the smallest stored level is {lv.size_x}x{lv.size_y} = {pixels} pixels "
            f"({nbytes} bytes), over the limit of {limits.max_region_pixels} pixels or "
            f"{limits.max_read_bytes} bytes per request",
            param="c",
        )
    channel = meta.channels[ask.c]
    return HistogramRequest(
        image_id=ask.image_id,
        z=ask.z,
        t=ask.t,
        c=ask.c,
        level=level,
        box=Box(0, 0, lv.size_x, lv.size_y),
        # OMERO bins over the channel's global minimum and maximum, which are imgData's
        # `window.min` and `window.max`: iviewer draws the window's ends on that axis.
        low=channel.window_min,
        high=channel.window_max,
        bins=ask.bins,
        data_version=meta.data_version,
    )
