"""Operator endpoints on a real aiohttp server: /readyz, /openapi.json, access log, OPTIONS."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout
from aiohttp.test_utils import TestClient, TestServer

from idrserve.app import create_app
from idrserve.http import openapi
from idrserve.http.keys import STATE
from idrserve.http.ops import ACCESS_LOGGER, AccessLog
from idrserve.settings import load_settings
from tests.cache.conftest import RedisServer

TILE = "/webgateway/render_image_region/1001/0/0/?tile=2,0,0,256,256"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # AccessLog hands lines over in batches, one line per request.
        self.lines.extend(record.getMessage().split("\n"))


@pytest.fixture
def make(demo_data: Path, aiohttp_client: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """`await make(log_format="json", **settings)` → (client, access-log lines)."""

    async def factory(log_format: str = "json", **overrides: Any) -> tuple[TestClient, Lines]:
        groups: dict[str, Any] = {"source": {"zarr_root": str(demo_data)}}
        for key, value in overrides.items():
            group, _, name = key.partition("__")
            groups.setdefault(group, {})[name] = value
        groups.setdefault("log", {})["access_log_format"] = log_format
        app = create_app(load_settings(groups))
        lines = Lines()
        handlers.append(lines)
        logger.addHandler(lines)
        server = TestServer(app)
        # TestServer drops constructor kwargs; start_server passes them to the AppRunner.
        await server.start_server(
            access_log_class=AccessLog, access_log=logger, access_log_format=log_format
        )
        client: TestClient = await aiohttp_client(server)
        return client, lines

    logger = logging.getLogger(ACCESS_LOGGER)
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handlers: list[Lines] = []
    yield factory
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)
    logger.propagate = propagate


# --- OpenAPI ----------------------------------------------------------------------------------


async def test_every_route_is_in_the_openapi_document(make: Callable[..., Any]) -> None:
    client, _ = await make()
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.")
    missing = [
        f"{method} {path} ({name})"
        for method, path, name in openapi.routes(client.app)
        if method.lower() not in doc["paths"].get(path, {})
    ]
    assert not missing, "routes without OpenAPI documentation:\n" + "\n".join(missing)
    # and every path parameter of every route is declared with a schema
    for path, ops in doc["paths"].items():
        for op in ops.values():
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == set(path.replace("}", "{").split("{")[1::2]), path
            assert op["responses"], path


async def test_openapi_document_is_valid(make: Callable[..., Any]) -> None:
    import schemathesis

    client, _ = await make()
    doc = await (await client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(doc)
    operations = [op for op in schema.get_all_operations() if op.ok()]
    assert len(operations) == sum(len(v) for v in doc["paths"].values())


# --- readiness --------------------------------------------------------------------------------


async def test_readyz_ok_with_every_dependency(
    make: Callable[..., Any], redis_server: RedisServer, tmp_path: Path
) -> None:
    client, _ = await make(cache__redis_url=redis_server.url, cache__dir=str(tmp_path / "c"))
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200, body
    assert body["status"] == "ok"
    deps = body["dependencies"]
    assert deps["redis"]["status"] == "ok" and deps["redis"]["breaker"] == "closed"
    assert deps["disk_cache"]["status"] == "ok"
    assert deps["data_roots"]["status"] == "ok"
    assert body["admission"]["max_concurrent_renders"] == 32


async def test_readyz_warming_until_the_kernels_are_loaded(make: Callable[..., Any]) -> None:
    """A served process is not ready until its start-up warm-up (kernels, heap freeze) is
    done, so a load balancer does not route the requests that would wait behind it."""
    client, _ = await make()
    warm_up = asyncio.get_running_loop().create_future()
    client.app[STATE]["freeze"] = warm_up
    resp = await client.get("/readyz")
    body = await resp.json()
    assert (resp.status, body["status"], resp.headers["Retry-After"]) == (503, "warming", "1")
    warm_up.set_result(None)
    resp = await client.get("/readyz")
    assert (resp.status, (await resp.json())["status"]) == (200, "ok")


async def test_readyz_degraded_but_200_without_redis(
    make: Callable[..., Any], redis_server: RedisServer
) -> None:
    client, _ = await make(cache__redis_url=redis_server.url, cache__redis_timeout_s=0.2)
    redis_server.kill()
    for _ in range(5):  # let the breaker see the failures
        body = await (await client.get("/readyz")).json()
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "degraded"
    assert body["dependencies"]["redis"]["status"] == "degraded"
    assert body["dependencies"]["redis"]["breaker"] in ("open", "half-open", "closed")
    # and it still serves
    assert (await client.get(TILE)).status == 200
    redis_server.start()
    for _ in range(40):
        body = await (await client.get("/readyz")).json()
        if body["status"] == "ok":
            break
        await asyncio.sleep(0.25)
    assert body["status"] == "ok", body


async def test_readyz_degraded_with_unwritable_cache_dir(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    client, _ = await make(cache__dir=str(blocker / "cache"))
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 200
    assert body["dependencies"]["disk_cache"]["status"] == "degraded"
    assert (await client.get(TILE)).status == 200


async def test_readyz_503_when_no_source_can_serve(
    make: Callable[..., Any], tmp_path: Path
) -> None:
    client, _ = await make(source__zarr_root=str(tmp_path / "missing"))
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503 and body["status"] == "down"
    assert (await client.get("/healthz")).status == 200  # alive, just not ready


async def test_readyz_503_while_draining(make: Callable[..., Any]) -> None:
    client, _ = await make()
    assert (await client.get("/readyz")).status == 200
    await client.app.shutdown()  # runs on_shutdown, as the server does on SIGTERM
    resp = await client.get("/readyz")
    assert resp.status == 503 and (await resp.json())["status"] == "draining"


async def test_source_health_hook_is_reported(make: Callable[..., Any]) -> None:
    from idrserve.http.keys import DEPS

    client, _ = await make()
    source = client.app[DEPS].source

    async def health() -> dict[str, object]:
        return {"status": "down", "detail": "OMERO session lost"}

    source.health = health  # type: ignore[attr-defined]
    try:
        resp = await client.get("/readyz")
        body = await resp.json()
        # the zarr data root still serves: degraded, not down
        assert resp.status == 200 and body["status"] == "degraded"
        assert body["dependencies"]["source"]["detail"] == "OMERO session lost"
    finally:
        del source.health  # type: ignore[attr-defined]


async def test_readyz_shows_no_paths_by_default(
    make: Callable[..., Any], demo_data: Path, tmp_path: Path
) -> None:
    """Anyone can read /readyz: statuses and generic details, no paths, URLs or hosts."""
    from idrserve.http.keys import DEPS

    catalog = tmp_path / "catalog.csv"
    catalog.write_text("id,path\n")
    cache_dir = tmp_path / "disk-cache"
    client, _ = await make(source__catalog=str(catalog), cache__dir=str(cache_dir))
    source = client.app[DEPS].source

    async def health() -> dict[str, object]:
        return {"status": "down", "detail": "OMERO unreachable", "host": "omero.internal",
                "internal": "ConnectionRefusedException: omero.internal:4064"}  # fmt: skip

    source.health = health  # type: ignore[attr-defined]
    try:
        resp = await client.get("/readyz")
        body = await resp.json()
    finally:
        del source.health  # type: ignore[attr-defined]
    assert resp.status == 200 and body["status"] == "degraded", body
    text = json.dumps(body)
    for secret in (str(demo_data), str(catalog), str(cache_dir), "omero.internal", "Exception"):
        assert secret not in text, (secret, body)
    deps = body["dependencies"]
    assert deps["data_roots"] == {
        "status": "ok",
        "roots": [{"kind": "zarr_root", "status": "ok"}, {"kind": "catalog", "status": "ok"}],
    }
    assert deps["disk_cache"]["status"] == "ok" and "path" not in deps["disk_cache"]
    assert deps["source"] == {"status": "down", "detail": "OMERO unreachable"}


async def test_readyz_shows_paths_with_expose_internals(
    make: Callable[..., Any], demo_data: Path, tmp_path: Path
) -> None:
    from idrserve.http.keys import DEPS

    catalog = tmp_path / "catalog.csv"
    cache_dir = tmp_path / "disk-cache"
    client, _ = await make(
        source__catalog=str(catalog), cache__dir=str(cache_dir), server__expose_internals=True
    )
    source = client.app[DEPS].source

    async def health() -> dict[str, object]:
        raise RuntimeError(f"cannot stat {tmp_path}")

    source.health = health  # type: ignore[attr-defined]
    try:
        body = await (await client.get("/readyz")).json()
    finally:
        del source.health  # type: ignore[attr-defined]
    deps = body["dependencies"]
    assert deps["data_roots"]["roots"] == [
        {"kind": "zarr_root", "status": "ok", "path": str(demo_data)},
        {
            "kind": "catalog",
            "status": "down",
            "path": str(catalog),
            "detail": "missing or unreadable",
        },
    ]
    assert deps["data_roots"]["status"] == "degraded"
    assert deps["disk_cache"]["path"] == str(cache_dir)
    assert deps["source"] == {
        "status": "down",
        "detail": "the check failed",
        "internal": f"RuntimeError: cannot stat {tmp_path}",
    }


async def test_readyz_never_shows_a_url_password(make: Callable[..., Any]) -> None:
    url = "https://idr:hunter2@s3.example.org/zarr"
    client, _ = await make(source__zarr_root=url, server__expose_internals=True)
    (root,) = (await (await client.get("/readyz")).json())["dependencies"]["data_roots"]["roots"]
    assert root["url"] == "https://idr:***@s3.example.org/zarr"
    client, _ = await make(source__zarr_root=url)
    (root,) = (await (await client.get("/readyz")).json())["dependencies"]["data_roots"]["roots"]
    assert root == {"kind": "zarr_root", "status": "ok", "detail": "remote, not probed"}


# --- access log and request ids ---------------------------------------------------------------


async def test_access_log_line_per_request(make: Callable[..., Any]) -> None:
    client, lines = await make()
    resp = await client.get(TILE, headers={"X-Request-ID": "abc-123"})
    assert resp.status == 200 and resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get(TILE)
    generated = resp.headers["X-Request-ID"]
    assert generated and generated != "abc-123"
    bad = await client.get(TILE, headers={"X-Request-ID": "x" * 500 + "\u00e9"})
    assert bad.headers["X-Request-ID"] != "x" * 500
    assert len(bad.headers["X-Request-ID"]) <= 64
    await client.get("/webgateway/imgData/99999/")
    await asyncio.sleep(0.3)  # > FLUSH_AFTER_S
    records = [json.loads(line) for line in lines.lines]
    assert len(records) == 4
    first, second, _, missing = records
    assert first["request_id"] == "abc-123"
    assert first["route"] == "/webgateway/render_image_region/{iid}/{z}/{t}/"
    assert first["method"] == "GET" and first["status"] == 200
    assert first["cache"] == "miss" and first["bytes"] == len(await resp.read())
    assert {"source_ms", "render_ms", "encode_ms"} <= set(first)
    assert first["duration_ms"] >= 0 and first["client"] == "127.0.0.1"
    assert second["request_id"] == generated and second["cache"] == "memory"
    assert missing["status"] == 404 and missing["route"] == "/webgateway/imgData/{iid}/"


async def test_access_log_text_format(make: Callable[..., Any]) -> None:
    client, lines = await make(log_format="text")
    await client.get(TILE)
    await asyncio.sleep(0.3)  # > FLUSH_AFTER_S
    assert len(lines.lines) == 1
    fields = dict(part.split("=", 1) for part in lines.lines[0].split(" "))
    assert fields["status"] == "200" and fields["method"] == "GET"


async def test_abandoned_request_is_logged_and_cancelled(
    make: Callable[..., Any],
) -> None:
    from idrserve.http.keys import ADMISSION, DEPS

    client, lines = await make()
    # Storage that takes a second, so the client hangs up in the middle of the request on any
    # machine (a real projection finished within the client's timeout on a fast one).
    source = client.app[DEPS].source
    read = source.read

    async def slow_read(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(1.0)
        return await read(*args, **kwargs)

    source.read = slow_read
    url = "/webgateway/render_image/1002/?p=intsum&c=1|0:60000$FF0000,2|0:60000$00FF00&q=0.31"
    session = ClientSession(timeout=ClientTimeout(total=0.2))
    with pytest.raises(asyncio.TimeoutError):
        await session.get(str(client.make_url(url)))
    await session.close()
    admission = client.app[ADMISSION]
    for _ in range(100):
        if admission.cancelled and admission.requests == 0:
            break
        await asyncio.sleep(0.02)
    assert admission.cancelled == 1 and admission.requests == 0
    assert any(json.loads(line)["status"] == 499 for line in lines.lines)


# --- OPTIONS on the webgateway prefix ---------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/webgateway/",
        "/webgateway/render_image_region/1001/0/0/",
        "/omero_ms_image_region/",
    ],
)
async def test_options_advertises_limits(make: Callable[..., Any], path: str) -> None:
    client, _ = await make(limits__max_active_channels=7, limits__max_tile_length=1024)
    resp = await client.options(path, headers={"Access-Control-Request-Method": "GET"})
    assert resp.status == 200
    body = await resp.json()
    assert body["options"]["maxActiveChannels"] == 7
    assert body["options"]["maxTileLength"] == 1024
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
