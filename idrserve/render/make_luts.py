"""Generate idrserve's built-in lookup tables into `idrserve/render/luts/` (768-byte `.lut`).

Run ``python -m idrserve.render.make_luts`` after changing a formula and commit the output;
`tests/render/test_lut.py` fails when the committed files and this script disagree.

The tables carry the names of LUTs commonly installed with OMERO and ImageJ, but every one is
generated here from a simple formula or a handful of control points chosen for idrserve. They
are approximations, not copies: for exact parity with an OMERO server, point `lut_dir` at that
server's LUT directory (its files override built-ins of the same name).
"""

from __future__ import annotations

import argparse
import colorsys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]
LUT_DIR = Path(__file__).with_name("luts")

_I = np.arange(256, dtype=np.float64)


def _clip(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.clip(np.round(values), 0, 255)


def _stack(r: npt.ArrayLike, g: npt.ArrayLike, b: npt.ArrayLike) -> U8:
    cols = [np.broadcast_to(np.asarray(c, dtype=np.float64), (256,)) for c in (r, g, b)]
    return np.stack([_clip(c) for c in cols], axis=1).astype(np.uint8)


def _ramp(r: float, g: float, b: float) -> U8:
    """Black to the colour (r, g, b) in 0..1 units."""
    return _stack(_I * r, _I * g, _I * b)


def _through(points: Sequence[tuple[int, int, int, int]]) -> U8:
    """Piecewise-linear through (index, r, g, b) control points."""
    xs = [p[0] for p in points]
    return _stack(*(np.interp(_I, xs, [p[c] for p in points]) for c in (1, 2, 3)))


def _hot(order: tuple[int, int, int]) -> U8:
    """Black → first component → first two → white, each rising over one third of the range."""
    cols: list[npt.NDArray[np.float64]] = [np.zeros(256) for _ in range(3)]
    for step, component in enumerate(order):
        cols[component] = np.clip(3 * _I - 255 * step, 0, 255)
    return _stack(*cols)


def _bands(colours: Sequence[tuple[int, int, int]]) -> U8:
    """Equal-width flat bands of the given colours."""
    n = len(colours)
    index = (np.arange(256) * n) // 256
    palette = np.array(colours, dtype=np.uint8)
    return palette[index]


def _spectrum() -> U8:
    rows = [colorsys.hsv_to_rgb(i / 256.0, 1.0, 1.0) for i in range(256)]
    return _stack(*(np.array([row[c] for row in rows]) * 255 for c in range(3)))


def _rgb332() -> U8:
    i = np.arange(256)
    r = ((i >> 5) & 7) * 255 / 7
    g = ((i >> 2) & 7) * 255 / 7
    b = (i & 3) * 255 / 3
    return _stack(r, g, b)


def _five_ramps() -> U8:
    segment = (np.arange(256) * 5) // 256
    pos = (np.arange(256) * 5) % 256 / 255.0 * 255
    colours = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (1, 1, 1)], dtype=np.float64)
    return _stack(*(pos * colours[segment, c] for c in range(3)))


BUILTINS: dict[str, Callable[[], U8]] = {
    "grays.lut": lambda: _ramp(1, 1, 1),
    "red.lut": lambda: _ramp(1, 0, 0),
    "green.lut": lambda: _ramp(0, 1, 0),
    "blue.lut": lambda: _ramp(0, 0, 1),
    "cyan.lut": lambda: _ramp(0, 1, 1),
    "magenta.lut": lambda: _ramp(1, 0, 1),
    "yellow.lut": lambda: _ramp(1, 1, 0),
    "fire.lut": lambda: _through(
        [
            (0, 0, 0, 0),
            (32, 0, 0, 100),
            (72, 110, 0, 170),
            (112, 200, 20, 110),
            (152, 245, 90, 30),
            (192, 255, 170, 0),
            (232, 255, 235, 90),
            (255, 255, 255, 255),
        ]
    ),
    "ice.lut": lambda: _through(
        [
            (0, 0, 0, 0),
            (64, 0, 40, 120),
            (128, 0, 130, 200),
            (192, 100, 210, 240),
            (255, 230, 255, 255),
        ]
    ),
    "cool.lut": lambda: _stack(_I, 255 - _I, 255),
    "hilo.lut": lambda: _hilo(),
    "spectrum.lut": _spectrum,
    "16_colors.lut": lambda: _bands(
        [
            (0, 0, 0),
            (0, 0, 128),
            (0, 0, 255),
            (0, 128, 128),
            (0, 255, 255),
            (0, 128, 0),
            (0, 255, 0),
            (128, 255, 0),
            (255, 255, 0),
            (255, 160, 0),
            (255, 0, 0),
            (128, 0, 0),
            (255, 0, 255),
            (128, 0, 128),
            (192, 192, 192),
            (255, 255, 255),
        ]
    ),
    "red_hot.lut": lambda: _hot((0, 1, 2)),
    "cyan_hot.lut": lambda: _hot((2, 1, 0)),
    "magenta_hot.lut": lambda: _hot((0, 2, 1)),
    "yellow_hot.lut": lambda: _hot((1, 0, 2)),
    "orange_hot.lut": lambda: _through(
        [(0, 0, 0, 0), (96, 255, 100, 0), (192, 255, 220, 80), (255, 255, 255, 255)]
    ),
    "glow.lut": lambda: _through(
        [
            (0, 0, 0, 0),
            (80, 150, 20, 0),
            (160, 255, 130, 0),
            (220, 255, 230, 110),
            (255, 255, 255, 255),
        ]
    ),
    "thermal.lut": lambda: _through(
        [
            (0, 0, 0, 0),
            (48, 40, 0, 120),
            (96, 150, 0, 150),
            (144, 230, 50, 50),
            (192, 255, 150, 0),
            (232, 255, 230, 60),
            (255, 255, 255, 255),
        ]
    ),
    "5_ramps.lut": _five_ramps,
    "3-3-2_rgb.lut": _rgb332,
}


def _hilo() -> U8:
    table = _ramp(1, 1, 1)
    table[0] = (0, 0, 255)  # under-exposed pixels show blue
    table[255] = (255, 0, 0)  # saturated pixels show red
    return table


def encode_lut(rgb: U8) -> bytes:
    """The 768-byte raw form: 256 reds, then 256 greens, then 256 blues."""
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).T).tobytes()


def generate() -> dict[str, bytes]:
    """File name → 768-byte content of every built-in LUT."""
    return {name: encode_lut(make()) for name, make in sorted(BUILTINS.items())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=LUT_DIR, help="output directory")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name, data in generate().items():
        (out / name).write_bytes(data)
    print(f"wrote {len(BUILTINS)} LUTs to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
