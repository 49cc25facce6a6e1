"""Fixture images of docs/webgateway.md#conformance-cases, as real OME-Zarr 0.4 (zarr-python).

P keeps the documented geometry (10000×8000, 5 levels) without writing 480 MB: only a few chunks
hold data, the rest read as the fill value, exactly as a sparse Zarr array would.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from aiohttp.test_utils import TestClient
from PIL import Image

from idrserve.app import create_app
from idrserve.settings import load_settings

P, S, Z = 7001, 7002, 7003

AXES = {
    "c": {"name": "c", "type": "channel"},
    "z": {"name": "z", "type": "space", "unit": "micrometer"},
    "y": {"name": "y", "type": "space", "unit": "micrometer"},
    "x": {"name": "x", "type": "space", "unit": "micrometer"},
}


def write_ngff04(
    path: Path,
    shapes: list[tuple[int, ...]],
    axes: str,
    dtype: str,
    chunks: tuple[int, ...],
    omero: dict[str, Any] | None,
    data: list[np.ndarray | None] | None = None,
) -> list[zarr.Array]:
    """An NGFF 0.4 image group with one array per level; `data[i]` fills level i if given."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    arrays = []
    for i, shape in enumerate(shapes):
        arr = root.create_array(
            str(i),
            shape=shape,
            chunks=tuple(min(c, s) for c, s in zip(chunks, shape, strict=True)),
            dtype=dtype,
            fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        if data is not None and data[i] is not None:
            arr[...] = data[i]
        arrays.append(arr)
        factor = shapes[0][-1] / shape[-1]
        scale = [1.0 if a in "ct" else factor * (0.5 if a in "yx" else 1.0) for a in axes]
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    attrs: dict[str, Any] = {
        "multiscales": [{"version": "0.4", "axes": [AXES[a] for a in axes], "datasets": datasets}]
    }
    if omero is not None:
        attrs["omero"] = omero
    root.attrs.update(attrs)
    return arrays


def _channel(
    label: str, color: str, start: float, end: float, active: bool, **kw: Any
) -> dict[str, Any]:
    return {
        "label": label,
        "color": color,
        "active": active,
        "window": {"min": 0, "max": 65535, "start": start, "end": end},
        **kw,
    }


@pytest.fixture(scope="session")
def zarr_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zarr_root")
    rng = np.random.default_rng(7)
    # P: 10000×8000, uint16, 3 channels, 5 levels; saved rdef blue 110:1800, green 200:2500,
    # red inactive.
    shapes = [(3, 8000 // 2**i, 10000 // 2**i) for i in range(5)]
    arrays = write_ngff04(
        root / "study" / f"{P}.zarr",
        shapes,
        "cyx",
        "uint16",
        (1, 256, 256),
        {
            "channels": [
                _channel("DAPI", "0000FF", 110, 1800, True),
                _channel("GFP", "00FF00", 200, 2500, True),
                _channel("RFP", "FF0000", 0, 900, False),
            ],
            "rdefs": {"model": "color", "defaultZ": 0, "defaultT": 0},
        },
    )
    for level, arr in enumerate(arrays):
        h, w = min(1024, arr.shape[1]), min(1024, arr.shape[2])
        arr[:, :h, :w] = rng.integers(0, 3000, size=(3, h, w), dtype=np.uint16)
        # the bottom-right corner too, for edge tiles
        arr[:, -300:, -300:] = rng.integers(0, 3000, size=(3, 300, 300), dtype=np.uint16)
        del level
    # S: 600×400 uint8, one channel, no pyramid, no omero block (defaults apply).
    s_data = rng.integers(0, 256, size=(400, 600), dtype=np.uint8)
    s_data[0, :256] = np.arange(256, dtype=np.uint8)  # every value once, for exact LUT checks
    write_ngff04(
        root / "other" / "deeper" / f"{S}.zarr",
        [(400, 600)],
        "yx",
        "uint8",
        (256, 256),
        {"channels": [_channel("gray", "FFFFFF", 0, 255, True)], "rdefs": {"model": "greyscale"}},
        [s_data],
    )
    # Z: 512×512 uint16, sizeZ = 5, one channel.
    z_data = rng.integers(0, 40000, size=(1, 5, 512, 512), dtype=np.uint16)
    write_ngff04(
        root / f"{Z}.zarr",
        [(1, 5, 512, 512)],
        "czyx",
        "uint16",
        (1, 1, 256, 256),
        {
            "channels": [_channel("ch", "FFFFFF", 0, 65535, True)],
            "rdefs": {"model": "greyscale", "defaultZ": 2},
        },
        [z_data],
    )
    return root


@pytest.fixture
def make_client(zarr_root: Path, aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    async def factory(**overrides: Any) -> TestClient:
        groups: dict[str, Any] = {"source": {"zarr_root": str(zarr_root)}}
        for key, value in overrides.items():
            group, _, name = key.partition("__")
            groups.setdefault(group, {})[name] = value
        app = create_app(load_settings(groups))
        client: TestClient = await aiohttp_client(app)
        return client

    return factory


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> TestClient:
    client: TestClient = await make_client()
    return client


def source_array(root: Path, rel: str, level: int) -> np.ndarray:
    return np.asarray(zarr.open_array(str(root / rel / str(level)), mode="r")[...])


def decode(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


@pytest.fixture(scope="session")
def iiif_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The IIIF/DeepZoom images of tests/http/iiif_fixtures.py (odd size, validator squares)."""
    from tests.http.iiif_fixtures import write_all

    return write_all(tmp_path_factory.mktemp("iiif_root"))


@pytest.fixture
def make_iiif_client(iiif_root: Path, aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    async def factory(**groups: Any) -> TestClient:
        merged: dict[str, Any] = {"source": {"zarr_root": str(iiif_root)}}
        for group, values in groups.items():
            merged.setdefault(group, {}).update(values)
        client: TestClient = await aiohttp_client(create_app(load_settings(merged)))
        return client

    return factory


@pytest.fixture
async def serve(zarr_root: Path) -> AsyncIterator[Callable[..., Any]]:
    """Real servers over the fixture images (tests/http/live.py): `await serve(**settings)`."""
    from tests.http.live import serving  # imports the app: not at conftest load time

    async with serving(zarr_root) as factory:
        yield factory
