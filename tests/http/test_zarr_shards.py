"""Sharded Zarr v3 images through `/zarr/v3/`: stored shards, read by range as readers do.

A Zarr v3 reader (zarr-python, tensorstore, zarrita.js) opens a shard by asking for its last
bytes (the index, a suffix range `bytes=-N`), then asks for each inner chunk it needs by its
offset and length. The view serves the stored shard objects, and each range is read from
storage alone: locally, from an HTTP root, and from one behind the chunk cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from aiohttp.test_utils import TestClient
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

from idrserve.app import create_app
from idrserve.settings import load_settings
from tests.sources.conftest import STATIC_SERVER, free_port, wait_for_port

SHARDED, SPARSE = 7301, 7302
DATA = (np.arange(2 * 300 * 500, dtype=np.uint32) * 2654435761 % 65521).astype(np.uint16)
DATA = DATA.reshape(2, 300, 500)
SHARD, CHUNK = (1, 128, 256), (1, 64, 64)
# The index: (offset, length) as two uint64 per inner chunk, then its crc32c.
INDEX_BYTES = 2 * 8 * (128 // 64) * (256 // 64) + 4


def write_sharded(path: Path, data: np.ndarray = DATA) -> None:
    """NGFF 0.5, c,y,x in micrometres, 128×256 shards of 64×64 Blosc chunks (edge shards
    partial), written by zarr-python with an explicit ShardingCodec."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    arr = group.create_array(
        "0",
        shape=data.shape,
        dtype=data.dtype,
        chunks=SHARD,
        serializer=ShardingCodec(
            chunk_shape=CHUNK,
            codecs=[BytesCodec(), BloscCodec(cname="zstd", clevel=3)],
            index_codecs=[BytesCodec(), Crc32cCodec()],
        ),
        compressors=None,
        dimension_names=["c", "y", "x"],
        fill_value=0,
    )
    arr[...] = data
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": a, "type": "space", "unit": "micrometer"} for a in "yx"
    ]
    scale = [{"type": "scale", "scale": [1.0, 0.5, 0.5]}]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {"axes": axes, "datasets": [{"path": "0", "coordinateTransformations": scale}]}
        ],
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    write_sharded(root / f"{SHARDED}.zarr")
    sparse = np.zeros_like(DATA)
    sparse[1, 260:, 300:] = 9  # one shard of six holds data: zarr writes no empty shard
    write_sharded(root / f"{SPARSE}.zarr", sparse)
    return root


@pytest.fixture(scope="module")
def http_url(root: Path) -> Iterator[str]:
    """The same directory over HTTP (aiohttp's static files: Range and HEAD)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", STATIC_SERVER, str(root), str(port)])
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(params=["local", "http", "http+cache"])
async def client(
    request: pytest.FixtureRequest,
    root: Path,
    http_url: str,
    tmp_path: Path,
    aiohttp_client: Callable[..., Any],
) -> TestClient:
    source: dict[str, Any] = {"zarr_root": str(root) if request.param == "local" else http_url}
    if request.param == "http+cache":
        source["chunk_cache_dir"] = str(tmp_path / "chunks")
    result: TestClient = await aiohttp_client(create_app(load_settings({"source": source})))
    return result


STORE = f"/zarr/v3/{SHARDED}.zarr"


def shard_file(root: Path, c: int, sy: int, sx: int) -> bytes:
    return (root / f"{SHARDED}.zarr" / "0" / "c" / str(c) / str(sy) / str(sx)).read_bytes()


async def test_array_document_is_the_stored_one(client: TestClient, root: Path) -> None:
    resp = await client.get(f"{STORE}/0/zarr.json")
    assert await resp.read() == (root / f"{SHARDED}.zarr" / "0" / "zarr.json").read_bytes()
    codec = json.loads(await resp.read())["codecs"][0]
    assert codec["name"] == "sharding_indexed"


async def test_suffix_range_is_the_shard_index(client: TestClient, root: Path) -> None:
    for c, sy, sx in [(0, 0, 0), (1, 2, 1)]:  # (1, 2, 1): the partial bottom-right shard
        whole = shard_file(root, c, sy, sx)
        n = len(whole)
        resp = await client.get(
            f"{STORE}/0/c/{c}/{sy}/{sx}", headers={"Range": f"bytes=-{INDEX_BYTES}"}
        )
        assert resp.status == 206
        assert await resp.read() == whole[-INDEX_BYTES:]
        assert resp.headers["Content-Range"] == f"bytes {n - INDEX_BYTES}-{n - 1}/{n}"
        assert int(resp.headers["Content-Length"]) == INDEX_BYTES
        # then one inner chunk, by the offset and length the index gives
        index = np.frombuffer(whole[-INDEX_BYTES:-4], "<u8").reshape(-1, 2)
        offset, length = (int(v) for v in index[3])
        resp = await client.get(
            f"{STORE}/0/c/{c}/{sy}/{sx}",
            headers={"Range": f"bytes={offset}-{offset + length - 1}"},
        )
        assert resp.status == 206 and await resp.read() == whole[offset : offset + length]


async def test_ranges_answer_as_for_whole_objects(client: TestClient, root: Path) -> None:
    path, whole = f"{STORE}/0/c/0/1/0", shard_file(root, 0, 1, 0)
    n = len(whole)
    full = await client.get(path)
    assert full.status == 200 and await full.read() == whole
    etag = full.headers["ETag"]
    cases = {
        f"bytes=-{n + 10}": (206, whole, f"bytes 0-{n - 1}/{n}"),
        "bytes=10-": (206, whole[10:], f"bytes 10-{n - 1}/{n}"),
        "bytes=9-3": (200, whole, None),  # invalid: ignored
        "bytes=0-1,4-5": (200, whole, None),  # several: ignored
    }
    for header, (status, body, content_range) in cases.items():
        resp = await client.get(path, headers={"Range": header})
        assert resp.status == status, header
        assert await resp.read() == body, header
        assert resp.headers.get("Content-Range") == content_range, header
        assert resp.headers["ETag"] == etag, header
    past = await client.get(path, headers={"Range": f"bytes={n}-"})
    assert past.status == 416 and past.headers["Content-Range"] == f"bytes */{n}"
    assert (await past.json())["error"] == "range_not_satisfiable"
    stale = await client.get(path, headers={"Range": "bytes=-4", "If-Range": '"old"'})
    assert stale.status == 200 and await stale.read() == whole
    fresh = await client.get(path, headers={"Range": "bytes=-4", "If-Range": etag})
    assert fresh.status == 206 and await fresh.read() == whole[-4:]
    cached = await client.get(path, headers={"Range": "bytes=-4", "If-None-Match": etag})
    assert cached.status == 304
    head = await client.head(path, headers={"Range": "bytes=-4"})
    assert head.status == 206 and head.headers["Content-Range"] == f"bytes {n - 4}-{n - 1}/{n}"


async def test_missing_shards_are_404(client: TestClient, root: Path) -> None:
    """A shard never written (all fill value) is a 404, which readers turn into fill values;
    so is a key outside the shard grid."""
    stored = root / f"{SPARSE}.zarr" / "0" / "c"
    assert [p.relative_to(stored).as_posix() for p in stored.rglob("*") if p.is_file()] == ["1/2/1"]
    written = await client.get(f"/zarr/v3/{SPARSE}.zarr/0/c/1/2/1", headers={"Range": "bytes=-4"})
    assert written.status == 206
    for path in (f"/zarr/v3/{SPARSE}.zarr/0/c/0/0/0", f"{STORE}/0/c/0/3/0", f"{STORE}/0/c/2/0/0"):
        for headers in ({"Range": "bytes=-4"}, {}):
            resp = await client.get(path, headers=headers)
            assert resp.status == 404 and (await resp.json())["error"] == "not_found", path


def test_zarr_python_reads_the_shards_over_http(root: Path) -> None:
    """zarr-python's own sharding reader, through the view, equals the stored array."""
    from tests.http.demo_live import serve_in_thread

    with serve_in_thread(root) as (host, port):
        group = zarr.open_group(f"http://{host}:{port}{STORE}", mode="r")
        assert group.attrs["ome"]["version"] == "0.5"
        arr = group["0"]
        assert arr.shards == SHARD and arr.chunks == CHUNK
        np.testing.assert_array_equal(arr[...], DATA)
        np.testing.assert_array_equal(arr[1, 250:300, 450:500], DATA[1, 250:300, 450:500])


async def test_stored_span_reads_only_the_span(root: Path) -> None:
    """Behind a wrapper (the chunk cache is one), the size comes from the inner store and the
    one read asks for the span alone."""
    from zarr.abc.store import ByteRequest
    from zarr.core.buffer import Buffer, BufferPrototype
    from zarr.storage import LocalStore, WrapperStore

    from idrserve.sources.zarr import stored_span

    asked: list[ByteRequest | None] = []

    class Recording(WrapperStore[LocalStore]):
        async def get(
            self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
        ) -> Buffer | None:
            asked.append(byte_range)
            return await super().get(key, prototype, byte_range)

    store = Recording(LocalStore(root / f"{SHARDED}.zarr"))
    whole = shard_file(root, 0, 0, 1)
    n = len(whole)
    found = await stored_span(store, "0/c/0/0/1", SHARDED, lambda size: (size - 10, size))
    assert found == (n, (n - 10, n), whole[-10:])
    assert [(r.start, r.end) for r in asked] == [(n - 10, n)]  # type: ignore[union-attr]
    assert await stored_span(store, "0/c/0/9/9", SHARDED, lambda size: (0, size)) is None
