"""Cold tiles from TIFF files served directly, against the same pixels as OME-Zarr, one run.

Writes one seeded 3-channel uint16 4096² image (bench_http.py's blobs and noise) five times:
as OME-TIFF with 256² tiles, zlib and uncompressed, and as OME-Zarr with 256² chunks, zlib,
uncompressed and blosc-lz4 (idrserve's usual). One `idrserve serve` pinned to core 0 (one CPU
thread, no response cache: every request reads, decodes, renders and encodes) serves them all;
wrk on core 1 replays every level-0 256² tile of each, in interleaved rounds. The ratios that
the target is about compare like with like (TIFF zlib / Zarr zlib, TIFF raw / Zarr raw): the
storage layout and the reader, not the codec; TIFF against blosc-lz4 is given for reference.

    python bench/bench_tiff.py [--duration 6] [--rounds 5] [--conns 16]

Target (issue 17): ≥ 0.9× the OME-Zarr rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import tifffile
import zarr

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from bench_http import free_port, run_wrk, wait_healthy  # noqa: E402

SIZE = 4096
TILE = 256
LEVELS = 5
VARIANTS = {
    # image id: (label, writer, codec)
    3001: ("OME-TIFF zlib", "tiff", "zlib"),
    3002: ("OME-TIFF uncompressed", "tiff", None),
    3011: ("OME-Zarr zlib", "zarr", "zlib"),
    3012: ("OME-Zarr uncompressed", "zarr", None),
    3013: ("OME-Zarr blosc-lz4", "zarr", "blosc"),
}
PAIRS = [
    ("OME-TIFF zlib", "OME-Zarr zlib"),
    ("OME-TIFF uncompressed", "OME-Zarr uncompressed"),
    ("OME-TIFF zlib", "OME-Zarr blosc-lz4"),
    ("OME-TIFF uncompressed", "OME-Zarr blosc-lz4"),
]


def image() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    small = rng.gamma(2.0, 300.0, size=(3, SIZE // 16, SIZE // 16)).astype(np.float32)
    base = np.repeat(np.repeat(small, 16, axis=1), 16, axis=2)
    noise = rng.normal(0, 60, size=base.shape).astype(np.float32)
    data = np.clip(base + noise + 100, 0, 65535).astype(np.uint16)
    levels = [data]
    for _ in range(LEVELS - 1):
        levels.append(np.ascontiguousarray(levels[-1][:, ::2, ::2]))
    return levels


def write_tiff(path: Path, levels: list[np.ndarray], codec: str | None) -> None:
    opts: dict[str, Any] = {"tile": (TILE, TILE), "compression": codec, "photometric": "minisblack"}
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write(levels[0], subifds=len(levels) - 1, metadata={"axes": "CYX"}, **opts)
        for lev in levels[1:]:
            tw.write(lev, subfiletype=1, **opts)


def write_zarr(path: Path, levels: list[np.ndarray], codec: str | None) -> None:
    compressor = {
        "zlib": numcodecs.Zlib(level=6),
        "blosc": numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
        None: None,
    }[codec]
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets: list[dict[str, Any]] = []
    for i, lev in enumerate(levels):
        arr = root.create_array(
            str(i),
            shape=lev.shape,
            chunks=(1, min(TILE, lev.shape[1]), min(TILE, lev.shape[2])),
            dtype="uint16",
            compressors=compressor,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        arr[...] = lev
        scale = [1.0, 2.0**i, 2.0**i]
        datasets.append(
            {"path": str(i), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    root.attrs.update(
        {
            "multiscales": [
                {
                    "version": "0.4",
                    "datasets": datasets,
                    "axes": [
                        {"name": "c", "type": "channel"},
                        {"name": "y", "type": "space"},
                        {"name": "x", "type": "space"},
                    ],
                }
            ]
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument(
        "--out", type=Path, default=BENCH / "results", help="a directory, or a file ending .md"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="idrserve-tiffbench-"))
    data = tmp / "data"
    data.mkdir()
    levels = image()
    for iid, (_label, kind, codec) in VARIANTS.items():
        if kind == "tiff":
            write_tiff(data / f"{iid}.ome.tif", levels, codec)
        else:
            write_zarr(data / f"{iid}.zarr", levels, codec)
    port = free_port()
    env = dict(
        os.environ,
        IDRSERVE_SERVER__CPU_THREADS="1",
        IDRSERVE_LOG__ACCESS_LOG="false",
        IDRSERVE_CACHE__MEMORY_MAX_BYTES="0",  # cold: every request renders
    )
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "idrserve", "serve"]
    cmd += ["--zarr-root", str(data), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    # the same windows for every variant, so every tile does the same rendering work
    settings = "c=1|100:3000$0000FF,2|100:3000$00FF00,3|100:3000$FF0000&m=c"
    urls = {
        VARIANTS[iid][0]: [
            f"/webgateway/render_image_region/{iid}/0/0/?tile=0,{x},{y},{TILE},{TILE}&{settings}"
            for y in range(SIZE // TILE)
            for x in range(SIZE // TILE)
        ]
        for iid in VARIANTS
    }
    results: dict[str, list[dict[str, float]]] = {label: [] for label in urls}
    try:
        wait_healthy(base, 200)
        for chosen in urls.values():  # open files and arrays, fill the page cache
            run_wrk(base, chosen, 3, args.conns, tmp)
        for _ in range(args.rounds):
            for label, chosen in urls.items():
                results[label].append(run_wrk(base, chosen, args.duration, args.conns, tmp))
    finally:
        proc.terminate()
        proc.wait(10)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    host = platform.node() or "host"
    lines = [
        f"# Cold tiles from TIFF directly vs OME-Zarr ({stamp}, {host})",
        "",
        f"Command: `python bench/bench_tiff.py --duration {args.duration:g} --rounds "
        f"{args.rounds} --conns {args.conns}`",
        "",
        f"One 3-channel uint16 {SIZE}² image ({LEVELS} levels) stored five ways; one "
        "`idrserve serve` pinned to core 0 (1 CPU thread, no response cache), wrk -t1 "
        f"-c{args.conns} on core 1, {args.rounds} interleaved rounds of {args.duration:g} s; "
        f"every level-0 {TILE}² tile, JPEG, the same windows. loadavg at end "
        f"{os.getloadavg()[0]:.2f}; nproc {os.cpu_count()}.",
        "",
        "| stored as | median tiles/s | min–max | p50 ms | p99 ms | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, rounds in results.items():
        rps = [r["rps"] for r in rounds]
        lines.append(
            f"| {label} | {statistics.median(rps):.0f} | {min(rps):.0f}–{max(rps):.0f} | "
            f"{statistics.median(r['p50_ms'] for r in rounds):.1f} | "
            f"{statistics.median(r['p99_ms'] for r in rounds):.1f} | "
            f"{sum(r['non2xx'] for r in rounds):.0f} |"
        )
    lines += ["", "| ratio (per round, median) | value | rounds | target |", "|---|---:|---|---|"]
    for a, b in PAIRS:
        ratios = [x["rps"] / y["rps"] for x, y in zip(results[a], results[b], strict=True)]
        target = "≥ 0.9" if b != "OME-Zarr blosc-lz4" else "reference"
        rounds_text = ", ".join(f"{r:.2f}" for r in ratios)
        lines.append(f"| {a} / {b} | {statistics.median(ratios):.2f} | {rounds_text} | {target} |")
    lines += ["", "Raw rounds:", "", "```json", json.dumps(results, indent=1), "```", ""]
    if args.out.suffix == ".md":
        out = args.out
        out.parent.mkdir(parents=True, exist_ok=True)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"tiff-{host}-{stamp}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines[: lines.index("Raw rounds:")]))
    print(f"written to {out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
