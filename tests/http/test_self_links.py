"""Every link a response makes to this server goes through `http/urls.py`.

Behind a proxy that serves idrserve under `/idr/` and says so with `X-Forwarded-Prefix`, the
pages, the scripts' URLs, the JSON documents and the missing-slash 301 must all stay under
`/idr/`; a response built from forwarded headers must be `private` (nginx keys its cache on
the path only).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .conftest import S

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
