"""DeepZoom: the DZI descriptor, OpenSeadragon's level/tile arithmetic on an odd-sized image,
rendering settings in the query string, and equality with the IIIF tiles of the same region."""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from idrserve.model import Box
from idrserve.pyramid import dz_level_size, dz_max_level, dz_tile_region
from tests.http.conftest import decode
from tests.http.iiif_fixtures import ODD, ODD_H, ODD_W, SQUARES

NS = "{http://schemas.microsoft.com/deepzoom/2008}"


@pytest.fixture
async def client(make_iiif_client: Callable[..., Any]) -> TestClient:
    c: TestClient = await make_iiif_client()
    return c


def test_level_arithmetic() -> None:
    assert dz_max_level(1, 1) == 0
    assert dz_max_level(2, 1) == 1
    assert dz_max_level(256, 100) == 8
    assert dz_max_level(257, 100) == 9
    n = dz_max_level(ODD_W, ODD_H)
    assert n == math.ceil(math.log2(ODD_W)) == 13
    for level in range(n + 1):
        scale = 2 ** (n - level)
        assert dz_level_size(ODD_W, ODD_H, level) == (
            math.ceil(ODD_W / scale),
            math.ceil(ODD_H / scale),
        )
    assert dz_level_size(ODD_W, ODD_H, 0) == (1, 1)
    assert dz_level_size(ODD_W, ODD_H, 12) == (2049, 1501)


def test_tile_regions() -> None:
    # Full resolution: the last column is one pixel wide, the last row 185 rows tall.
    assert dz_tile_region(ODD_W, ODD_H, 13, 16, 11, 256) == (Box(4096, 2816, 1, 185), (1, 185))
    assert dz_tile_region(ODD_W, ODD_H, 13, 17, 0, 256) is None
    assert dz_tile_region(ODD_W, ODD_H, 14, 0, 0, 256) is None
    # Level 12 (2049 × 1501): the edge column covers full-res x 4096 and is 1 px.
    region, size = dz_tile_region(ODD_W, ODD_H, 12, 8, 5, 256) or ((), ())
    assert size == (1, 1501 - 1280)
    assert region == Box(4096, 2560, 1, 441)


async def test_descriptor(client: TestClient) -> None:
    resp = await client.get(f"/deepzoom/{ODD}.dzi")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/xml")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    root = ET.fromstring(await resp.text())
    assert root.tag == f"{NS}Image"
    assert root.attrib == {"TileSize": "256", "Overlap": "0", "Format": "jpeg"}
    size = root.find(f"{NS}Size")
    assert size is not None and size.attrib == {"Width": str(ODD_W), "Height": str(ODD_H)}
    root = ET.fromstring(await (await client.get(f"/deepzoom/{ODD}.dzi?format=png")).text())
    assert root.attrib["Format"] == "png"


async def test_every_edge_tile_of_every_level(client: TestClient) -> None:
    n = dz_max_level(ODD_W, ODD_H)
    checked = 0
    for level in range(n + 1):
        lw, lh = dz_level_size(ODD_W, ODD_H, level)
        cols, rows = math.ceil(lw / 256), math.ceil(lh / 256)
        for col, row in {(cols - 1, rows - 1), (cols - 1, 0), (0, rows - 1), (0, 0)}:
            resp = await client.get(f"/deepzoom/{ODD}_files/{level}/{col}_{row}.jpeg")
            assert resp.status == 200, (level, col, row, await resp.text())
            img = Image.open(io.BytesIO(await resp.read()))
            expected = (min(256, lw - col * 256), min(256, lh - row * 256))
            assert img.size == expected, (level, col, row)
            checked += 1
        # One past the last column and row is a 404 with a JSON body.
        resp = await client.get(f"/deepzoom/{ODD}_files/{level}/{cols}_0.jpeg")
        assert resp.status == 404
        assert (await resp.json())["detail"]
    assert checked > 20


async def test_tiles_equal_iiif_tiles(client: TestClient) -> None:
    # Level 12 (factor 2) tile 3_2 = full-res region 1536,1024,512,512 at 256².
    dz = await client.get(f"/deepzoom/{ODD}_files/12/3_2.png")
    iiif = await client.get(f"/iiif/3/{ODD}/1536,1024,512,512/256,256/0/default.png")
    assert await dz.read() == await iiif.read()
    assert dz.headers["ETag"] == iiif.headers["ETag"]


async def test_query_carries_rendering(client: TestClient) -> None:
    plain = decode(await (await client.get(f"/deepzoom/{ODD}_files/13/0_0.png")).read())
    red_url = f"/deepzoom/{ODD}_files/13/0_0.png?c=1|0:4000$FF0000&m=c"
    red = decode(await (await client.get(red_url)).read())
    assert red[..., 1:].max() == 0 and red[..., 0].max() > 0
    assert not (plain == red).all()
    # The same settings through the IIIF identifier give the same cached response.
    iiif = await client.get(f"/iiif/3/{ODD};c=1%7C0:4000$FF0000;m=c/0,0,256,256/max/0/default.png")
    dz = await client.get(red_url)
    assert iiif.headers["ETag"] == dz.headers["ETag"]
    grey = decode(await (await client.get(f"/deepzoom/{SQUARES}_files/10/0_0.png?m=g")).read())
    assert (grey[..., 0] == grey[..., 2]).all()


@pytest.mark.parametrize(
    ("path", "status"),
    [
        (f"/deepzoom/{ODD}_files/13/0_0.bmp", 400),
        (f"/deepzoom/{ODD}_files/13/0_0.jpeg?q=5", 400),
        (f"/deepzoom/{ODD}_files/13/0_0.jpeg?c=1,2,3,4,5,6,7,8,9,10,11", 400),
        (f"/deepzoom/{ODD}_files/13/0_0.jpeg?p=intmax|5:1", 400),
        (f"/deepzoom/{ODD}_files/13/0_0.jpeg?z=3", 404),
        (f"/deepzoom/{ODD}.dzi?format=gif", 400),
        ("/deepzoom/424242.dzi", 404),
        ("/deepzoom/424242_files/0/0_0.jpeg", 404),
        (f"/deepzoom/{ODD}_files/99/0_0.jpeg", 404),
        (f"/deepzoom/{ODD}_files/-1/0_0.jpeg", 404),
        ("/deepzoom/..%2F8001.dzi", 404),
        ("/deepzoom/%2e%2e/8001.dzi", 404),
        (f"/deepzoom/{ODD}_files/13/0_0", 404),
    ],
)
async def test_errors(client: TestClient, path: str, status: int) -> None:
    resp = await client.get(path)
    assert resp.status == status, (path, await resp.text())
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert (await resp.json())["detail"]


async def test_preflight_and_head(client: TestClient) -> None:
    for path in (f"/deepzoom/{ODD}.dzi", f"/deepzoom/{ODD}_files/13/0_0.jpeg"):
        resp = await client.options(
            path, headers={"Origin": "https://x.example", "Access-Control-Request-Method": "GET"}
        )
        assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "GET" in resp.headers["Access-Control-Allow-Methods"]
        assert (await client.head(path)).status == 200
    assert (await client.get("/deepzoom/nothing-here")).status == 404
