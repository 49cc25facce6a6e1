"""OMERO-backed tiles: calls per viewer open and throughput against the OMERO concurrency cap.

Runs the stand-in OMERO (tests/omero/standin.py, a real Ice server, under the Python 3.10 venv
of scripts/setup_omero.sh) with an injected latency per Ice call (default 20 ms), and real
idrserve servers (aiohttp on a loopback port) that spawn their OMERO reader worker:

1. Viewer open, cold caches: imgData + 20 distinct tiles of a 2-channel image, sent twice at
   once (two viewers opening the same image). Counts the stand-in's getTile calls: at most one
   per distinct tile and channel is the goal (single flight + raw tile cache).
2. Throughput: 64 distinct single-channel tiles, 24 requests in flight, cold caches (a fresh
   server per run), for `omero.max_concurrent_calls` 1, 2, 4, 8 and 16 with
   `omero.thread_pool_size` 8 (the Ice thread pool: the cap beyond which more lanes add
   nothing). Reports tiles/s and the stand-in's maximum concurrent getTile calls.

    python bench/bench_omero.py [--latency-ms 20] [--out bench/results/omero-vm-DATE.md]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from idrserve.app import create_app  # noqa: E402
from idrserve.settings import load_settings  # noqa: E402

IMAGE = 9500
SIZE = 2048
TILE = 256


def write_standin_data(root: Path) -> None:
    """A 2-channel uint16 2048² image with 3 levels, saved settings: both channels active."""
    rng = np.random.default_rng(9500)
    full = rng.integers(0, 4000, (1, 2, 1, SIZE, SIZE), dtype=np.uint16)
    levels = [full, full[..., ::2, ::2].copy(), full[..., ::4, ::4].copy()]
    for i, arr in enumerate(levels):
        np.save(root / f"{IMAGE}_{i}.npy", arr)
    channel = {"active": True, "start": 0, "end": 4000, "family": "linear", "coefficient": 1.0}
    facts = {
        "id": IMAGE,
        "name": "bench.tif",
        "ownerId": 1,
        "pixelsId": 19500,
        "pixelsType": "uint16",
        "sizeX": SIZE,
        "sizeY": SIZE,
        "sizeZ": 1,
        "sizeC": 2,
        "sizeT": 1,
        "physicalSize": {"x": None, "y": None, "z": None},
        "tileSize": [TILE, TILE],
        "channels": [
            {"name": n, "emissionWave": None, "color": None, "statsMin": 0, "statsMax": 4000}
            for n in ("a", "b")
        ],
        "rdef": {
            "model": "rgb",
            "defaultZ": 0,
            "defaultT": 0,
            "channels": [
                {**channel, "color": [255, 0, 0, 255]},
                {**channel, "color": [0, 255, 0, 255]},
            ],
        },
    }
    (root / f"{IMAGE}.json").write_text(json.dumps(facts))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StandIn:
    def __init__(self, python: Path, data: Path, latency_ms: float) -> None:
        self.proc = subprocess.Popen(
            [
                str(python),
                str(REPO / "tests" / "omero" / "standin.py"),
                "--data",
                str(data),
                "--latency-ms",
                str(latency_ms),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        _, port, control = self.proc.stdout.readline().split()
        self.port = int(port)
        self.control = f"http://127.0.0.1:{control}"

    def call(self, path: str, post: bool = False) -> dict[str, Any]:
        req = urllib.request.Request(self.control + path, method="POST" if post else "GET")
        with urllib.request.urlopen(req, timeout=10) as resp:
            out: dict[str, Any] = json.load(resp)
        return out

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def serve(standin: StandIn, python: Path, cap: int, threads: int) -> web.AppRunner:
    settings = load_settings(
        {
            "omero": {
                "host": "tcp://127.0.0.1",
                "port": standin.port,
                "worker_python": str(python),
                "max_concurrent_calls": cap,
                "thread_pool_size": threads,
                "session_pool_size": 2,
            },
            "cache": {"memory_max_bytes": 0, "url_index_entries": 0},
        }
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    return runner


async def fetch_all(base: str, urls: list[str], in_flight: int) -> float:
    sem = asyncio.Semaphore(in_flight)
    async with aiohttp.ClientSession() as session:

        async def one(url: str) -> None:
            async with sem, session.get(base + url) as resp:
                await resp.read()
                assert resp.status == 200, (url, resp.status)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(u) for u in urls))
        return time.perf_counter() - t0


async def start(runner: web.AppRunner) -> str:
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return f"http://127.0.0.1:{port}"


async def viewer_open(standin: StandIn, python: Path) -> dict[str, Any]:
    runner = await serve(standin, python, cap=8, threads=8)
    try:
        base = await start(runner)
        standin.call("/reset", post=True)
        tiles = [
            f"/webgateway/render_image_region/{IMAGE}/0/0/?tile=0,{col},{row},256,256"
            for col in range(5)
            for row in range(4)
        ]
        t0 = time.perf_counter()
        await fetch_all(base, [f"/webgateway/imgData/{IMAGE}/"], 1)
        await fetch_all(base, tiles + tiles, 24)  # two viewers opening at once
        elapsed = time.perf_counter() - t0
        stats = standin.call("/")
    finally:
        await runner.cleanup()
    return {
        "tiles": len(tiles),
        "requests": 2 * len(tiles) + 1,
        "getTile": stats["getTile"],
        "distinct_tile_channels": 2 * len(tiles),
        "ice_calls": sum(stats["calls"].values()),
        "calls": stats["calls"],
        "seconds": elapsed,
    }


async def throughput(standin: StandIn, python: Path, cap: int, threads: int) -> dict[str, Any]:
    runner = await serve(standin, python, cap=cap, threads=threads)
    try:
        base = await start(runner)
        await fetch_all(base, [f"/webgateway/imgData/{IMAGE}/"], 1)  # metadata + sessions
        standin.call("/reset", post=True)
        urls = [
            f"/webgateway/render_image_region/{IMAGE}/0/0/?tile=0,{col},{row},256,256"
            f"&c=1|0:4000$FF0000,-2"
            for col in range(8)
            for row in range(8)
        ]
        elapsed = await fetch_all(base, urls, 24)
        stats = standin.call("/")
    finally:
        await runner.cleanup()
    return {
        "cap": cap,
        "tiles_per_s": len(urls) / elapsed,
        "getTile": stats["getTile"],
        "max_concurrent": stats["maxConcurrentTiles"],
    }


async def main_async(args: argparse.Namespace) -> str:
    python = Path(args.python)
    with tempfile.TemporaryDirectory() as tmp:
        write_standin_data(Path(tmp))
        standin = StandIn(python, Path(tmp), args.latency_ms)
        try:
            opened = await viewer_open(standin, python)
            rows = []
            for cap in args.caps:
                runs = [
                    await throughput(standin, python, cap, args.threads) for _ in range(args.repeat)
                ]
                rates = sorted(r["tiles_per_s"] for r in runs)
                rows.append(
                    {
                        "cap": cap,
                        "tiles_per_s": statistics.median(rates),
                        "range": (rates[0], rates[-1]),
                        "getTile": max(r["getTile"] for r in runs),
                        "max_concurrent": max(r["max_concurrent"] for r in runs),
                    }
                )
        finally:
            standin.close()
    lines = [
        f"# OMERO-backed tiles against the stand-in ({dt.date.today()})",
        "",
        f"Command: `python bench/bench_omero.py --latency-ms {args.latency_ms:g}`; "
        f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"stand-in latency {args.latency_ms:g} ms per Ice call.",
        "",
        "## Viewer open, cold caches (imgData + 20 distinct tiles, 2 channels, sent twice at once)",
        "",
        f"- requests: {opened['requests']}; getTile calls: **{opened['getTile']}** for "
        f"{opened['distinct_tile_channels']} distinct tile × channel pairs "
        f"(at most one per pair: {opened['getTile'] <= opened['distinct_tile_channels']})",
        f"- all Ice calls: {opened['ice_calls']} ({json.dumps(opened['calls'], sort_keys=True)})",
        f"- wall time: {opened['seconds']:.2f} s",
        "",
        "## Throughput, cold: 64 distinct 1-channel tiles, 24 in flight, "
        f"Ice threads {args.threads}",
        "",
        f"Median of {args.repeat} runs (min–max); a fresh server and worker per run.",
        "",
        "| omero.max_concurrent_calls | tiles/s | min–max | × cap 1 | getTile per run "
        "| max concurrent getTile |",
        "|---|---|---|---|---|---|",
    ]
    base = rows[0]["tiles_per_s"]
    for row in rows:
        lines.append(
            f"| {row['cap']} | {row['tiles_per_s']:.0f} "
            f"| {row['range'][0]:.0f}–{row['range'][1]:.0f} | {row['tiles_per_s'] / base:.1f} "
            f"| {row['getTile']} | {row['max_concurrent']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--python", default=str(REPO / ".venv-omero" / "bin" / "python"))
    p.add_argument("--caps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    report = asyncio.run(main_async(args))
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
