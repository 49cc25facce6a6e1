"""Compare Zarr readers for idrserve's tile workload and write a Markdown report.

Readers: zarr-python's default codec pipeline, zarr-python with the zarrs codec pipeline (each
over zarr's LocalStore and over obstore's LocalStore), and tensorstore. Workloads:

a. many concurrent 256x256 tile reads from 256x256 chunks, uint16, Blosc lz4, Zarr v2;
b. the same on Zarr v3 with sharding (1024x1024 shards of 256x256 inner chunks);
c. one 512x512 read over 256x256 chunks, chunk-aligned (4 chunks) and unaligned (9 chunks),
   timed alone (latency of a single region read);
d. (remote) concurrent 256x256 tiles over HTTP from a local server (a subprocess of this script)
   that adds `--http-latency-ms` to every request, for v2 and v3 sharded, through obstore's
   HTTPStore (zarr default and zarrs pipelines) and tensorstore's http kvstore.

Every reader opens its arrays once (as the server caches open arrays) and reads through the
async API from one asyncio loop bounded by a semaphore, as `ZarrSource` does. Each workload is
repeated and the median and best wall time reported, plus the worst event-loop lag seen by a
10 ms ticker (a reader that works on the loop thread shows up there).

    python bench/bench_readers.py --size 4096 --tiles 256 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import obstore.store
import tensorstore as ts
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.core.array import AsyncArray
from zarr.storage import LocalStore, ObjectStore, StorePath

Read = Callable[[int, int, int, int], Awaitable[np.ndarray]]


def make_data(size: int, seed: int = 1) -> np.ndarray:
    """A fluorescence-like uint16 plane: smooth blobs plus Poisson-ish noise (compresses ~2-3x)."""
    rng = np.random.default_rng(seed)
    small = rng.random((size // 32, size // 32)).astype(np.float32)
    plane = np.kron(small, np.ones((32, 32), np.float32)) * 3000.0 + 200.0
    plane += rng.integers(0, 200, size=(size, size)).astype(np.float32)
    return plane.astype(np.uint16)


def write_arrays(root: Path, data: np.ndarray) -> None:
    """Write the v2 and v3-sharded copies of `data` (2D, y/x) under `root`."""
    v2 = zarr.create_array(
        LocalStore(root / "v2.zarr"),
        shape=data.shape,
        chunks=(256, 256),
        dtype="<u2",
        zarr_format=2,
        compressors=numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
        chunk_key_encoding={"name": "v2", "separator": "/"},
    )
    v2[...] = data
    v3 = zarr.create_array(
        LocalStore(root / "v3.zarr"),
        shape=data.shape,
        chunks=(256, 256),
        shards=(1024, 1024),
        dtype="uint16",
        zarr_format=3,
        serializer=BytesCodec(),
        compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    )
    v3[...] = data


def open_zarr(
    root: Path, name: str, *, zarrs: bool, obstore_local: bool, url: str | None = None
) -> AsyncArray[Any]:
    """Open one array from its metadata document with zero requests, as ZarrSource does."""
    doc_name = ".zarray" if name == "v2.zarr" else "zarr.json"
    meta = json.loads((root / name / doc_name).read_text())
    store: Any
    if url is not None:
        http = obstore.store.HTTPStore.from_url(
            f"{url}/{name}", client_options={"allow_http": True}
        )
        store = ObjectStore(http, read_only=True)
    elif obstore_local:
        store = ObjectStore(obstore.store.LocalStore(prefix=str(root / name)), read_only=True)
    else:
        store = LocalStore(root / name, read_only=True)
    path = {"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"} if zarrs else {}
    # zarrs warns that it rebuilds an obstore store in Rust (no shared connection pool).
    with zarr.config.set(path), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return AsyncArray(metadata=meta, store_path=StorePath(store, ""))


def zarr_reader(arr: AsyncArray[Any]) -> Read:
    async def read(y: int, x: int, h: int, w: int) -> np.ndarray:
        out = await arr.getitem((slice(y, y + h), slice(x, x + w)))
        return np.asarray(out)

    return read


async def open_tensorstore(root: Path, name: str, url: str | None = None) -> Read:
    driver = "zarr" if name == "v2.zarr" else "zarr3"
    kvstore: dict[str, Any] = {"driver": "file", "path": str(root / name) + "/"}
    if url is not None:
        kvstore = {"driver": "http", "base_url": f"{url}/{name}/"}
    spec = {
        "driver": driver,
        "kvstore": kvstore,
        "context": {"cache_pool": {"total_bytes_limit": 0}},
    }
    arr = await ts.open(spec, read=True, open=True)

    async def read(y: int, x: int, h: int, w: int) -> np.ndarray:
        return np.asarray(await arr[y : y + h, x : x + w].read())

    return read


@dataclass
class Result:
    times: list[float]
    lag_ms: float

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)


async def measure(
    read: Read, boxes: list[tuple[int, int, int, int]], repeat: int, limit: int, ref: np.ndarray
) -> Result:
    """Time `repeat` runs of all `boxes` read concurrently (at most `limit` in flight)."""
    sem = asyncio.Semaphore(limit)

    async def one(box: tuple[int, int, int, int]) -> None:
        async with sem:
            got = await read(*box)
        y, x, h, w = box
        if not np.array_equal(got, ref[y : y + h, x : x + w]):
            raise AssertionError(f"wrong pixels for box {box}")

    # Warm-up (opens files, JIT-free paths, thread pools), not timed.
    await asyncio.gather(*(one(b) for b in boxes[: min(len(boxes), 8)]))
    lag = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal lag
        while not stop:
            t0 = time.perf_counter()
            await asyncio.sleep(0.01)
            lag = max(lag, time.perf_counter() - t0 - 0.01)

    tick = asyncio.create_task(ticker())
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in boxes))
        times.append(time.perf_counter() - t0)
    stop = True
    await tick
    return Result(times, lag * 1000.0)


def workloads(size: int, tiles: int, seed: int) -> dict[str, list[tuple[int, int, int, int]]]:
    rng = np.random.default_rng(seed)
    grid = size // 256
    cells = rng.choice(grid * grid, size=min(tiles, grid * grid), replace=False)
    tile_boxes = [(int(c // grid) * 256, int(c % grid) * 256, 256, 256) for c in cells]
    return {
        "a": tile_boxes,
        "b": tile_boxes,
        "c-aligned": [(1024, 1024, 512, 512)],
        "c-unaligned": [(1152, 1152, 512, 512)],
    }


DESCRIPTION = {
    "a": "{n} concurrent 256² tiles, v2 256² chunks (blosc lz4)",
    "b": "{n} concurrent 256² tiles, v3 sharded (1024² shards, 256² inner)",
    "c-aligned": "one 512² read over 256² chunks (aligned, 4 chunks), v2",
    "c-unaligned": "one 512² read over 256² chunks (unaligned, 9 chunks), v2",
    "d-v2": "HTTP +{lat} ms/request: {n} concurrent 256² tiles, v2",
    "d-v3": "HTTP +{lat} ms/request: {n} concurrent 256² tiles, v3 sharded",
    "d-region": "HTTP +{lat} ms/request: one 512² unaligned read (9 chunks), v2",
    "d-region-v3": "HTTP +{lat} ms/request: one 1024² read (25 inner chunks, 4 shards), v3",
}

HTTP_READERS = [
    ("zarr default + obstore HTTPStore", {"zarrs": False}),
    ("zarr + zarrs + obstore HTTPStore", {"zarrs": True}),
    ("tensorstore (http kvstore)", None),
]

READERS = [
    ("zarr default + zarr LocalStore", dict(zarrs=False, obstore_local=False)),
    ("zarr default + obstore LocalStore", dict(zarrs=False, obstore_local=True)),
    ("zarr + zarrs + zarr LocalStore", dict(zarrs=True, obstore_local=False)),
    ("zarr + zarrs + obstore LocalStore", dict(zarrs=True, obstore_local=True)),
    ("tensorstore (file kvstore)", None),
]


async def run(
    args: argparse.Namespace, root: Path, ref: np.ndarray, url: str | None
) -> list[list[str]]:
    loads = workloads(args.size, args.tiles, args.seed)
    results: dict[tuple[str, str], Result] = {}
    for key, boxes in loads.items():
        name = "v3.zarr" if key == "b" else "v2.zarr"
        for label, opts in READERS:
            if opts is None:
                read = await open_tensorstore(root, name)
            else:
                arr = open_zarr(
                    root, name, zarrs=opts["zarrs"], obstore_local=opts["obstore_local"]
                )
                read = zarr_reader(arr)
            # Single reads are fast and noisy: repeat them 10x as often.
            repeat = args.repeat * (10 if len(boxes) == 1 else 1)
            results[(key, label)] = await measure(read, boxes, repeat, args.limit, ref)
            r = results[(key, label)]
            print(f"{key:12s} {label:36s} median {r.median * 1000:8.1f} ms", file=sys.stderr)
    if url is not None:
        loads.update(await run_http(args, root, ref, results, url))
    rows = []
    for key in loads:
        readers = HTTP_READERS if key.startswith("d-") else READERS
        base = results[(key, readers[0][0])].median
        for label, _ in readers:
            r = results[(key, label)]
            rows.append(
                [
                    DESCRIPTION[key].format(n=len(loads[key]), lat=args.http_latency_ms),
                    label,
                    f"{r.median * 1000:.1f}",
                    f"{r.best * 1000:.1f}",
                    f"{base / r.median:.2f}×",
                    f"{r.lag_ms:.1f}",
                ]
            )
    return rows


async def run_http(
    args: argparse.Namespace,
    root: Path,
    ref: np.ndarray,
    results: dict[tuple[str, str], Result],
    url: str,
) -> dict[str, list[tuple[int, int, int, int]]]:
    """The remote workloads, against this script's own `--serve` subprocess on loopback."""
    tiles = workloads(args.size, args.tiles, args.seed)["a"][: args.http_tiles]
    loads = {
        "d-v2": tiles,
        "d-v3": tiles,
        "d-region": [(1152, 1152, 512, 512)],
        "d-region-v3": [(1152, 1152, 1024, 1024)],
    }
    for key, boxes in loads.items():
        name = "v3.zarr" if key.endswith("v3") else "v2.zarr"
        for label, opts in HTTP_READERS:
            if opts is None:
                read = await open_tensorstore(root, name, url)
            else:
                arr = open_zarr(root, name, zarrs=opts["zarrs"], obstore_local=False, url=url)
                read = zarr_reader(arr)
            r = await measure(read, boxes, args.repeat, args.limit, ref)
            results[(key, label)] = r
            print(f"{key:12s} {label:36s} median {r.median * 1000:8.1f} ms", file=sys.stderr)
    return loads


def start_server(root: Path, latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    """Run `--serve` in a subprocess (an in-process server would share our GIL) on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, __file__, "--serve", str(root), str(port), str(latency_ms)]
    server = subprocess.Popen(cmd)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.1)
    return server, f"http://127.0.0.1:{port}"


def serve(root: str, port: int, latency_ms: float) -> None:
    """A static file server (with Range support) that sleeps before every response."""
    from aiohttp import web

    @web.middleware
    async def delay(request: web.Request, handler: Any) -> web.StreamResponse:
        await asyncio.sleep(latency_ms / 1000.0)
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[delay])
    app.router.add_static("/", root)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="plane side in pixels")
    parser.add_argument("--tiles", type=int, default=256, help="tiles per storm (a, b)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repetitions")
    parser.add_argument("--limit", type=int, default=64, help="semaphore (max_concurrent_reads)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--http-latency-ms", type=float, default=20.0, help="per-request delay (0: skip d)"
    )
    parser.add_argument("--http-tiles", type=int, default=64, help="tiles per remote storm (d)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-readers-"))
    try:
        ref = make_data(args.size)
        write_arrays(root, ref)
        server, url = (
            start_server(root, args.http_latency_ms) if args.http_latency_ms else (None, None)
        )
        try:
            rows = asyncio.run(run(args, root, ref, url))
        finally:
            if server is not None:
                server.terminate()
                server.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    host = socket.gethostname()
    today = dt.date.today().isoformat()
    versions = (
        f"zarr {zarr.__version__}, zarrs {_version('zarrs')}, "
        f"tensorstore {_version('tensorstore')}, obstore {_version('obstore')}, "
        f"numpy {np.__version__}, Python {sys.version.split()[0]}"
    )
    header = ["workload", "reader", "median ms", "best ms", "speed vs default", "max loop lag ms"]
    lines = [
        f"# Zarr reader benchmark — {host}, {today}",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"Versions: {versions}. CPUs: {_cpus()}. Local disk, page cache warm, "
        f"semaphore {args.limit}, {args.repeat} timed repetitions (10× for single reads). "
        "`max loop lag` is the worst delay of a 10 ms asyncio ticker during the runs: "
        "time the event loop could not serve other requests.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"readers-{host}-{today}.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}", file=sys.stderr)


def _version(module: str) -> str:
    from importlib.metadata import version

    return version(module)


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
