"""OME-Zarr images for the IIIF and DeepZoom tests, written with zarr-python like real data.

* ODD (8001): 4097×3001 uint16, two channels, three stored levels (floor-halved by 2×2
  means, as many converters write them), 256² chunks. Factors 8 and beyond are not stored,
  so OpenSeadragon's coarse levels exercise the area-averaging path, and the odd size
  exercises ceil-halved level sizes and 1-pixel edge tiles.
* SQUARES (8002): the IIIF validator's test pattern, 1000×1000 in 100-pixel squares whose
  colours come from the validator package's own table (`ValidationInfo.colorInfo[x][y]`),
  stored as three uint8 channels rendered red, green and blue (0:255), so the default
  rendering reproduces the pattern exactly.
* STACK (8003): 300×200 uint8, one channel, three z-planes (plane z is filled with 60·(z+1)),
  for plane selection and the manifest's one canvas per plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.http.conftest import write_ngff04

ODD, SQUARES, STACK = 8001, 8002, 8003
ODD_W, ODD_H = 4097, 3001


def _halve(a: np.ndarray) -> np.ndarray:
    """2×2 mean (round half up) on the last two axes, floor-halved like many converters."""
    h, w = a.shape[-2] // 2 * 2, a.shape[-1] // 2 * 2
    v = a[..., :h, :w].astype(np.float64)
    m = (v[..., 0::2, 0::2] + v[..., 1::2, 0::2] + v[..., 0::2, 1::2] + v[..., 1::2, 1::2]) / 4
    return np.floor(m + 0.5).astype(a.dtype)


def odd_data() -> np.ndarray:
    """Two smooth-ish uint16 channels with a little structure, deterministic."""
    y, x = np.mgrid[0:ODD_H, 0:ODD_W]
    a = ((x * 7 + y * 3) % 4000).astype(np.uint16)
    b = (((x // 16) ^ (y // 16)) * 37 % 3000).astype(np.uint16)
    return np.stack([a, b])


def square_colours() -> list[list[tuple[int, int, int]]]:
    from iiif_validator.validator import ValidationInfo

    colours: list[list[tuple[int, int, int]]] = ValidationInfo().colorInfo
    return colours


def squares_data() -> np.ndarray:
    """(3, 1000, 1000) uint8: pixel (x, y) has colour colorInfo[x // 100][y // 100]."""
    table = np.array(square_colours(), dtype=np.uint8)  # [x][y][rgb]
    cells = table.transpose(2, 1, 0)  # [rgb][y][x]
    return np.ascontiguousarray(np.repeat(np.repeat(cells, 100, axis=1), 100, axis=2))


def _channel(label: str, colour: str, end: float) -> dict[str, Any]:
    return {
        "label": label,
        "color": colour,
        "active": True,
        "window": {"min": 0, "max": end, "start": 0, "end": end},
    }


def write_odd(root: Path) -> None:
    levels = [odd_data()]
    for _ in range(2):
        levels.append(_halve(levels[-1]))
    write_ngff04(
        root / f"{ODD}.zarr",
        [lv.shape for lv in levels],
        "cyx",
        "uint16",
        (1, 256, 256),
        {
            "channels": [_channel("A", "00FF00", 4000), _channel("B", "FF00FF", 3000)],
            "rdefs": {"model": "color"},
        },
        list(levels),
    )


def write_squares(root: Path) -> None:
    data = squares_data()
    write_ngff04(
        root / f"{SQUARES}.zarr",
        [data.shape, _halve(data).shape],
        "cyx",
        "uint8",
        (1, 256, 256),
        {
            "channels": [
                _channel("R", "FF0000", 255),
                _channel("G", "00FF00", 255),
                _channel("B", "0000FF", 255),
            ],
            "rdefs": {"model": "color"},
        },
        [data, _halve(data)],
    )


def write_stack(root: Path) -> None:
    data = np.stack([np.full((200, 300), 60 * (z + 1), np.uint8) for z in range(3)])[None]
    write_ngff04(
        root / f"{STACK}.zarr",
        [data.shape],
        "czyx",
        "uint8",
        (1, 1, 256, 256),
        {"channels": [_channel("grey", "FFFFFF", 255)], "rdefs": {"model": "greyscale"}},
        [data],
    )


def write_all(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    write_odd(root)
    write_squares(root)
    write_stack(root)
    return root
