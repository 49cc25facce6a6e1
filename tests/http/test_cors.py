"""CORS on every route family: one preflight answer, one list of exposed response headers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from idrserve.app import create_app
from idrserve.http.keys import ADMISSION
from idrserve.http.middleware import MAX_REQUEST_HEADERS_LENGTH
from idrserve.settings import load_settings
from tests.integration.live_server import demo_images

# One path of each route family that answers GET (the webgateway ones answer the
# omero-ms-image-region probe, which is their preflight too).
FAMILIES = [
    "/",
    "/viewer/",
    "/viewer/1002",
    "/docs",
    "/healthz",
    "/openapi.json",
    "/iiif/3/1002/info.json",
    "/iiif/2/1002/full/64,/0/default.jpg",
    "/deepzoom/1002.dzi",
    "/deepzoom/1002_files/0/0_0.jpg",
    "/api/v1/images/1002",
    "/api/v1/images/1002/region",
    "/zarr/1002.zarr/.zattrs",
    "/zarr/1002.zarr/0/0/0/0/0",
    "/zarr/v3/1002.zarr/zarr.json",
    "/zarr/v3/1002.zarr/0/0/0/0/0",
    "/webclient/render_image_region/1002/0/0/?tile=0,0,0",
]
WEBGATEWAY = ["/webgateway/render_image_region/1002/0/0/", "/webgateway/imgData/1002/"]
ASKED = "authorization, range, x-requested-with"
PREFLIGHT = {
    "Origin": "https://notebook.example",
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": ASKED,
}
EXPOSED = {"content-range", "content-length", "etag", "x-cache", "link", "x-request-id"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_images(tmp_path_factory)[0]


@pytest.fixture
def make_client(root: Path, aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    async def factory(**server: Any) -> TestClient:
        settings = load_settings({"source": {"zarr_root": str(root)}, "server": server})
        client: TestClient = await aiohttp_client(create_app(settings))
        return client

    return factory


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> TestClient:
    result: TestClient = await make_client()
    return result


def assert_preflight(resp: Any, origin: str = "*") -> None:
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"
    assert resp.headers["Access-Control-Allow-Headers"] == ASKED
    assert int(resp.headers["Access-Control-Max-Age"]) >= 600
    assert resp.headers["Allow"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize("path", FAMILIES)
async def test_preflight_on_every_family(client: TestClient, path: str) -> None:
    resp = await client.options(path, headers=PREFLIGHT)
    assert resp.status == 204, await resp.text()
    assert_preflight(resp)
    assert await resp.read() == b""
    # and the request it cleared is served
    assert (await client.get(path)).status in (200, 304), path


@pytest.mark.parametrize("path", WEBGATEWAY)
async def test_webgateway_preflight_is_the_feature_probe(client: TestClient, path: str) -> None:
    resp = await client.options(path, headers=PREFLIGHT)
    assert resp.status == 200
    assert_preflight(resp)
    assert (await resp.json())["options"]["maxActiveChannels"] == 10


async def test_a_configured_origin_is_sent(make_client: Callable[..., Any]) -> None:
    client = await make_client(cors_origin="https://idr.example")
    for path in ("/zarr/v3/1002.zarr/zarr.json", WEBGATEWAY[0]):
        assert_preflight(await client.options(path, headers=PREFLIGHT), "https://idr.example")


async def test_plain_options_says_allow_only(client: TestClient) -> None:
    """OPTIONS without Access-Control-Request-Method is no preflight (Fetch standard)."""
    resp = await client.options("/zarr/1002.zarr/.zattrs", headers={"Origin": "https://x.example"})
    assert resp.status == 204 and resp.headers["Allow"] == "GET, HEAD, OPTIONS"
    assert "Access-Control-Allow-Methods" not in resp.headers
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_preflight_without_asked_headers(client: TestClient) -> None:
    headers = {"Origin": "https://x.example", "Access-Control-Request-Method": "GET"}
    resp = await client.options("/api/v1/images/1002", headers=headers)
    assert resp.status == 204 and "Access-Control-Allow-Headers" not in resp.headers
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS"


@pytest.mark.parametrize(
    "path", ["/nothing", "/zarr/abc.zarr/zarr.json", "/api/v1/images/x", "/deepzoom/1002.png"]
)
async def test_unknown_paths_stay_404(client: TestClient, path: str) -> None:
    resp = await client.options(path, headers=PREFLIGHT)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "asked",
    [
        "range, x(y)",
        "range;authorization",
        "range, , x",
        "ränge",
        ",".join(["x-h"] * (MAX_REQUEST_HEADERS_LENGTH // 4 + 1)),
    ],
)
async def test_malformed_request_headers_are_a_json_400(client: TestClient, asked: str) -> None:
    headers = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": asked}
    for path in ("/zarr/1002.zarr/.zattrs", WEBGATEWAY[0]):
        resp = await client.options(path, headers=headers)
        assert resp.status == 400, (path, asked)
        body = await resp.json()
        assert body["param"] == "Access-Control-Request-Headers"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_preflight_passes_admission_control(client: TestClient) -> None:
    """A refused preflight would read as a CORS failure; the refused GET stays a readable 503."""
    admission = client.app[ADMISSION]
    held = admission.max_requests
    admission.requests = held
    try:
        assert (await client.get("/zarr/1002.zarr/.zattrs")).status == 503
        resp = await client.options("/zarr/1002.zarr/.zattrs", headers=PREFLIGHT)
        assert resp.status == 204
    finally:
        admission.requests = 0


def exposed(resp: Any) -> set[str]:
    value = resp.headers["Access-Control-Expose-Headers"]
    return {name.strip().lower() for name in value.split(",")}


@pytest.mark.parametrize(
    "path",
    [
        *FAMILIES,
        "/webgateway/render_image_region/1002/0/0/?tile=0,0,0",
        "/iiif/3/1002/full/64,/0/default.png",
        "/zarr/1002.zarr/missing",  # errors too
    ],
)
async def test_exposed_headers_on_every_response(client: TestClient, path: str) -> None:
    resp = await client.get(path)
    assert exposed(resp) >= EXPOSED, path
    assert "retry-after" in exposed(resp)


async def test_array_headers_exposed_on_regions(client: TestClient) -> None:
    resp = await client.get("/api/v1/images/1002/region?level=2&c=0&y=0:8&x=0:8")
    assert resp.status == 200 and resp.headers["X-Array-Shape"]
    assert EXPOSED | {"x-array-shape", "x-array-dtype", "x-array-axes"} <= exposed(resp)


async def test_range_and_its_content_range(client: TestClient) -> None:
    """What a browser Zarr reader relies on: a suffix range is a 206 with Content-Range."""
    resp = await client.get("/zarr/1002.zarr/0/0/0/0/0", headers={"Range": "bytes=-16"})
    assert resp.status == 206 and len(await resp.read()) == 16
    assert resp.headers["Content-Range"].startswith("bytes ")
    assert "content-range" in exposed(resp)
