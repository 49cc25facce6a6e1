"""The paged image listing (`/`, `/viewer/`), the catalog's loading state over HTTP, and a
check that no handler's cost grows with the catalog's size."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from idrserve.app import create_app
from idrserve.catalog.index import CatalogIndex, write_index
from idrserve.settings import load_settings
from tests.sources.test_catalog_runtime import big_csv


def synthetic_index(path: Path, n: int, first: int = 10_000_000) -> Path:
    """An index of `n` ids (`<dir>/<id>.zarr`, nothing on disk) written straight from arrays."""
    ids = np.arange(first, first + n, dtype=np.int64)
    directory = b"/nonexistent/idr0001A"
    index = CatalogIndex(
        ids,
        np.zeros(n, dtype=np.uint32),
        np.zeros(n + 1, dtype=np.uint64),
        b"",
        np.array([0, len(directory)], dtype=np.uint64),
        directory,
        (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint32)),
        {"report": {"images": n}},
    )
    write_index(index, path)
    return path


@pytest.fixture
def catalog_client(
    zarr_root: Path, tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> Callable[..., Any]:
    """A client over the fixture root plus a CSV catalog of 250 more ids."""

    async def factory(**server: Any) -> TestClient:
        (tmp_path / "c.csv").write_text(
            "id,path\n" + "".join(f"{i},x/{i}.zarr\n" for i in range(100, 350))
        )
        settings = load_settings(
            {
                "source": {"zarr_root": str(zarr_root), "catalog": str(tmp_path / "c.csv")},
                "server": server,
            }
        )
        client: TestClient = await aiohttp_client(create_app(settings))
        for _ in range(200):
            if (await client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.02)
        return client

    return factory


async def test_listing_pages_with_links(catalog_client: Callable[..., Any]) -> None:
    client = await catalog_client()
    first = await (await client.get("/")).json()
    assert (first["total"], first["offset"], first["limit"]) == (253, 0, 100)
    ids = [image["id"] for image in first["images"]]
    assert ids == list(range(100, 200))
    assert set(first["links"]) == {"first", "next"}
    nxt = await (
        await client.get(
            first["links"]["next"].split("://", 1)[1].partition("/")[2]
            and "/" + first["links"]["next"].split("/", 3)[3]
        )
    ).json()
    assert [i["id"] for i in nxt["images"]][:2] == [200, 201]
    last = await (await client.get("/?offset=240&limit=50")).json()
    # the root's fixture images (7001-7003) come after the catalogued ids
    assert [i["id"] for i in last["images"]] == [*range(340, 350), 7001, 7002, 7003]
    assert set(last["links"]) == {"first", "prev"}
    beyond = await (await client.get("/?offset=5000")).json()
    assert (beyond["images"], beyond["total"]) == ([], 253)


@pytest.mark.parametrize(
    "query",
    ["offset=-1", "offset=x", "limit=0", "limit=1001", "limit=1e3", "offset=99999999999999999999"],
)
async def test_bad_paging_is_a_400(catalog_client: Callable[..., Any], query: str) -> None:
    client = await catalog_client()
    for path in ("/", "/viewer/"):
        resp = await client.get(f"{path}?{query}")
        body = await resp.json()
        assert resp.status == 400, (path, query)
        assert body["error"] == "bad_request" and body["param"] in ("offset", "limit")


async def test_links_follow_the_public_base(catalog_client: Callable[..., Any]) -> None:
    client = await catalog_client()
    doc = await (
        await client.get(
            "/?limit=10",
            headers={
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "idr.example",
                "X-Forwarded-Prefix": "/tiles",
            },
        )
    ).json()
    assert doc["links"]["next"] == "https://idr.example/tiles/?offset=10&limit=10"
    assert doc["images"][0]["imgData"] == "https://idr.example/tiles/webgateway/imgData/100/"
    fixed = await catalog_client(public_base_url="https://tiles.example.org/idr")
    doc = await (await fixed.get("/?limit=10")).json()
    assert doc["viewer"] == "https://tiles.example.org/idr/viewer/"


async def test_viewer_index_pages(catalog_client: Callable[..., Any]) -> None:
    client = await catalog_client()
    page = await (await client.get("/viewer/?offset=100&limit=100")).text()
    assert "253 image(s) served; images 101–200 of 253" in page
    assert page.count('<li data-image-id="') == page.count('"><a href="/viewer/') == 100
    assert 'rel="prev" href="/viewer/?offset=0&amp;limit=100"' in page
    assert 'rel="next" href="/viewer/?offset=200&amp;limit=100"' in page
    browser = await (await client.get("/?limit=5", headers={"Accept": "text/html"})).text()
    assert "images 1–5 of 253" in browser and 'href="/?offset=5&amp;limit=5"' in browser


async def test_loading_catalog_over_http(
    zarr_root: Path, tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    """While a large catalog is indexed: alive, not ready, images 503 + Retry-After (not 504)."""
    csv_path = big_csv(tmp_path / "big.csv", 150_000)
    settings = load_settings(
        {"source": {"catalog": str(csv_path), "catalog_index_dir": str(tmp_path / "idx")}}
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    body = await ready.json()
    assert ready.status == 503 and body["status"] == "loading"
    assert ready.headers["Retry-After"] and "progress" in body["catalog"]
    urls = [f"/webgateway/imgData/{1_000_000 + i}/" for i in range(50)] + [
        "/",
        "/iiif/3/1000001/info.json",
    ]
    answers = await asyncio.gather(*(client.get(u) for u in urls))
    for resp in answers:
        doc = await resp.json()
        assert resp.status == 503, doc
        assert doc["error"] == "catalog_loading" and int(resp.headers["Retry-After"]) > 0
    for _ in range(600):
        if (await client.get("/readyz")).status == 200:
            break
        await asyncio.sleep(0.1)
    doc = await (await client.get("/readyz")).json()
    assert doc["dependencies"]["catalog"]["images"] == 150_000
    assert doc["dependencies"]["catalog"]["state"] == "ready"
    # catalogued, but no data there: a 404 naming the image, not the path
    missing = await client.get("/webgateway/imgData/1000001/")
    assert missing.status == 404
    assert (await missing.json())["detail"] == "image 1000001 not found"
    listing = await (await client.get("/?offset=149990")).json()
    assert listing["total"] == 150_000 and len(listing["images"]) == 10
    await client.get("/webgateway/imgData/5/")  # unknown
    metrics = await (await client.get("/metrics")).text()
    assert "idrserve_catalog_images 150000.0" in metrics
    assert 'idrserve_catalog_state{state="ready"} 1.0' in metrics
    unknown = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('idrserve_catalog_lookups_total{result="unknown"}')
    ]
    assert unknown and unknown[0] >= 1  # the router and then the source look it up
    assert "idrserve_catalog_lookup_duration_seconds_bucket" in metrics


@pytest.fixture(scope="module")
def sized_indexes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sized")
    return {
        "small": synthetic_index(root / "small.idrcat", 1_000),
        "large": synthetic_index(root / "large.idrcat", 2_000_000),
    }


async def _median_ms(client: TestClient, url: str, headers: dict[str, str], n: int = 15) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = await client.get(url, headers=headers)
        await resp.read()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


async def test_no_handler_cost_grows_with_the_catalog(
    sized_indexes: dict[str, Path], aiohttp_client: Callable[..., Any]
) -> None:
    """2 000× more images may not make any request slower (an O(n) step on 2 M ids costs
    tens of milliseconds; the requests here cost about one)."""
    html = {"Accept": "text/html"}
    requests = [
        ("/", {}),
        ("/?offset=900&limit=100", {}),
        ("/", html),
        ("/viewer/?offset=500&limit=100", {}),
        ("/readyz", {}),
        ("/webgateway/imgData/5/", {}),  # unknown id
        ("/webgateway/imgData/10000500/", {}),  # catalogued, data missing
        ("/webgateway/render_thumbnail/5/", {}),
        ("/iiif/3/5/info.json", {}),
        ("/api/v1/images/5", {}),
        ("/zarr/5.zarr/.zattrs", {}),
    ]
    timings: dict[str, dict[str, float]] = {}
    for size, path in sized_indexes.items():
        settings = load_settings({"source": {"catalog": str(path)}})
        client: TestClient = await aiohttp_client(create_app(settings))
        for _ in range(100):
            if (await client.get("/readyz")).status == 200:
                break
            await asyncio.sleep(0.05)
        for url, headers in requests:
            await client.get(url, headers=headers)  # warm
        timings[size] = {
            url + str(bool(headers)): await _median_ms(client, url, headers)
            for url, headers in requests
        }
    slow = {
        url: (timings["small"][url], big)
        for url, big in timings["large"].items()
        if big > 3 * timings["small"][url] + 3.0
    }
    assert not slow, slow
