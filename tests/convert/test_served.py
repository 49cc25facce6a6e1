"""An OME-TIFF served directly and its `idrserve convert` output served as OME-Zarr answer
alike: the same metadata in imgData and `/api/v1`, the same raw values, byte-identical PNG
tiles at every level."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from aiohttp.test_utils import TestClient
from ome_zarr_models import open_ome_zarr
from ome_zarr_models.v04 import Image as ImageV04

from idrserve.app import create_app
from idrserve.cli import main
from idrserve.settings import load_settings
from tests.convert.conftest import pattern, write_ome_subifds, write_svs_like

TIFF_ID, ZARR_ID = 9101, 9102


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served")
    src = root / f"{TIFF_ID}.ome.tif"
    write_ome_subifds(src, pattern((2, 1, 300, 520), "uint16"), levels=3)
    out = root / f"{ZARR_ID}.zarr"
    assert main(["convert", str(src), str(out), "--chunks", "64", "--quiet"]) == 0
    return root


async def _serve(root: Path, aiohttp_client: Callable[..., Any]) -> TestClient:
    """A server over `root`, where each file and its converted copy sit side by side."""
    settings = load_settings({"source": {"zarr_root": str(root)}})
    served: TestClient = await aiohttp_client(create_app(settings))
    return served


@pytest.fixture
async def client(root: Path, aiohttp_client: Callable[..., Any]) -> TestClient:
    return await _serve(root, aiohttp_client)


async def _both(client: TestClient, urls: list[str]) -> list[bytes]:
    """The bodies of `urls`: one of the file served directly, one of its converted copy."""
    bodies = []
    for url in urls:
        resp = await client.get(url)
        assert resp.status == 200, await resp.text()
        bodies.append(await resp.read())
    return bodies


async def _image_data(client: TestClient, ids: tuple[int, int]) -> list[dict[str, Any]]:
    urls = [f"/webgateway/imgData/{iid}/" for iid in ids]
    return [json.loads(body) for body in await _both(client, urls)]


async def _tiles(client: TestClient, ids: tuple[int, int], query: str) -> list[bytes]:
    return await _both(client, [f"/webgateway/render_image_region/{i}/0/0/?{query}" for i in ids])


def _without_ids(doc: dict[str, Any]) -> dict[str, Any]:
    doc = {k: v for k, v in doc.items() if k not in ("id", "tiles_url")}
    doc["meta"] = {k: v for k, v in doc.get("meta", {}).items() if k != "imageId"}
    return doc


async def test_image_data_and_api_metadata_agree(client: TestClient) -> None:
    tiff, conv = await _image_data(client, (TIFF_ID, ZARR_ID))
    assert [c["label"] for c in conv["channels"]] == ["DAPI", "GFP"]
    assert [c["color"] for c in conv["channels"]] == ["0000FF", "00FF00"]
    assert conv["pixel_size"] == {"x": 0.325, "y": 0.325, "z": 1.5}  # z kept for one plane
    for key in ("size", "pixel_size", "channels", "levels", "rdefs"):
        assert conv[key] == tiff[key], key
    api = []
    for iid in (TIFF_ID, ZARR_ID):
        api.append(await (await client.get(f"/api/v1/images/{iid}")).json())
    for key in ("name", "dtype", "axes", "physical_size", "channels", "default_z", "default_t"):
        assert api[1][key] == api[0][key], key
    # Chunks are the output's (64) against the file's tiles (128); shapes and scales agree.
    for tl, zl in zip(api[0]["levels"], api[1]["levels"], strict=True):
        assert (zl["shape"], zl["scale"]) == (tl["shape"], tl["scale"])


@pytest.mark.parametrize(
    "query",
    [
        "tile=0,1,1,128,128&format=png",
        "tile=1,1,0,128,128&format=png",  # explicit sizes: the default tile is the chunk's
        "tile=2,0,0,128,128&format=png&m=g",
        "region=30,20,400,250&format=png",
        "tile=0,0,0,256,256&format=png&c=1|100:30000$FF0000,2|0:20000$00FF00",
    ],
)
async def test_tiles_are_byte_identical(client: TestClient, query: str) -> None:
    bodies = await _tiles(client, (TIFF_ID, ZARR_ID), query)
    assert bodies[0] == bodies[1]


async def test_raw_values_agree(client: TestClient) -> None:
    arrays = []
    for iid in (TIFF_ID, ZARR_ID):
        url = f"/api/v1/images/{iid}/region?level=1&c=0:2&y=10:140&x=5:250&format=npy"
        resp = await client.get(url)
        assert resp.status == 200, await resp.text()
        arrays.append(np.load(io.BytesIO(await resp.read())))
    assert arrays[0].shape == arrays[1].shape and arrays[0].size > 0
    np.testing.assert_array_equal(arrays[0], arrays[1])


def test_one_plane_keeps_its_z_spacing_as_valid_ngff(root: Path) -> None:
    out = root / f"{ZARR_ID}.zarr"
    assert isinstance(open_ome_zarr(zarr.open_group(out, mode="r")), ImageV04)
    attrs = dict(zarr.open_group(out, mode="r").attrs)["multiscales"][0]
    assert [a["name"] for a in attrs["axes"]] == ["c", "z", "y", "x"]
    assert attrs["datasets"][0]["coordinateTransformations"][0]["scale"] == [1, 1.5, 0.325, 0.325]


# RGB(A) samples: a brightfield slide (SVS: JPEG YCbCr tiles, no OME-XML), an RGB OME-TIFF of
# 16-bit samples with one named channel, and a plain RGBA TIFF. Served directly they used to
# differ from their converted copies: samples named by number or by the channel's name
# repeated, 16-bit windows from percentiles instead of the full range, an RGBA file in the
# 4-channel palette (cyan, yellow, magenta) instead of red, green and blue.
RGB_CASES = {
    "svs": (9201, 9202, ["Red", "Green", "Blue"], 255),
    "ome-rgb16": (9203, 9204, ["Brightfield Red", "Brightfield Green", "Brightfield Blue"], 65535),
    "rgba": (9205, 9206, ["Red", "Green", "Blue", "Alpha"], 255),
}


@pytest.fixture(scope="module")
def rgb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("served-rgb")
    write_svs_like(root / "9201.svs", np.moveaxis(pattern((3, 600, 700), "uint8"), 0, -1).copy())
    tifffile.imwrite(
        root / "9203.ome.tif",
        np.moveaxis(pattern((3, 300, 400), "uint16"), 0, -1).copy(),
        photometric="rgb",
        ome=True,
        tile=(128, 128),
        metadata={"axes": "YXS", "Channel": {"Name": ["Brightfield"]}},
    )
    tifffile.imwrite(
        root / "9205.tif",
        np.moveaxis(pattern((4, 300, 400), "uint8"), 0, -1).copy(),
        photometric="rgb",
        extrasamples=["unassalpha"],
        tile=(128, 128),
        metadata=None,
    )
    for src, dst, _, _ in RGB_CASES.values():
        (given,) = root.glob(f"{src}.*")
        assert main(["convert", str(given), str(root / f"{dst}.zarr"), "--quiet"]) == 0
    return root


@pytest.fixture
async def rgb_client(rgb_root: Path, aiohttp_client: Callable[..., Any]) -> TestClient:
    return await _serve(rgb_root, aiohttp_client)


@pytest.mark.parametrize("case", RGB_CASES)
async def test_rgb_samples_are_the_same_channels_served_and_converted(
    rgb_client: TestClient, case: str
) -> None:
    tiff_id, zarr_id, names, top = RGB_CASES[case]
    docs = await _image_data(rgb_client, (tiff_id, zarr_id))
    served, converted = docs
    for doc in docs:
        channels = doc["channels"]
        assert [c["label"] for c in channels] == names
        assert [c["color"] for c in channels] == ["FF0000", "00FF00", "0000FF", "FFFFFF"][
            : len(names)
        ]
        assert [c["active"] for c in channels] == [True, True, True, False][: len(names)]
        # display-ready samples: the whole range, not percentiles of the data
        assert {(c["window"]["start"], c["window"]["end"]) for c in channels} == {(0, top)}
        assert doc["rdefs"]["model"] == "color"
    assert served["channels"] == converted["channels"]
    assert served["rdefs"] == converted["rdefs"]
    for query in ("tile=0,0,0,128,128&format=png", "region=10,20,200,150&format=png&m=g"):
        bodies = await _tiles(rgb_client, (tiff_id, zarr_id), query)
        assert bodies[0] == bodies[1], query
