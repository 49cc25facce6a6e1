"""Micro-benchmark of idrserve's render and encode stages; writes a Markdown report.

Measures, on seeded microscopy-like uint16 data (Gaussian spots on a dim background with
shot-like noise, as in docs/benchmarks.md#protocol):

* `render_rgb` for 3 channels at 256² and 512²: blue/green/red (each colour component fed by
  one channel, the common case), cyan/magenta/yellow (two channels per component) and three
  white channels (three per component, the worst case); plus greyscale and float32 data;
* the straightforward float reference renderer (docs/benchmarks.md#rendering),
  and its ratio to `render_rgb`;
* building a uint16 quantization table cold (cache cleared) and cached, and `quantize` alone;
* each encoder (JPEG q0.9 4:2:0, PNG, TIFF) on the rendered tile;
* a one-channel render and its JPEG (greyscale, and one green channel) through RGB and
  through YCbCr planes (`render_ycc`, the same bytes), with the ratio.

Timing: `time.perf_counter`, inner loop auto-sized to ≥ `--min-batch-ms`, `--repeat` batches,
median (and best) per call reported.

    python bench/bench_render.py               # writes bench/results/render-<host>-<date>.md
    taskset -c 1 python bench/bench_render.py --repeat 15 --out /tmp/r.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import platform
import shlex
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
from _results import unused

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from idrserve.encode import encode_jpeg, encode_png, encode_tiff  # noqa: E402
from idrserve.encode.jpeg import encode_jpeg_planes  # noqa: E402
from idrserve.model import ChannelRender, ColorModel, RenderSettings  # noqa: E402
from idrserve.render import YccPlanes, clear_caches, kernels, render_rgb, render_ycc  # noqa: E402
from idrserve.render.lut import LutTable  # noqa: E402
from idrserve.render.quantize import quantize, quantize_table  # noqa: E402

RGBA = tuple[int, int, int, int]
COLOUR_SETS: dict[str, list[RGBA]] = {
    "blue/green/red": [(0, 0, 255, 255), (0, 255, 0, 255), (255, 0, 0, 255)],
    "cyan/magenta/yellow": [(0, 255, 255, 255), (255, 0, 255, 255), (255, 255, 0, 255)],
    "3 × white": [(255, 255, 255, 255)] * 3,
}
WINDOWS = [(110.0, 1800.0), (200.0, 2500.0), (150.0, 3000.0)]


def encode_ycc(planes: YccPlanes | None) -> bytes:
    assert planes is not None
    return encode_jpeg_planes(planes.y, planes.cb, planes.cr, 0.9)


def microscopy(channels: int, size: int, seed: int) -> np.ndarray:
    """(channels, size, size) uint16: blurred random spots + background + noise."""
    rng = np.random.default_rng(seed)
    out = np.empty((channels, size, size), dtype=np.uint16)
    freq_y = np.fft.fftfreq(size)[:, None]
    freq_x = np.fft.rfftfreq(size)[None, :]
    for c in range(channels):
        spots = np.zeros((size, size))
        n = size * size // 300
        ys, xs = rng.integers(0, size, n), rng.integers(0, size, n)
        np.add.at(spots, (ys, xs), rng.gamma(2.0, 600.0, n))
        sigma = 2.5 + c
        kernel = np.exp(-2 * (np.pi * sigma) ** 2 * (freq_y**2 + freq_x**2))
        blurred = np.fft.irfft2(np.fft.rfft2(spots) * kernel, s=(size, size)) * 20
        signal = 150 + blurred + rng.normal(0, 25, (size, size))
        out[c] = np.clip(rng.poisson(np.clip(signal, 0, None)), 0, 65535)
    return out


@contextlib.contextmanager
def numpy_loops() -> Iterator[None]:
    """render/kernels.py's numpy definitions in place of the compiled loops, for comparison."""
    saved = (kernels.lut_into, kernels.lut_add_into, kernels.lut_grey)
    kernels.lut_into = kernels.lut_into_numpy
    kernels.lut_add_into = kernels.lut_add_into_numpy
    kernels.lut_grey = kernels.lut_grey_numpy
    try:
        yield
    finally:
        kernels.lut_into, kernels.lut_add_into, kernels.lut_grey = saved


def naive_render(planes: np.ndarray, settings: RenderSettings) -> np.ndarray:
    """The straightforward float renderer of docs/benchmarks.md#rendering (≈ ±1 grey level)."""
    acc = np.zeros((*planes.shape[1:], 3), dtype=np.float32)
    for plane, c in zip(planes, settings.active_indices(), strict=True):
        ch = settings.channels[c]
        v = np.clip((plane.astype(np.float32) - ch.start) / (ch.end - ch.start), 0, 1)
        acc += v[..., None] * np.array(ch.color[:3], dtype=np.float32)
    return np.clip(acc, 0, 255).astype(np.uint8)


def timeit(fn: Callable[[], object], repeat: int, min_batch_s: float) -> tuple[float, float]:
    """(median, best) seconds per call."""
    fn()
    loops = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - t0 >= min_batch_s:
            break
        loops *= 2
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - t0) / loops)
    return statistics.median(samples), min(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed batches per case")
    parser.add_argument("--min-batch-ms", type=float, default=20.0, help="minimum batch time")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="tile sides")
    parser.add_argument("--seed", type=int, default=1, help="data seed")
    parser.add_argument("--out", type=Path, default=None, help="report path")
    args = parser.parse_args(argv)
    repeat, min_batch = args.repeat, args.min_batch_ms / 1000
    luts = LutTable(None)
    rows: list[tuple[str, str, float, float, str]] = []

    def record(case: str, size: str, fn: Callable[[], object], note: str = "") -> float:
        median, best = timeit(fn, repeat, min_batch)
        rows.append((case, size, median * 1e3, best * 1e3, note))
        print(f"{case:<58} {size:>8} {median * 1e3:9.3f} ms (best {best * 1e3:.3f}) {note}")
        return median

    tiles: dict[int, np.ndarray] = {}
    for size in args.sizes:
        planes = microscopy(3, size, args.seed)
        label = f"{size}²"
        for name, colours in COLOUR_SETS.items():
            settings = RenderSettings(
                tuple(
                    ChannelRender(True, s, e, color=c)
                    for (s, e), c in zip(WINDOWS, colours, strict=True)
                )
            )
            fast = record(
                f"render_rgb 3×uint16, {name}",
                label,
                partial(render_rgb, planes, settings, "uint16", luts),
            )
            slow = record(
                f"naive float reference, {name}",
                label,
                partial(naive_render, planes, settings),
            )
            rows[-1] = (*rows[-1][:4], f"{slow / fast:.1f}× slower than render_rgb")
            with numpy_loops():
                loops = record(
                    f"render_rgb with numpy loops (no numba), {name}",
                    label,
                    partial(render_rgb, planes, settings, "uint16", luts),
                )
            rows[-1] = (*rows[-1][:4], f"{loops / fast:.1f}× the compiled loops' time")
            if name == "blue/green/red":
                tiles[size] = render_rgb(planes, settings, "uint16", luts)
        grey = RenderSettings((ChannelRender(True, 110, 1800),), ColorModel.GREYSCALE)
        record(
            "render_rgb greyscale 1×uint16",
            label,
            partial(render_rgb, planes[:1], grey, "uint16", luts),
        )
        green = RenderSettings((ChannelRender(True, 110, 1800, color=(0, 255, 0, 255)),))
        for model, one in (("greyscale", grey), ("one green channel", green)):
            rgb_path = record(
                f"render + JPEG 1×uint16, {model}: RGB",
                label,
                partial(
                    lambda s, one_plane: encode_jpeg(render_rgb(one_plane, s, "uint16", luts), 0.9),
                    one,
                    planes[:1],
                ),
            )
            assert render_ycc(planes[:1], one, "uint16", luts) is not None
            planes_path = record(
                f"render + JPEG 1×uint16, {model}: YCbCr planes",
                label,
                partial(
                    lambda s, one_plane: encode_ycc(render_ycc(one_plane, s, "uint16", luts)),
                    one,
                    planes[:1],
                ),
            )
            rows[-1] = (*rows[-1][:4], f"{rgb_path / planes_path:.2f}× the RGB path's speed")
        floats = (planes.astype(np.float32) / 7.0).astype(np.float32)
        fsettings = RenderSettings(
            tuple(
                ChannelRender(True, s / 7, e / 7, color=c)
                for (s, e), c in zip(WINDOWS, COLOUR_SETS["blue/green/red"], strict=True)
            )
        )
        record(
            "render_rgb 3×float32, blue/green/red",
            label,
            partial(render_rgb, floats, fsettings, "float32", luts),
        )
        lut_settings = RenderSettings(
            tuple(
                ChannelRender(True, s, e, lut=n)
                for (s, e), n in zip(WINDOWS, ["fire.lut", "ice.lut", "glow.lut"], strict=True)
            )
        )
        record(
            "render_rgb 3×uint16, 3 LUT channels",
            label,
            partial(render_rgb, planes, lut_settings, "uint16", luts),
        )
        ch = ChannelRender(True, 110, 1800)
        record(
            "quantize 1×uint16 (cached table)",
            label,
            partial(quantize, planes[0], ch, "uint16"),
        )

    ch_stream = iter(range(10**9))

    def cold_table() -> object:
        # a new window every call, so every call builds (and caches) a new table
        return quantize_table("uint16", float(next(ch_stream) % 60000), 65000.0)

    record("quantize_table uint16, cold (build)", "65536", cold_table)
    record(
        "quantize_table uint16, cached", "65536", partial(quantize_table, "uint16", 110.0, 1800.0)
    )

    def cold_render() -> object:
        clear_caches()
        return render_rgb(planes_256, settings_256, "uint16", luts)

    planes_256 = microscopy(3, 256, args.seed)
    settings_256 = RenderSettings(
        tuple(
            ChannelRender(True, s, e, color=c)
            for (s, e), c in zip(WINDOWS, COLOUR_SETS["blue/green/red"], strict=True)
        )
    )
    record(
        "render_rgb 3×uint16 256², all caches cold",
        "256²",
        cold_render,
        "first tile of new settings",
    )

    for size, rgb in tiles.items():
        label = f"{size}²"
        for name, encoder in (
            ("JPEG q0.9 4:2:0", encode_jpeg),
            ("PNG (level 1, RLE, SUB)", encode_png),
            ("TIFF (uncompressed)", encode_tiff),
        ):
            data = encoder(rgb, 0.9)
            record(
                f"encode {name}",
                label,
                partial(encoder, rgb, 0.9),
                f"{len(data) / 1024:.1f} KiB",
            )

    name = f"render-{socket.gethostname()}-{dt.date.today().isoformat()}.md"
    out = args.out or unused(ROOT / "bench" / "results" / name)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(
        shlex.quote(a) for a in [str(Path(sys.argv[0])), *(sys.argv[1:] if argv is None else argv)]
    )
    lines = [
        f"# render/encode micro-benchmark — {socket.gethostname()}, "
        f"{dt.datetime.now().isoformat(timespec='seconds')}",
        "",
        f"Command: `{command}`",
        "",
        f"Python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
        f"{platform.processor() or 'cpu'}; median of {repeat} batches of "
        f"≥ {args.min_batch_ms:g} ms "
        "(best in brackets). Data: seeded microscopy-like uint16 (spots + background + noise), "
        "windows 110:1800, 200:2500, 150:3000.",
        "",
        "| case | size | median ms | best ms | note |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {c} | {s} | {m:.3f} | {b:.3f} | {n} |" for c, s, m, b, n in rows]
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
