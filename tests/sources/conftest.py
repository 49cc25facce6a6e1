"""Writers for every OME-Zarr flavour the sources must read, and real servers to read them from.

Remote stores are real servers in subprocesses on loopback ports: a static file server with
Range support (aiohttp) and moto's S3 server. They must not run in the test process: the zarrs
codec pipeline holds the GIL while it waits on the network (see `sources/zarr.py`), which would
starve an in-process server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

from idrserve.demo import DemoImage, write_demo

AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def pyramid(data: np.ndarray, levels: int) -> list[np.ndarray]:
    """Floor-halved levels by 2×2 subsampling of the last two axes (exact, any dtype)."""
    out = [data]
    for _ in range(levels - 1):
        out.append(out[-1][..., ::2, ::2][..., : out[-1].shape[-2] // 2, : out[-1].shape[-1] // 2])
    return [np.ascontiguousarray(a) for a in out]


def ramp(shape: Sequence[int], dtype: str, seed: int = 0) -> np.ndarray:
    """Distinct-ish values everywhere (so a wrong offset shows), plus a little noise."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    kind = np.dtype(dtype).kind
    if kind == "f":
        return (np.arange(n, dtype=np.float64) / 7.0 - 50.0).reshape(shape).astype(dtype)
    info = np.iinfo(np.dtype(dtype))
    values = (np.arange(n, dtype=np.int64) * 7 + rng.integers(0, 3, n)) % (int(info.max) + 1)
    return values.reshape(shape).astype(dtype)


def multiscales(
    axes: str,
    n_levels: int,
    *,
    version: str | None,
    axes_style: str = "objects",
    units: bool = True,
    pixel: float = 0.5,
) -> dict[str, Any]:
    """A `multiscales[0]` object; `axes_style` is objects (0.4+), strings (0.3) or none (0.1)."""
    ms: dict[str, Any] = {"name": "test-image"}
    if version is not None:
        ms["version"] = version
    if axes_style == "objects":
        ms["axes"] = [
            {
                "name": a,
                "type": AXIS_TYPES[a],
                **({"unit": "micrometer"} if units and a in "zyx" else {}),
            }
            for a in axes
        ]
    elif axes_style == "strings":
        ms["axes"] = list(axes)
    datasets = []
    for i in range(n_levels):
        ds: dict[str, Any] = {"path": str(i)}
        if axes_style == "objects":
            scale = [pixel * 2**i if a in "yx" else 1.0 for a in axes]
            ds["coordinateTransformations"] = [{"type": "scale", "scale": scale}]
        datasets.append(ds)
    ms["datasets"] = datasets
    return ms


def write_v2(
    path: Path,
    levels: Sequence[np.ndarray],
    attrs: dict[str, Any],
    *,
    chunks: Sequence[Sequence[int]],
    separator: str = "/",
    compressor: Any = None,
) -> None:
    """A Zarr v2 group with `attrs` and arrays `0..n-1` (dtype incl. byte order from data)."""
    store = LocalStore(path)
    group = zarr.open_group(store, mode="w", zarr_format=2)
    group.attrs.update(attrs)
    for i, (data, chunk) in enumerate(zip(levels, chunks, strict=True)):
        zarr.create_array(
            store,
            name=str(i),
            data=data,
            chunks=tuple(chunk),
            zarr_format=2,
            compressors=compressor or numcodecs.Blosc(cname="lz4", clevel=5, shuffle=1),
            chunk_key_encoding={"name": "v2", "separator": separator},
        )


def write_v3(
    path: Path,
    levels: Sequence[np.ndarray],
    ome: dict[str, Any],
    axes: str,
    *,
    chunks: Sequence[Sequence[int]],
    shards: Sequence[Sequence[int]] | None = None,
    separator: str = "/",
) -> None:
    """A Zarr v3 (NGFF 0.5) group with `attributes.ome` and arrays, optionally sharded."""
    store = LocalStore(path)
    group = zarr.open_group(store, mode="w", zarr_format=3)
    group.attrs.update({"ome": ome})
    for i, data in enumerate(levels):
        zarr.create_array(
            store,
            name=str(i),
            data=data,
            chunks=tuple(chunks[i]),
            shards=tuple(shards[i]) if shards else None,
            zarr_format=3,
            serializer=BytesCodec(),
            compressors=BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
            chunk_key_encoding={"name": "default", "separator": separator},
            dimension_names=list(axes),
        )


def chunks_for(levels: Sequence[np.ndarray], yx: tuple[int, int]) -> list[tuple[int, ...]]:
    return [
        (*(1,) * (a.ndim - 2), min(yx[0], a.shape[-2]), min(yx[1], a.shape[-1])) for a in levels
    ]


def omero_block(labels: Sequence[str], colours: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {
        "channels": [
            {
                "label": label,
                "color": colour,
                "active": True,
                "window": {"min": 0, "max": 60000, "start": 10 + i, "end": 5000 + i},
            }
            for i, (label, colour) in enumerate(zip(labels, colours, strict=True))
        ],
        "rdefs": {"model": "color", **extra},
    }


# ---- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


STATIC_SERVER = """
import sys
from aiohttp import web
app = web.Application()
app.router.add_static("/", sys.argv[1])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None)
"""


@pytest.fixture(scope="session")
def http_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP (with Range support) by a subprocess: (dir, base URL)."""
    root = tmp_path_factory.mktemp("http-root")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", STATIC_SERVER, str(root), str(port)])
    try:
        wait_for_port(port, proc)
        yield root, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server in a subprocess; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def upload_tree(endpoint: str, bucket: str, prefix: str, root: Path) -> None:
    """Copy a local directory into a (public-read) bucket on the moto server."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        # moto checks ACLs (not bucket policies) for anonymous requests.
        client.create_bucket(Bucket=bucket, ACL="public-read")
    for file in sorted(root.rglob("*")):
        if file.is_file():
            key = f"{prefix}/{file.relative_to(root).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=file.read_bytes(), ACL="public-read")


# ---- demo ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[DemoImage]]:
    root = tmp_path_factory.mktemp("demo")
    return root, write_demo(root)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
