"""TIFF files served by every protocol, found by a root scan and through a catalog: raw values
equal to tifffile's own read, tiles byte-identical to the same pixels served from OME-Zarr, and
unsupported or broken files answered with a clear 415 or 502."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import tifffile
from aiohttp.test_utils import TestClient

from idrserve.app import create_app
from idrserve.settings import load_settings
from tests.sources.conftest import multiscales, ramp, write_v2
from tests.sources.test_tiff import write_ome_subifds

TIFF_ID, TWIN_ID, RGB_ID = 8101, 8102, 8103
LEVELS = 3


@pytest.fixture(scope="module")
def tiff_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    root = tmp_path_factory.mktemp("tiff-root")
    data = ramp((3, 1, 700, 900), "uint16")  # c, z, y, x
    levels = write_ome_subifds(
        root / "study" / f"{TIFF_ID}.ome.tif", data, "czyx", levels=LEVELS, tile=256
    )
    # The same pixels as OME-Zarr, for the byte-for-byte tile comparison.
    attrs = {"multiscales": [multiscales("czyx", LEVELS, version="0.4")]}
    write_v2(root / f"{TWIN_ID}.zarr", levels, attrs, chunks=[(1, 1, 256, 256)] * LEVELS)
    rgb = np.random.default_rng(5).integers(0, 255, (300, 400, 3)).astype(np.uint8)
    tifffile.imwrite(root / f"{RGB_ID}.tif", rgb, tile=(128, 128), photometric="rgb")
    return root, levels


@pytest.fixture
def tiff_client(
    tiff_root: tuple[Path, list[np.ndarray]], aiohttp_client: Callable[..., Any]
) -> Callable[..., Any]:
    async def factory(**source: Any) -> TestClient:
        root, _ = tiff_root
        settings = load_settings({"source": {"zarr_root": str(root), **source}})
        client: TestClient = await aiohttp_client(create_app(settings))
        return client

    return factory


async def test_every_protocol_serves_the_tiff(tiff_client: Callable[..., Any]) -> None:
    client = await tiff_client()
    img = await (await client.get(f"/webgateway/imgData/{TIFF_ID}/")).json()
    assert (img["size"]["width"], img["size"]["height"], img["size"]["c"]) == (900, 700, 3)
    assert [ch["label"] for ch in img["channels"]] == ["ch0", "ch1", "ch2"]
    assert img["levels"] == LEVELS
    for url in (
        f"/webgateway/render_image_region/{TIFF_ID}/0/0/?tile=0,1,1",
        f"/webgateway/render_thumbnail/{TIFF_ID}/",
        f"/webgateway/render_image/{TIFF_ID}/0/0/",
        f"/iiif/3/{TIFF_ID}/full/!300,300/0/default.jpg",
        f"/deepzoom/{TIFF_ID}_files/9/1_0.jpg",
        f"/viewer/{TIFF_ID}",
    ):
        resp = await client.get(url)
        assert resp.status == 200, (url, await resp.text())
    info = await (await client.get(f"/iiif/3/{TIFF_ID}/info.json")).json()
    assert (info["width"], info["height"]) == (900, 700)
    listing = await (await client.get("/?limit=1000")).json()
    assert {TIFF_ID, TWIN_ID, RGB_ID} <= {i["id"] for i in listing["images"]}


async def test_raw_values_equal_tifffiles_own_read(
    tiff_client: Callable[..., Any], tiff_root: tuple[Path, list[np.ndarray]]
) -> None:
    client = await tiff_client()
    root, _ = tiff_root
    want = tifffile.imread(root / "study" / f"{TIFF_ID}.ome.tif", level=1)  # (3, 350, 450)
    resp = await client.get(
        f"/api/v1/images/{TIFF_ID}/region?level=1&c=0:3&y=20:300&x=100:430&format=npy"
    )
    assert resp.status == 200
    got = np.load(io.BytesIO(await resp.read()))
    np.testing.assert_array_equal(got.squeeze(), want[:, 20:300, 100:430])
    # and through the generated OME-Zarr view: one Blosc chunk of level 0
    zarray = await (await client.get(f"/zarr/{TIFF_ID}.zarr/0/.zarray")).json()
    chunks = zarray["chunks"]
    raw = await (await client.get(f"/zarr/{TIFF_ID}.zarr/0/0/1/0/0/0")).read()
    chunk = np.frombuffer(numcodecs.get_codec(zarray["compressor"]).decode(raw), dtype="<u2")
    chunk = chunk.reshape(chunks)
    full = tifffile.imread(root / "study" / f"{TIFF_ID}.ome.tif")
    h, w = min(chunks[-2], 700), min(chunks[-1], 900)
    np.testing.assert_array_equal(chunk[0, 0, 0, :h, :w], full[1, :h, :w])
    rgb = await client.get(f"/api/v1/images/{RGB_ID}/region?c=2&y=0:10&x=0:10&format=npy")
    rgb_want = tifffile.imread(root / f"{RGB_ID}.tif")[:10, :10, 2]
    np.testing.assert_array_equal(np.load(io.BytesIO(await rgb.read())).squeeze(), rgb_want)


@pytest.mark.parametrize(
    "query",
    [
        "tile=0,1,1&format=png",
        "tile=1,0,0,300,200&format=png",
        "tile=2,0,0&format=png&m=g",
        "region=100,50,400,300&format=png&flip=h",
    ],
)
async def test_tiles_equal_the_same_pixels_from_ome_zarr(
    tiff_client: Callable[..., Any], query: str
) -> None:
    client = await tiff_client()
    settings = "c=1|100:40000$FF0000,2|0:30000$00FF00,3|500:60000$0000FF"
    bodies = []
    for iid in (TIFF_ID, TWIN_ID):
        resp = await client.get(f"/webgateway/render_image_region/{iid}/0/0/?{query}&{settings}")
        assert resp.status == 200, await resp.text()
        bodies.append(await resp.read())
    assert bodies[0] == bodies[1]  # byte-identical PNG


@pytest.fixture
def bad_catalog(tmp_path: Path) -> Path:
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 300)
    (tmp_path / "scan.czi").write_bytes(b"ZISRAWFILE" + b"\0" * 300)
    tifffile.imwrite(tmp_path / "ok.tif", ramp((64, 64), "uint16"), tile=(32, 32))
    whole = (tmp_path / "ok.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[: len(whole) // 2])
    rows = "id,path\n1,photo.jpg\n2,scan.czi\n3,cut.tif\n4,ok.tif\n5,ok.tif#series=7\n"
    (tmp_path / "c.csv").write_text(rows)
    return tmp_path / "c.csv"


@pytest.mark.parametrize(
    ("image_id", "status", "code", "words"),
    [
        (1, 415, "unsupported_format", "JPEG"),
        (2, 415, "unsupported_format", "Zeiss CZI"),
        (5, 404, "not_found", "image 5 not found"),
    ],
)
async def test_unsupported_and_missing_files(
    bad_catalog: Path,
    aiohttp_client: Callable[..., Any],
    image_id: int,
    status: int,
    code: str,
    words: str,
) -> None:
    client: TestClient = await aiohttp_client(
        create_app(load_settings({"source": {"catalog": str(bad_catalog)}}))
    )
    for url in (
        f"/webgateway/imgData/{image_id}/",
        f"/iiif/3/{image_id}/info.json",
        f"/api/v1/images/{image_id}",
    ):
        resp = await client.get(url)
        body = await resp.json()
        assert (resp.status, body["error"]) == (status, code), (url, body)
        assert words in body["detail"]
        assert str(bad_catalog.parent) not in json.dumps(body)
        if status == 415:
            assert "idrserve convert" in body["detail"]


async def test_a_truncated_tiff_is_a_502_not_a_500(
    bad_catalog: Path, aiohttp_client: Callable[..., Any]
) -> None:
    client: TestClient = await aiohttp_client(
        create_app(load_settings({"source": {"catalog": str(bad_catalog)}}))
    )
    resp = await client.get("/webgateway/render_image/3/")  # every tile, half of them cut off
    body = await resp.json()
    assert resp.status == 502 and body["error"] == "source_error", body
    assert "TIFF" in body["detail"] and str(bad_catalog.parent) not in json.dumps(body)
    good = await client.get("/webgateway/render_image_region/4/0/0/?tile=0,0,0")
    assert good.status == 200
