"""The browser pages over a real aiohttp server: index, viewer, docs, static files.

The vendored npm assets must be present (`pip install -e .` runs the build hook that fetches
them); a test below checks they are, so a broken build fails here rather than in a browser.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from idrserve import vendor
from idrserve.app import create_app
from idrserve.http import viewer
from idrserve.settings import load_settings

from .conftest import P, S, Z

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
ASSET = re.compile(r'(?:src|href)="(/viewer/static/[^"]+)"')
# Any absolute URL in an attribute or in script text: the pages may load nothing from elsewhere.
EXTERNAL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


async def page(client: TestClient, path: str, accept: str = BROWSER_ACCEPT) -> tuple[int, str]:
    resp = await client.get(path, headers={"Accept": accept})
    return resp.status, await resp.text()


def test_vendored_assets_are_installed() -> None:
    assert vendor.missing() == [], "run `pip install -e .` (the build hook vendors them)"
    osd = vendor.VENDOR_DIR / "openseadragon" / "build" / "openseadragon" / "openseadragon.min.js"
    assert "OpenSeadragon" in osd.read_text()[:2000]
    assert (vendor.VENDOR_DIR / "swagger-ui-dist" / "swagger-ui-bundle.js").stat().st_size > 100_000


async def test_viewer_page(client: TestClient) -> None:
    resp = await client.get(f"/viewer/{P}")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    # private: its links follow the forwarded headers (no server.public_base_url here)
    assert resp.headers["Cache-Control"] == "private, no-cache"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    body = await resp.text()
    assert f'data-image-id="{P}"' in body
    assets = ASSET.findall(body)
    assert any("openseadragon.min.js" in a for a in assets)
    for name in viewer.VIEWER_SCRIPTS:
        assert any(a.startswith(f"/viewer/static/{name}?v=") for a in assets), name
    assert "{{" not in body
    for path in ("z", "t", "greyscale", "channels", "projection", "z-play", "t-play", "navigator"):
        assert f'id="{path}"' in body
    for path in ("scalebar", "readout", "meta", "links", "snippet", "copy-snippet", "toolbar"):
        assert f'id="{path}"' in body
    # trailing slash form answers the same page
    status, body2 = await page(client, f"/viewer/{P}/")
    assert status == 200 and body2 == body


async def test_viewer_without_slash_redirects_like_the_webgateway(client: TestClient) -> None:
    resp = await client.get("/viewer", allow_redirects=False)
    assert resp.status == 301 and resp.headers["Location"] == "/viewer/"


async def test_viewer_unknown_image_is_json_404(client: TestClient) -> None:
    for accept in ("", "*/*", "application/json", "application/json, text/html;q=0.9"):
        headers = {"Accept": accept} if accept else {}
        resp = await client.get("/viewer/999999", headers=headers)
        assert resp.status == 404, accept
        assert (await resp.json())["error"] == "not_found"
        resp = await client.get("/viewer/abc", headers=headers)
        assert resp.status == 404
        assert resp.content_type == "application/json"


@pytest.mark.parametrize(
    "path", ["/viewer/999999", "/viewer/999999/", "/viewer/abc", "/viewer/1/x"]
)
async def test_viewer_unknown_image_is_a_page_for_browsers(client: TestClient, path: str) -> None:
    resp = await client.get(path, headers={"Accept": BROWSER_ACCEPT})
    assert resp.status == 404
    assert resp.content_type == "text/html"
    assert resp.headers["Vary"] == "Accept"
    assert resp.headers["Cache-Control"] == "private, no-cache"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    body = await resp.text()
    assert "<title>Not found · idrserve</title>" in body and "{{" not in body
    detail = "image 999999 not found" if "999999" in path else f"no such page: {path}"
    assert f'<p id="detail">{detail}.</p>' in body
    assert 'href="/viewer/"' in body and resp.headers["X-Request-ID"] in body
    assert EXTERNAL.search(body) is None
    for url in ASSET.findall(body):
        assert (await client.get(url)).status == 200


async def test_viewer_not_found_page_escapes_the_path(client: TestClient) -> None:
    resp = await client.get("/viewer/%3Cscript%3Ex", headers={"Accept": "text/html"})
    assert resp.status == 404
    body = await resp.text()
    assert "<script>x" not in body and "&lt;script&gt;x" in body


async def test_index_lists_images_with_thumbnails(client: TestClient) -> None:
    status, body = await page(client, "/viewer/")
    assert status == 200
    for iid in (P, S, Z):
        assert f'<li data-image-id="{iid}"><a href="/viewer/{iid}">' in body
        assert f'src="/webgateway/render_thumbnail/{iid}/"' in body
    # Names and sizes are filled in by the page's script from imgData, card by card.
    assert any(a.startswith("/viewer/static/index.js?v=") for a in ASSET.findall(body))
    assert 'data-base=""' in body and body.count('<span class="card-name"></span>') == 3
    # every thumbnail the index links to is a real image
    resp = await client.get(f"/webgateway/render_thumbnail/{S}/")
    assert resp.status == 200 and resp.content_type == "image/jpeg"


async def test_root_negotiates_html_for_browsers_json_for_clients(client: TestClient) -> None:
    status, html_body = await page(client, "/")
    assert status == 200 and f'href="/viewer/{P}"' in html_body
    for accept in ("*/*", "application/json", "", "text/html;q=0.5,application/json"):
        resp = await client.get("/", headers={"Accept": accept} if accept else {})
        assert resp.status == 200 and resp.content_type == "application/json", accept
        assert resp.headers["Vary"] == "Accept"
        doc = await resp.json()
        assert {i["id"] for i in doc["images"]} >= {P, S, Z}
        assert doc["viewer"].endswith("/viewer/")
    resp = await client.get("/", headers={"Accept": BROWSER_ACCEPT})
    assert resp.headers["Vary"] == "Accept"


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("application/json, text/html", True),
        ("application/json;q=1, text/html;q=0.9", False),
        ("text/html;q=0", False),
        ("text/html;q=bogus", False),
        ("*/*", False),
        ("text/*", False),
        ("", False),
    ],
)
async def test_prefers_html(client: TestClient, accept: str, html: bool) -> None:
    resp = await client.get("/", headers={"Accept": accept})
    assert (resp.content_type == "text/html") is html


async def test_pages_name_no_external_url(client: TestClient) -> None:
    for path in (f"/viewer/{P}", "/viewer/", "/docs"):
        status, body = await page(client, path)
        assert status == 200, path
        assert EXTERNAL.search(body) is None, (path, EXTERNAL.search(body))
    # our own scripts and styles build URLs from the page's origin only
    for name in (*viewer.VIEWER_SCRIPTS, "index.js", "viewer.css", "docs.js"):
        text = (viewer.STATIC_DIR / name).read_text()
        assert EXTERNAL.search(text) is None, (name, EXTERNAL.search(text))
        assert re.search(r"https?:", text) is None, name


async def test_static_assets_are_served_with_long_cache(client: TestClient) -> None:
    _, body = await page(client, f"/viewer/{P}")
    assets = ASSET.findall(body)
    assert len(assets) >= 3
    for url in assets:
        resp = await client.get(url)
        assert resp.status == 200, url
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable", url
        data = await resp.read()
        rel = url.split("?")[0].removeprefix("/viewer/static/")
        assert data == (viewer.STATIC_DIR / rel).read_bytes()
        assert url.endswith("?v=" + hashlib.sha256(data).hexdigest()[:12])
    js = await client.get("/viewer/static/viewer.js")
    assert js.status == 200 and js.content_type in ("text/javascript", "application/javascript")
    assert js.headers["Cache-Control"] == "no-cache"  # no (or a stale) hash: revalidate
    stale = await client.get("/viewer/static/viewer.js?v=000000000000")
    assert stale.headers["Cache-Control"] == "no-cache"
    css = await client.get("/viewer/static/viewer.css")
    assert css.content_type == "text/css"
    png = await client.get(
        "/viewer/static/vendor/openseadragon/build/openseadragon/images/home_rest.png"
    )
    assert png.status == 200 and png.content_type == "image/png"
    assert png.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    "path",
    [
        "/viewer/static/../settings.py",
        "/viewer/static/%2e%2e/settings.py",
        "/viewer/static/vendor/../../app.py",
        "/viewer/static/vendor/openseadragon/.vendored.json",
        "/viewer/static/viewer.html",
        "/viewer/static/nope.js",
        "/viewer/static/vendor/",
        "/viewer/static//etc/passwd",
    ],
)
async def test_static_refuses_anything_outside(client: TestClient, path: str) -> None:
    resp = await client.get(path, allow_redirects=False)
    assert resp.status in (404, 301), path
    if resp.status == 404:
        assert resp.content_type == "application/json"
        assert "error" in await resp.json()


async def test_docs_page_points_swagger_at_openapi(client: TestClient) -> None:
    status, body = await page(client, "/docs")
    assert status == 200
    assert 'data-spec-url="/openapi.json"' in body
    assert "swagger-ui-bundle.js?v=" in body and "swagger-ui.css?v=" in body
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = json.loads(await resp.text())
    assert "openapi" in doc and "paths" in doc


@pytest.fixture
def bare_static(tmp_path: Path) -> Path:
    """A static root as a source checkout has it before any build: no vendor folder."""
    root = tmp_path / "static"
    shutil.copytree(viewer.STATIC_DIR, root, ignore=shutil.ignore_patterns("vendor"))
    return root


async def test_missing_vendor_is_a_clear_503(
    zarr_root: Path, aiohttp_client: Callable[..., Any], bare_static: Path
) -> None:
    app = create_app(load_settings({"source": {"zarr_root": str(zarr_root)}}))
    app[viewer.STATIC_ROOT] = bare_static
    client: TestClient = await aiohttp_client(app)
    for path, package in ((f"/viewer/{P}", "openseadragon@"), ("/docs", "swagger-ui-dist@")):
        resp = await client.get(path, headers={"Accept": BROWSER_ACCEPT})
        assert resp.status == 503, path
        doc = await resp.json()
        assert doc["error"] == "viewer_assets_missing"
        assert package in doc["detail"] and "python -m idrserve.vendor" in doc["detail"]
    # the index needs no vendored script and still works; the images too
    status, body = await page(client, "/viewer/")
    assert status == 200 and f"/viewer/{S}" in body
    resp = await client.get(f"/webgateway/render_thumbnail/{S}/")
    assert resp.status == 200


async def test_wrong_vendored_version_counts_as_missing(
    zarr_root: Path, aiohttp_client: Callable[..., Any], bare_static: Path
) -> None:
    shutil.copytree(viewer.STATIC_DIR / "vendor", bare_static / "vendor")
    stamp = bare_static / "vendor" / "openseadragon" / vendor.STAMP
    doc = json.loads(stamp.read_text())
    stamp.write_text(json.dumps(doc | {"version": "0.0.1"}))
    app = create_app(load_settings({"source": {"zarr_root": str(zarr_root)}}))
    app[viewer.STATIC_ROOT] = bare_static
    client: TestClient = await aiohttp_client(app)
    resp = await client.get(f"/viewer/{P}")
    assert resp.status == 503
    assert "openseadragon@5" in (await resp.json())["detail"]
    assert (await client.get("/docs")).status == 200  # swagger-ui-dist is intact
