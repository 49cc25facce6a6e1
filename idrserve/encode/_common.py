"""Input checks shared by the encoders."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def as_rgb(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """`rgb` as a C-contiguous (H, W, 3) uint8 array (copied only when needed)."""
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"expected an (H, W, 3) image with H, W ≥ 1, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    return np.ascontiguousarray(arr)
