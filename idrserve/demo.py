"""A small, deterministic OME-Zarr demo set for the quickstart, tests and benchmarks.

`write_demo(data_dir)` writes six images as `<id>.zarr` (found by the catalog's scan), seeded
so that every run gives the same chunk bytes, without network access, in a few seconds. An
image is written to a hidden temporary directory and renamed into place with a marker file
holding `DEMO_VERSION`, so a complete image is skipped next time and a partial one rewritten.
It blocks (about 5 s on 2 cores, ~110 MB on disk, ~400 MB peak memory): call it before the
server starts, or through `asyncio.to_thread` from inside a running loop.

| id | what |
|---|---|
| 1001 | 3-channel uint16 fluorescence-like 4096², 6 levels, 256² chunks, NGFF 0.4, omero block |
| 1002 | 2-channel uint16 z-stack 512² × 9 z, 3 levels, NGFF 0.4 (projections) |
| 1003 | uint8 single-channel 600×400, one level, no omero block (defaults) |
| 1004 | 2-channel float32 1024×768, 2 levels, omero block with float windows |
| 1005 | 2-channel uint16 2048², 3 levels, NGFF 0.5 (Zarr v3) sharded 1024² / 256² |
| 1006 | 5D t,c,z,y,x, T=3, C=2, Z=3, 256×192, 2 levels (t selection) |
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

DEMO_VERSION = "1"
MARKER = ".idrserve-demo"

_BLOSC_V2 = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)


@dataclass(frozen=True, slots=True)
class DemoImage:
    id: int
    name: str
    description: str

    @property
    def image_id(self) -> int:
        return self.id


# ---- pixel generators (float32 in 0..~1, vectorised) -----------------------------------------


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with periodic edges, through the FFT (fast for any sigma)."""
    fy = np.fft.fftfreq(img.shape[-2])[:, None]
    fx = np.fft.rfftfreq(img.shape[-1])[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fy**2 + fx**2))
    out = np.fft.irfft2(np.fft.rfft2(img) * kernel, s=img.shape[-2:])
    return out.astype(np.float32)


def _impulses(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, w: np.ndarray) -> np.ndarray:
    img = np.zeros(shape, np.float32)
    np.add.at(img, (ys % shape[0], xs % shape[1]), w.astype(np.float32))
    return img


def _normalise(img: np.ndarray) -> np.ndarray:
    hi = float(np.percentile(img, 99.5))
    return np.clip(img / hi, 0.0, 1.5) if hi > 0 else img


def _upsample(img: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of a 2D image by an integer factor (separable, vectorised)."""

    def axis_weights(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n * factor) + 0.5) / factor - 0.5, 0, n - 1)
        lo = np.floor(pos).astype(np.intp)
        return lo, np.minimum(lo + 1, n - 1), (pos - lo).astype(np.float32)

    y0, y1, fy = axis_weights(img.shape[0])
    rows = img[y0] * (1 - fy)[:, None] + img[y1] * fy[:, None]
    x0, x1, fx = axis_weights(img.shape[1])
    return rows[:, x0] * (1 - fx) + rows[:, x1] * fx  # type: ignore[no-any-return]


def _cells(rng: np.random.Generator, size: int, count: int) -> tuple[np.ndarray, ...]:
    """Nuclei, cytoplasm and filament channels at `size`², values 0..~1."""
    ys, xs = rng.integers(0, size, count), rng.integers(0, size, count)
    bright = rng.uniform(0.5, 1.0, count)
    nuclei = np.zeros((size, size), np.float32)
    for k, s in enumerate((160, 128, 100)):  # three nucleus sizes
        nuclei += _blur(_impulses((size, size), ys[k::3], xs[k::3], bright[k::3]), size / s)
    nuclei = 1 - np.exp(-6 * _normalise(nuclei))  # flat-topped blobs
    cyto = _normalise(_blur(_impulses((size, size), ys, xs, bright), size / 40))
    # Filaments: smooth random walks from each cell, drawn as points and blurred a little.
    steps, n = 120, count
    angle = rng.uniform(0, 2 * np.pi, (n, 1)) + np.cumsum(rng.normal(0, 0.15, (n, steps)), 1)
    py = ys[:, None] + np.cumsum(np.sin(angle), 1)
    px = xs[:, None] + np.cumsum(np.cos(angle), 1)
    lines = _impulses(
        (size, size), py.astype(np.intp).ravel(), px.astype(np.intp).ravel(), np.ones(n * steps)
    )
    filaments = _normalise(_blur(lines, 0.8))
    return nuclei.astype(np.float32), cyto, filaments


def _to_uint16(
    rng: np.random.Generator, img: np.ndarray, background: int, amplitude: int
) -> np.ndarray:
    noise = rng.integers(0, 2 * max(1, background // 4), img.shape, dtype=np.uint16)
    return (img * amplitude + background).astype(np.uint16) + noise


def _pyramid(data: np.ndarray, levels: int) -> list[np.ndarray]:
    """Floor-halved 2×2 mean pyramid over the last two axes (like bioformats2raw)."""
    out = [data]
    for _ in range(levels - 1):
        a = out[-1]
        h, w = a.shape[-2] // 2, a.shape[-1] // 2
        blocks = a[..., : 2 * h, : 2 * w].reshape(*a.shape[:-2], h, 2, w, 2)
        out.append(blocks.mean(axis=(-3, -1), dtype=np.float64).astype(data.dtype))
    return out


# ---- writers ---------------------------------------------------------------------------------

_UNITS = {"t": ("time", "second"), "c": ("channel", None), "z": ("space", "micrometer")}


def _multiscale(
    axes: str, levels: list[np.ndarray], pixel: dict[str, float], name: str, description: str
) -> dict[str, Any]:
    axes_doc = []
    for a in axes:
        kind, unit = _UNITS.get(a, ("space", "micrometer"))
        axes_doc.append({"name": a, "type": kind, **({"unit": unit} if unit else {})})
    datasets = []
    for i, lv in enumerate(levels):
        factor = {
            "y": levels[0].shape[-2] / lv.shape[-2],
            "x": levels[0].shape[-1] / lv.shape[-1],
        }
        scale = [pixel.get(a, 1.0) * factor.get(a, 1.0) for a in axes]
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    return {
        "name": name,
        "axes": axes_doc,
        "datasets": datasets,
        "type": "mean",
        "metadata": {"description": description},
    }


def _omero(
    name: str, channels: list[tuple[str, str, float, float, float, float]], **rdefs: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "version": "0.4",
        "channels": [
            {
                "label": label,
                "color": colour,
                "active": True,
                "inverted": False,
                "family": "linear",
                "coefficient": 1.0,
                "window": {"min": lo, "max": hi, "start": start, "end": end},
            }
            for label, colour, lo, hi, start, end in channels
        ],
        "rdefs": {"model": "color", **rdefs},
    }


def _chunks(shape: tuple[int, ...], yx: int) -> tuple[int, ...]:
    return (*(1,) * (len(shape) - 2), min(yx, shape[-2]), min(yx, shape[-1]))


def _write_v2(
    path: Path, axes: str, levels: list[np.ndarray], attrs: dict[str, Any], chunk: int = 256
) -> None:
    store = LocalStore(path)
    group = zarr.open_group(store, mode="w", zarr_format=2)
    group.attrs.update(attrs)
    for i, data in enumerate(levels):
        zarr.create_array(
            store,
            name=str(i),
            data=data,
            chunks=_chunks(data.shape, chunk),
            zarr_format=2,
            compressors=_BLOSC_V2,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )


def _write_v3_sharded(
    path: Path, axes: str, levels: list[np.ndarray], ome: dict[str, Any], shard: int, chunk: int
) -> None:
    store = LocalStore(path)
    group = zarr.open_group(store, mode="w", zarr_format=3)
    group.attrs.update({"ome": ome})
    for i, data in enumerate(levels):
        inner = _chunks(data.shape, chunk)
        side = [-(-n // c) * c for n, c in zip(data.shape[-2:], inner[-2:], strict=True)]
        shards = (*inner[:-2], min(shard, side[0]), min(shard, side[1]))
        zarr.create_array(
            store,
            name=str(i),
            data=data,
            chunks=inner,
            shards=shards,
            zarr_format=3,
            serializer=BytesCodec(),
            compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
            dimension_names=list(axes),
        )


# ---- the images ------------------------------------------------------------------------------


def _image_1001(path: Path) -> None:
    rng = np.random.default_rng(1001)
    low = _cells(rng, 1024, 900)
    chans = [
        _to_uint16(rng, _upsample(ch, 4), bg, amp)
        for ch, bg, amp in zip(low, (100, 150, 120), (3800, 1800, 2600), strict=True)
    ]
    levels = _pyramid(np.stack(chans), 6)
    omero = _omero(
        "demo-cells-4096",
        [
            ("DAPI", "0000FF", 0, 65535, 150, 3600),
            ("GFP", "00FF00", 0, 65535, 200, 1900),
            ("mCherry", "FF0000", 0, 65535, 160, 2500),
        ],
        defaultZ=0,
        defaultT=0,
    )
    desc = "Synthetic 3-channel cells: nuclei, cytoplasm and filaments (NGFF 0.4, 6 levels)."
    ms = _multiscale("cyx", levels, {"y": 0.325, "x": 0.325}, "demo-cells-4096", desc)
    _write_v2(path, "cyx", levels, {"multiscales": [{"version": "0.4", **ms}], "omero": omero})


def _image_1002(path: Path) -> None:
    rng = np.random.default_rng(1002)
    size, nz, count = 512, 9, 120
    ys, xs = rng.integers(0, size, count), rng.integers(0, size, count)
    zc = rng.uniform(0, nz - 1, count)
    stack = np.empty((2, nz, size, size), np.uint16)
    for z in range(nz):
        weight = np.exp(-((z - zc) ** 2) / 2.0)
        nuc = _normalise(_blur(_impulses((size, size), ys, xs, weight), 6))
        spots = _normalise(_blur(_impulses((size, size), ys + 9, xs - 7, weight), 2))
        stack[0, z] = _to_uint16(rng, nuc, 100, 3000)
        stack[1, z] = _to_uint16(rng, spots, 80, 1500)
    levels = _pyramid(stack, 3)
    omero = _omero(
        "demo-zstack",
        [("Hoechst", "0000FF", 0, 65535, 100, 2500), ("Spots", "FFFF00", 0, 65535, 80, 1200)],
        defaultZ=4,
        defaultT=0,
    )
    desc = "Synthetic z-stack, 9 planes, for max/mean projections (NGFF 0.4)."
    pixel = {"z": 1.0, "y": 0.2, "x": 0.2}
    ms = _multiscale("czyx", levels, pixel, "demo-zstack", desc)
    _write_v2(path, "czyx", levels, {"multiscales": [{"version": "0.4", **ms}], "omero": omero})


def _image_1003(path: Path) -> None:
    rng = np.random.default_rng(1003)
    yy, xx = np.mgrid[0:400, 0:600].astype(np.float32)
    rings = 0.5 + 0.5 * np.cos(np.hypot(yy - 200, xx - 300) / 12)
    img = 40 + 150 * (xx / 599) * rings + rng.integers(0, 30, (400, 600))
    data = img.astype(np.uint8)
    desc = "Synthetic uint8 single channel, one level, no omero block (defaults apply)."
    ms = _multiscale("yx", [data], {"y": 1.0, "x": 1.0}, "demo-uint8-plain", desc)
    _write_v2(path, "yx", [data], {"multiscales": [{"version": "0.4", **ms}]})


def _image_1004(path: Path) -> None:
    rng = np.random.default_rng(1004)
    yy, xx = np.mgrid[0:768, 0:1024].astype(np.float32)
    ratio = np.sin(xx / 97) * np.cos(yy / 61) + rng.normal(0, 0.05, (768, 1024))
    counts = 500 * _normalise(_blur(rng.random((768, 1024)).astype(np.float32), 8)) + 20
    data = np.stack([ratio, counts]).astype(np.float32)
    levels = _pyramid(data, 2)
    omero = _omero(
        "demo-float",
        [("Ratio", "FF00FF", -1.5, 1.5, -1.0, 1.0), ("Counts", "00FFFF", 0.0, 900.0, 25.5, 600.5)],
        defaultZ=0,
        defaultT=0,
    )
    desc = "Synthetic float32 image with float windows (NGFF 0.4)."
    ms = _multiscale("cyx", levels, {"y": 0.5, "x": 0.5}, "demo-float", desc)
    _write_v2(path, "cyx", levels, {"multiscales": [{"version": "0.4", **ms}], "omero": omero})


def _image_1005(path: Path) -> None:
    rng = np.random.default_rng(1005)
    nuclei, cyto, _ = _cells(rng, 1024, 300)
    chans = [
        _to_uint16(rng, _upsample(nuclei, 2), 100, 3000),
        _to_uint16(rng, _upsample(cyto, 2), 120, 2000),
    ]
    levels = _pyramid(np.stack(chans), 3)
    omero = _omero(
        "demo-sharded",
        [("DAPI", "0000FF", 0, 65535, 120, 3000), ("Actin", "FF00FF", 0, 65535, 150, 2000)],
        defaultZ=0,
        defaultT=0,
    )
    desc = "Synthetic 2-channel image as NGFF 0.5 (Zarr v3), 1024² shards of 256² chunks."
    ms = _multiscale("cyx", levels, {"y": 0.65, "x": 0.65}, "demo-sharded", desc)
    ome = {"version": "0.5", "multiscales": [ms], "omero": omero}
    _write_v3_sharded(path, "cyx", levels, ome, shard=1024, chunk=256)


def _image_1006(path: Path) -> None:
    rng = np.random.default_rng(1006)
    nt, nc, nz, h, w = 3, 2, 3, 192, 256
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    data = np.empty((nt, nc, nz, h, w), np.uint16)
    for t in range(nt):
        for z in range(nz):
            # A blob moving right with t, sharper in the middle z: easy to see which t/z.
            cx, sigma = 60 + 70 * t, 12 + 6 * abs(z - 1)
            blob = np.exp(-((xx - cx) ** 2 + (yy - 96) ** 2) / (2 * sigma**2))
            data[t, 0, z] = _to_uint16(rng, blob, 100, 3000)
            data[t, 1, z] = _to_uint16(rng, 1 - blob, 100, 1000)
    levels = _pyramid(data, 2)
    omero = _omero(
        "demo-timelapse",
        [("Moving", "00FF00", 0, 65535, 100, 3000), ("Inverse", "FF0000", 0, 65535, 100, 1100)],
        defaultZ=1,
        defaultT=0,
    )
    desc = "Synthetic 5D t,c,z,y,x time-lapse, T=3: a blob moving right over time."
    pixel = {"t": 60.0, "z": 2.0, "y": 0.5, "x": 0.5}
    ms = _multiscale("tczyx", levels, pixel, "demo-timelapse", desc)
    _write_v2(path, "tczyx", levels, {"multiscales": [{"version": "0.4", **ms}], "omero": omero})


_IMAGES: tuple[tuple[int, str, Callable[[Path], None]], ...] = (
    (1001, "demo-cells-4096", _image_1001),
    (1002, "demo-zstack", _image_1002),
    (1003, "demo-uint8-plain", _image_1003),
    (1004, "demo-float", _image_1004),
    (1005, "demo-sharded", _image_1005),
    (1006, "demo-timelapse", _image_1006),
)


def _description(path: Path) -> str:
    attrs_path = path / ".zattrs"
    if attrs_path.exists():
        attrs = json.loads(attrs_path.read_text())
    else:
        attrs = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
    return str(attrs["multiscales"][0]["metadata"]["description"])


def write_demo(data_dir: Path) -> list[DemoImage]:
    """Write (or keep, when complete and current) the demo images under `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for image_id, name, write in _IMAGES:
        target = data_dir / f"{image_id}.zarr"
        marker = target / MARKER
        if not (marker.exists() and marker.read_text() == DEMO_VERSION):
            tmp = data_dir / f".{image_id}.zarr.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            write(tmp)
            (tmp / MARKER).write_text(DEMO_VERSION)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        out.append(DemoImage(image_id, name, _description(target)))
    return out
