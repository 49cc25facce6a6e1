"""Which stored level, box and area factor produce a region of the full-resolution image at a size.

IIIF and DeepZoom clients address regions in full-resolution pixels plus an output size, and
request every power-of-two scale even when the pyramid stores fewer levels. `plan_region`
maps such a request onto the pipeline's `RegionRequest` fields:

* the scale is the largest power of two s at which the region is still at least the output
  size (never a coarser level than the output needs);
* the read comes from the coarsest stored level whose (nominal, integer) factor divides s;
* the rest of the factor is an area average of raw values (`RegionRequest.downsample`),
  before windowing, so an unstored level looks like a stored one would;
* a stored level that is floor-halved lacks the last pixel of the ceil-halved size clients
  compute at the right and bottom edges: that one pixel repeats the edge (`pad`);
* any remaining difference (sizes that are not powers of two, upscaling) is a
  nearest-neighbour resize of the rendered RGB (`out_size`).

Pure functions on `model` types; no I/O.
"""

from __future__ import annotations

import numpy as np

from idrserve.model import Box, ImageMeta, record


@record
class Plan:
    """Where to read (level, box in its pixels), how much to average, what size to return."""

    level: int
    box: Box
    downsample: tuple[int, int]
    pad: tuple[int, int]
    out_size: tuple[int, int] | None  # None: the natural size already matches

    def raw_pixels(self) -> int:
        return self.box.w * self.box.h


def power_of_two_scale(region_w: int, region_h: int, out_w: int, out_h: int) -> int:
    """The largest power of two s whose ceil-divided region still covers the output (≥ 1).

    Ceil, because clients compute edge tiles as ⌈w / s⌉: a 441-row edge region shown at 221
    rows is factor 2, although 441 / 221 < 2.
    """
    s, longest = 1, max(region_w, region_h)
    while (
        s * 2 <= longest and -(-region_w // (s * 2)) >= out_w and -(-region_h // (s * 2)) >= out_h
    ):
        s *= 2
    return s


def plan_region(meta: ImageMeta, region: Box, out_w: int, out_h: int) -> Plan:
    """Plan reading `region` (full-resolution pixels, inside the image) at `out_w`×`out_h`."""
    s = power_of_two_scale(region.w, region.h, out_w, out_h)
    level, (fx, fy) = 0, (1, 1)
    for i, (gx, gy) in enumerate(meta.level_factors()):
        if gx <= s and gy <= s and s % gx == 0 and s % gy == 0 and gx * gy > fx * fy:
            level, (fx, fy) = i, (gx, gy)
    lv = meta.levels[level]
    x0 = min(region.x // fx, lv.size_x - 1)
    y0 = min(region.y // fy, lv.size_y - 1)
    x1 = max(min(-(-(region.x + region.w) // fx), lv.size_x), x0 + 1)
    y1 = max(min(-(-(region.y + region.h) // fy), lv.size_y), y0 + 1)
    box = Box(x0, y0, x1 - x0, y1 - y0)
    dx, dy = s // fx, s // fy
    nat_w, nat_h = -(-box.w // dx), -(-box.h // dy)
    pad_x = 1 if out_w == nat_w + 1 and region.x + region.w == meta.size_x else 0
    pad_y = 1 if out_h == nat_h + 1 and region.y + region.h == meta.size_y else 0
    natural = (nat_w + pad_x, nat_h + pad_y)
    out = None if natural == (out_w, out_h) else (out_w, out_h)
    return Plan(level, box, (dx, dy), (pad_x, pad_y), out)


def raw_bytes(meta: ImageMeta, plan: Plan, channels: int, planes: int = 1) -> int:
    """Bytes of raw pixels the plan reads for `channels` channels and `planes` z-planes."""
    return plan.raw_pixels() * channels * planes * np.dtype(meta.dtype).itemsize


# --- DeepZoom's pyramid: level L is the full size divided by 2^(N−L), rounded up ---------


def dz_max_level(width: int, height: int) -> int:
    """DeepZoom: N = ⌈log2(max(W, H))⌉, the full-resolution level (0 for a 1×1 image)."""
    longest = max(width, height)
    return (longest - 1).bit_length() if longest > 1 else 0


def dz_level_size(width: int, height: int, level: int) -> tuple[int, int]:
    """Size of DeepZoom level `level`: the full size divided by 2^(N−L), rounded up."""
    scale = 1 << (dz_max_level(width, height) - level)
    return -(-width // scale), -(-height // scale)


def dz_tile_region(
    width: int, height: int, level: int, col: int, row: int, tile: int
) -> tuple[Box, tuple[int, int]] | None:
    """(region in full-resolution pixels, output size) of one tile, or None off the level."""
    n = dz_max_level(width, height)
    if level > n:
        return None
    lw, lh = dz_level_size(width, height, level)
    x0, y0 = col * tile, row * tile
    if x0 >= lw or y0 >= lh:
        return None
    w, h = min(tile, lw - x0), min(tile, lh - y0)
    scale = 1 << (n - level)
    rx, ry = x0 * scale, y0 * scale
    region = Box(rx, ry, min(w * scale, width - rx), min(h * scale, height - ry))
    return region, (w, h)
