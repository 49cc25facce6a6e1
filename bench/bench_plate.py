"""A 384-well plate's grid and thumbnails, cold and warm, from one idrserve process on one core.

Writes one NGFF 0.4 plate (16 × 24 wells, one 512² uint16 field a well, four levels 512…64,
256² chunks, blosc-lz4; plate and well metadata by ome-zarr-py), then for each of `--rounds`
fresh servers (`idrserve serve` pinned to core 0, one CPU thread, memory cache only):

* cold: what a plate browser asks first, the grid JSON then every well's thumbnail in eight
  `get_thumbnails` batches of 48 (six at a time, as a browser), timed end to end, and the bytes
  the server process read (`rchar` of /proc/PID/io: every read call, page cache included) next
  to the bytes of the lowest levels and of the full-resolution levels on disk;
* warm: wrk on core 1 replaying the grid, the batches, and single `render_thumbnail`s.

    python bench/bench_plate.py [--rounds 3] [--duration 5] [--out bench/results/plate-….md]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.format import FormatV04
from ome_zarr.writer import write_multiscales_metadata, write_plate_metadata, write_well_metadata

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from bench_http import free_port, run_wrk  # noqa: E402

PLATE_ID = 4242
ROWS = [chr(ord("A") + i) for i in range(16)]
COLS = [str(i) for i in range(1, 25)]
SIDE, LEVELS, CHUNK = 512, 4, 256
BATCH = 48


def field_levels(seed: int) -> list[np.ndarray]:
    """Smooth blobs plus noise (compresses as microscopy does), floor-halved levels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    cy, cx = rng.integers(0, SIDE, 2)
    base = 2000 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 60.0**2))
    level0 = (base + rng.normal(300, 40, (SIDE, SIDE))).clip(0, 65535).astype(np.uint16)
    out = [level0[None]]
    for _ in range(LEVELS - 1):
        out.append(np.ascontiguousarray(out[-1][:, ::2, ::2]))
    return out


def write_plate(path: Path) -> None:
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    wells = [f"{r}/{c}" for r in ROWS for c in COLS]
    write_plate_metadata(root, ROWS, COLS, wells, fmt=FormatV04(), field_count=1, name="bench")
    for n, well_path in enumerate(wells):
        r, c = well_path.split("/")
        well = root.require_group(r).require_group(c)
        write_well_metadata(well, [{"path": "0"}], fmt=FormatV04())
        field = well.require_group("0")
        datasets = []
        for i, level in enumerate(field_levels(n)):
            arr = field.create_array(
                str(i),
                shape=level.shape,
                chunks=(1, CHUNK, CHUNK),
                dtype=level.dtype,
                chunk_key_encoding={"name": "v2", "separator": "/"},
            )
            arr[...] = level
            datasets.append(
                {
                    "path": str(i),
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0, 2.0**i, 2.0**i]}
                    ],
                }
            )
        write_multiscales_metadata(field, datasets, fmt=FormatV04(), axes="cyx", name="field")


def bytes_on_disk(plate: Path, level: str) -> int:
    return sum(p.stat().st_size for p in plate.glob(f"*/*/0/{level}/*/*/*"))


def rchar(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar")


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as resp:
        body: bytes = resp.read()
        return body


def start(data: Path, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ, IDRSERVE_SERVER__CPU_THREADS="1", IDRSERVE_LOG__ACCESS_LOG="false")
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "idrserve", "serve"]
    cmd += ["--zarr-root", str(data), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            fetch(f"http://127.0.0.1:{port}/healthz")
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("idrserve did not start")


def warm_up(base: str) -> None:
    """Imports, compiled render loops and pools loaded by another image (id 1), so the cold
    figures count the plate's own reads and work, not the process starting."""
    fetch(f"{base}/webgateway/imgData/1/")
    fetch(f"{base}/webgateway/get_thumbnails/?id=1")


def write_warm_up_image(path: Path) -> None:
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    levels = field_levels(10_000)
    datasets = []
    for i, level in enumerate(levels):
        root.create_array(str(i), shape=level.shape, chunks=(1, CHUNK, CHUNK), dtype=level.dtype)[
            ...
        ] = level
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0**i, 2.0**i]}],
            }
        )
    write_multiscales_metadata(root, datasets, fmt=FormatV04(), axes="cyx", name="warm-up")


def cold(base: str, pid: int, ids: list[int]) -> tuple[float, int]:
    batches = [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]
    before = rchar(pid)
    t0 = time.perf_counter()
    fetch(f"{base}/webgateway/plate/{PLATE_ID}/")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        urls = [
            f"{base}/webgateway/get_thumbnails/?" + "&".join(f"id={i}" for i in b) for b in batches
        ]
        bodies = list(pool.map(fetch, urls))
    seconds = time.perf_counter() - t0
    assert all(b"null" not in body for body in bodies), "a thumbnail failed"
    return seconds, rchar(pid) - before


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        print("needs wrk and taskset", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="idrserve-platebench-"))
    try:
        plate = tmp / "data" / f"{PLATE_ID}.zarr"
        t0 = time.perf_counter()
        write_plate(plate)
        write_warm_up_image(tmp / "data" / "1.zarr")
        print(f"wrote the plate in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        full = bytes_on_disk(plate, "0")
        lowest = bytes_on_disk(plate, str(LEVELS - 1))
        colds: list[tuple[float, int]] = []
        plate_doc_bytes = 0
        warm: dict[str, dict[str, float]] = {}
        for round_no in range(args.rounds):
            port = free_port()
            proc = start(tmp / "data", port)
            base = f"http://127.0.0.1:{port}"
            try:
                warm_up(base)
                before = rchar(proc.pid)
                api = json.loads(fetch(f"{base}/api/v1/plates/{PLATE_ID}"))
                plate_doc_bytes = rchar(proc.pid) - before
                ids = [f["image_id"] for w in api["wells"] for f in w["fields"]]
                colds.append(cold(base, proc.pid, ids))
                if round_no == args.rounds - 1:
                    grid = [f"/webgateway/plate/{PLATE_ID}/"]
                    batches = [
                        "/webgateway/get_thumbnails/?"
                        + "&".join(f"id={i}" for i in ids[j : j + BATCH])
                        for j in range(0, len(ids), BATCH)
                    ]
                    singles = [f"/webgateway/render_thumbnail/{i}/" for i in ids]
                    for name, urls in (
                        ("grid JSON", grid),
                        ("get_thumbnails batch of 48", batches),
                        ("render_thumbnail", singles),
                    ):
                        warm[name] = run_wrk(base, urls, args.duration, 16, tmp)
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = statistics.median(c[0] for c in colds)
    read = statistics.median(c[1] for c in colds)
    lines = [
        f"# bench_plate: a 384-well plate, grid + thumbnails ({dt.date.today()})",
        "",
        f"`python bench/bench_plate.py --rounds {args.rounds} --duration {args.duration:g}` on "
        f"{platform.node()} ({os.cpu_count()} CPUs; idrserve pinned to core 0 with one CPU "
        "thread, wrk on core 1). 384 wells × one 512² uint16 field, levels 512/256/128/64, "
        "256² chunks, blosc-lz4.",
        "",
        "| cold (fresh server, median of rounds) | value |",
        "|---|---|",
        f"| grid JSON + 384 thumbnails (8 batches of 48), wall time | {seconds:.2f} s |",
        f"| bytes the server read (rchar), after the plate's own metadata | {read / 1e6:.1f} MB |",
        f"| reading the plate and well metadata first (`/api/v1/plates`, rchar) "
        f"| {plate_doc_bytes / 1e6:.2f} MB |",
        f"| lowest level (64²) of every field, on disk | {lowest / 1e6:.2f} MB |",
        f"| full resolution (512²) of every field, on disk | {full / 1e6:.1f} MB |",
        f"| bytes read / full resolution | {read / full:.3f} |",
        f"| rounds (s, MB) | {', '.join(f'{s:.2f} s / {b / 1e6:.1f} MB' for s, b in colds)} |",
        "",
        "| warm (memory cache), wrk 16 connections | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for name, r in warm.items():
        assert not r["non2xx"], f"{name}: non-2xx answers"
        lines.append(f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
