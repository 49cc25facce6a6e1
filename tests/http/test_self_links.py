"""Every link a response makes to this server goes through `http/urls.py`.

Behind a proxy that serves idrserve under `/idr/` and says so with `X-Forwarded-Prefix`, the
pages, the scripts' URLs, the JSON documents and the missing-slash 301 must all stay under
`/idr/`; a response built from forwarded headers must be `private` (nginx keys its cache on
the path only). The same through the shipped nginx: tests/integration/test_nginx_prefix.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from idrserve.http import viewer

from .conftest import P, S, Z

FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "tiles.example.org",
    "X-Forwarded-Prefix": "/idr",
}
HTML = {"Accept": "text/html"}
# Every attribute that names a URL, data-* ones included (the scripts build URLs from them).
URL_ATTR = re.compile(r'\s(href|src|data-[a-z-]+)="([^"]*)"')
URL_DATA = {"data-base", "data-osd-images", "data-spec-url"}


def page_urls(body: str) -> list[str]:
    """The URLs in a page's href, src and URL-valued data- attributes (no data: URIs)."""
    return [
        value
        for name, value in URL_ATTR.findall(body)
        if (name in ("href", "src") or name in URL_DATA) and not value.startswith("data:")
    ]


async def text(client: TestClient, path: str, headers: dict[str, str]) -> tuple[Any, str]:
    resp = await client.get(path, headers=headers, allow_redirects=False)
    return resp, await resp.text()


@pytest.mark.parametrize("path", ["/viewer/", "/", f"/viewer/{P}", "/docs", "/viewer/999999"])
async def test_every_page_link_keeps_the_prefix(client: TestClient, path: str) -> None:
    resp, body = await text(client, path, FORWARDED | HTML)
    assert resp.status == (404 if "999999" in path else 200)
    assert resp.content_type == "text/html"
    urls = page_urls(body)
    assert len(urls) >= 3, urls
    # Root-relative: the browser is already on the public scheme and host.
    assert all(u == "/idr" or u.startswith("/idr/") for u in urls), urls
    assert resp.headers["Cache-Control"] == "private, no-cache"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    # Each of them answers once the proxy has taken the prefix off again.
    for url in urls:
        if url == "/idr" or url.endswith("/images/"):
            continue  # data-base itself, OpenSeadragon's image folder
        target = await client.get(url.removeprefix("/idr"), headers=HTML)
        assert target.status == 200, url


async def test_index_links_and_pager(client: TestClient) -> None:
    _, body = await text(client, "/viewer/?limit=1&offset=1", FORWARDED)
    assert f'href="/idr/viewer/{S}"' in body
    assert f'src="/idr/webgateway/render_thumbnail/{S}/"' in body
    assert 'rel="prev" href="/idr/viewer/?offset=0&amp;limit=1"' in body
    assert 'rel="next" href="/idr/viewer/?offset=2&amp;limit=1"' in body
    assert 'href="/idr/docs"' in body
    _, root = await text(client, "/?limit=1", FORWARDED | HTML)
    assert 'rel="next" href="/idr/?offset=1&amp;limit=1"' in root
    assert f'href="/idr/viewer/{P}"' in root


async def test_viewer_page_gives_its_scripts_the_base(client: TestClient) -> None:
    _, body = await text(client, f"/viewer/{Z}", FORWARDED)
    assert 'data-base="/idr"' in body
    assert 'data-osd-images="/idr/viewer/static/vendor/openseadragon/' in body
    assert 'href="/idr/viewer/"' in body
    _, plain = await text(client, f"/viewer/{Z}", {})
    assert 'data-base=""' in plain and 'href="/viewer/"' in plain


def test_scripts_build_every_url_from_the_base() -> None:
    """No server path is spelled out in the scripts: each starts from `data-base` (viewer.js)
    or from a data attribute the page fills (docs.js)."""
    server_path = re.compile(
        r"""(?<!base \+ )["'`]/(?:webgateway|webclient|viewer|iiif|zarr|api|deepzoom|docs)"""
    )
    for name in (*viewer.VIEWER_SCRIPTS, "index.js", "docs.js"):
        source = (viewer.STATIC_DIR / name).read_text()
        assert server_path.search(source) is None, (name, server_path.search(source))
    js = (viewer.STATIC_DIR / "viewer.js").read_text()
    assert 'base + "/webgateway/imgData/"' in js
    assert 'base + "/webgateway/render_image_region/"' in js
    assert 'base + "/iiif/3/"' in js
    assert 'base + "/webgateway/imgData/"' in (viewer.STATIC_DIR / "index.js").read_text()
    for name in ("index.html", "viewer.html", "docs.html", "notfound.html"):
        for url in page_urls((viewer.STATIC_DIR / name).read_text()):
            assert url.startswith("{{"), (name, url)


async def test_docs_and_openapi_servers(client: TestClient) -> None:
    _, body = await text(client, "/docs", FORWARDED)
    assert 'data-spec-url="/idr/openapi.json"' in body
    resp = await client.get("/openapi.json", headers=FORWARDED)
    doc = await resp.json()
    assert doc["servers"] == [{"url": "https://tiles.example.org/idr"}]
    assert resp.headers["Cache-Control"] == "private, no-cache"
    direct = await (await client.get("/openapi.json")).json()
    assert direct["servers"] == [{"url": f"http://127.0.0.1:{client.port}"}]
    assert direct["paths"] == doc["paths"]


@pytest.mark.parametrize(
    ("path", "location"),
    [
        (f"/webgateway/imgData/{S}", f"/idr/webgateway/imgData/{S}/"),
        (
            f"/webgateway/render_image_region/{S}/0/0?tile=0,0,0&c=1%7C0:255$FF0000",
            f"/idr/webgateway/render_image_region/{S}/0/0/?tile=0,0,0&c=1%7C0:255$FF0000",
        ),
        ("/viewer", "/idr/viewer/"),
        (f"/zarr/{S}.zarr", f"/idr/zarr/{S}.zarr/"),
    ],
)
async def test_missing_slash_301_keeps_the_prefix(
    client: TestClient, path: str, location: str
) -> None:
    resp = await client.get(path, headers=FORWARDED, allow_redirects=False)
    assert resp.status == 301
    assert resp.headers["Location"] == location
    assert resp.headers["Cache-Control"] == "private"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    plain = await client.get(path, allow_redirects=False)
    assert plain.headers["Location"] == location.removeprefix("/idr")


async def test_json_documents_name_the_public_base(client: TestClient) -> None:
    base = "https://tiles.example.org/idr"
    resp = await client.get(f"/api/v1/images/{S}", headers=FORWARDED)
    doc = await resp.json()
    assert doc["zarr"]["ngff_0.4"] == f"{base}/zarr/{S}.zarr"
    assert doc["region"]["url"] == f"{base}/api/v1/images/{S}/region"
    assert resp.headers["Cache-Control"] == "private, no-cache"
    resp = await client.get(f"/zarr/{S}.zarr/", headers=FORWARDED)
    assert (await resp.json())["url"] == f"{base}/zarr/{S}.zarr/"
    assert resp.headers["Cache-Control"] == "private, no-cache"
    resp = await client.get("/", headers=FORWARDED)
    doc = await resp.json()
    assert doc["viewer"] == f"{base}/viewer/"
    assert resp.headers["Cache-Control"] == "private, no-cache"
    resp = await client.get(f"/iiif/3/{S}", headers=FORWARDED, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == f"{base}/iiif/3/{S}/info.json"
    assert resp.headers["Cache-Control"] == "private"


async def test_configured_base_is_shared_cacheable(make_client: Callable[..., Any]) -> None:
    """With server.public_base_url the links no longer depend on the request: not private,
    and forwarded headers are ignored."""
    client: TestClient = await make_client(server__public_base_url="https://idr.example/tiles/")
    resp, body = await text(client, f"/viewer/{S}", FORWARDED)
    assert resp.headers["Cache-Control"] == "no-cache"
    assert 'data-base="/tiles"' in body
    assert all(u.startswith("/tiles") for u in page_urls(body))
    resp = await client.get(f"/webgateway/imgData/{S}", headers=FORWARDED, allow_redirects=False)
    assert resp.headers["Location"] == f"/tiles/webgateway/imgData/{S}/"
    assert "Cache-Control" not in resp.headers
    doc = await (await client.get("/openapi.json")).json()
    assert doc["servers"] == [{"url": "https://idr.example/tiles"}]
    assert (await client.get("/")).headers["Cache-Control"] == "no-cache"


@pytest.mark.parametrize("prefix", ['/x"y', "/a b", "/<script>", "/x\\y", "/a?b", "/a#b"])
async def test_odd_prefixes_are_ignored(client: TestClient, prefix: str) -> None:
    resp, body = await text(client, f"/viewer/{S}", {"X-Forwarded-Prefix": prefix})
    assert resp.status == 200
    assert 'data-base=""' in body
    redirect = await client.get(
        "/viewer", headers={"X-Forwarded-Prefix": prefix}, allow_redirects=False
    )
    assert redirect.headers["Location"] == "/viewer/"


@pytest.mark.parametrize(
    ("prefix", "path"),
    [("//evil.example/", "/evil.example"), ("javascript:alert(1)", "/javascript:alert(1)")],
)
async def test_a_prefix_is_always_a_path(client: TestClient, prefix: str, path: str) -> None:
    """Never a link to another host or a script: a prefix always becomes a root-relative path."""
    headers = {"X-Forwarded-Prefix": prefix}
    redirect = await client.get("/viewer", headers=headers, allow_redirects=False)
    assert redirect.headers["Location"] == f"{path}/viewer/"
    _, body = await text(client, f"/viewer/{S}", headers)
    assert all(u.startswith(path) for u in page_urls(body))


async def test_configured_prefix_is_escaped_in_pages(make_client: Callable[..., Any]) -> None:
    client: TestClient = await make_client(server__public_base_url='https://idr.example/a"b<c')
    _, body = await text(client, f"/viewer/{S}", {})
    assert 'data-base="/a&quot;b&lt;c"' in body and '"b<c' not in body
