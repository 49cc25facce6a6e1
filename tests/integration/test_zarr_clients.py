"""Independent clients against a running server: zarr-python, dask, ome-zarr-py, numpy.load.

Every demo image is read at every level through `/zarr/{id}.zarr` (NGFF 0.4, Zarr v2) and
`/zarr/v3/{id}.zarr` (NGFF 0.5, Zarr v3) and compared element for element with the stored arrays
read directly from disk with zarr. The code blocks of docs/jupyter.md run against the same server.
"""

from __future__ import annotations

import http.client
import io
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import zarr
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05

from tests.integration.live_server import demo_images, idrserve
from tests.sources.conftest import STATIC_SERVER, free_port, wait_for_port

DOCS = Path(__file__).resolve().parents[2] / "docs" / "jupyter.md"
IDS = (1001, 1002, 1003, 1004, 1005, 1006)
VIEWS = ("zarr", "zarr/v3")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root, _ = demo_images(tmp_path_factory)
    log = tmp_path_factory.mktemp("zarr-clients") / "idrserve.log"
    with idrserve(root, log) as base:
        yield base, root


def stored_levels(root: Path, iid: int) -> list[np.ndarray]:
    """Every level of the stored image, read straight from disk with zarr."""
    group = zarr.open_group(str(root / f"{iid}.zarr"), mode="r")
    attrs = group.attrs.asdict()
    ms = attrs.get("ome", attrs)["multiscales"][0]
    return [np.asarray(group[d["path"]][...]) for d in ms["datasets"]]


def as_view(stored: np.ndarray, served_shape: tuple[int, ...]) -> np.ndarray:
    """The stored array in the view's axes: unchanged (pass-through) or 5D t,c,z,y,x."""
    if stored.shape == served_shape:
        return stored
    assert stored.size == int(np.prod(served_shape)), (stored.shape, served_shape)
    return stored.reshape(served_shape)  # only singleton t/c/z axes are added


def multiscale(group: Any) -> dict[str, Any]:
    attrs = group.attrs.asdict()
    ngff = attrs.get("ome", attrs)
    return dict(ngff["multiscales"][0])


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("iid", IDS)
def test_zarr_python_reads_every_level(served: tuple[str, Path], iid: int, view: str) -> None:
    base, root = served
    group = zarr.open_group(f"{base}/{view}/{iid}.zarr", mode="r")
    assert group.metadata.zarr_format == (3 if view.endswith("v3") else 2)
    ms = multiscale(group)
    stored = stored_levels(root, iid)
    assert [d["path"] for d in ms["datasets"]] == [str(i) for i in range(len(stored))]
    for level, expected in enumerate(stored):
        arr = group[str(level)]
        got = arr[...]
        assert got.dtype == expected.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, as_view(expected, got.shape))


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("iid", IDS)
def test_dask_reads_every_level(served: tuple[str, Path], iid: int, view: str) -> None:
    base, root = served
    for level, expected in enumerate(stored_levels(root, iid)):
        lazy = da.from_zarr(f"{base}/{view}/{iid}.zarr/{level}")
        got = lazy.compute(scheduler="threads")
        np.testing.assert_array_equal(got, as_view(expected, got.shape))


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("iid", IDS)
def test_ome_zarr_reader(served: tuple[str, Path], iid: int, view: str) -> None:
    base, root = served
    location = parse_url(f"{base}/{view}/{iid}.zarr")
    assert location is not None
    image = next(iter(Reader(location)()))
    stored = stored_levels(root, iid)
    assert len(image.data) == len(stored)
    for lazy, expected in zip(image.data, stored, strict=True):
        got = np.asarray(lazy)
        np.testing.assert_array_equal(got, as_view(expected, got.shape))
    labels = image.metadata.get("channel_names")
    info = json.loads(urllib.request.urlopen(f"{base}/api/v1/images/{iid}").read())
    assert labels == [ch["label"] for ch in info["channels"]]


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("iid", IDS)
def test_ome_zarr_models_accept_every_view(served: tuple[str, Path], iid: int, view: str) -> None:
    """ome-zarr-models' NGFF 0.4 and 0.5 models (group and array metadata, axes against
    `dimension_names`, one scale per dataset) accept every view; units only on space axes, and
    on all of them when on any (an added z carries the source's unit), in the document's version.
    """
    base, _ = served
    group = zarr.open_group(f"{base}/{view}/{iid}.zarr", mode="r")
    model = Image05 if view.endswith("v3") else Image04
    image = model.from_zarr(group)
    axes = image.ome_attributes.multiscales[0].axes
    space = [a.unit for a in axes if a.type == "space"]
    assert all(a.unit is None for a in axes if a.type != "space"), axes
    assert space == ["micrometer"] * len(space), (iid, view, axes)  # every demo image has units
    attrs = group.attrs.asdict()
    version = "0.5" if view.endswith("v3") else "0.4"
    assert attrs.get("ome", attrs)["omero"]["version"] == version


def test_missing_chunks_read_as_fill_value(tmp_path: Path) -> None:
    """Chunks the store lacks are 404s that zarr-python and dask fill in, as from static files."""
    data = np.zeros((2, 300, 500), dtype=np.uint16)
    data[1, 260:, 400:] = 7  # only the last chunk of channel 1 holds data
    write_sparse(tmp_path / "data" / "4242.zarr", data)
    assert len(list((tmp_path / "data" / "4242.zarr" / "0").rglob("*"))) < 8  # really sparse
    with idrserve(tmp_path / "data", tmp_path / "idrserve.log") as base:
        conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=30)
        conn.request("GET", "/zarr/4242.zarr/0/0/0/0")
        resp = conn.getresponse()
        assert resp.status == 404
        assert json.loads(resp.read())["error"] == "not_found"
        for view in VIEWS:
            got = zarr.open_array(f"{base}/{view}/4242.zarr/0", mode="r")[...]
            np.testing.assert_array_equal(got, as_view(data, got.shape))
            lazy = da.from_zarr(f"{base}/{view}/4242.zarr/0")
            np.testing.assert_array_equal(lazy.compute(), as_view(data, lazy.shape))


def write_sparse(path: Path, data: np.ndarray) -> None:
    """An NGFF 0.4 image whose all-zero chunks are not written (zarr's write_empty_chunks)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    arr = group.create_array(
        "0",
        shape=data.shape,
        chunks=(1, 256, 256),
        dtype=data.dtype,
        fill_value=0,
        chunk_key_encoding={"name": "v2", "separator": "/"},
        config={"write_empty_chunks": False},
    )
    arr[...] = data
    axes = [{"name": "c", "type": "channel"}] + [{"name": a, "type": "space"} for a in "yx"]
    scale = [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": scale}],
        }
    ]


def test_numpy_load_region(served: tuple[str, Path]) -> None:
    base, root = served
    full = stored_levels(root, 1006)
    url = f"{base}/api/v1/images/1006/region?level=1&t=2&c=0:2&z=1&y=10:90&x=:100&format=npy"
    with urllib.request.urlopen(url) as resp:
        got = np.load(io.BytesIO(resp.read()))
    np.testing.assert_array_equal(got, full[1][2, 0:2, 1, 10:90, :100])
    url = f"{base}/api/v1/images/1001/region?c=1&y=1000:1300&x=4000:4096"
    with urllib.request.urlopen(url) as resp:
        got = np.load(io.BytesIO(resp.read()))
    np.testing.assert_array_equal(got, full_1001(root)[1, 1000:1300, 4000:4096][None, None])


def full_1001(root: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(root / "1001.zarr" / "0"), mode="r")[...])


RAW_BAD_PATHS = [
    "/zarr/1001.zarr/../../../../etc/passwd",
    "/zarr/1001.zarr/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/zarr/1001.zarr/0/%2E%2E/%2E%2E/.zattrs",
    "/zarr/1001.zarr/..%2f..%2f..%2fetc%2fpasswd",
    "/zarr/1001.zarr/0/..\\..\\.zattrs",
    "/zarr/1001.zarr/%252e%252e/.zattrs",
    "/zarr/v3/1001.zarr/../1002.zarr/zarr.json",
    "/zarr/1001.zarr//etc/passwd",
    "/zarr/1001.zarr/0/0/0/%00",
    "/api/v1/images/1001/region?x=-5:10",
    "/api/v1/images/1001/region?y=300:100",
    "/api/v1/images/1001/region?x=0:5000",
    "/api/v1/images/1001/region?t=1",
]


@pytest.mark.parametrize("path", RAW_BAD_PATHS)
def test_bad_paths_are_4xx_json(served: tuple[str, Path], path: str) -> None:
    """Sent byte for byte (http.client does not normalise `..`), answered with a JSON 4xx."""
    base, _ = served
    conn = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=30)
    conn.putrequest("GET", path, skip_accept_encoding=True)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    assert 400 <= resp.status < 500, (path, resp.status, body[:200])
    assert resp.getheader("Content-Type", "").startswith("application/json")
    assert b"root:" not in body
    assert json.loads(body)["error"]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_jupyter_docs_snippets_run(served: tuple[str, Path], tmp_path: Path) -> None:
    """Every python block of docs/jupyter.md, with the documented URL replaced by the server's."""
    base, _ = served
    blocks = python_blocks(DOCS.read_text())
    assert len(blocks) >= 4
    script = "\n\n".join(blocks).replace("http://localhost:8080", base)
    assert base in script
    path = tmp_path / "snippets.py"
    path.write_text(script)
    done = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "paged plane equals the whole plane: True" in done.stdout
    assert "answered 400: " in done.stdout and "is out of range" in done.stdout  # fetch's error


def test_remote_store_is_passed_through_too(served: tuple[str, Path], tmp_path: Path) -> None:
    """Images under an https-like root: stored chunks come through the object store unchanged."""
    _, root = served
    port = free_port()
    static = subprocess.Popen([sys.executable, "-c", STATIC_SERVER, str(root), str(port)])
    try:
        wait_for_port(port, static)
        with idrserve(f"http://127.0.0.1:{port}", tmp_path / "idrserve.log") as base:
            for iid in (1002, 1006):
                group = zarr.open_group(f"{base}/zarr/{iid}.zarr", mode="r")
                for level, expected in enumerate(stored_levels(root, iid)):
                    np.testing.assert_array_equal(group[str(level)][...], expected)
            key = "0/1/4/0/0"
            with urllib.request.urlopen(f"{base}/zarr/1002.zarr/{key}") as resp:
                assert resp.read() == (root / "1002.zarr" / key).read_bytes()
            info = json.loads(urllib.request.urlopen(f"{base}/api/v1/images/1002").read())
            assert info["zarr"]["layout"] == "stored"
    finally:
        static.terminate()
        static.wait(10)
