"""`/api/v1/images/{id}` and `/region`: metadata, exact windows in three formats, limits, errors."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idrserve.app import create_app
from idrserve.errors import BadRequest, TooLarge
from idrserve.http.keys import DEPS
from idrserve.model import ImageMeta, LevelMeta, Selection
from idrserve.raw import AXES, parse_region_query, resolve_region
from idrserve.settings import load_settings
from tests.http.demo_live import DEMO_AXES, as_tczyx, raw_get, serve_in_thread, stored
from tests.integration.live_server import demo_images


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_images(tmp_path_factory)[0]


@pytest.fixture
def make_client(root: Path, aiohttp_client: Callable[..., Any]) -> Callable[..., Any]:
    async def factory(**limits: Any) -> TestClient:
        app = create_app(load_settings({"source": {"zarr_root": str(root)}, "limits": limits}))
        client: TestClient = await aiohttp_client(app)
        return client

    return factory


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> TestClient:
    result: TestClient = await make_client()
    return result


def source5d(root: Path, iid: int, level: int) -> np.ndarray:
    return as_tczyx(stored(root, iid, level), DEMO_AXES[iid])


@pytest.mark.parametrize("iid", sorted(DEMO_AXES))
async def test_metadata_describes_the_stored_levels(
    client: TestClient, root: Path, iid: int
) -> None:
    resp = await client.get(f"/api/v1/images/{iid}")
    assert resp.status == 200
    info = await resp.json()
    assert info["id"] == iid
    assert [a["name"] for a in info["axes"]] == list(AXES)
    for lv in info["levels"]:
        expected = source5d(root, iid, lv["level"])
        assert tuple(lv["shape"]) == expected.shape
        assert info["dtype"] == expected.dtype.name
        assert all(c >= 1 for c in lv["chunks"]) and len(lv["scale"]) == 5
    assert len(info["channels"]) == info["levels"][0]["shape"][1]
    assert info["zarr"]["ngff_0.4"].endswith(f"/zarr/{iid}.zarr")
    assert info["region"]["max_bytes"] == 256 * 1024 * 1024


async def test_metadata_of_1001(client: TestClient) -> None:
    info = await (await client.get("/api/v1/images/1001")).json()
    assert [ch["label"] for ch in info["channels"]] == ["DAPI", "GFP", "mCherry"]
    assert info["channels"][1]["window"] == {"min": 0, "max": 65535, "start": 200, "end": 1900}
    assert info["physical_size"]["x"] == pytest.approx(0.325)
    assert info["levels"][2]["chunks"] == [1, 1, 1, 256, 256]
    assert info["levels"][2]["scale"][3:] == [pytest.approx(1.3), pytest.approx(1.3)]
    assert info["zarr"]["layout"] == "stored" and info["zarr"]["axes"] == ["c", "y", "x"]
    assert info["source_format"] == "OME-NGFF 0.4, Zarr v2"


async def test_source_format_names_the_ngff_version(client: TestClient) -> None:
    info = await (await client.get("/api/v1/images/1005")).json()
    assert info["source_format"] == "OME-NGFF 0.5, Zarr v3"


S = slice(None)
REGIONS = [
    (1001, "c=1&y=1000:1300&x=3900:4096", (S, 1, S, slice(1000, 1300), slice(3900, 4096))),
    (1001, "level=3&t=0&z=0", (0, S, 0, S, S)),
    (
        1002,
        "level=1&c=0:2&z=3:7&y=:50&x=200:",
        (S, slice(0, 2), slice(3, 7), slice(50), slice(200, None)),
    ),
    (1003, "y=399&x=599", (S, S, S, 399, 599)),
    (1003, "t=0&c=0&z=0&y=7&x=9", (0, 0, 0, 7, 9)),
    (1004, "c=1&y=10:11", (S, 1, S, slice(10, 11), S)),
    (1005, "level=2&c=0", (S, 0)),
    (
        1006,
        "t=1:3&c=1&z=0:2&y=100:&x=:7",
        (slice(1, 3), 1, slice(0, 2), slice(100, None), slice(7)),
    ),
    (1006, "", ()),
]


def expected_region(root: Path, iid: int, query: str, index: tuple[Any, ...]) -> np.ndarray:
    level = int(m.group(1)) if (m := re.search(r"level=(\d+)", query)) else 0
    return np.asarray(source5d(root, iid, level)[index])


@pytest.mark.parametrize(("iid", "query", "index"), REGIONS)
@pytest.mark.parametrize("fmt", ["npy", "raw", "tiff"])
async def test_region_equals_the_source_slice(
    client: TestClient, root: Path, iid: int, query: str, index: tuple[Any, ...], fmt: str
) -> None:
    expected = expected_region(root, iid, query, index)
    if fmt == "tiff" and expected.ndim < 2:
        return  # refused with a 400, tested below
    resp = await client.get(f"/api/v1/images/{iid}/region?{query}&format={fmt}")
    assert resp.status == 200, await resp.text()
    body = await resp.read()
    shape = tuple(int(n) for n in resp.headers["X-Array-Shape"].split(",") if n)
    assert shape == expected.shape
    assert resp.headers["X-Array-Dtype"] == expected.dtype.newbyteorder("<").str
    if fmt == "npy":
        assert resp.content_type == "application/x-npy"
        got = np.load(io.BytesIO(body))
    elif fmt == "raw":
        got = np.frombuffer(body, resp.headers["X-Array-Dtype"]).reshape(shape)
    else:
        assert resp.content_type == "image/tiff"
        got = tifffile.imread(io.BytesIO(body))
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


async def test_only_the_window_is_read(client: TestClient) -> None:
    """The source is asked for exactly the window, once per timepoint, never a whole plane."""
    deps = client.app[DEPS]
    seen: list[Selection] = []
    read = deps.source.read

    async def spy(image_id: int, sel: Selection) -> np.ndarray:
        seen.append(sel)
        return await read(image_id, sel)

    deps.source.read = spy  # type: ignore[method-assign]
    resp = await client.get("/api/v1/images/1006/region?t=0:2&c=1&z=1:3&y=5:9&x=7:20")
    assert resp.status == 200
    assert [(s.t, s.z_start, s.z_stop, s.channels) for s in seen] == [
        (0, 1, 3, (1,)),
        (1, 1, 3, (1,)),
    ]
    assert {(s.box.x, s.box.y, s.box.w, s.box.h) for s in seen} == {(7, 5, 13, 4)}


BAD = [
    ("x=-1:5", "x"),
    ("x=5:3", "x"),
    ("x=5:5", "x"),
    ("x=0:4097", "x"),
    ("y=4096", "y"),
    ("c=3", "c"),
    ("t=1", "t"),
    ("z=0:2", "z"),
    ("level=6", "level"),
    ("level=-1", "level"),
    ("x=1:2:3", "x"),
    ("x=a", "x"),
    ("x=1e3", "x"),
    ("x=99999999999", "x"),
    ("format=png", "format"),
    ("t=0&c=0&z=0&y=0&format=tiff", "format"),
    ("q=1", "q"),
    ("x=1&x=2", "x"),
]


@pytest.mark.parametrize(("query", "param"), BAD)
async def test_bad_queries_are_400_json(client: TestClient, query: str, param: str) -> None:
    resp = await client.get(f"/api/v1/images/1001/region?{query}")
    assert resp.status == 400, query
    body = await resp.json()
    assert body["error"] == "bad_request" and body["param"] == param and body["detail"]


async def test_unknown_image_is_404_json(client: TestClient) -> None:
    for path in ("/api/v1/images/424242", "/api/v1/images/424242/region"):
        resp = await client.get(path)
        assert resp.status == 404 and (await resp.json())["error"] == "not_found"


async def test_too_large_says_the_limit_and_how_to_page(
    make_client: Callable[..., Any], root: Path
) -> None:
    client = await make_client(max_api_bytes=1_000_000)
    resp = await client.get("/api/v1/images/1001/region?c=0&y=0:1024&x=0:1024")
    assert resp.status == 413
    body = await resp.json()
    assert body["error"] == "too_large"
    assert "1000000" in body["detail"] and "limits.max_api_bytes" in body["detail"]
    rows = int(re.search(r"at most (\d+) rows", body["detail"]).group(1))  # type: ignore[union-attr]
    assert rows == 1_000_000 // (1024 * 2)
    pages = []
    for y0 in range(0, 1024, rows):
        page = await client.get(
            f"/api/v1/images/1001/region?c=0&y={y0}:{min(1024, y0 + rows)}&x=0:1024"
        )
        assert page.status == 200
        pages.append(np.load(io.BytesIO(await page.read())))
    plane = np.concatenate(pages, axis=-2)
    np.testing.assert_array_equal(plane[0, 0], stored(root, 1001, 0)[0, :1024, :1024])


async def test_etag_cache_and_head(client: TestClient) -> None:
    url = "/api/v1/images/1002/region?c=1&z=4&y=0:64&x=0:64"
    first = await client.get(url)
    assert first.status == 200 and first.headers["X-Cache"] == "miss"
    second = await client.get(url.replace("c=1&z=4", "z=4&c=1"))  # same window, same entry
    assert second.headers["X-Cache"] == "memory"
    assert second.headers["ETag"] == first.headers["ETag"]
    assert await second.read() == await first.read()
    again = await client.get(url, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status == 304
    head = await client.head(url)
    assert head.status == 200 and int(head.headers["Content-Length"]) == len(await first.read())


# ---- properties -------------------------------------------------------------------------------

META = ImageMeta(
    9,
    "m",
    "uint16",
    300,
    200,
    4,
    3,
    2,
    (LevelMeta(300, 200, 256, 256), LevelMeta(150, 100, 256, 256)),
    channels=(),
)
SIZES = {0: (2, 3, 4, 200, 300), 1: (2, 3, 4, 100, 150)}
VALUE = st.one_of(
    st.text(st.sampled_from(list("0123456789:-+ e.x")), max_size=12),
    st.integers(-3, 400).map(str),
    st.tuples(st.integers(0, 320), st.integers(0, 320)).map(lambda p: f"{p[0]}:{p[1]}"),
)


@given(st.dictionaries(st.sampled_from([*AXES, "level", "format", "zz"]), VALUE, max_size=7))
def test_parser_accepts_or_refuses_cleanly(query: dict[str, str]) -> None:
    """Any query: a clear 400/413 or a request whose output shape is numpy's slice shape."""
    try:
        req = resolve_region(parse_region_query(query), META, 10_000_000)
    except (BadRequest, TooLarge):
        return
    sizes = SIZES[req.level]
    expected = []
    for axis, size in zip(AXES, sizes, strict=True):
        value = query.get(axis, "")
        probe = np.empty(size, dtype=np.uint8)
        if value == "":
            expected.append(size)
        elif ":" in value:
            a, _, b = value.partition(":")
            expected.append(len(probe[slice(int(a) if a else None, int(b) if b else None)]))
        else:
            assert 0 <= int(value) < size
    assert req.out_shape == tuple(expected)


@pytest.fixture(scope="module")
def live(root: Path) -> Iterator[tuple[str, int]]:
    with serve_in_thread(root) as addr:
        yield addr


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(st.sampled_from(list("txyzcl=&:0123456789-%.evformatpyi")), max_size=40))
def test_region_urls_never_5xx(live: tuple[str, int], query: str) -> None:
    status, content_type, body = raw_get(live, f"/api/v1/images/1003/region?{query}")
    assert status < 500, (query, status, body[:300])
    if status >= 400:
        assert content_type.startswith("application/json")
        assert json.loads(body)["detail"]
