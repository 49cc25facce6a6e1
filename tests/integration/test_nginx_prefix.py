"""idrserve under a path prefix, behind the shipped nginx configuration.

deploy/nginx/idrserve.conf is rendered as test_nginx.py does, with its `>>> path prefix` block
uncommented exactly as its comment tells an operator: nginx then serves all of idrserve under
/idrserve/, takes the prefix off and sends `X-Forwarded-Prefix`. Every link idrserve writes is
followed from its starting point (the `/` JSON, the index and viewer pages, /docs and the
OpenAPI document, IIIF info.json and manifest, /api/v1 → Zarr, the store index, the
missing-slash 301) and must answer 200 through nginx without leaving the prefix.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO
from urllib.parse import urlsplit

import pytest

from idrserve import demo

from .test_nginx import (
    PREFLIGHT,
    Response,
    free_port,
    get,
    nginx_args,
    nginx_binary,
    render_config,
    send,
    stop,
    wait_until,
)

PREFIX = "/idrserve"
IMAGES = (1002, 1003)
HTML = {"Accept": "text/html"}
URL_ATTR = re.compile(r'\s(href|src|data-base|data-osd-images|data-spec-url)="([^"]*)"')


@dataclass
class PrefixStack:
    port: int
    origin: str  # http://127.0.0.1:<nginx port>, as clients see it


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefixStack]:
    nginx_binary()
    root = tmp_path_factory.mktemp("nginx_prefix")
    data = root / "zarr"
    for image_id, _name, write in demo._IMAGES:
        if image_id in IMAGES:
            write(data / f"{image_id}.zarr")
    idrserve_port, nginx_port = free_port(), free_port()
    conf_dir = root / "nginx"
    render_config(
        conf_dir,
        listen=nginx_port,
        idrserve=idrserve_port,
        omeroweb=free_port(),  # nothing listens: no request here is OMERO.web's
        cache=root / "cache",
        path_prefix=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []

    def spawn(args: list[str], name: str, env: dict[str, str] | None = None) -> None:
        log = open(root / name, "wb")  # noqa: SIM115 - closed in teardown
        logs.append(log)
        procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env))

    try:
        serve = [sys.executable, "-m", "idrserve", "serve", "--zarr-root", str(data)]
        spawn([*serve, "--port", str(idrserve_port)], "idrserve.log", env)
        spawn(nginx_args(conf_dir, "daemon off;"), "nginx.log")
        wait_until(idrserve_port, "/healthz", procs[0], "idrserve")
        wait_until(nginx_port, f"{PREFIX}/healthz", procs[1], "nginx")
        yield PrefixStack(nginx_port, f"http://127.0.0.1:{nginx_port}")
    finally:
        for proc in reversed(procs):
            stop(proc)
        for log in logs:
            log.close()
        for path in (conf_dir / "logs" / "error.log", root / "idrserve.log"):
            if path.exists():
                print(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")


def follow(stack: PrefixStack, url: str, headers: dict[str, str] | None = None) -> Response:
    """GET a link idrserve wrote, through nginx; it must stay under the prefix and answer 200."""
    parts = urlsplit(url)
    if parts.scheme:
        assert f"{parts.scheme}://{parts.netloc}" == stack.origin, url
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    assert path.startswith(f"{PREFIX}/"), f"{url} left {PREFIX}/"
    resp = get(stack.port, path, headers=headers)
    assert resp.status == 200, (url, resp.status, resp.body[:200])
    return resp


def page_links(body: bytes) -> list[str]:
    return [v for _, v in URL_ATTR.findall(body.decode()) if not v.startswith("data:")]


def test_root_json_links(stack: PrefixStack) -> None:
    resp = follow(stack, f"{PREFIX}/", {"Accept": "application/json"})
    doc = json.loads(resp.body)
    assert resp.header("Cache-Control") == "private, no-cache"
    assert {i["id"] for i in doc["images"]} == set(IMAGES)
    viewer = follow(stack, doc["viewer"])
    assert (viewer.header("Content-Type") or "").startswith("text/html")
    for link in doc["links"].values():
        assert json.loads(follow(stack, link).body)["total"] == len(IMAGES)
    for image in doc["images"]:
        assert json.loads(follow(stack, image["imgData"]).body)["id"] == image["id"]
        assert follow(stack, image["thumbnail"]).header("Content-Type") == "image/jpeg"


@pytest.mark.parametrize("path", ["/", "/viewer/", "/viewer/?offset=1&limit=1"])
def test_index_page_links(stack: PrefixStack, path: str) -> None:
    resp = follow(stack, PREFIX + path, HTML)
    assert (resp.header("Content-Type") or "").startswith("text/html")
    links = page_links(resp.body)
    assert f"{PREFIX}/docs" in links
    assert any(link.startswith(f"{PREFIX}/viewer/static/viewer.css?v=") for link in links)
    thumbnails = [link for link in links if "/render_thumbnail/" in link]
    assert thumbnails
    for link in links:
        if link == PREFIX:
            continue  # data-base, from which index.js builds its imgData URLs
        target = follow(stack, link, HTML)
        if "/render_thumbnail/" in link:
            assert target.header("Content-Type") == "image/jpeg"
    assert f'data-base="{PREFIX}"' in resp.body.decode()
    if "offset=1" in path:  # the pager goes back to the first page, under the prefix
        assert f"{PREFIX}/viewer/?offset=0&amp;limit=1" in resp.body.decode()


def test_viewer_page_assets_and_script_urls(stack: PrefixStack) -> None:
    resp = follow(stack, f"{PREFIX}/viewer/1002")
    body = resp.body.decode()
    assert resp.header("Cache-Control") == "private, no-cache"
    assert "default-src 'self'" in (resp.header("Content-Security-Policy") or "")
    base = re.search(r'data-base="([^"]*)"', body)
    assert base is not None and base.group(1) == PREFIX
    links = page_links(body.encode())
    types = {}
    for link in links:
        if link == PREFIX:
            continue
        if link.endswith("/images/"):  # OpenSeadragon's button images: one of them
            link += "home_rest.png"
        types[link.split("?")[0].rsplit(".", 1)[-1]] = follow(stack, link).header("Content-Type")
    assert types["js"] in ("text/javascript", "application/javascript")
    assert (types["css"], types["png"]) == ("text/css", "image/png")
    assert f"{PREFIX}/viewer/" in links  # the header's link back to the index
    # The URLs viewer.js builds from data-base: imgData, then tiles of the stored tile size.
    img_data = json.loads(follow(stack, f"{base.group(1)}/webgateway/imgData/1002/").body)
    width = img_data["tile_size"]["width"]
    tile = f"{base.group(1)}/webgateway/render_image_region/1002/0/0/"
    query = f"?tile=0,0,0,{width},{width}&c=1%7C0:255$FF0000&m=c&q=0.9"
    assert follow(stack, tile + query).header("Content-Type") == "image/jpeg"


def test_docs_and_openapi(stack: PrefixStack) -> None:
    body = follow(stack, f"{PREFIX}/docs").body
    links = page_links(body)
    assert f"{PREFIX}/openapi.json" in links
    for link in links:
        follow(stack, link)
    spec = json.loads(follow(stack, f"{PREFIX}/openapi.json").body)
    server = spec["servers"][0]["url"]
    assert server == stack.origin + PREFIX
    assert "/webgateway/imgData/{iid}/" in spec["paths"]
    follow(stack, f"{server}/webgateway/imgData/1002/")
    follow(stack, f"{server}/healthz")


def test_iiif_info_tile_redirect_and_manifest(stack: PrefixStack) -> None:
    redirect = get(stack.port, f"{PREFIX}/iiif/3/1002")
    assert redirect.status == 303
    info = json.loads(follow(stack, redirect.header("Location") or "").body)
    assert info["id"] == f"{stack.origin}{PREFIX}/iiif/3/1002"
    tile = info["tiles"][0]["width"]
    follow(stack, f"{info['id']}/0,0,{tile},{tile}/{tile // 2},/0/default.jpg")
    follow(stack, f"{info['id']}/full/{info['sizes'][0]['width']},/0/default.png")
    manifest_url = f"{stack.origin}{PREFIX}/iiif/3/1002/manifest.json"
    manifest = json.loads(follow(stack, manifest_url).body)
    assert manifest["id"] == manifest_url
    for canvas in manifest["items"][:2]:
        body = canvas["items"][0]["items"][0]["body"]
        assert follow(stack, body["id"]).header("Content-Type") == "image/jpeg"
        service = json.loads(follow(stack, body["service"][0]["id"] + "/info.json").body)
        assert service["id"] == body["service"][0]["id"]


def test_deepzoom_descriptor_and_tile(stack: PrefixStack) -> None:
    follow(stack, f"{PREFIX}/deepzoom/1002.dzi")
    follow(stack, f"{PREFIX}/deepzoom/1002_files/0/0_0.jpg")


def test_api_image_to_zarr(stack: PrefixStack) -> None:
    doc = json.loads(follow(stack, f"{stack.origin}{PREFIX}/api/v1/images/1002").body)
    attrs = json.loads(follow(stack, doc["zarr"]["ngff_0.4"] + "/.zattrs").body)
    assert attrs["multiscales"][0]["datasets"]
    v3 = json.loads(follow(stack, doc["zarr"]["ngff_0.5"] + "/zarr.json").body)
    assert v3["zarr_format"] == 3
    region = follow(stack, doc["region"]["url"] + "?level=0&t=0&c=0&z=0&y=0:4&x=0:4")
    assert region.header("X-Array-Shape") == "4,4"


@pytest.mark.parametrize("url", ["/zarr/1003.zarr/", "/zarr/v3/1003.zarr/"])
def test_zarr_store_index(stack: PrefixStack, url: str) -> None:
    resp = follow(stack, PREFIX + url)
    index = json.loads(resp.body)
    assert index["url"] == f"{stack.origin}{PREFIX}{url}"
    assert resp.header("Cache-Control") == "private, no-cache"
    for key in index["keys"]:
        follow(stack, index["url"] + key)


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/webgateway/imgData/1002", "/webgateway/imgData/1002/"),
        (
            "/webgateway/render_image_region/1002/0/0?tile=0,0,0&q=0.5",
            "/webgateway/render_image_region/1002/0/0/?tile=0,0,0&q=0.5",
        ),
        ("/webgateway/render_thumbnail/1003/64", "/webgateway/render_thumbnail/1003/64/"),
        ("/viewer", "/viewer/"),
        ("/zarr/1002.zarr", "/zarr/1002.zarr/"),
    ],
)
def test_missing_slash_301_stays_under_the_prefix(
    stack: PrefixStack, path: str, location: str
) -> None:
    redirect = get(stack.port, PREFIX + path)
    assert redirect.status == 301
    assert redirect.header("Location") == PREFIX + location
    assert redirect.header("Cache-Control") == "private"
    follow(stack, redirect.header("Location") or "")
    if path != "/viewer":  # at the root, nginx routes only /viewer/… to idrserve
        # There the same URL still redirects to the root: nothing else changed.
        root = get(stack.port, path)
        assert (root.status, root.header("Location")) == (301, location)


def test_images_are_cached_documents_are_not(stack: PrefixStack) -> None:
    tile = f"{PREFIX}/webgateway/render_image_region/1003/0/0/?tile=0,0,0&q=0.7"
    first, second = get(stack.port, tile), get(stack.port, tile)
    assert (first.header("X-Cache-Status"), second.header("X-Cache-Status")) == ("MISS", "HIT")
    for path in ("/viewer/1003", "/iiif/3/1003/info.json", "/openapi.json"):
        get(stack.port, PREFIX + path)
        again = get(stack.port, PREFIX + path)
        assert again.status == 200 and again.header("X-Cache-Status") != "HIT", path


def test_prefix_is_nginx_s_alone(stack: PrefixStack) -> None:
    """At the root nginx drops a client's X-Forwarded-Prefix, and under the prefix a client
    cannot replace nginx's; /metrics is not published under the prefix either."""
    root = get(stack.port, "/viewer/1002", headers={"X-Forwarded-Prefix": "/elsewhere"})
    assert root.status == 200 and 'data-base=""' in root.body.decode()
    prefixed = get(stack.port, f"{PREFIX}/viewer/1002", {"X-Forwarded-Prefix": "/elsewhere"})
    assert f'data-base="{PREFIX}"' in prefixed.body.decode()
    metrics = get(stack.port, f"{PREFIX}/metrics")
    assert metrics.status == 404
    assert json.loads(metrics.body)["error"] == "not_found"
    bare = get(stack.port, PREFIX)
    assert bare.status == 301 and (bare.header("Location") or "").endswith(f"{PREFIX}/")


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/", 204),
        ("/viewer/", 204),
        ("/docs", 204),
        ("/iiif/2/1002/info.json", 204),
        ("/deepzoom/1002_files/0/0_0.jpg", 204),
        ("/api/v1/images/1002/region", 204),
        ("/zarr/v3/1002.zarr/zarr.json", 204),
        ("/webgateway/render_image_region/1002/0/0/", 200),  # the feature probe
    ],
)
def test_preflight_under_the_prefix(stack: PrefixStack, path: str, status: int) -> None:
    """The prefix location passes OPTIONS through too: idrserve's preflight on every family."""
    resp = send(stack.port, "OPTIONS", PREFIX + path, PREFLIGHT)
    assert resp.status == status, (path, resp.body[:200])
    assert resp.headers.get_all("Access-Control-Allow-Origin") == ["*"]
    assert resp.header("Access-Control-Allow-Methods") == "GET, HEAD, OPTIONS"
    assert (
        resp.header("Access-Control-Allow-Headers") == PREFLIGHT["Access-Control-Request-Headers"]
    )
    assert resp.header("X-Request-ID")
