"""OMERO-backed images, end to end against the stand-in OMERO (a real Ice server).

Every test here crosses real process boundaries: the server (this process, aiohttp test
server) → HTTP → the OMERO reader worker (Python 3.10, omero-py's `omero.client`) → Ice over
TCP, through the Glacier2 router interface → the stand-in, which serves the demo images'
pixels big-endian with OMERO's level numbering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from idrserve.app import create_app
from idrserve.catalog import Catalog
from idrserve.http.keys import DEPS
from idrserve.model import Box, ColorModel, Family, LevelMeta, Selection
from idrserve.settings import OmeroSettings, SourceSettings, load_settings
from idrserve.sources.base import resolve_source
from idrserve.sources.ngff import palette
from idrserve.sources.omero import OmeroSource, worker_command, worker_env
from idrserve.sources.routing import RoutingSource
from idrserve.sources.zarr import ZarrSource
from tests.omero.conftest import (
    MIRRORED,
    NGFF_ID,
    NO_RDEF_ID,
    PYRAMID_ID,
    StandIn,
    Worker,
    omero_id,
    start_worker,
    stop,
)
from tests.sources.conftest import free_port

RI = "/webgateway/render_image_region"
REPO_ROOT = Path(__file__).resolve().parents[2]

MakeClient = Callable[..., Any]


@pytest.fixture
async def zarr_source(zarr_dir: Path) -> AsyncIterator[ZarrSource]:
    settings = SourceSettings(zarr_root=str(zarr_dir))
    source = ZarrSource(settings, Catalog(settings))
    yield source
    await source.aclose()


@pytest.fixture
async def omero_source(worker: Worker) -> AsyncIterator[OmeroSource]:
    source = OmeroSource(OmeroSettings(worker_url=worker.url))
    yield source
    await source.aclose()


@pytest.fixture
def make_client(zarr_dir: Path, aiohttp_client: Callable[..., Any]) -> MakeClient:
    async def factory(**omero: Any) -> TestClient:
        groups: dict[str, Any] = {"source": {"zarr_root": str(zarr_dir)}, "omero": omero}
        client: TestClient = await aiohttp_client(create_app(load_settings(groups)))
        return client

    return factory


async def get(client: TestClient, path: str, status: int = 200) -> bytes:
    async with client.get(path) as resp:
        body = await resp.read()
        assert resp.status == status, (path, resp.status, body[:300])
        return body


# ---- metadata -------------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_id", MIRRORED)
async def test_metadata_maps_like_the_zarr_image(
    zarr_id: int, zarr_source: ZarrSource, omero_source: OmeroSource
) -> None:
    """OMERO facts (through Ice objects and JSON) give the very ImageMeta Zarr gives."""
    want = await zarr_source.meta(zarr_id)
    got = await omero_source.meta(omero_id(zarr_id))
    assert got.image_id == omero_id(zarr_id)
    assert got.data_version.startswith("omero-")
    assert got.source_format == "OMERO"
    assert got.pixel_size == pytest.approx(want.pixel_size)
    # OMERO reports a level's tile clipped to the level (the tile a read gets); Zarr reports
    # its chunk shape, which may be larger than a small level.
    assert _effective(got.levels) == _effective(want.levels)
    same = dataclasses.replace(
        got,
        image_id=want.image_id,
        data_version=want.data_version,
        pixel_size=want.pixel_size,
        levels=want.levels,
        source_format=want.source_format,
        # The reader worker sends sizes in µm only, not the unit OMERO stored them in
        # (docs/iviewer.md: image_data's unit fields then say µm).
        stored_pixel_size=want.stored_pixel_size,
    )
    assert same == want


def _effective(levels: tuple[LevelMeta, ...]) -> list[tuple[int, int, int, int]]:
    return [
        (lv.size_x, lv.size_y, min(lv.tile_x, lv.size_x), min(lv.tile_y, lv.size_y))
        for lv in levels
    ]


async def test_metadata_defaults_without_saved_settings(omero_source: OmeroSource) -> None:
    """No rendering settings for the owner: the rendering engine's defaults.

    Which ones: docs/rendering.md#default-settings-without-an-omero-block.
    """
    meta = await omero_source.meta(NO_RDEF_ID)
    assert (meta.dtype, meta.size_x, meta.size_y, meta.size_z, meta.size_c) == (
        "uint8", 70, 50, 5, 4
    )  # fmt: skip
    assert meta.default_model is ColorModel.COLOR  # 1 < sizeC < 8
    assert (meta.default_z, meta.default_t) == (2, 0)  # sizeZ // 2
    assert [c.label for c in meta.channels] == ["461", "1", "GFP", "488.5"]
    assert [c.active for c in meta.channels] == [True, True, True, False]
    assert [(c.start, c.end) for c in meta.channels] == [
        (3, 200), (0, 90), (1, 254), (0, 255)
    ]  # fmt: skip
    assert [(c.window_min, c.window_max) for c in meta.channels][3] == (0, 255)
    assert meta.channels[0].color == (0, 0, 255, 255)
    assert [c.color for c in meta.channels[1:]] == list(palette(4)[1:])
    assert all(c.family is Family.LINEAR and not c.inverted for c in meta.channels)
    assert meta.channels[0].emission_wave == 461
    assert meta.pixel_size == pytest.approx((0.65, 0.65, None))
    assert [(lv.size_x, lv.size_y, lv.tile_x, lv.tile_y) for lv in meta.levels] == [
        (70, 50, 64, 50)
    ]


async def test_metadata_cached_with_ttl(worker: Worker) -> None:
    cached = OmeroSource(OmeroSettings(worker_url=worker.url))
    uncached = OmeroSource(OmeroSettings(worker_url=worker.url, metadata_ttl_s=0))
    try:
        first = await asyncio.gather(*(cached.meta(omero_id(1003)) for _ in range(5)))
        await cached.meta(omero_id(1003))
        assert cached.stats["meta_calls"] == 1  # single flight, then the cache
        assert all(m == first[0] for m in first)
        assert cached.fresh_data_version(omero_id(1003)) == first[0].data_version
        await uncached.meta(omero_id(1003))
        await uncached.meta(omero_id(1003))
        assert uncached.stats["meta_calls"] == 2
        assert uncached.fresh_data_version(omero_id(1003)) is None
    finally:
        await cached.aclose()
        await uncached.aclose()


async def test_worker_loads_metadata_once_for_concurrent_requests(
    omero_python: Path, standin: StandIn
) -> None:
    """Several server processes asking the shared worker at once: one OMERO load."""
    fresh = start_worker(omero_python, standin.port)
    try:
        standin.post("/latency?ms=30")
        async with aiohttp.ClientSession() as session:

            async def facts() -> dict[str, Any]:
                async with session.get(f"{fresh.url}/image/{omero_id(1006)}") as resp:
                    assert resp.status == 200
                    doc: dict[str, Any] = await resp.json()
                    return doc

            docs = await asyncio.gather(*(facts() for _ in range(6)))
        assert all(d == docs[0] for d in docs)
        assert fresh.stats()["meta_loads"] == 1
    finally:
        standin.post("/latency?ms=0")
        stop(fresh.proc)


async def test_unknown_image_is_404(
    omero_source: OmeroSource, make_client: MakeClient, worker: Worker
) -> None:
    from idrserve import errors

    with pytest.raises(errors.NotFound):
        await omero_source.meta(9999)
    client = await make_client(worker_url=worker.url)
    body = json.loads(await get(client, "/webgateway/imgData/9999/", 404))
    assert body["error"] == "not_found"


# ---- pixels ---------------------------------------------------------------------------------

READS = [
    # (zarr id, level, t, z range, channels, box)
    (1003, 0, 0, (0, 1), (0,), Box(0, 0, 600, 400)),  # whole plane, 3×2 tiles, edge tiles
    (1003, 0, 0, (0, 1), (0,), Box(500, 300, 100, 100)),  # bottom-right edge tile only
    (1002, 0, 0, (2, 7), (1, 0), Box(100, 37, 300, 290)),  # z range, channels reordered
    (1002, 2, 0, (0, 9), (0,), Box(0, 0, 128, 128)),  # smallest level
    (1004, 1, 0, (0, 1), (0, 1), Box(250, 120, 262, 264)),  # float32, level 1 edge
    (1006, 1, 2, (0, 3), (1,), Box(5, 7, 100, 80)),  # t = 2
    (PYRAMID_ID, 0, 0, (0, 1), (0, 1), Box(1700, 1300, 300, 200)),
    (PYRAMID_ID, 3, 0, (0, 1), (1,), Box(0, 0, 250, 187)),
]


@pytest.mark.parametrize(("zarr_id", "level", "t", "zs", "channels", "box"), READS)
async def test_raw_reads_equal_zarr(
    zarr_source: ZarrSource,
    omero_source: OmeroSource,
    zarr_id: int,
    level: int,
    t: int,
    zs: tuple[int, int],
    channels: tuple[int, ...],
    box: Box,
) -> None:
    sel = Selection(level, t, zs[0], zs[1], channels, box)
    want = await zarr_source.read(zarr_id, sel)
    got = await omero_source.read(omero_id(zarr_id), sel)
    assert got.dtype == want.dtype and got.dtype.isnative
    assert got.shape == want.shape == (len(channels), zs[1] - zs[0], box.h, box.w)
    np.testing.assert_array_equal(got, want)


async def test_level_numbering_and_byte_order_on_the_wire(
    worker: Worker, zarr_source: ZarrSource
) -> None:
    """The worker's level 0 is full resolution; OMERO's is the smallest. Bytes are big-endian."""
    meta = await zarr_source.meta(PYRAMID_ID)
    async with aiohttp.ClientSession() as session:
        for level, lm in enumerate(meta.levels):
            url = f"{worker.url}/tile/{omero_id(PYRAMID_ID)}/0/1/0?level={level}&x=0&y=0&w=32&h=8"
            async with session.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["X-Pixels-Type"] == "uint16"
                raw = await resp.read()
            want = await zarr_source.read(
                PYRAMID_ID, Selection(level, 0, 0, 1, (1,), Box(0, 0, 32, 8))
            )
            np.testing.assert_array_equal(np.frombuffer(raw, ">u2").reshape(8, 32), want[0, 0])
            assert np.frombuffer(raw, "<u2").reshape(8, 32).tolist() != want[0, 0].tolist()
            del lm
        async with session.get(
            f"{worker.url}/tile/{omero_id(PYRAMID_ID)}/0/0/0?level=4&x=0&y=0&w=8&h=8"
        ) as resp:
            assert resp.status == 400
            assert "level 4" in (await resp.json())["detail"]


def _tile_urls(zarr_id: int) -> list[str]:
    common = {
        1002: [
            "4/0/?tile=0,1,1,256,256",
            "8/0/?region=100,200,300,250&c=1|10:3000$FF0000,2|0:800$00FF00",
        ],
        1003: ["0/0/?tile=0,2,1,256,256&format=png", "0/0/?region=550,350,50,50&m=g"],
        1004: ["0/0/?tile=1,1,1,256,256", "0/0/?tile=0,3,2,256,256&format=png"],
        1006: ["1/2/?tile=0,0,0&c=-1|0:1000$FFFFFF,2|100:900$00FF00"],
        PYRAMID_ID: [
            "0/0/?tile=1,3,2,256,256",  # 1000×750 level: 232×238 edge tile
            "0/0/?tile=3,0,0,256,256&format=png",  # 250×187, the whole smallest level
            "0/0/?tile=0,7,5,256,256&q=0.5",  # 2000×1500: 208×220 corner tile
        ],
    }
    return [f"{RI}/{{id}}/{path}" for path in common[zarr_id]]


@pytest.mark.parametrize("zarr_id", MIRRORED)
async def test_rendered_bytes_identical_from_omero_and_zarr(
    make_client: MakeClient, worker: Worker, zarr_id: int
) -> None:
    """Same URLs, same bytes: where pixels came from never shows (tiles, regions, edges)."""
    client = await make_client(worker_url=worker.url)
    oid = omero_id(zarr_id)
    urls = [*_tile_urls(zarr_id), "/webgateway/render_thumbnail/{id}/64/"]
    if zarr_id == 1002:
        urls.append("/webgateway/render_image/{id}/4/0/?p=intmax|2:6&format=png")
    for url in urls:
        from_zarr = await get(client, url.format(id=zarr_id))
        from_omero = await get(client, url.format(id=oid))
        assert from_omero == from_zarr, url
    z_data = json.loads(await get(client, f"/webgateway/imgData/{zarr_id}/"))
    o_data = json.loads(await get(client, f"/webgateway/imgData/{oid}/"))
    for doc in (z_data, o_data):
        doc.pop("id")
        doc["meta"].pop("imageId")
    assert o_data == z_data


async def test_edge_and_outside_tiles(make_client: MakeClient, worker: Worker) -> None:
    import io

    from PIL import Image

    client = await make_client(worker_url=worker.url)
    oid = omero_id(PYRAMID_ID)
    body = await get(client, f"{RI}/{oid}/0/0/?tile=1,3,2,256,256&format=png")
    assert Image.open(io.BytesIO(body)).size == (232, 238)
    await get(client, f"{RI}/{oid}/0/0/?tile=1,4,0,256,256", 404)  # x = 1024 ≥ 1000
    await get(client, f"{RI}/{oid}/0/0/?tile=4,0,0,256,256", 400)  # only 4 levels
    async with client.get("/readyz") as resp:  # a 404 tile is no outage: OMERO is fine
        ready = await resp.json()
    assert ready["dependencies"]["source"]["status"] == "ok", ready
    assert ready["dependencies"]["source"]["worker"]["tile_calls"] >= 1


async def test_routing_follows_the_catalog(worker: Worker, zarr_dir: Path) -> None:
    settings = SourceSettings(zarr_root=str(zarr_dir))
    catalog = Catalog(settings)
    zarr = ZarrSource(settings, catalog)
    omero = OmeroSource(OmeroSettings(worker_url=worker.url))
    router = RoutingSource(catalog, zarr, omero)
    try:
        assert await resolve_source(router, 1003) is zarr
        assert await resolve_source(router, omero_id(1003)) is omero
        assert router.fresh_data_version(omero_id(1003)) is None  # not loaded yet
        meta = await router.meta(omero_id(1003))
        assert router.fresh_data_version(omero_id(1003)) == meta.data_version
        assert (
            router.sync_reader(omero_id(1003), Selection(0, 0, 0, 1, (0,), Box(0, 0, 8, 8))) is None
        )
    finally:
        await router.aclose()


async def test_worker_over_a_unix_socket(
    omero_python: Path, standin: StandIn, tmp_path: Path
) -> None:
    sock = tmp_path / "worker.sock"
    w = start_worker(omero_python, standin.port, listen=f"unix:{sock}")
    source = OmeroSource(OmeroSettings(worker_url=w.url))
    try:
        assert w.url == f"unix:{sock}"
        meta = await source.meta(omero_id(1003))
        data = await source.read(omero_id(1003), Selection(0, 0, 0, 1, (0,), Box(590, 390, 10, 10)))
        assert meta.size_x == 600 and data.shape == (1, 1, 10, 10)
    finally:
        await source.aclose()
        stop(w.proc)


async def test_ngff_backed_omero_image_is_read_from_its_zarr(
    standin: StandIn, worker: Worker, make_client: MakeClient
) -> None:
    """OMERO's ExternalInfo names the OME-Zarr: one metadata call, then no OMERO pixel call."""
    direct = await make_client(worker_url=worker.url)
    via_omero = await make_client(worker_url=worker.url, ngff_direct=False)
    url = f"{RI}/{{id}}/4/0/?tile=0,1,0,256,256"
    before = standin.stats()["getTile"]
    body = await get(direct, url.format(id=NGFF_ID))
    assert body == await get(direct, url.format(id=1002))
    assert standin.stats()["getTile"] == before  # pixels came from the Zarr
    source = direct.app[DEPS].source
    assert isinstance(source, RoutingSource)
    assert isinstance(await resolve_source(source, NGFF_ID), ZarrSource)
    assert await resolve_source(source, NGFF_ID) is not source.zarr
    # Switched off, the same image is read through OMERO, with the same bytes.
    assert await get(via_omero, url.format(id=NGFF_ID)) == body
    assert standin.stats()["getTile"] > before


def test_ngff_locations() -> None:
    from idrserve.sources.omero import ngff_location

    def facts(lsid: str, kind: str = "com.glencoesoftware.ngff:multiscales") -> dict[str, Any]:
        return {"externalInfo": {"entityType": kind, "entityId": 3, "lsid": lsid}}

    assert ngff_location(facts("/data/ngff/1.zarr")) == "/data/ngff/1.zarr"
    assert ngff_location(facts("s3://s3.example.org/idr/zarr/1.zarr")) == (
        "https://s3.example.org/idr/zarr/1.zarr"
    )
    assert ngff_location(facts("s3://bucket/zarr/1.zarr")) == "s3://bucket/zarr/1.zarr"
    assert ngff_location(facts("/x.zarr", kind="other")) is None
    assert ngff_location({"externalInfo": None}) is None


async def test_without_omero_settings_nothing_changes(make_client: MakeClient) -> None:
    client = await make_client()
    source = client.app[DEPS].source
    # files only: Zarr and TIFF behind the router, no OMERO side
    assert isinstance(source, RoutingSource) and source.omero is None
    assert isinstance(source.zarr, ZarrSource)
    await get(client, f"/webgateway/imgData/{omero_id(1003)}/", 404)
    await get(client, f"{RI}/1003/0/0/?tile=0,0,0", 200)
    assert "idrserve_omero_" not in (await get(client, "/metrics")).decode()


async def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics as {(sample name, sorted labels): value}, parsed by prometheus_client."""
    text = (await get(client, "/metrics")).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics[(name, tuple(sorted(labels.items())))]


async def test_omero_metrics_count_every_call(
    standin: StandIn, make_client: MakeClient, worker: Worker
) -> None:
    """/metrics says how many calls reached OMERO, with which result, how long they took, and
    how the source's own tile cache and single flight spared OMERO; the counts agree with the
    stand-in's own count of getTile calls."""
    client = await make_client(worker_url=worker.url, max_concurrent_calls=3)
    oid = omero_id(PYRAMID_ID)
    await get(client, f"/webgateway/imgData/{oid}/")
    await get(client, "/webgateway/imgData/9999/", 404)
    before = standin.stats()["getTile"]
    await get(client, f"{RI}/{oid}/0/0/?tile=1,0,0,256,256")  # two channels: two getTile calls
    await get(client, f"{RI}/{oid}/0/0/?tile=1,0,0,256,256&c=1|0:900$FF0000,2|0:900$00FF00")
    tiles = standin.stats()["getTile"] - before
    assert tiles == 2
    m = await scrape(client)
    calls = "idrserve_omero_calls_total"
    assert sample(m, calls, call="meta", result="ok") == 1
    assert sample(m, calls, call="meta", result="not_found") == 1
    assert sample(m, calls, call="tile", result="ok") == tiles
    assert sample(m, calls, call="tile", result="unavailable") == 0
    count = "idrserve_omero_call_duration_seconds_count"
    assert sample(m, count, call="meta") == 2
    assert sample(m, count, call="tile") == tiles
    assert sample(m, "idrserve_omero_call_duration_seconds_bucket", call="tile", le="+Inf") == 2
    assert 0 < sample(m, "idrserve_omero_call_duration_seconds_sum", call="tile") < 10
    reads = "idrserve_omero_tile_reads_total"
    assert sample(m, reads, answer="call") == tiles
    assert sample(m, reads, answer="hit") == 2  # the re-rendering asked no new tiles
    assert sample(m, "idrserve_omero_tile_cache_entries") == tiles
    assert sample(m, "idrserve_omero_tile_cache_bytes") > 0
    assert sample(m, "idrserve_omero_metadata_entries") == 1
    assert sample(m, "idrserve_omero_max_concurrent_calls") == 3
    assert sample(m, "idrserve_omero_calls_waiting") == 0
    assert sample(m, "idrserve_omero_calls_in_flight") == 0


# ---- protecting OMERO -------------------------------------------------------------------------


async def test_session_expiry_reconnects(
    standin: StandIn, worker: Worker, make_client: MakeClient
) -> None:
    client = await make_client(worker_url=worker.url)
    oid = omero_id(1004)
    await get(client, f"{RI}/{oid}/0/0/?tile=0,0,0,256,256")
    logins, reconnects = standin.stats()["logins"], worker.stats()["reconnects"]
    expired = standin.post("/expire")
    assert expired["sessions"] == 0 and expired["expired"] >= 1
    # New tiles (not cached anywhere): the worker's sessions are gone, it logs in again.
    for col in range(1, 4):
        await get(client, f"{RI}/{oid}/0/0/?tile=0,{col},1,256,256")
    assert standin.stats()["logins"] > logins
    assert worker.stats()["reconnects"] > reconnects
    assert standin.stats()["sessions"] >= 1


async def test_identical_tile_reads_share_one_omero_call(
    standin: StandIn, make_client: MakeClient, worker: Worker
) -> None:
    client = await make_client(worker_url=worker.url)
    oid = omero_id(PYRAMID_ID)
    await get(client, f"/webgateway/imgData/{oid}/")
    before = standin.stats()["getTile"]
    standin.post("/latency?ms=50")
    try:
        # 12 different renderings of the same tile: 12 renders, but the raw tiles are the same.
        urls = [
            f"{RI}/{oid}/0/0/?tile=2,1,1,256,256&c=1|0:{1000 + 100 * i}$FF0000,2|0:3000$00FF00"
            for i in range(12)
        ]
        await asyncio.gather(*(get(client, url) for url in urls))
    finally:
        standin.post("/latency?ms=0")
    assert standin.stats()["getTile"] - before == 2  # one per channel
    source = client.app[DEPS].source
    assert isinstance(source, RoutingSource) and isinstance(source.omero, OmeroSource)
    assert source.omero.stats["coalesced"] + source.omero.stats["tile_hits"] >= 22


async def test_concurrency_cap_holds_under_a_burst(
    standin: StandIn, omero_python: Path, make_client: MakeClient
) -> None:
    """The server spawns its own worker (cap 3); 24 distinct tiles at once never exceed it."""
    client = await make_client(
        host="tcp://127.0.0.1",
        port=standin.port,
        worker_python=str(omero_python),
        max_concurrent_calls=3,
        thread_pool_size=8,
    )
    oid = omero_id(PYRAMID_ID)
    await get(client, f"/webgateway/imgData/{oid}/")
    standin.post("/reset")
    standin.post("/latency?ms=30")
    try:
        urls = [
            f"{RI}/{oid}/0/0/?tile=0,{col},{row},256,256&c=1|0:3000$FF0000"
            for col in range(6)
            for row in range(4)
        ]
        await asyncio.gather(*(get(client, url) for url in urls))
    finally:
        standin.post("/latency?ms=0")
    stats = standin.stats()
    assert stats["getTile"] == 24
    assert 2 <= stats["maxConcurrentTiles"] <= 3


async def test_spawned_worker_stops_with_the_server(
    standin: StandIn, omero_python: Path, zarr_dir: Path, aiohttp_client: Callable[..., Any]
) -> None:
    groups = {
        "source": {"zarr_root": str(zarr_dir)},
        "omero": {
            "host": "tcp://127.0.0.1",
            "port": standin.port,
            "worker_python": str(omero_python),
        },
    }
    client: TestClient = await aiohttp_client(create_app(load_settings(groups)))
    await get(client, f"/webgateway/imgData/{omero_id(1003)}/")
    source = client.app[DEPS].source
    assert isinstance(source, RoutingSource) and isinstance(source.omero, OmeroSource)
    proc = source.omero._worker._proc  # type: ignore[union-attr]
    assert proc is not None and proc.returncode is None
    await client.close()
    assert proc.returncode is not None


async def test_omero_unreachable_is_503_while_zarr_is_served(
    omero_python: Path, make_client: MakeClient
) -> None:
    dead = start_worker(omero_python, free_port(), "--call-timeout", "5")
    try:
        client = await make_client(worker_url=dead.url, retry_after_s=7)
        async with client.get(f"{RI}/{omero_id(1003)}/0/0/?tile=0,0,0") as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "7"
            body = await resp.json()
        assert body["error"] == "source_unavailable"
        assert "OMERO" in body["detail"]
        await get(client, f"{RI}/1003/0/0/?tile=0,0,0")
        await get(client, "/webgateway/imgData/1002/")
        # /readyz names OMERO as the degraded dependency and stays 200: Zarr still serves.
        async with client.get("/readyz") as resp:
            ready = await resp.json()
            assert resp.status == 200, ready
        assert ready["status"] == "degraded"
        assert ready["dependencies"]["source"]["status"] == "degraded"
        assert "OMERO" in ready["dependencies"]["source"]["detail"]
    finally:
        stop(dead.proc)


async def test_worker_down_is_503_while_zarr_is_served(make_client: MakeClient) -> None:
    client = await make_client(worker_url=f"http://127.0.0.1:{free_port()}")
    async with client.get(f"/webgateway/imgData/{omero_id(1004)}/") as resp:
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1
        assert (await resp.json())["error"] == "source_unavailable"
    await get(client, "/webgateway/imgData/1004/")
    async with client.get("/readyz") as resp:
        ready = await resp.json()
        assert resp.status == 200, ready
    assert ready["dependencies"]["source"]["status"] == "down"
    m = await scrape(client)
    assert sample(m, "idrserve_omero_calls_total", call="meta", result="unavailable") == 1
    assert sample(m, "idrserve_omero_calls_total", call="meta", result="ok") == 0
    assert ready["status"] == "degraded"


async def test_wrong_password_is_503_and_never_shown(
    standin: StandIn, omero_python: Path, make_client: MakeClient, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = "not-the-password-4711"
    bad = start_worker(omero_python, standin.port, password=secret)
    try:
        client = await make_client(worker_url=bad.url)
        async with client.get(f"/webgateway/imgData/{omero_id(1003)}/") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert "refused the login" in body["detail"]
        assert secret not in json.dumps(body)
    finally:
        stop(bad.proc)
    settings = OmeroSettings(host="h", password=secret)  # type: ignore[arg-type]
    assert secret not in " ".join(worker_command(settings, Path("python"), "127.0.0.1:0"))
    assert worker_env(settings)["IDRSERVE_OMERO_PASSWORD"] == secret
    assert secret not in capfd.readouterr().err


def test_config_show_hides_the_password() -> None:
    secret = "not-the-password-4711"
    shown = subprocess.run(
        [sys.executable, "-m", "idrserve", "config", "show"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "IDRSERVE_OMERO__PASSWORD": secret},
    ).stdout
    assert secret not in shown and json.loads(shown)["omero"]["password"] == "**********"


def test_serve_flags_reach_the_omero_settings() -> None:
    from idrserve.cli import _overrides, build_parser

    args = build_parser().parse_args(
        ["serve", "--omero-host", "omero.example.org", "--omero-port", "4063",
         "--omero-user", "reader", "--omero-password", "pw"]
    )  # fmt: skip
    settings = load_settings(_overrides(args))
    assert settings.omero.enabled
    assert (settings.omero.host, settings.omero.port, settings.omero.user) == (
        "omero.example.org", 4063, "reader"
    )  # fmt: skip
    assert settings.omero.password.get_secret_value() == "pw"
    assert "pw" not in repr(settings.omero)


# ---- live OMERO (e.g. IDR's public server) ---------------------------------------------------

LIVE_HOST = os.environ.get("IDRSERVE_TEST_OMERO_HOST")


@pytest.mark.skipif(not LIVE_HOST, reason="IDRSERVE_TEST_OMERO_HOST not set (live OMERO test)")
async def test_live_omero(omero_python: Path, tmp_path: Path) -> None:
    """Against a real OMERO: metadata and one tile of IDRSERVE_TEST_OMERO_IMAGE."""
    image_id = int(os.environ.get("IDRSERVE_TEST_OMERO_IMAGE", "2850181"))
    default_port = "443" if str(LIVE_HOST).startswith("wss://") else "4064"
    settings = OmeroSettings(
        host=LIVE_HOST,
        port=int(os.environ.get("IDRSERVE_TEST_OMERO_PORT", default_port)),
        user=os.environ.get("IDRSERVE_TEST_OMERO_USER", "public"),
        password=os.environ.get("IDRSERVE_TEST_OMERO_PASSWORD", "public"),  # type: ignore[arg-type]
        worker_python=omero_python,
        call_timeout_s=60,
    )
    source = OmeroSource(settings)
    try:
        meta = await source.meta(image_id)
        assert meta.size_x > 0 and meta.channels
        lm = meta.levels[-1]
        box = Box(0, 0, min(lm.size_x, lm.tile_x), min(lm.size_y, lm.tile_y))
        sel = Selection(
            len(meta.levels) - 1, meta.default_t, meta.default_z, meta.default_z + 1, (0,), box
        )
        data = await source.read(image_id, sel)
        assert data.shape == (1, 1, box.h, box.w) and data.dtype.isnative
    finally:
        await source.aclose()


def test_cli_serve_with_only_omero(standin: StandIn, omero_python: Path) -> None:
    """`idrserve serve --omero-host …` as a real process: serves OMERO images, stops its worker."""
    import time
    import urllib.error
    import urllib.request

    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")},
        "IDRSERVE_OMERO__WORKER_PYTHON": str(omero_python),
        "IDRSERVE_OMERO__PASSWORD": "public",
    }
    cmd = [sys.executable, "-m", "idrserve", "serve", "--port", str(port)]
    cmd += ["--omero-host", "tcp://127.0.0.1", "--omero-port", str(standin.port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        with urllib.request.urlopen(f"{base}/webgateway/imgData/{omero_id(1003)}/") as resp:
            doc = json.load(resp)
        assert doc["size"]["width"] == 600
        with urllib.request.urlopen(f"{base}{RI}/{omero_id(1003)}/0/0/?tile=0,2,1") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "image/jpeg"
        workers = _children(proc.pid, "idrserve.omero_worker")
        assert len(workers) == 1
    finally:
        proc.terminate()
        proc.communicate(timeout=20)
    time.sleep(1.5)  # stopped with the server, or on noticing its parent is gone (1 s poll)
    assert not Path(f"/proc/{workers[0]}").exists()


def test_worker_systemd_unit(standin: StandIn, omero_python: Path, tmp_path: Path) -> None:
    """The unit verifies, and its ExecStart runs a worker configured from the env file."""
    import configparser
    import shlex
    import shutil
    import urllib.request

    unit = REPO_ROOT / "deploy" / "systemd" / "idrserve-omero-worker.service"
    text = unit.read_text().replace("/opt/idrserve-omero/bin/python", str(omero_python))
    (tmp_path / unit.name).write_text(text)
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze missing: run the tests through scripts/test.sh"
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(tmp_path / unit.name)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    problems = [ln for ln in (result.stdout + result.stderr).splitlines() if unit.name in ln]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr

    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    argv = shlex.split(parser["Service"]["ExecStart"])
    assert "--password" not in argv
    argv[argv.index("--listen") + 1] = "127.0.0.1:0"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "IDRSERVE_OMERO__HOST": "tcp://127.0.0.1",
        "IDRSERVE_OMERO__PORT": str(standin.port),
        "IDRSERVE_OMERO__PASSWORD": "public",
    }
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[1]
        with urllib.request.urlopen(f"{url}/image/{omero_id(1003)}", timeout=10) as resp:
            assert json.load(resp)["sizeX"] == 600
    finally:
        stop(proc)


def _children(pid: int, needle: str) -> list[int]:
    """Child processes of `pid` whose command line contains `needle` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("PPid:"))
        if ppid == pid and needle in cmdline:
            found.append(int(entry.name))
    return found
