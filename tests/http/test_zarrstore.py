"""`/zarr/{id}.zarr/` and `/zarr/v3/{id}.zarr/`: documents, chunks, HTTP niceties, bad keys."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from idrserve.app import create_app
from idrserve.http.keys import DEPS
from idrserve.http.zarrstore import UNSATISFIABLE, parse_range
from idrserve.model import ImageMeta, LevelMeta
from idrserve.ngffdocs import axes_doc
from idrserve.settings import load_settings
from idrserve.zarrview import AXES_5D, ChunkRef, generated_view, resolve_key
from tests.http.demo_live import raw_get, serve_in_thread
from tests.integration.live_server import demo_images

V3_IMAGE, SPARSE = 7101, 7102
V3_DATA = np.arange(2 * 300 * 500, dtype=np.uint16).reshape(2, 300, 500)


def _ngff(axes: str, levels: int = 1) -> dict[str, Any]:
    return {
        "version": "0.4",
        "axes": [{"name": a, "type": "channel" if a == "c" else "space"} for a in axes],
        "datasets": [
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": [1.0] * 3}]}
            for i in range(levels)
        ],
    }


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo images plus an unsharded Zarr v3 image with edge chunks and a sparse v2 one."""
    root, _ = demo_images(tmp_path_factory)
    v3 = zarr.open_group(str(root / "extra" / f"{V3_IMAGE}.zarr"), mode="w", zarr_format=3)
    v3.attrs["ome"] = {"version": "0.5", "multiscales": [_ngff("cyx")]}
    arr = v3.create_array("0", shape=V3_DATA.shape, chunks=(1, 128, 128), dtype="uint16")
    arr[...] = V3_DATA
    sparse = zarr.open_group(str(root / "extra" / f"{SPARSE}.zarr"), mode="w", zarr_format=2)
    sparse.attrs["multiscales"] = [_ngff("cyx")]
    arr2 = sparse.create_array(
        "0",
        shape=(1, 512, 512),
        chunks=(1, 256, 256),
        dtype="uint8",
        fill_value=0,
        chunk_key_encoding={"name": "v2", "separator": "/"},
        config={"write_empty_chunks": False},
    )
    arr2[0, 300:, 300:] = 5
    return root


@pytest.fixture
async def client(root: Path, aiohttp_client: Callable[..., Any]) -> TestClient:
    app = create_app(load_settings({"source": {"zarr_root": str(root)}}))
    result: TestClient = await aiohttp_client(app)
    return result


async def get_json(client: TestClient, path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"
    return json.loads(await resp.read())


async def test_v2_group_documents(client: TestClient) -> None:
    assert await get_json(client, "/zarr/1001.zarr/.zgroup") == {"zarr_format": 2}
    attrs = await get_json(client, "/zarr/1001.zarr/.zattrs")
    ms = attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["axes"][2] == {"name": "x", "type": "space", "unit": "micrometer"}
    scales = [d["coordinateTransformations"][0]["scale"] for d in ms["datasets"]]
    assert scales == [[1.0, 0.325 * 2**i, 0.325 * 2**i] for i in range(6)]
    labels = [ch["label"] for ch in attrs["omero"]["channels"]]
    assert labels == ["DAPI", "GFP", "mCherry"]
    assert attrs["omero"]["channels"][0]["window"] == {
        "min": 0.0,
        "max": 65535.0,
        "start": 150.0,
        "end": 3600.0,
    }


async def test_v3_group_document(client: TestClient) -> None:
    doc = await get_json(client, "/zarr/v3/1006.zarr/zarr.json")
    assert doc["zarr_format"] == 3 and doc["node_type"] == "group"
    ome = doc["attributes"]["ome"]
    assert ome["version"] == "0.5"
    assert [a["name"] for a in ome["multiscales"][0]["axes"]] == list("tczyx")
    assert (await client.get("/zarr/v3/1006.zarr/.zgroup")).status == 404
    assert (await client.get("/zarr/1006.zarr/zarr.json")).status == 404


async def test_omero_block_has_its_document_s_version(client: TestClient) -> None:
    """NGFF 0.5: the version MUST be consistent within a hierarchy, `omero` included."""
    for iid in (1002, 1005, V3_IMAGE):
        resp = await client.get(f"/zarr/v3/{iid}.zarr/zarr.json")
        ome = json.loads(await resp.read())["attributes"]["ome"]
        assert ome["version"] == ome["omero"]["version"] == "0.5"
        assert set(versions(ome)) == {"0.5"}
        attrs = await get_json(client, f"/zarr/{iid}.zarr/.zattrs")
        assert attrs["multiscales"][0]["version"] == attrs["omero"]["version"] == "0.4"


def versions(doc: Any) -> Iterator[Any]:
    """Every `version` value in a JSON document, at any depth."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from [value] if key == "version" else versions(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from versions(value)


SPACE = {"type": "space", "unit": "micrometer"}


async def test_added_axes_get_the_source_s_space_unit(client: TestClient) -> None:
    """1005 is c,y,x in micrometres: its 5D view adds t (no time unit is known) and a z of one
    plane, which carries the unit of the source's space axes; channel axes never have one."""
    axes = (await get_json(client, "/zarr/1005.zarr/.zattrs"))["multiscales"][0]["axes"]
    assert axes == [
        {"name": "t", "type": "time"},
        {"name": "c", "type": "channel"},
        {"name": "z", **SPACE},
        {"name": "y", **SPACE},
        {"name": "x", **SPACE},
    ]
    # a source without units gets none on the axes added to it either
    axes = (await get_json(client, f"/zarr/{V3_IMAGE}.zarr/.zattrs"))["multiscales"][0]["axes"]
    assert [a["name"] for a in axes] == list("tczyx")
    assert not any("unit" in a for a in axes)


def test_axes_doc_units() -> None:
    def units(pixel: tuple[float | None, ...], source: str | None) -> str:
        meta = replace(META, pixel_size=pixel)
        doc = axes_doc(meta, AXES_5D, None if source is None else tuple(source))
        return "".join(a["name"] if "unit" in a else "-" for a in doc)

    assert units((0.5, 0.5, None), "yx") == "--zyx"  # z added: the source's unit
    assert units((0.5, 0.5, None), "zyx") == "---yx"  # the source's own z: its size is unknown
    assert units((0.5, 0.5, 2.0), "tczyx") == "--zyx"
    assert units((None, None, None), "yx") == "-----"
    assert units((0.5, 0.5, None), None) == "---yx"  # unknown source axes (OMERO): as given


@pytest.mark.parametrize(
    ("iid", "keys"),
    [(1001, ["0/0/0/0", "0/2/15/15", "5/1/0/0"]), (1006, ["0/2/1/2/0/0", "1/0/0/0/0/0"])],
)
async def test_passthrough_is_byte_for_byte(
    client: TestClient, root: Path, iid: int, keys: list[str]
) -> None:
    image = root / f"{iid}.zarr"
    resp = await client.get(f"/zarr/{iid}.zarr/0/.zarray")
    assert await resp.read() == (image / "0" / ".zarray").read_bytes()
    for key in keys:
        resp = await client.get(f"/zarr/{iid}.zarr/{key}")
        body = await resp.read()
        assert resp.status == 200
        assert resp.content_type == "application/octet-stream"
        assert body == (image / key).read_bytes()
        assert int(resp.headers["Content-Length"]) == len(body)
        etag = resp.headers["ETag"]
        again = await client.get(f"/zarr/{iid}.zarr/{key}", headers={"If-None-Match": etag})
        assert again.status == 304


async def test_generated_chunks_decode_to_the_source(client: TestClient) -> None:
    doc = await get_json(client, f"/zarr/{V3_IMAGE}.zarr/0/.zarray")
    assert doc["shape"] == [1, 2, 1, 300, 500]
    assert doc["chunks"] == [1, 1, 1, 128, 128]
    codec = numcodecs.get_codec(doc["compressor"])
    for cy, cx in [(0, 0), (1, 2), (2, 3)]:  # (2, 3) is the bottom-right edge chunk
        resp = await client.get(f"/zarr/{V3_IMAGE}.zarr/0/0/1/0/{cy}/{cx}")
        assert resp.status == 200
        chunk = np.frombuffer(codec.decode(await resp.read()), "<u2").reshape(128, 128)
        tile = V3_DATA[1, cy * 128 : cy * 128 + 128, cx * 128 : cx * 128 + 128]
        np.testing.assert_array_equal(chunk[: tile.shape[0], : tile.shape[1]], tile)
        assert not chunk[tile.shape[0] :].any() and not chunk[:, tile.shape[1] :].any()
    second = await client.get(f"/zarr/{V3_IMAGE}.zarr/0/0/1/0/2/3")
    assert second.headers["X-Cache"] == "memory"


async def test_v3_view_of_a_v3_image_is_the_stored_one(client: TestClient, root: Path) -> None:
    """Its own axes, chunk keys and chunk bytes; `dimension_names` added to its array document
    (NGFF 0.5 needs them to match the axes), the rest of that document unchanged."""
    stored = root / "extra" / f"{V3_IMAGE}.zarr" / "0"
    doc = await get_json(client, f"/zarr/v3/{V3_IMAGE}.zarr/0/zarr.json")
    assert doc == json.loads((stored / "zarr.json").read_bytes()) | {"dimension_names": list("cyx")}
    resp = await client.get(f"/zarr/v3/{V3_IMAGE}.zarr/0/c/1/2/3")
    assert resp.status == 200 and await resp.read() == (stored / "c" / "1" / "2" / "3").read_bytes()
    assert (await client.get(f"/zarr/v3/{V3_IMAGE}.zarr/0/c/0/1/0/2/3")).status == 404


async def test_v3_view_of_a_v2_image_reuses_stored_chunks(client: TestClient, root: Path) -> None:
    doc = await get_json(client, "/zarr/v3/1001.zarr/0/zarr.json")
    assert doc["chunk_key_encoding"] == {"name": "v2", "configuration": {"separator": "/"}}
    assert [c["name"] for c in doc["codecs"]] == ["bytes", "blosc"]
    resp = await client.get("/zarr/v3/1001.zarr/0/1/3/4")
    assert await resp.read() == (root / "1001.zarr" / "0" / "1" / "3" / "4").read_bytes()


MISSING = [
    "/zarr/1001.zarr/.zmetadata",
    "/zarr/1001.zarr/0/.zattrs",
    "/zarr/1001.zarr/6/.zarray",
    "/zarr/1001.zarr/0/3/0/0",  # channel 3 of 3
    "/zarr/1001.zarr/0/0/16/0",  # past the chunk grid
    "/zarr/1001.zarr/0/0/0",  # too few indices
    "/zarr/1001.zarr/0/0/0/0/0",  # too many
    "/zarr/1001.zarr/0/0.0.0",  # wrong separator
    "/zarr/1001.zarr/0/a/0/0",
    "/zarr/1001.zarr/0/-1/0/0",
    "/zarr/1001.zarr/zarr.json",
    "/zarr/v3/1005.zarr/0/0/0/0/0/0",  # v3 generated keys start with c/
    "/zarr/v3/1005.zarr/0/c/0/0/0/0",
    f"/zarr/{SPARSE}.zarr/0/0/0/0",  # never written: the fill value
    "/zarr/999999.zarr/.zattrs",  # no such image
]


@pytest.mark.parametrize("path", MISSING)
async def test_missing_keys_are_404_json(client: TestClient, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 404, await resp.text()
    assert resp.content_type == "application/json"
    assert (await resp.json())["error"] == "not_found"


async def test_sparse_image_serves_the_written_chunk(client: TestClient, root: Path) -> None:
    resp = await client.get(f"/zarr/{SPARSE}.zarr/0/0/1/1")
    key = root / "extra" / f"{SPARSE}.zarr" / "0" / "0" / "1" / "1"
    assert resp.status == 200 and await resp.read() == key.read_bytes()


TRAVERSAL = [
    "/zarr/1001.zarr/%2e%2e/%2e%2e/etc/passwd",
    "/zarr/1001.zarr/0/%2E%2E/.zarray",
    "/zarr/1001.zarr/..%2f..%2fetc%2fpasswd",
    "/zarr/1001.zarr/0/..%5c.zarray",
    "/zarr/1001.zarr/0//0/0/0",
]


@pytest.mark.parametrize("path", TRAVERSAL)
async def test_traversal_is_400_json(client: TestClient, path: str) -> None:
    resp = await client.get(URL(path, encoded=True))
    body = await resp.read()
    assert 400 <= resp.status < 500, (resp.status, body[:200])
    assert resp.content_type == "application/json"
    assert b"root:" not in body


async def test_range_requests(client: TestClient, root: Path) -> None:
    path = "/zarr/1001.zarr/0/0/0/0"
    whole = (root / "1001.zarr" / "0" / "0" / "0" / "0").read_bytes()
    n = len(whole)
    cases = {
        "bytes=0-99": (206, whole[:100], f"bytes 0-99/{n}"),
        "bytes=100-": (206, whole[100:], f"bytes 100-{n - 1}/{n}"),
        "bytes=-10": (206, whole[-10:], f"bytes {n - 10}-{n - 1}/{n}"),
        f"bytes=0-{n + 50}": (206, whole, f"bytes 0-{n - 1}/{n}"),
        "bytes=0-9,20-29": (200, whole, None),  # several ranges: ignored, as RFC 9110 allows
        "bytes=9-3": (200, whole, None),  # invalid: ignored
        "items=0-9": (200, whole, None),
    }
    for header, (status, body, content_range) in cases.items():
        resp = await client.get(path, headers={"Range": header})
        assert resp.status == status, header
        assert await resp.read() == body, header
        assert int(resp.headers["Content-Length"]) == len(body)
        assert resp.headers.get("Content-Range") == content_range, header
        assert resp.headers["Accept-Ranges"] == "bytes"
    resp = await client.get(path, headers={"Range": f"bytes={n}-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == f"bytes */{n}"
    assert (await resp.json())["error"] == "range_not_satisfiable"
    stale = await client.get(path, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status == 200 and await stale.read() == whole


async def test_head(client: TestClient, root: Path) -> None:
    whole = (root / "1001.zarr" / "0" / "0" / "0" / "0").read_bytes()
    resp = await client.head("/zarr/1001.zarr/0/0/0/0")
    assert resp.status == 200
    assert int(resp.headers["Content-Length"]) == len(whole)
    assert await resp.read() == b""
    assert (await client.head("/zarr/1001.zarr/0/9/0/0")).status == 404
    resp = await client.head("/zarr/1001.zarr/.zattrs")
    assert resp.status == 200 and int(resp.headers["Content-Length"]) > 100


async def test_store_root_is_a_json_index(client: TestClient) -> None:
    doc = await get_json(client, "/zarr/1002.zarr/")
    assert doc["keys"][:2] == [".zgroup", ".zattrs"] and "2/.zarray" in doc["keys"]
    resp = await client.get("/zarr/1002.zarr", allow_redirects=False)
    assert resp.status == 301 and resp.headers["Location"].endswith("/zarr/1002.zarr/")


# ---- properties -------------------------------------------------------------------------------


@given(st.integers(0, 10_000), st.integers(-5, 10_000), st.integers(0, 10_000))
def test_parse_range_stays_within_the_object(size: int, start: int, length: int) -> None:
    for header in (f"bytes={start}-{start + length}", f"bytes={start}-", f"bytes=-{length}"):
        span = parse_range(header, size)
        if span is None or span == UNSATISFIABLE:
            continue
        a, b = span
        assert 0 <= a < b <= size


META = ImageMeta(
    1, "x", "uint16", 1000, 700, 3, 2, 4, (LevelMeta(1000, 700, 256, 256),), channels=()
)
KEY_CHARS = st.sampled_from(list("0123456789./c-_%ab\\zarjsonygtem"))


@given(st.text(KEY_CHARS, max_size=30))
def test_resolve_key_never_fails(key: str) -> None:
    for fmt in (2, 3):
        found = resolve_key(generated_view(META, fmt), key)
        if isinstance(found, ChunkRef):
            shape, chunks = (4, 2, 3, 700, 1000), (1, 1, 1, 256, 256)
            assert all(
                0 <= i < -(-n // c) for i, n, c in zip(found.index, shape, chunks, strict=True)
            )


@pytest.fixture(scope="module")
def live(root: Path) -> Iterator[tuple[str, int]]:
    with serve_in_thread(root) as addr:
        yield addr


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.sampled_from(["/zarr/1001.zarr/", "/zarr/v3/1005.zarr/", f"/zarr/{V3_IMAGE}.zarr/"]),
    st.text(st.sampled_from(list("0123456789./c%2eEfF5\\zarjsonyg~")), max_size=40),
)
def test_store_paths_never_5xx(live: tuple[str, int], prefix: str, key: str) -> None:
    status, content_type, body = raw_get(live, prefix + key.replace(" ", ""))
    assert status < 500, (prefix + key, status, body[:300])
    if status >= 400:
        assert content_type.startswith("application/json")


class OtherSource:
    """A pixel source that is not a ZarrSource (as an OMERO-backed image's would be)."""

    name = "other"

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def meta(self, image_id: int) -> Any:
        return await self.inner.meta(image_id)

    async def read(self, image_id: int, sel: Any) -> np.ndarray:
        data: np.ndarray = await self.inner.read(image_id, sel)
        return data

    async def aclose(self) -> None:
        return None

    def sync_reader(self, image_id: int, sel: Any) -> None:
        return None

    def fresh_data_version(self, image_id: int) -> None:
        return None

    def fresh_meta(self, image_id: int) -> None:
        return None


async def test_any_pixel_source_is_served_as_generated_5d(client: TestClient, root: Path) -> None:
    """Through `meta` + `read` only: 5D t,c,z,y,x documents and chunks equal to the pixels."""
    deps = client.app[DEPS]
    deps.source = OtherSource(deps.source)
    attrs = await get_json(client, "/zarr/1002.zarr/.zattrs")
    assert [a["name"] for a in attrs["multiscales"][0]["axes"]] == list("tczyx")
    doc = await get_json(client, "/zarr/1002.zarr/1/.zarray")
    assert doc["shape"] == [1, 2, 9, 256, 256] and doc["chunks"] == [1, 1, 1, 256, 256]
    codec = numcodecs.get_codec(doc["compressor"])
    level1 = zarr.open_array(str(root / "1002.zarr" / "1"), mode="r")[...]
    for c in range(2):
        for z in range(9):
            resp = await client.get(f"/zarr/1002.zarr/1/0/{c}/{z}/0/0")
            assert resp.status == 200
            plane = np.frombuffer(codec.decode(await resp.read()), "<u2").reshape(256, 256)
            np.testing.assert_array_equal(plane, level1[c, z])
    info = await get_json(client, "/api/v1/images/1002")
    assert info["zarr"]["layout"] == "generated"
    region = await client.get("/api/v1/images/1002/region?level=1&c=1&z=8&y=3:9")
    np.testing.assert_array_equal(np.load(io.BytesIO(await region.read()))[0], level1[1, 8, 3:9])
