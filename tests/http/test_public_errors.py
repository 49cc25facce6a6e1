"""Errors without internals: what a client learns about missing, corrupt or unreachable data.

A catalogued image whose data is missing is a plain 404; corrupt data is a 502 and unreachable
storage a 503, each naming the image and the kind of fault. No body carries a path of the
server, a store URL, a password or exception text; the log line of the failure carries them,
with the request id the client got.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from idrserve.app import create_app
from idrserve.settings import load_settings
from tests.http.conftest import S
from tests.leaks import LeakChecker, request_echo, server_paths

MISSING, EMPTY, CORRUPT_CHUNK, CORRUPT_META, GOOD = 1234567, 1234568, 12, 13, 14
REMOTE_EMPTY, UNREACHABLE = 21, 22
SECRET = "hunter2-not-a-real-password"
EXCEPTION = re.compile(r"\b\w+(Error|Exception)\b|Traceback|Errno")

# Every public route that names one image, as a client would first ask for it.
IMAGE_URLS = [
    "/webgateway/imgData/{iid}/",
    "/webgateway/render_image_region/{iid}/0/0/?tile=0,0,0",
    "/webgateway/render_thumbnail/{iid}/",
    "/iiif/3/{iid}/info.json",
    "/iiif/3/{iid}/0,0,64,64/64,/0/default.jpg",
    "/deepzoom/{iid}.dzi",
    "/api/v1/images/{iid}",
    "/api/v1/images/{iid}/region?y=0:64&x=0:64&format=npy",
    "/zarr/{iid}.zarr/.zattrs",
    "/zarr/v3/{iid}.zarr/zarr.json",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def empty_store() -> Any:
    """An HTTP object store that holds nothing: 404 for every key."""

    async def nothing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{key:.*}", nothing)
    server = TestServer(app)
    await server.start_server()
    yield server
    await server.close()


@pytest.fixture
def data(tmp_path: Path, zarr_root: Path, empty_store: TestServer) -> Path:
    """A catalog over: a path that does not exist, an empty directory, an image with a
    garbage chunk, one with a garbage `.zarray`, a good one, and two remote stores (empty;
    nothing listening) whose URLs carry a password."""
    image = zarr_root / "other" / "deeper" / f"{S}.zarr"  # 600×400 uint8, 256² chunks
    for iid in (CORRUPT_CHUNK, CORRUPT_META, GOOD):
        shutil.copytree(image, tmp_path / f"data-{iid}")
    (tmp_path / f"data-{CORRUPT_CHUNK}" / "0" / "0" / "0").write_bytes(b"\x00garbage" * 50)
    (tmp_path / f"data-{CORRUPT_META}" / "0" / ".zarray").write_text("{garbage")
    (tmp_path / "empty.zarr").mkdir()
    empty_url = f"http://idr:{SECRET}@127.0.0.1:{empty_store.port}/{REMOTE_EMPTY}.zarr"
    dead_url = f"http://idr:{SECRET}@127.0.0.1:{free_port()}/{UNREACHABLE}.zarr"
    rows = [
        (MISSING, tmp_path / "gone" / f"{MISSING}.zarr"),
        (EMPTY, tmp_path / "empty.zarr"),
        (CORRUPT_CHUNK, tmp_path / f"data-{CORRUPT_CHUNK}"),
        (CORRUPT_META, tmp_path / f"data-{CORRUPT_META}"),
        (GOOD, tmp_path / f"data-{GOOD}"),
        (REMOTE_EMPTY, empty_url),
        (UNREACHABLE, dead_url),
    ]
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("id,path\n" + "".join(f"{i},{p}\n" for i, p in rows))
    return tmp_path


@pytest.fixture
def make(data: Path, aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    async def factory(**server: Any) -> TestClient:
        settings = {"source": {"catalog": str(data / "catalog.csv")}, "server": server}
        client: TestClient = await aiohttp_client(create_app(load_settings(settings)))
        return client

    return factory


def assert_public(body: dict[str, Any], data: Path, url: str) -> None:
    """No path, URL, password or exception text; the audit's checker agrees."""
    text = json.dumps(body)
    assert str(data) not in text and "/tmp/" not in text, body
    assert "gone" not in text and "data-" not in text and ".zarr" not in text, body
    assert SECRET not in text and "http://" not in text and "127.0.0.1" not in text, body
    assert EXCEPTION.search(body["detail"]) is None, body
    assert LeakChecker(server_paths(data)).leaks(body, request_echo(url)) == [], body


@pytest.mark.parametrize("iid", [MISSING, EMPTY, REMOTE_EMPTY])
@pytest.mark.parametrize("template", IMAGE_URLS)
async def test_catalogued_image_without_data_is_404(
    make: Callable[..., Any], data: Path, iid: int, template: str
) -> None:
    client = await make()
    url = template.format(iid=iid)
    resp = await client.get(url)
    body = await resp.json()
    assert resp.status == 404, (url, body)
    assert body["error"] == "not_found" and body["detail"] == f"image {iid} not found", body
    assert_public(body, data, url)


async def test_webclient_thumbnail_of_missing_data_is_the_placeholder(
    make: Callable[..., Any],
) -> None:
    """As for any unknown image: OMERO.web's grey placeholder, never an error."""
    client = await make()
    resp = await client.get(f"/webclient/render_thumbnail/{MISSING}/")
    assert resp.status == 200 and resp.content_type == "image/jpeg"


@pytest.mark.parametrize(
    "url",
    [
        f"/webgateway/render_image_region/{CORRUPT_CHUNK}/0/0/?tile=0,0,0",
        f"/webgateway/render_image/{CORRUPT_CHUNK}/0/0/",
        f"/iiif/3/{CORRUPT_CHUNK}/0,0,64,64/64,/0/default.jpg",
        f"/api/v1/images/{CORRUPT_CHUNK}/region?y=0:64&x=0:64&format=npy",
    ],
)
async def test_corrupt_chunk_is_502_naming_the_image_only(
    make: Callable[..., Any], data: Path, url: str
) -> None:
    client = await make()
    resp = await client.get(url)
    body = await resp.json()
    assert resp.status == 502, (url, body)
    assert body["error"] == "source_error", body
    assert body["detail"] == f"image {CORRUPT_CHUNK}: a stored chunk could not be decoded"
    assert_public(body, data, url)
    # the rest of the image still reads
    ok = await client.get(f"/webgateway/render_image_region/{CORRUPT_CHUNK}/0/0/?tile=0,1,1")
    assert ok.status == 200


@pytest.mark.parametrize("template", IMAGE_URLS)
async def test_corrupt_metadata_is_502_naming_the_image_only(
    make: Callable[..., Any], data: Path, template: str
) -> None:
    client = await make()
    url = template.format(iid=CORRUPT_META)
    resp = await client.get(url)
    body = await resp.json()
    assert resp.status == 502, (url, body)
    assert body["error"] == "source_error"
    assert body["detail"] == f"image {CORRUPT_META}: bad OME-NGFF metadata", body
    assert_public(body, data, url)


async def test_unreachable_store_is_503_without_its_url(
    make: Callable[..., Any], data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make()
    url = f"/webgateway/imgData/{UNREACHABLE}/"
    with caplog.at_level(logging.INFO, logger="idrserve"):
        resp = await client.get(url)
    body = await resp.json()
    assert resp.status == 503 and resp.headers["Retry-After"], body
    assert body["error"] == "source_unavailable"
    assert body["detail"] == f"image {UNREACHABLE}: storage unreachable", body
    assert_public(body, data, url)
    # the log names the store, without its password
    (record,) = [r for r in caplog.records if getattr(r, "request_id", None)]
    assert "127.0.0.1:" in record.getMessage() and "idr:***@" in record.getMessage()
    assert SECRET not in caplog.text


async def test_the_log_has_what_the_body_leaves_out(
    make: Callable[..., Any], data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One WARNING per 5xx, with the request id the client got, the file and the exception;
    one INFO per 404 that hides a location."""
    client = await make()
    tile = f"/webgateway/render_image_region/{CORRUPT_CHUNK}/0/0/?tile=0,0,0"
    with caplog.at_level(logging.INFO, logger="idrserve.http"):
        resp = await client.get(tile, headers={"X-Request-ID": "leak-check-1"})
        assert resp.status == 502 and (await resp.json())["request_id"] == "leak-check-1"
        resp = await client.get(
            f"/webgateway/imgData/{MISSING}/", headers={"X-Request-ID": "leak-check-2"}
        )
        assert resp.status == 404
        resp = await client.get(
            f"/webgateway/imgData/{CORRUPT_META}/", headers={"X-Request-ID": "leak-check-3"}
        )
        assert resp.status == 502
    logged = {r.request_id: r for r in caplog.records if hasattr(r, "request_id")}
    assert set(logged) == {"leak-check-1", "leak-check-2", "leak-check-3"}

    chunk = logged["leak-check-1"]
    assert chunk.levelno == logging.WARNING
    text = chunk.getMessage()
    assert "request leak-check-1" in text and "-> 502 source_error" in text
    assert str(data / f"data-{CORRUPT_CHUNK}" / "0") in text  # the array's directory
    assert "a stored chunk could not be decoded" in text and "Error" in text  # the exception

    missing = logged["leak-check-2"]
    assert missing.levelno == logging.INFO
    assert str(data / "gone" / f"{MISSING}.zarr") in missing.getMessage()
    assert "FileNotFoundError" in missing.getMessage()

    meta = logged["leak-check-3"]
    assert str(data / f"data-{CORRUPT_META}") in meta.getMessage()
    assert "JSONDecodeError" in meta.getMessage()


async def test_errors_answered_without_an_error_body_are_logged(
    make: Callable[..., Any], data: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """get_thumbnails answers null for a broken image, webclient a placeholder picture:
    the log line is the only trace, so it is written."""
    client = await make()
    with caplog.at_level(logging.INFO, logger="idrserve.http"):
        resp = await client.get(
            f"/webgateway/get_thumbnails/?id={CORRUPT_META}&id={GOOD}",
            headers={"X-Request-ID": "batch-1"},
        )
        assert resp.status == 200
        doc = await resp.json()
        assert doc[str(CORRUPT_META)] is None and doc[str(GOOD)].startswith("data:image/")
        resp = await client.get(
            f"/webclient/render_thumbnail/{MISSING}/", headers={"X-Request-ID": "thumb-1"}
        )
        assert resp.status == 200
    logged = {r.request_id: r.getMessage() for r in caplog.records if hasattr(r, "request_id")}
    assert str(data / f"data-{CORRUPT_META}") in logged["batch-1"]
    assert str(data / "gone") in logged["thumb-1"]


async def test_good_image_next_to_broken_ones_serves(make: Callable[..., Any]) -> None:
    client = await make()
    resp = await client.get(f"/webgateway/render_image_region/{GOOD}/0/0/?tile=0,0,0")
    assert resp.status == 200


async def test_provoked_errors_do_not_leak(make: Callable[..., Any], data: Path) -> None:
    """A sweep of requests that fail in every way the server knows, each body checked."""
    client = await make()
    urls = [t.format(iid=i) for t in IMAGE_URLS for i in (MISSING, CORRUPT_META, 999)]
    urls += [
        f"/webgateway/render_image_region/{CORRUPT_CHUNK}/0/0/?tile=0,0,0",
        f"/webgateway/render_image_region/{GOOD}/0/0/?tile=0,0,0,-1,-1",
        f"/webgateway/render_image_region/{GOOD}/0/0/?tile=9,0,0",
        f"/webgateway/render_image_region/{GOOD}/0/0/?region=0,0,0,0",
        f"/webgateway/render_image_region/{GOOD}/0/0/?tile=0,0,0&c=1|x:y$ZZZ",
        f"/webgateway/render_image_region/{GOOD}/0/0/?tile=0,0,0&q=2",
        f"/webgateway/render_image_region/{GOOD}/9/0/?tile=0,0,0",
        f"/webgateway/get_thumbnails/?id={MISSING}&id={CORRUPT_META}&id=x",
        f"/iiif/3/{GOOD}/full/max/45/default.jpg",
        f"/iiif/3/{GOOD};z=99/info.json",
        f"/api/v1/images/{GOOD}/region?y=5:1",
        f"/zarr/{GOOD}.zarr/../../etc/passwd",
        f"/zarr/{GOOD}.zarr/0/9/9",
        "/viewer/static/..%2F..%2Fsecret.txt",
        "/no/such/route",
    ]
    checker = LeakChecker(server_paths(data))
    statuses = set()
    for url in urls:
        resp = await client.get(url)
        statuses.add(resp.status)
        if resp.status >= 400:
            body = await resp.json()
            assert checker.leaks(body, request_echo(url)) == [], (url, body)
            assert EXCEPTION.search(body["detail"]) is None, (url, body)
    assert {400, 404, 502} <= statuses, statuses
