"""JPEG encoding with libjpeg-turbo through simplejpeg (docs/rendering.md#jpeg-encoding).

OMERO writes with Java ImageIO at quality q (0..1). libjpeg's IJG quality scaling at
`round(q·100)` with 4:2:0 chroma subsampling and standard Huffman tables gives the same
quantisation tables; bytes still differ (DCT and colour-conversion rounding), so compare
decoded pixels, not files. simplejpeg measured fastest here (docs/benchmarks.md#encoding:
0.16 ms for a 256² tile at q90).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import simplejpeg

from idrserve.encode._common import as_rgb


def jpeg_quality(quality: float) -> int:
    """Map webgateway's `q` (0..1) to libjpeg's 1..100: round half up, then clamp."""
    if not math.isfinite(quality):
        raise ValueError(f"JPEG quality must be a finite number, got {quality!r}")
    return max(1, min(100, math.floor(quality * 100 + 0.5)))


def encode_jpeg(rgb: npt.NDArray[np.uint8], quality: float) -> bytes:
    """Encode an (H, W, 3) uint8 RGB image as baseline JPEG, 4:2:0."""
    data: bytes = simplejpeg.encode_jpeg(
        as_rgb(rgb), quality=jpeg_quality(quality), colorspace="RGB", colorsubsampling="420"
    )
    return data


def encode_jpeg_planes(
    y: npt.NDArray[np.uint8], cb: npt.NDArray[np.uint8], cr: npt.NDArray[np.uint8], quality: float
) -> bytes:
    """Encode 4:2:0 YCbCr planes (render/ycc.py) as baseline JPEG: the bytes `encode_jpeg`
    gives for the RGB image they were computed from, without its colour conversion."""
    data: bytes = simplejpeg.encode_jpeg_yuv_planes(y, cb, cr, quality=jpeg_quality(quality))
    return data
