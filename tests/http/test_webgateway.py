"""docs/webgateway.md#conformance-cases 1–24, over HTTP, on real OME-Zarr."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from tests.http.conftest import P, S, Z, decode, source_array

RI = "/webgateway/render_image_region"


def q_linear(x: np.ndarray, s: float, e: float) -> np.ndarray:
    """OMERO's linear quantization written out independently: Java rounding, x >= e is 255.

    The operation order is the RE's (`a·x − a·s` with `a = 255/(e − s)` in doubles), which
    decides the .5 cases: 255·230/2300 is 25.5 but a·430 − a·200 is 25.499999999999996.
    """
    x = x.astype(np.float64)
    a = 255.0 / (e - s)
    lin = np.floor(a * x - a * s + 0.5)
    out = np.where(x < s, 0, np.where(x >= e, 255, lin))
    return out.astype(np.uint8)


def composite(planes: list[np.ndarray], colours: list[tuple[int, int, int]]) -> np.ndarray:
    acc = np.zeros((*planes[0].shape, 3), dtype=np.int64)
    for q, colour in zip(planes, colours, strict=True):
        for k in range(3):
            acc[..., k] += np.floor(colour[k] / 255.0 * q.astype(np.float64)).astype(np.int64)
    return np.minimum(acc, 255).astype(np.uint8)


async def get(client: TestClient, url: str, status: int = 200) -> bytes:
    resp = await client.get(url, allow_redirects=False)
    body = await resp.read()
    assert resp.status == status, (url, resp.status, body[:300])
    if status >= 400:
        assert resp.content_type == "application/json", url
        doc = json.loads(body)
        assert doc["error"] and doc["detail"], doc
    return body


# 1 ------------------------------------------------------------------------------------------
async def test_tile_with_explicit_settings(client: TestClient, zarr_root: Path) -> None:
    url = (
        f"{RI}/{P}/0/0/?tile=0,0,0,512,512&c=1|110:1800$0000FF,2|200:2500$00FF00,"
        "-3|0:900$FF0000&m=c&q=0.9"
    )
    resp = await client.get(url)
    assert resp.status == 200
    assert resp.content_type == "image/jpeg"
    jpeg = decode(await resp.read())
    assert jpeg.shape == (512, 512, 3)
    # Same request as PNG: exact pixels against the independent reference.
    png = decode(await get(client, url + "&format=png"))
    raw = source_array(zarr_root, f"study/{P}.zarr", 0)[:, :512, :512]
    expected = composite(
        [q_linear(raw[0], 110, 1800), q_linear(raw[1], 200, 2500)], [(0, 0, 255), (0, 255, 0)]
    )
    np.testing.assert_array_equal(png, expected)
    # JPEG at q=0.9 must be what libjpeg gives for these pixels at quality 90 (Pillow here, an
    # independent encoder build), i.e. the same tables and 4:2:0 subsampling as OMERO's ImageIO.
    ref = io.BytesIO()
    Image.fromarray(expected).save(ref, format="JPEG", quality=90)
    assert np.abs(jpeg.astype(int) - decode(ref.getvalue()).astype(int)).mean() < 2.5
    ours = Image.open(io.BytesIO(await (await client.get(url)).read()))
    theirs = Image.open(io.BytesIO(ref.getvalue()))
    assert ours.quantization == theirs.quantization  # type: ignore[attr-defined]


# 2 ------------------------------------------------------------------------------------------
async def test_iviewer_016_and_018_forms_identical(client: TestClient) -> None:
    maps16 = quote(
        json.dumps([{"inverted": {"enabled": False}}, {"inverted": {"enabled": False}}, {}])
    )
    maps18 = quote(json.dumps([{"inverted": {"enabled": False}}, {"inverted": {"enabled": False}}]))
    a = await get(
        client,
        f"{RI}/{P}/0/0/?tile=1,0,0,256,256&c=1|110:1800$0000FF,"
        f"2|200:2500$00FF00,-3|0:900$FF0000&m=c&p=normal&maps={maps16}",
    )
    b = await get(
        client,
        f"{RI}/{P}/0/0/?tile=1,0,0,256,256&c=1|110:1800$0000FF,2|200:2500$00FF00&m=c&maps={maps18}",
    )
    assert a == b


# 3, 4, 5, 6, 7, 8 ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tile", "size"),
    [
        ("2,3,1,512,512", (512, 512)),
        ("2,4,3,512,512", (452, 464)),  # clipped at the level edge, never padded
        ("0,1,1", (256, 256)),  # 3 fields: the image's tile size
        ("0,0,0,4096,4096", (2048, 2048)),  # clamped to max_tile_length (2048, as the ms)
        ("0,2,0,300,300,9", (300, 300)),
        ("0,0,0,100", (256, 256)),  # 4 fields: the 4th is ignored, as on web
    ],
)
async def test_tile_geometry(client: TestClient, tile: str, size: tuple[int, int]) -> None:
    img = decode(await get(client, f"{RI}/{P}/0/0/?tile={tile}"))
    assert (img.shape[1], img.shape[0]) == size


async def test_tile_geometry_respects_configured_cap(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(limits__max_tile_length=1024)
    img = decode(await get(client, f"{RI}/{P}/0/0/?tile=0,0,0,4096,4096"))
    assert img.shape[:2] == (1024, 1024)


@pytest.mark.parametrize(
    ("image", "tile", "status"),
    [
        (P, "2,5,0,512,512", 404),  # origin beyond the level width
        (P, "5,0,0,512,512", 400),  # level beyond the pyramid
        (P, "-1,0,0,512,512", 400),
        (S, "1,0,0,256,256", 400),  # no pyramid: only level 0
        (S, "0,0,0,256,256", 200),
        (P, "a,b,c", 400),
        (P, "", 400),
        (P, "0,0", 400),
        (P, "0,99999999999999999999,0", 400),
        (P, "0,-1,0", 400),
    ],
)
async def test_tile_status(client: TestClient, image: int, tile: str, status: int) -> None:
    await get(client, f"{RI}/{image}/0/0/?tile={tile}", status)


@pytest.mark.parametrize("tile", ["0,0,0,-1,-1", "0,0,0,0,0", "0,0,0,256,0", "0,1,1,-5,300"])
async def test_tile_w_or_h_not_positive_is_400(client: TestClient, tile: str) -> None:
    """As `region=` (web answers these with a default-size tile; README "deliberately
    differs")."""
    body = json.loads(await get(client, f"{RI}/{P}/0/0/?tile={tile}", 400))
    assert body["error"] == "bad_request" and body["param"] == "tile"
    assert body["detail"] == f"tile: w and h must be > 0, tile={tile}"


async def test_tile_or_region_required(client: TestClient) -> None:
    body = json.loads(await get(client, f"{RI}/{P}/0/0/", 400))
    assert "tile or region" in body["detail"]


# 9 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("region", "status", "size"),
    [
        ("100,200,300,50", 200, (300, 50)),
        ("500,0,300,50", 200, (100, 50)),
        ("1,2", 400, None),
        ("a,b,c,d", 400, None),
        ("600,0,10,10", 404, None),
        ("0,0,0,10", 400, None),
    ],
)
async def test_region(
    client: TestClient, region: str, status: int, size: tuple[int, int] | None
) -> None:
    body = await get(client, f"{RI}/{S}/0/0/?region={region}", status)
    if size:
        img = decode(body)
        assert (img.shape[1], img.shape[0]) == size


async def test_region_too_large_is_413(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(limits__max_region_pixels=10_000)
    body = json.loads(await get(client, f"{RI}/{S}/0/0/?region=0,0,200,200", 413))
    assert "10000" in body["detail"]


# 10, 11, 12 ---------------------------------------------------------------------------------
async def test_no_c_uses_saved_settings(client: TestClient) -> None:
    saved = await get(client, f"{RI}/{P}/0/0/?tile=0,0,0,256,256&format=png")
    explicit = await get(
        client,
        f"{RI}/{P}/0/0/?tile=0,0,0,256,256&format=png&c=1|110:1800$0000FF,2|200:2500$00FF00,-3&m=c",
    )
    assert decode(saved).tolist() == decode(explicit).tolist()


@pytest.mark.parametrize("c", ["", "0"])
async def test_no_active_channel_is_black(client: TestClient, c: str) -> None:
    img = decode(await get(client, f"{RI}/{P}/0/0/?tile=0,0,0,256,128&format=png&c={c}"))
    assert img.shape == (128, 256, 3)
    assert not img.any()


async def test_c2_only_keeps_saved_window_and_colour(client: TestClient, zarr_root: Path) -> None:
    img = decode(await get(client, f"{RI}/{P}/0/0/?tile=0,0,0,256,256&format=png&c=2"))
    raw = source_array(zarr_root, f"study/{P}.zarr", 0)[1, :256, :256]
    expected = composite([q_linear(raw, 200, 2500)], [(0, 255, 0)])
    np.testing.assert_array_equal(img, expected)


# 13 -----------------------------------------------------------------------------------------
async def test_greyscale_first_active_only(client: TestClient, zarr_root: Path) -> None:
    img = decode(
        await get(
            client,
            f"{RI}/{P}/0/0/?tile=0,0,0,256,256&format=png&c=1|110:1800$FF0000,2|0:10$00FF00&m=g",
        )
    )
    raw = source_array(zarr_root, f"study/{P}.zarr", 0)[0, :256, :256]
    q = q_linear(raw, 110, 1800)
    for k in range(3):
        np.testing.assert_array_equal(img[..., k], q)


# 14 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["inverted", "reverse"])
async def test_inversion(client: TestClient, key: str) -> None:
    base = f"{RI}/{S}/0/0/?region=0,0,600,400&format=png&c=1|0:255$FFFFFF"
    normal = decode(await get(client, base))
    inv = decode(await get(client, base + "&maps=" + quote(json.dumps([{key: {"enabled": True}}]))))
    np.testing.assert_array_equal(inv, 255 - normal)


# 15 -----------------------------------------------------------------------------------------
async def test_lut_channel_and_colour_clears_it(client: TestClient, zarr_root: Path) -> None:
    luts = json.loads(await get(client, "/webgateway/luts/"))
    names = [entry["name"] for entry in luts["luts"]]
    assert "cool.lut" in names
    lut_img = decode(
        await get(client, f"{RI}/{S}/0/0/?region=0,0,256,1&format=png&c=1|0:255$cool.lut&m=c")
    )
    ramp = lut_img[0]  # row 0 holds the values 0..255 once each
    assert len({tuple(px) for px in ramp}) > 64  # a real colour table, not a grey ramp
    assert not (ramp[:, 0] == ramp[:, 1]).all()
    red = decode(
        await get(client, f"{RI}/{S}/0/0/?region=0,0,256,1&format=png&c=1|0:255$FF0000&m=c")
    )
    np.testing.assert_array_equal(red[0, :, 0], np.arange(256))
    assert not red[0, :, 1:].any()


# 16 -----------------------------------------------------------------------------------------
async def test_polynomial_quantization(client: TestClient, zarr_root: Path) -> None:
    maps = quote(json.dumps([{"quantization": {"family": "polynomial", "coefficient": 2}}]))
    img = decode(
        await get(
            client, f"{RI}/{S}/0/0/?region=0,0,256,1&format=png&c=1|0:255$FFFFFF&m=c&maps={maps}"
        )
    )
    values = img[0, :, 0].astype(int)
    expected = [math.floor(255 / 255.0**2 * float(x) ** 2 + 0.5) for x in range(256)]
    assert values.tolist() == expected
    assert values[128] == 64 and values[255] == 255


# 17 -----------------------------------------------------------------------------------------
async def test_window_clamp(client: TestClient) -> None:
    clamped = await get(client, f"{RI}/{S}/0/0/?region=0,0,256,1&format=png&c=1|-50:300$FFFFFF")
    full = await get(client, f"{RI}/{S}/0/0/?region=0,0,256,1&format=png&c=1|0:255$FFFFFF")
    assert decode(clamped).tolist() == decode(full).tolist()
    assert decode(full)[0, :, 0].tolist() == list(range(256))


async def test_window_reset_uint16(client: TestClient, zarr_root: Path) -> None:
    img = decode(
        await get(client, f"{RI}/{Z}/0/0/?tile=0,0,0,64,64&format=png&c=1|-100:70000$FFFFFF&m=g")
    )
    raw = source_array(zarr_root, f"{Z}.zarr", 0)[0, 0, :64, :64]
    np.testing.assert_array_equal(img[..., 0], q_linear(raw, 0, 65535))


# 18 -----------------------------------------------------------------------------------------
async def test_additive_clamp(client: TestClient, zarr_root: Path) -> None:
    img = decode(
        await get(
            client,
            f"{RI}/{P}/0/0/?tile=0,0,0,64,64&format=png&c=1|0:3000$FF0000,2|0:3000$FF0000&m=c",
        )
    )
    raw = source_array(zarr_root, f"study/{P}.zarr", 0)[:2, :64, :64]
    a, b = q_linear(raw[0], 0, 3000).astype(int), q_linear(raw[1], 0, 3000).astype(int)
    np.testing.assert_array_equal(img[..., 0], np.minimum(a + b, 255))
    assert (img[..., 0] == 255).any() and not img[..., 1:].any()


# 19 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("p", "expected"),
    [
        ("intmax|1:3", lambda s: s[1:4].max(axis=0)),
        ("intmean|1:3", lambda s: s[1:3].astype(np.int64).sum(axis=0) // 2),  # end exclusive
        ("intsum", lambda s: np.minimum(s[0:4].astype(np.int64).sum(axis=0), 65535)),
    ],
)
async def test_projection(client: TestClient, zarr_root: Path, p: str, expected) -> None:  # type: ignore[no-untyped-def]
    # A window of 0:65535 with a white colour shows the projected value's top 8 bits.
    img = decode(
        await get(
            client,
            f"/webgateway/render_image/{Z}/0/0/?format=png&c=1|0:65535$FFFFFF&m=g&p={quote(p)}",
        )
    )
    stack = source_array(zarr_root, f"{Z}.zarr", 0)[0]
    np.testing.assert_array_equal(img[..., 0], q_linear(expected(stack), 0, 65535))


async def test_region_ignores_projection(client: TestClient) -> None:
    a = await get(client, f"{RI}/{Z}/0/0/?tile=0,0,0&format=png&p=intmax")
    b = await get(client, f"{RI}/{Z}/0/0/?tile=0,0,0&format=png")
    assert a == b


# 20 -----------------------------------------------------------------------------------------
async def test_render_image_default_plane(client: TestClient, zarr_root: Path) -> None:
    img = decode(await get(client, f"/webgateway/render_image/{Z}/?format=png"))
    raw = source_array(zarr_root, f"{Z}.zarr", 0)[0, 2]  # defaultZ = 2
    np.testing.assert_array_equal(img[..., 0], q_linear(raw, 0, 65535))
    # P's full plane (80 Mpx) is over the plane limit: a clear 413, not an attempt.
    body = json.loads(await get(client, f"/webgateway/render_image/{P}/", 413))
    assert "tile" in body["detail"]


@pytest.mark.parametrize("path", [f"{Z}/5/0/", f"{Z}/0/1/", f"{S}/1/0/"])
async def test_render_image_plane_out_of_range(client: TestClient, path: str) -> None:
    await get(client, f"/webgateway/render_image/{path}", 404)


# 21 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "size"),
    [
        (f"/webgateway/render_thumbnail/{S}/", (96, 64)),
        (f"/webgateway/render_thumbnail/{S}/50/", (50, 33)),
        (f"/webgateway/render_thumbnail/{S}/40/40/", (40, 40)),
        (f"/webgateway/render_thumbnail/{S}/?z=0&t=0", (96, 64)),
        (f"/webgateway/render_birds_eye_view/{P}/", (96, 76)),
        (f"/webgateway/render_birds_eye_view/{P}/200/", (200, 160)),
        (f"/webclient/render_thumbnail/{P}/", (96, 76)),
        (f"/webclient/render_thumbnail/size/64/{Z}/", (64, 64)),
    ],
)
async def test_thumbnail_sizes(client: TestClient, path: str, size: tuple[int, int]) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    assert resp.content_type == "image/jpeg"
    img = decode(await resp.read())
    assert (img.shape[1], img.shape[0]) == size


async def test_thumbnail_missing(client: TestClient) -> None:
    await get(client, "/webgateway/render_thumbnail/999999999/", 404)
    resp = await client.get("/webclient/render_thumbnail/999999999/")
    assert resp.status == 200 and resp.content_type == "image/jpeg"
    assert (await resp.read()).startswith(b"\x89PNG")  # OMERO.web's mislabelled placeholder
    await get(client, f"/webgateway/render_thumbnail/{S}/?z=abc", 400)
    await get(client, f"/webgateway/render_thumbnail/{S}/?z=3", 404)
    await get(client, f"/webgateway/render_thumbnail/{S}/0/", 400)
    await get(client, f"/webgateway/render_thumbnail/{S}/100000/", 400)


# 22 -----------------------------------------------------------------------------------------
async def test_get_thumbnails(client: TestClient) -> None:
    doc = json.loads(
        await get(client, f"/webgateway/get_thumbnails/?id={P}&id={S}&id=999999999&id={S}")
    )
    assert list(doc) == [str(P), str(S), "999999999"]
    assert doc["999999999"] is None
    for key in (str(P), str(S)):
        assert doc[key].startswith("data:image/jpeg;base64,")
        img = decode(base64.b64decode(doc[key].split(",", 1)[1]))
        assert max(img.shape[:2]) == 96
    resp = await client.get(f"/webgateway/get_thumbnails/?id={S}&callback=jQuery123_456")
    assert resp.content_type == "application/javascript"
    text = await resp.text()
    assert text.startswith("jQuery123_456({") and text.endswith("})")
    await get(client, f"/webgateway/get_thumbnails/?id={S}&callback=alert(1)", 400)
    many = "&".join(f"id={i}" for i in range(1, 52))
    body = json.loads(await get(client, f"/webgateway/get_thumbnails/?{many}", 400))
    assert "50" in body["detail"]
    await get(client, "/webgateway/get_thumbnails/?id=abc", 400)
    single = json.loads(await get(client, f"/webgateway/get_thumbnail/{S}/"))
    assert single.startswith("data:image/jpeg;base64,")


# 23 -----------------------------------------------------------------------------------------
async def test_img_data(client: TestClient) -> None:
    doc = json.loads(await get(client, f"/webgateway/imgData/{P}/"))
    assert doc["id"] == P and doc["tiles"] is True and doc["levels"] == 5
    assert doc["zoomLevelScaling"] == {"0": 1.0, "1": 0.5, "2": 0.25, "3": 0.125, "4": 0.0625}
    assert doc["tile_size"] == {"width": 256, "height": 256}
    assert doc["size"] == {"width": 10000, "height": 8000, "z": 1, "t": 1, "c": 3}
    assert doc["meta"]["pixelsType"] == "uint16"
    assert doc["pixel_range"] == [0, 65535]
    ch = doc["channels"]
    assert [c["active"] for c in ch] == [True, True, False]
    assert ch[0]["window"]["start"] == 110.0 and ch[0]["window"]["end"] == 1800.0
    assert [c["color"] for c in ch] == ["0000FF", "00FF00", "FF0000"]
    assert doc["rdefs"]["model"] == "color"
    assert list(doc)[:4] == ["id", "meta", "perms", "tiles"]
    assert json.loads(await get(client, f"/webgateway/imgData/{P}/meta.pixelsType/")) == "uint16"
    assert json.loads(await get(client, f"/webgateway/imgData/{P}/nope/")) is None
    await get(client, "/webgateway/imgData/999999999/", 404)
    resp = await client.get(f"/webgateway/imgData/{S}/?callback=cb")
    assert resp.content_type == "application/javascript"
    assert (await resp.text()).startswith("cb({")
    s_doc = json.loads(await get(client, f"/webclient/imgData/{S}/"))
    assert s_doc["tiles"] is False and "levels" not in s_doc
    assert s_doc["rdefs"]["model"] == "greyscale"


# 24 -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        f"/webgateway/imgData/{S}",
        f"/webgateway/render_thumbnail/{S}/96",
        f"/webgateway/render_image_region/{S}/0/0?tile=0,0,0",
    ],
)
async def test_missing_slash_redirects(client: TestClient, path: str) -> None:
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 301
    location = resp.headers["Location"]
    base, _, query = path.partition("?")
    assert location == base + "/" + (f"?{query}" if query else "")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


# Route grammar and cross-cutting headers ------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    [
        "/webgateway/render_image_region/-1/0/0/?tile=0,0,0",
        "/webgateway/render_image_region/x/0/0/",
        "/webgateway/imgData/1e3/",
        "/nope/",
        f"/webgateway/render_image/{S}/0/0/0/",
    ],
)
async def test_no_route_is_json_404(client: TestClient, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404
    assert resp.content_type == "application/json"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_headers_etag_304_cors(client: TestClient) -> None:
    url = f"{RI}/{P}/0/0/?tile=1,0,0"
    resp = await client.get(url)
    assert resp.status == 200
    etag = resp.headers["ETag"]
    assert resp.headers["Cache-Control"].startswith("public")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "render;dur=" in resp.headers["Server-Timing"]
    again = await client.get(url + "&_=12345", headers={"If-None-Match": etag})
    assert again.status == 304
    other = await client.get(f"{RI}/{P}/0/0/?tile=1,0,1", headers={"If-None-Match": etag})
    assert other.status == 200


async def test_webclient_aliases(client: TestClient) -> None:
    a = await get(client, f"/webclient/render_image_region/{S}/0/0/?region=0,0,50,50&format=png")
    b = await get(
        client, f"/webclient/123/render_image_region/{S}/0/0/?region=0,0,50,50&format=png"
    )
    c = await get(client, f"{RI}/{S}/0/0/?region=0,0,50,50&format=png")
    assert a == b == c
    resp = await client.get(f"/webclient/render_image_download/{S}/0/0/?format=png")
    assert resp.status == 200 and resp.content_type == "image/png"
    assert "attachment" in resp.headers["Content-Disposition"]


async def test_rdef_variant_is_strict(client: TestClient) -> None:
    await get(client, f"/webgateway/render_image_region_rdef/{S}/0/0/?region=0,0,10,10", 400)
    await get(
        client,
        f"/webgateway/render_image_region_rdef/{S}/0/0/?region=0,0,10,10&c=1|0:255$FFFFFF&m=g",
    )


async def test_formats_and_flip(client: TestClient) -> None:
    base = f"{RI}/{S}/0/0/?region=0,0,600,400&c=1|0:255$FFFFFF"
    png = decode(await get(client, base + "&format=png"))
    tif = decode(await get(client, base + "&format=tif"))
    np.testing.assert_array_equal(png, tif)
    flipped = decode(await get(client, base + "&format=png&flip=hv"))
    np.testing.assert_array_equal(flipped, png[::-1, ::-1])
    # A flipped tile is taken from the mirrored position, as on the microservice.
    tile = decode(
        await get(client, f"{RI}/{S}/0/0/?tile=0,0,0,100,100&c=1|0:255$FFFFFF&format=png&flip=h")
    )
    np.testing.assert_array_equal(tile, png[:100, 500:600][:, ::-1])
    await get(client, base + "&format=gif", 400)
    await get(client, base + "&q=abc", 400)
    await get(client, base + "&q=1.5", 400)


async def test_ms_options_and_healthz(client: TestClient) -> None:
    resp = await client.options("/omero_ms_image_region/")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["options"]["maxActiveChannels"] == 10
    assert doc["options"]["maxTileLength"] == 2048
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["status"] == "ok"


async def test_too_many_active_channels(make_client) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(limits__max_active_channels=2)
    body = json.loads(await get(client, f"{RI}/{P}/0/0/?tile=0,0,0&c=1,2,3", 400))
    assert body["param"] == "c"


async def test_long_url_is_a_json_414(client: TestClient) -> None:
    url = f"{RI}/{S}/0/0/?region=0,0,10,10&c=" + "1," * 10_000
    resp = await client.get(url)
    assert resp.status == 414
    assert resp.content_type == "application/json"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "16384" in (await resp.json())["detail"]
