"""IIIF Image API 3.0 and 2.1 over HTTP against real OME-Zarr images (tests/http/iiif_fixtures.py).

Pixel checks use PNG (lossless) against the stored pattern, so every region, size, rotation
and quality form is checked for content, not only for status and dimensions.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import numpy as np
import pytest
import zarr
from aiohttp.test_utils import TestClient
from PIL import Image

from idrserve.http.iiif import scale_factors
from idrserve.model import RenderSettings
from idrserve.render import LutTable, render_rgb
from idrserve.render.resample import downsample_area
from tests.http.conftest import decode
from tests.http.iiif_fixtures import ODD, ODD_H, ODD_W, SQUARES, STACK, squares_data

Factory = Callable[..., Any]
V3 = "/iiif/3"
V2 = "/iiif/2"


@pytest.fixture
async def client(make_iiif_client: Factory) -> TestClient:
    c: TestClient = await make_iiif_client()
    return c


@pytest.fixture(scope="module")
def squares() -> np.ndarray:
    """The validator pattern as an (H, W, 3) RGB array (what the default rendering shows)."""
    return np.ascontiguousarray(squares_data().transpose(1, 2, 0))


async def get_png(client: TestClient, path: str) -> np.ndarray:
    resp = await client.get(path)
    body = await resp.read()
    assert resp.status == 200, (path, body[:300])
    assert resp.headers["Content-Type"] == "image/png"
    return decode(body)


async def status_of(client: TestClient, path: str) -> tuple[int, dict[str, Any]]:
    resp = await client.get(path)
    await resp.read()
    assert resp.headers["Access-Control-Allow-Origin"] == "*", path
    if resp.status >= 400:
        data = await resp.json()
        assert data["detail"], path
        return resp.status, data
    return resp.status, {}


# --- info.json -------------------------------------------------------------------------------


async def test_info_json_v3(client: TestClient) -> None:
    resp = await client.get(f"{V3}/{ODD}/info.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/ld+json")
    assert 'profile="http://iiif.io/api/image/3/context.json"' in resp.headers["Content-Type"]
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "level2.json" in resp.headers["Link"]
    info = await resp.json(content_type=None)
    assert next(iter(info)) == "@context"
    assert info["@context"] == "http://iiif.io/api/image/3/context.json"
    assert info["id"] == f"http://{client.host}:{client.port}{V3}/{ODD}"
    assert info["type"] == "ImageService3"
    assert info["protocol"] == "http://iiif.io/api/image"
    assert info["profile"] == "level2"
    assert (info["width"], info["height"]) == (ODD_W, ODD_H)
    # 256² chunks; 4097/32 = 129 is the first factor at which the image fits one tile.
    assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 2, 4, 8, 16, 32]}]
    assert info["maxArea"] == 4096 * 4096
    assert info["maxWidth"] == info["maxHeight"] == 4096
    # Sizes: ceil-halved, as OpenSeadragon computes level sizes; 4097 wide is over maxWidth.
    assert info["sizes"] == [
        {"width": math.ceil(ODD_W / f), "height": math.ceil(ODD_H / f)} for f in (32, 16, 8, 4, 2)
    ]
    assert info["extraFormats"] == ["tif", "webp"]
    assert set(info["extraQualities"]) == {"color", "gray", "bitonal"}
    assert "mirroring" in info["extraFeatures"]


async def test_info_json_v2(client: TestClient) -> None:
    resp = await client.get(f"{V2}/{SQUARES}/info.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/json")
    info = await resp.json()
    assert info["@context"] == "http://iiif.io/api/image/2/context.json"
    assert info["@id"] == f"http://{client.host}:{client.port}{V2}/{SQUARES}"
    assert "id" not in info and "type" not in info
    assert info["profile"][0] == "http://iiif.io/api/image/2/level2.json"
    extra = info["profile"][1]
    assert set(extra["formats"]) == {"jpg", "png", "tif", "webp"}
    assert "bitonal" in extra["qualities"] and "sizeAboveFull" in extra["supports"]
    assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 2, 4]}]
    # JSON-LD when asked for it.
    resp = await client.get(f"{V2}/{SQUARES}/info.json", headers={"Accept": "application/ld+json"})
    assert resp.headers["Content-Type"].startswith("application/ld+json")


def test_scale_factors_reach_one_tile() -> None:
    assert scale_factors(256, 256, 256, 256) == [1]
    assert scale_factors(257, 10, 256, 256) == [1, 2]
    assert scale_factors(100000, 3, 512, 512) == [1, 2, 4, 8, 16, 32, 64, 128, 256]


async def test_info_id_honours_forwarded_headers(client: TestClient) -> None:
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "tiles.example.org, proxy.internal",
        "X-Forwarded-Prefix": "/idr/",
    }
    resp = await client.get(f"{V3}/{ODD};z=0/info.json", headers=headers)
    info = await resp.json(content_type=None)
    assert info["id"] == f"https://tiles.example.org/idr{V3}/{ODD};z=0"
    # Depends on request headers: shared caches must not keep it.
    assert resp.headers["Cache-Control"].startswith("private")
    # Junk in forwarded headers is ignored, never echoed.
    bad = {
        "X-Forwarded-Proto": "javascript",
        "X-Forwarded-Host": "a b<c>",
        "X-Forwarded-Prefix": '/x"y',
    }
    info = await (await client.get(f"{V3}/{ODD}/info.json", headers=bad)).json(content_type=None)
    assert info["id"] == f"http://{client.host}:{client.port}{V3}/{ODD}"
    # The redirect uses the same base.
    resp = await client.get(f"{V3}/{ODD}", headers=headers, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == f"https://tiles.example.org/idr{V3}/{ODD}/info.json"


async def test_info_id_honours_public_base_url(make_iiif_client: Factory) -> None:
    client = await make_iiif_client(server={"public_base_url": "https://iiif.example.org/p/"})
    resp = await client.get(
        f"{V2}/{ODD}/info.json", headers={"X-Forwarded-Host": "ignored.example.org"}
    )
    info = await resp.json()
    assert info["@id"] == f"https://iiif.example.org/p{V2}/{ODD}"
    assert resp.headers["Cache-Control"] == "public, max-age=86400"


@pytest.mark.parametrize("tail", ["", "/"])
async def test_base_uri_redirects_to_info(client: TestClient, tail: str) -> None:
    resp = await client.get(f"{V3}/{SQUARES}{tail}", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"].endswith(f"{V3}/{SQUARES}/info.json")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


# --- region ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "box"),
    [
        ("full", (0, 0, 1000, 1000)),
        ("square", (0, 0, 1000, 1000)),
        ("130,250,300,170", (130, 250, 300, 170)),
        ("900,950,300,300", (900, 950, 100, 50)),  # clipped at the image edge, not padded
        ("pct:10,20,30,5", (100, 200, 300, 50)),
        ("pct:95.5,0,50,1.5", (955, 0, 45, 15)),
    ],
)
async def test_regions_at_full_size(
    client: TestClient, squares: np.ndarray, region: str, box: tuple[int, int, int, int]
) -> None:
    x, y, w, h = box
    got = await get_png(client, f"{V3}/{SQUARES}/{region}/max/0/default.png")
    assert got.shape == (h, w, 3)
    assert (got == squares[y : y + h, x : x + w]).all()


async def test_square_region_is_centred(client: TestClient) -> None:
    img = await get_png(client, f"{V3}/{ODD}/square/256,/0/default.png")
    assert img.shape == (256, 256, 3)
    resp = await client.get(f"{V3}/{ODD}/square/max/0/default.png")
    full = await client.get(f"{V3}/{ODD}/548,0,3001,3001/max/0/default.png")
    assert resp.headers["ETag"] == full.headers["ETag"]  # same resolved request, same key


@pytest.mark.parametrize(
    "region",
    [
        "1000,0,10,10",  # starts past the right edge
        "0,1000,10,10",
        "0,0,0,10",  # zero width
        "0,0,10,0",
        "pct:0,0,0,10",
        "pct:100,0,10,10",
        "-1,0,10,10",
        "1,2,3",
        "1,2,3,4,5",
        "a,b,c,d",
        "pct:1,2,3",
        "pct:1e2,0,1,1",
        "full ",
        "Full",
        "squares",
        "1.5,0,10,10",
    ],
)
async def test_bad_regions_are_400(client: TestClient, region: str) -> None:
    status, body = await status_of(client, f"{V3}/{SQUARES}/{region}/max/0/default.jpg")
    assert status == 400, region
    assert body["param"] == "region"


# --- size ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("max", (1000, 1000)),
        ("^max", (4096, 4096)),  # up to maxWidth/maxArea
        ("500,", (500, 500)),
        (",250", (250, 250)),
        ("pct:50", (500, 500)),
        ("pct:12.5", (125, 125)),
        ("300,200", (300, 200)),  # distorted
        ("!300,200", (200, 200)),
        ("!1000,1000", (1000, 1000)),
        ("^1500,", (1500, 1500)),
        ("^,1200", (1200, 1200)),
        ("^pct:150", (1500, 1500)),
        ("^1100,1001", (1100, 1001)),
        ("^!2000,1500", (1500, 1500)),
        ("^!500,2000", (500, 500)),
    ],
)
async def test_sizes_v3(client: TestClient, size: str, expected: tuple[int, int]) -> None:
    resp = await client.get(f"{V3}/{SQUARES}/full/{size}/0/default.jpg")
    assert resp.status == 200, await resp.text()
    img = Image.open(io.BytesIO(await resp.read()))
    assert img.size == expected


async def test_downscaled_content_keeps_the_pattern(
    client: TestClient, squares: np.ndarray
) -> None:
    got = await get_png(client, f"{V3}/{SQUARES}/full/pct:25/0/default.png")
    assert got.shape == (250, 250, 3)
    # Centres of the 25-pixel squares are the squares' colours (area means of equal values).
    centres = got[12::25, 12::25]
    assert (centres == squares[50::100, 50::100]).all()


@pytest.mark.parametrize(
    "size",
    [
        "1001,",
        ",1001",
        "pct:101",
        "1001,10",
        "!2000,3000",
        "full",
        "0,",
        ",0",
        "pct:0",
        "0,5",
        "!0,5",
        "max ",
        "^",
        "^^max",
        "pct:",
        "pct:-5",
        "10",
        ",",
        "a,",
        "!10",
        "4097,4097",
        "^5000,",
        "^pct:1000",
        "^4097,4097",
    ],
)
async def test_bad_sizes_v3_are_400(client: TestClient, size: str) -> None:
    status, body = await status_of(client, f"{V3}/{SQUARES}/full/{size}/0/default.jpg")
    assert status == 400, size
    assert body["param"] == "size"


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("full", (1000, 1000)),
        ("max", (1000, 1000)),
        ("1500,", (1500, 1500)),
        ("pct:120", (1200, 1200)),
        ("!2000,1800", (1800, 1800)),
        ("200,100", (200, 100)),
    ],
)
async def test_sizes_v2_upscale_without_caret(
    client: TestClient, size: str, expected: tuple[int, int]
) -> None:
    resp = await client.get(f"{V2}/{SQUARES}/full/{size}/0/default.jpg")
    assert resp.status == 200, await resp.text()
    assert Image.open(io.BytesIO(await resp.read())).size == expected


@pytest.mark.parametrize("size", ["^max", "^500,", "5000,", "pct:500"])
async def test_bad_sizes_v2_are_400(client: TestClient, size: str) -> None:
    status, _ = await status_of(client, f"{V2}/{SQUARES}/full/{size}/0/default.jpg")
    assert status == 400


async def test_max_is_bounded_by_limits(make_iiif_client: Factory) -> None:
    client = await make_iiif_client(limits={"max_region_pixels": 1000 * 500})
    info = await (await client.get(f"{V3}/{ODD}/info.json")).json(content_type=None)
    assert info["maxWidth"] == 707 and info["maxArea"] == 500_000
    assert all(s["width"] * s["height"] <= 500_000 for s in info["sizes"])
    resp = await client.get(f"{V3}/{ODD}/full/max/0/default.jpg")
    img = Image.open(io.BytesIO(await resp.read()))
    assert img.size[0] <= 707 and img.size[0] * img.size[1] <= 500_000
    assert img.size == (707, round(707 * ODD_H / ODD_W)) or abs(img.size[1] - 517) <= 1
    status, _ = await status_of(client, f"{V3}/{ODD}/full/800,/0/default.jpg")
    assert status == 400


# --- rotation, mirroring, quality, format ----------------------------------------------------


@pytest.mark.parametrize(
    ("rotation", "transform"),
    [
        ("0", lambda a: a),
        ("90", lambda a: np.rot90(a, -1)),
        ("180", lambda a: np.rot90(a, 2)),
        ("270", lambda a: np.rot90(a, 1)),
        ("360", lambda a: a),
        ("!0", lambda a: a[:, ::-1]),
        ("!90", lambda a: np.rot90(a[:, ::-1], -1)),
        ("!180", lambda a: a[::-1]),
    ],
)
async def test_rotation_and_mirroring(
    client: TestClient, squares: np.ndarray, rotation: str, transform: Callable[..., Any]
) -> None:
    region = squares[100:400, 0:200]  # not square, so a wrong axis shows
    got = await get_png(client, f"{V3}/{SQUARES}/0,100,200,300/max/{rotation}/default.png")
    assert (got == transform(region)).all()


@pytest.mark.parametrize("rotation", ["45", "22.5", "!270.5"])
async def test_arbitrary_rotation_is_501(client: TestClient, rotation: str) -> None:
    status, body = await status_of(client, f"{V3}/{SQUARES}/full/max/{rotation}/default.jpg")
    assert status == 501 and body["error"] == "not_implemented"


@pytest.mark.parametrize(
    "rotation", ["361", "-90", "090", "90.0", "abc", "!", "!!90", "1e2", " 90"]
)
async def test_bad_rotation_is_400(client: TestClient, rotation: str) -> None:
    status, _ = await status_of(client, f"{V3}/{SQUARES}/full/max/{rotation}/default.jpg")
    assert status == 400


async def test_qualities(client: TestClient, squares: np.ndarray) -> None:
    base = f"{V3}/{SQUARES}/0,0,300,300/max/0"
    colour = await get_png(client, f"{base}/color.png")
    default = await get_png(client, f"{base}/default.png")
    assert (colour == default).all() and (default == squares[:300, :300]).all()
    grey = await get_png(client, f"{base}/gray.png")
    rgb = squares[:300, :300].astype(np.uint32)
    luma = (299 * rgb[..., 0] + 587 * rgb[..., 1] + 114 * rgb[..., 2] + 500) // 1000
    assert (grey == luma[..., None]).all()
    bitonal = await get_png(client, f"{base}/bitonal.png")
    assert (bitonal == np.where(luma >= 128, 255, 0)[..., None]).all()
    assert set(np.unique(bitonal)) == {0, 255}


@pytest.mark.parametrize("quality", ["grey", "native", "Default", "colour", "default.", ""])
async def test_bad_quality_is_400(client: TestClient, quality: str) -> None:
    status, _ = await status_of(client, f"{V3}/{SQUARES}/full/max/0/{quality}.jpg")
    assert status == 400


@pytest.mark.parametrize(
    ("fmt", "media", "pil"),
    [
        ("jpg", "image/jpeg", "JPEG"),
        ("png", "image/png", "PNG"),
        ("tif", "image/tiff", "TIFF"),
        ("webp", "image/webp", "WEBP"),
    ],
)
async def test_formats(client: TestClient, fmt: str, media: str, pil: str) -> None:
    for prefix in (V3, V2):
        resp = await client.get(f"{prefix}/{SQUARES}/0,0,100,100/50,/0/default.{fmt}")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == media
        img = Image.open(io.BytesIO(await resp.read()))
        assert img.format == pil and img.size == (50, 50)
        colour = np.asarray(img.convert("RGB"))[25, 25].astype(int)
        assert np.abs(colour - np.array((61, 170, 126))).max() <= 6


@pytest.mark.parametrize("fmt", ["gif", "jp2", "pdf", "jpeg", "JPG", "bmp", "", "jpg.jpg"])
async def test_bad_format_is_400(client: TestClient, fmt: str) -> None:
    status, _ = await status_of(client, f"{V3}/{SQUARES}/full/max/0/default.{fmt}")
    assert status == 400


async def test_head_and_preflight(client: TestClient) -> None:
    resp = await client.head(f"{V3}/{SQUARES}/full/100,/0/default.jpg")
    assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
    resp = await client.options(
        f"{V3}/{SQUARES}/info.json",
        headers={
            "Origin": "https://viewer.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-custom",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Allow-Headers"] == "x-custom"


# --- identifiers -----------------------------------------------------------------------------


async def test_identifier_rendering_options(client: TestClient) -> None:
    # Channel 1 only, in red; `|` percent-encoded as browsers send it, or raw.
    red = await get_png(client, f"{V3}/{ODD};c=1%7C0:4000$FF0000/0,0,256,256/max/0/default.png")
    assert red[..., 1:].max() == 0 and red[..., 0].max() > 0
    same = await client.get(f"{V3}/{ODD};c=1|0:4000$FF0000/0,0,256,256/max/0/default.png")
    assert (decode(await same.read()) == red).all()
    grey = await get_png(client, f"{V3}/{ODD};m=g/0,0,256,256/max/0/default.png")
    assert (grey[..., 0] == grey[..., 1]).all()
    # An explicit default plane is the same resolved request: same ETag.
    a = await client.get(f"{V3}/{ODD}/0,0,256,256/max/0/default.jpg")
    b = await client.get(f"{V3}/{ODD};z=0;t=0/0,0,256,256/max/0/default.jpg")
    assert a.headers["ETag"] == b.headers["ETag"]
    # `id` carries the identifier with `|` encoded, however the client spelt it.
    info = await (await client.get(f"{V3}/{ODD};c=1|0:4000$FF0000/info.json")).json(
        content_type=None
    )
    assert info["id"].endswith(f"{V3}/{ODD};c=1%7C0:4000$FF0000")
    q = await client.get(f"{V3}/{ODD};q=0.5/0,0,256,256/max/0/default.jpg")
    assert len(await q.read()) < len(await a.read())


@pytest.mark.parametrize(
    ("identifier", "status"),
    [
        ("99999", 404),  # no such image
        ("abc", 404),
        ("8001x", 404),
        ("", 404),
        (f"{ODD};z=1", 404),  # a plane the image does not have
        (f"{ODD};t=5", 404),
        (f"{ODD};z=-1", 400),
        (f"{ODD};zz=1", 400),
        (f"{ODD};z", 400),
        (f"{ODD};z=", 400),
        (f"{ODD};z=0;z=0", 400),
        (f"{ODD};m=x", 400),
        (f"{ODD};q=2", 400),
        (f"{ODD};p=bogus", 400),
        (f"{ODD};c=1,2,3,4,5,6,7,8,9,10,11", 400),
        ("%FF%FE", 404),
        ("..%2F..%2Fetc%2Fpasswd", 404),
        ("%2e%2e", 404),
        (f"{ODD}%2F..", 404),
    ],
)
async def test_identifier_errors(client: TestClient, identifier: str, status: int) -> None:
    for tail in ("info.json", "full/max/0/default.jpg"):
        path = f"{V3}/{identifier}/{tail}"
        got, _ = await status_of(client, path)
        assert got == status, path


async def test_unknown_paths_are_404(client: TestClient) -> None:
    for path in (
        f"{V3}/a/b/full/max/0/default.jpg",
        f"{V3}/{ODD}/full/max/0",
        f"{V3}/{ODD}/x.json",
        "/iiif/4/1/info.json",
        f"{V3}/{ODD}/full/max/0/default.jpg/x",
    ):
        status, _ = await status_of(client, path)
        assert status == 404, path


# --- tile arithmetic and pixels --------------------------------------------------------------


def osd_tiles(
    width: int, height: int, tile: int, factors: list[int]
) -> list[tuple[str, tuple[int, int]]]:
    """The IIIF 3 tile URLs (region/size) OpenSeadragon's IIIFTileSource requests, all levels.

    Level sizes are ceil(W·2^-k); regions x = col·tile·s, w = min(tile·s, W − x); sizes
    ceil(w / s), as OpenSeadragon computes them; a level that fits one tile asks for `full`.
    """
    out = []
    for s in factors:
        lw, lh = math.ceil(width / s), math.ceil(height / s)
        if lw <= tile and lh <= tile:
            out.append((f"full/{lw},{lh}", (lw, lh)))
            continue
        for row in range(math.ceil(lh / tile)):
            for col in range(math.ceil(lw / tile)):
                x, y = col * tile * s, row * tile * s
                w, h = min(tile * s, width - x), min(tile * s, height - y)
                size = (math.ceil(w / s), math.ceil(h / s))
                out.append((f"{x},{y},{w},{h}/{size[0]},{size[1]}", size))
    return out


async def test_osd_tile_grid_on_odd_image(client: TestClient) -> None:
    """Every coarse tile and every edge tile of every level has the size OSD expects."""
    factors = [1, 2, 4, 8, 16, 32]
    tiles = osd_tiles(ODD_W, ODD_H, 256, factors)
    # 4097 wide: level 0 has 17 columns, the last 1 pixel wide; level 1 (2049) also.
    assert any(url.startswith("4096,0,1,256/1,256") for url, _ in tiles)
    assert any(url.startswith("4096,0,1,512/1,256") for url, _ in tiles)
    chosen = [
        (url, size)
        for url, size in tiles
        if size != (256, 256) or url.startswith("full") or url.startswith("0,0,")
    ]
    assert len(chosen) > 40
    for url, size in chosen:
        resp = await client.get(f"{V3}/{ODD}/{url}/0/default.jpg")
        assert resp.status == 200, (url, await resp.text())
        assert Image.open(io.BytesIO(await resp.read())).size == size, url


def _render_expected(raw: np.ndarray, settings: RenderSettings) -> np.ndarray:
    return render_rgb(raw, settings, "uint16", LutTable(None))


async def test_unstored_level_is_area_average_of_raw(client: TestClient, iiif_root: Path) -> None:
    """Factor 8 is not stored (levels 1, 2, 4): averaged from level 2's raw values."""
    level2 = np.asarray(zarr.open_array(str(iiif_root / f"{ODD}.zarr" / "2"), mode="r")[...])
    # Tile (1, 0) at factor 8: full-res region 2048,0,2048,2048 → 256×256 from level 2.
    got = await get_png(client, f"{V3}/{ODD}/2048,0,2048,2048/256,256/0/default.png")
    raw = downsample_area(level2[:, 0:512, 512:1024], 2, 2)
    assert raw.shape == (2, 256, 256)
    meta_settings = await _default_settings(client)
    assert (got == _render_expected(raw, meta_settings)).all()
    # A stored level is read as stored (no averaging): factor 4 == level 2 exactly.
    got4 = await get_png(client, f"{V3}/{ODD}/1024,1024,1024,1024/256,256/0/default.png")
    assert (got4 == _render_expected(level2[:, 256:512, 256:512], meta_settings)).all()


async def _default_settings(client: TestClient) -> RenderSettings:
    from idrserve.http.keys import DEPS

    deps = client.server.app[DEPS]
    meta = await deps.source.meta(ODD)
    return meta.default_render()


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
async def test_iiif_tile_equals_webgateway_tile(client: TestClient, fmt: str) -> None:
    """Same pixels, same bytes, same cache key as render_image_region's tile."""
    ext = "jpg" if fmt == "jpeg" else fmt
    for level, col, row in ((0, 3, 2), (1, 1, 1), (2, 0, 0), (1, 7, 5)):
        s = 2**level
        x, y = col * 256 * s, row * 256 * s
        w, h = min(256 * s, ODD_W - x), min(256 * s, ODD_H - y)
        iiif = await client.get(
            f"{V3}/{ODD}/{x},{y},{w},{h}/{math.ceil(w / s)},{math.ceil(h / s)}/0/default.{ext}"
        )
        wg = await client.get(
            f"/webgateway/render_image_region/{ODD}/0/0/?tile={level},{col},{row}&format={fmt}"
        )
        assert iiif.status == wg.status == 200
        a, b = await iiif.read(), await wg.read()
        if (level, col, row) == (1, 7, 5):
            # Bottom edge of a floor-halved level: OSD asks ceil(3001/2) − 1280 = 221 rows,
            # the stored level has 220; the last row is repeated, the rest is equal.
            ia, ib = decode(a), decode(b)
            assert ia.shape[0] == ib.shape[0] + 1
            if fmt == "png":
                assert (ia[:-1] == ib).all() and (ia[-1] == ib[-1]).all()
            continue
        assert a == b
        assert iiif.headers["ETag"] == wg.headers["ETag"]


async def test_responses_are_cached(client: TestClient) -> None:
    url = f"{V3}/{ODD}/0,0,512,512/256,256/0/default.jpg"
    first = await client.get(url)
    second = await client.get(url)
    assert first.headers["X-Cache"] == "miss"
    assert second.headers["X-Cache"] == "memory"
    assert await first.read() == await second.read()
    # Equivalent spellings resolve to the same key: color == default, full == x,y,w,h.
    a = await client.get(f"{V3}/{SQUARES}/full/max/0/color.jpg")
    b = await client.get(f"{V3}/{SQUARES}/0,0,1000,1000/1000,1000/0/default.jpg")
    assert a.headers["ETag"] == b.headers["ETag"]
    assert b.headers["X-Cache"] == "memory"
    resp = await client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert resp.status == 304


async def test_raw_read_limit_is_400(make_iiif_client: Factory) -> None:
    client = await make_iiif_client(limits={"max_read_bytes": 1000})
    status, body = await status_of(client, f"{V3}/{ODD}/full/64,/0/default.jpg")
    assert status == 400 and "raw pixels" in body["detail"]


# --- planes and the Presentation manifest ----------------------------------------------------


async def test_planes_in_identifier(client: TestClient) -> None:
    for z in range(3):
        img = await get_png(client, f"{V3}/{STACK};z={z}/full/max/0/default.png")
        assert img.shape == (200, 300, 3) and (img == 60 * (z + 1)).all()
    # Maximum-intensity projection over all planes, and over a range.
    img = await get_png(client, f"{V3}/{STACK};p=intmax/full/max/0/default.png")
    assert (img == 180).all()
    img = await get_png(client, f"{V3}/{STACK};p=intmax%7C0:1/full/max/0/default.png")
    assert (img == 120).all()


async def test_manifest_one_canvas_per_plane(client: TestClient) -> None:
    resp = await client.get(f"{V3}/{STACK}/manifest.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/ld+json")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    doc = await resp.json(content_type=None)
    base = f"http://{client.host}:{client.port}"
    assert doc["@context"] == "http://iiif.io/api/presentation/3/context.json"
    assert doc["type"] == "Manifest" and doc["id"] == f"{base}{V3}/{STACK}/manifest.json"
    assert len(doc["items"]) == 3
    for z, canvas in enumerate(doc["items"]):
        assert (canvas["type"], canvas["width"], canvas["height"]) == ("Canvas", 300, 200)
        anno = canvas["items"][0]["items"][0]
        assert anno["motivation"] == "painting" and anno["target"] == canvas["id"]
        service = anno["body"]["service"][0]
        assert service == {
            "id": f"{base}{V3}/{STACK};z={z}",
            "type": "ImageService3",
            "profile": "level2",
        }
        # The service and the body URL it names both resolve.
        info = await client.get(service["id"].removeprefix(base) + "/info.json")
        assert info.status == 200
        body = await client.get(anno["body"]["id"].removeprefix(base))
        assert body.status == 200 and body.headers["Content-Type"] == "image/jpeg"
    one = await (await client.get(f"{V3}/{STACK};z=1/manifest.json")).json(content_type=None)
    assert len(one["items"]) == 1
    assert one["items"][0]["items"][0]["items"][0]["body"]["service"][0]["id"].endswith(
        f"{V3}/{STACK};z=1"
    )
    for bad, status in (("99999", 404), ("x", 404), (f"{STACK};z=7", 404), (f"{STACK};y=1", 400)):
        got, _ = await status_of(client, f"{V3}/{bad}/manifest.json")
        assert got == status, bad
    got, _ = await status_of(client, f"{V2}/{STACK}/manifest.json")  # Presentation 3 only
    assert got == 404


# --- inline renders (server.inline_render_pixels) -----------------------------------------------


async def test_inline_renders_equal_pool_renders_and_skip_the_pool(
    make_iiif_client: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    pooled = await make_iiif_client(server={"inline_render_pixels": 0})
    inline = await make_iiif_client(server={"inline_render_pixels": 2 * 256 * 256})
    paths = [
        f"{V3}/{ODD}/0,0,256,256/256,256/0/default.png",  # one chunk per channel
        f"{V3}/{ODD}/3840,2816,257,185/257,185/0/default.png",  # edge tiles, two chunks wide
        f"{V3}/{ODD}/1000,1000,512,512/max/0/default.png",  # 4× the inline bound: pool
    ]
    expected = [await get_png(pooled, p) for p in paths]
    # From here on, the inline server's pool may only run what is over the bound.
    from idrserve.http.keys import DEPS

    pool = inline.server.app[DEPS].cpu_pool
    submitted: list[object] = []
    real_submit = pool.submit

    def submit(fn: Any, *args: Any, **kw: Any) -> Any:
        submitted.append(fn)
        return real_submit(fn, *args, **kw)

    monkeypatch.setattr(pool, "submit", submit)
    for i, (path, want) in enumerate(zip(paths, expected, strict=True)):
        np.testing.assert_array_equal(await get_png(inline, path), want)
        assert len(submitted) == (0 if i < 2 else 1), path


def test_inline_default_follows_cpu_threads() -> None:
    from idrserve.settings import ServerSettings

    assert ServerSettings(cpu_threads=1).inline_pixels() == 3 * 512 * 512
    assert ServerSettings(cpu_threads=4).inline_pixels() == 0
    assert ServerSettings(cpu_threads=1, inline_render_pixels=0).inline_pixels() == 0


# --- Link headers: profile and canonical URI --------------------------------------------------

CANONICAL_CASES = [
    # (request after the identifier, canonical form) on the 1000×1000 pattern (max 4096)
    ("full/max/0/default.jpg", "full/max/0/default.jpg"),
    ("0,0,1000,1000/1000,1000/0/default.jpg", "full/max/0/default.jpg"),
    ("full/^max/0/default.jpg", "full/%5Emax/0/default.jpg"),
    ("full/500,/0/color.png", "full/500,500/0/color.png"),
    ("square/,250/360/gray.jpg", "full/250,250/0/gray.jpg"),
    ("pct:10,20,30,40/!100,100/!90/bitonal.png", "100,200,300,400/75,100/!90/bitonal.png"),
    ("900,900,500,500/max/0/default.jpg", "900,900,100,100/max/0/default.jpg"),
    ("0,0,100,100/^200,/180/default.webp", "0,0,100,100/%5E200,200/180/default.webp"),
    ("0,0,100,100/50,20/0/default.jpg", "0,0,100,100/50,20/0/default.jpg"),
    ("full/pct:50/0/default.tif", "full/500,500/0/default.tif"),
]


def _links(header: str) -> dict[str, str]:
    """rel → target of a Link header (targets contain commas: split on the angle brackets)."""
    return {rel: target for target, rel in re.findall(r'<([^>]*)>\s*;\s*rel="([^"]*)"', header)}


@pytest.mark.parametrize(("path", "canonical"), CANONICAL_CASES)
async def test_canonical_link_names_an_equivalent_request(
    client: TestClient, path: str, canonical: str
) -> None:
    """Every image answer carries the profile and its canonical URI (a relative reference,
    resolved against the request URI as RFC 8288 says); the canonical URI returns the same
    bytes under the same ETag, and names itself as canonical."""
    url = f"{V3}/{SQUARES};q=0.9/{path}"
    resp = await client.get(url)
    body = await resp.read()
    assert resp.status == 200, body[:300]
    links = _links(resp.headers["Link"])
    assert links["profile"] == "http://iiif.io/api/image/3/level2.json"
    assert "Link" in resp.headers["Access-Control-Expose-Headers"]
    target = urljoin(url, links["canonical"])
    assert target == f"{V3}/{SQUARES};q=0.9/{canonical}"
    again = await client.get(target)
    assert again.status == 200
    assert await again.read() == body
    assert again.headers["ETag"] == resp.headers["ETag"]
    assert urljoin(target, _links(again.headers["Link"])["canonical"]) == target


async def test_canonical_link_v2_and_from_the_fast_path(client: TestClient) -> None:
    # 2.1 spells a size that keeps the aspect ratio `w,`, the region's own size `full`.
    for path, canonical in [
        ("full/500,500/0/default.jpg", "full/500,/0/default.jpg"),
        ("0,0,100,100/100,100/0/native.jpg", None),
        ("0,0,100,100/100,100/0/default.jpg", "0,0,100,100/full/0/default.jpg"),
        ("0,0,100,100/50,20/0/default.jpg", "0,0,100,100/50,20/0/default.jpg"),
    ]:
        url = f"{V2}/{SQUARES}/{path}"
        resp = await client.get(url)
        await resp.read()
        if canonical is None:
            assert resp.status == 400 and "Link" not in resp.headers  # errors carry no canonical
            continue
        links = _links(resp.headers["Link"])
        assert links["profile"] == "http://iiif.io/api/image/2/level2.json"
        assert urljoin(url, links["canonical"]) == f"{V2}/{SQUARES}/{canonical}"
        # A memory hit from the URL index (http/fastpath.py) carries the same Link.
        hit = await client.get(url)
        await hit.read()
        assert hit.headers["X-Cache"] == "memory"
        assert hit.headers["Link"] == resp.headers["Link"]


async def test_info_json_lists_the_link_header_features(client: TestClient) -> None:
    info = await (await client.get(f"{V3}/{SQUARES}/info.json")).json()
    assert {"canonicalLinkHeader", "profileLinkHeader"} <= set(info["extraFeatures"])
    info2 = await (await client.get(f"{V2}/{SQUARES}/info.json")).json()
    assert {"canonicalLinkHeader", "profileLinkHeader"} <= set(info2["profile"][1]["supports"])
