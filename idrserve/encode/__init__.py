"""RGB uint8 arrays → encoded image bytes, one encoder per `Format`.

Every encoder has the signature `encode_x(rgb, quality) -> bytes` and accepts any (H, W, 3)
uint8 array, including 1×1 and non-contiguous views. `MEDIA_TYPES` in `model.py` gives the
response type of each format.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from idrserve.encode.jpeg import encode_jpeg, jpeg_quality
from idrserve.encode.png import encode_png, encode_png_rgba
from idrserve.encode.tiff import encode_tiff
from idrserve.encode.webp import encode_webp
from idrserve.model import Format

Encoder = Callable[[npt.NDArray[np.uint8], float], bytes]

ENCODERS: dict[Format, Encoder] = {
    Format.JPEG: encode_jpeg,
    Format.PNG: encode_png,
    Format.TIFF: encode_tiff,
    Format.WEBP: encode_webp,
}

__all__ = [
    "ENCODERS",
    "encode",
    "encode_jpeg",
    "encode_png",
    "encode_png_rgba",
    "encode_tiff",
    "encode_webp",
    "jpeg_quality",
]


def encode(rgb: npt.NDArray[np.uint8], fmt: Format, quality: float) -> bytes:
    """Encode `rgb` in `fmt`; `quality` (0..1) matters for the lossy JPEG and WebP only."""
    return ENCODERS[fmt](rgb, quality)
