"""`idrserve convert` throughput and peak memory on a 16 k × 16 k × 3 uint16 OME-TIFF.

Writes (once, seeded, tile by tile, kept in `--workdir`) a fluorescence-like 3-channel uint16
OME-TIFF, 512² tiles, zlib, no pyramid; then, in interleaved rounds, each step in a fresh
process writing into a directory of its own, with `sync` between steps. Outputs are deleted
only at the end: creating files right after deleting thousands made ext4 scan for recently
deleted inodes (`recently_deleted` under `ext4_create`, 20 % of a conversion's samples in
`perf`), a cost of the benchmark, not of converting.

1. **read**: every tile decoded by tifffile (`TiffPage.segments`, `--workers` threads): the
   plain read of the same file;
2. **write**: the same pixels, loaded beforehand (not timed), written as the converter's
   level-0 chunk files (same chunk shape and codec, numcodecs, `--workers` threads, one band
   of chunk rows per task): the plain write of the same chunks;
3. **convert**: `idrserve convert` of the file, the whole pyramid, with its own timing and
   peak RSS (VmHWM) from its summary line;
4. with `--zarr-write`, also the write of step 2 through zarr-python (`array[band] = data`),
   which the converter does not use (informative).

Timings exclude interpreter start-up and imports for every step. The limit of a round is the
input's pixel bytes over its read + write seconds; the target (issue 17) is convert ≥ 0.7× that
limit (the median of the per-round ratios), and a peak RSS ≤ 1 GB.

    python bench/bench_convert.py [--size 16384] [--rounds 3] [--workers 2] [--zarr-write]
        [--workdir DIR] [--out bench/results/convert-MACHINE-DATE.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TILE = 512
CHANNELS = 3
RSS_TARGET_MB = 1000
RATIO_TARGET = 0.7


# ---- the input -----------------------------------------------------------------------------


def _tiles(size: int, seed: int) -> Iterator[np.ndarray]:
    """Blobs (a gamma field upsampled 16×) plus noise, tile by tile, channel after channel."""
    coarse = np.random.default_rng(seed).gamma(2.0, 300.0, size=(CHANNELS, size // 16, size // 16))
    coarse = coarse.astype(np.float32)
    n = -(-size // TILE)
    for c in range(CHANNELS):
        for ty in range(n):
            for tx in range(n):
                rng = np.random.default_rng((seed, c, ty, tx))
                block = coarse[c, ty * 32 : ty * 32 + 32, tx * 32 : tx * 32 + 32]
                base = np.repeat(np.repeat(block, 16, axis=0), 16, axis=1)
                tile = np.zeros((TILE, TILE), np.float32)
                tile[: base.shape[0], : base.shape[1]] = base
                tile += rng.normal(0, 60, size=tile.shape).astype(np.float32) + 100
                yield np.clip(tile, 0, 65535).astype(np.uint16)


def write_input(path: Path, size: int, seed: int = 17) -> None:
    import tifffile

    tmp = path.with_suffix(".tmp")
    tifffile.imwrite(
        tmp,
        _tiles(size, seed),
        shape=(CHANNELS, size, size),
        dtype=np.uint16,
        tile=(TILE, TILE),
        compression="zlib",
        ome=True,
        bigtiff=True,
        metadata={
            "axes": "CYX",
            "Channel": {"Name": ["DAPI", "GFP", "mCherry"]},
            "PhysicalSizeX": 0.325,
            "PhysicalSizeY": 0.325,
        },
        maxworkers=os.cpu_count(),
    )
    tmp.rename(path)


# ---- the steps, each run in a process of its own ----------------------------------------------


def step_read(path: Path, workers: int) -> dict[str, Any]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = list(tif.series[0].pages)
        started = time.perf_counter()
        nbytes = 0
        for page in pages:
            assert page is not None
            for segment, _, _ in page.segments(maxworkers=workers):
                assert segment is not None
                nbytes += segment.nbytes
        return {"seconds": time.perf_counter() - started, "bytes": nbytes}


def _load(path: Path) -> np.ndarray:
    import tifffile

    return np.asarray(tifffile.imread(path, maxworkers=os.cpu_count()))


def step_write(path: Path, out: Path, workers: int, chunk: int, compressor: str) -> dict[str, Any]:
    """The level-0 chunks of the converter's output, straight to files (numcodecs)."""
    from idrserve.convert import Options
    from idrserve.convert.chunks import codec

    data = _load(path)
    encoder = codec(Options(path, out, chunks=chunk, compressor=compressor))  # type: ignore[arg-type]
    channels, height, width = data.shape

    def band(c: int, row: int) -> int:
        directory = out / "0" / str(c) / str(row)
        directory.mkdir(parents=True, exist_ok=True)
        written = 0
        for col in range(-(-width // chunk)):
            block = data[c, row * chunk : (row + 1) * chunk, col * chunk : (col + 1) * chunk]
            if block.shape != (chunk, chunk):
                padded = np.zeros((chunk, chunk), data.dtype)
                padded[: block.shape[0], : block.shape[1]] = block
                block = padded
            body = encoder.encode(np.ascontiguousarray(block))
            (directory / str(col)).write_bytes(body)
            written += len(body)
        return written

    from concurrent.futures import ThreadPoolExecutor

    tasks = [(c, r) for c in range(channels) for r in range(-(-height // chunk))]
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        stored = sum(pool.map(lambda t: band(*t), tasks))
    return {"seconds": time.perf_counter() - started, "bytes": data.nbytes, "stored": stored}


def step_zarr_write(path: Path, out: Path, workers: int, chunk: int) -> dict[str, Any]:
    """The same chunks through zarr-python's own write path (what `chunks.py` avoids)."""
    import numcodecs
    import zarr

    data = _load(path)
    config = {"async.concurrency": 4 * workers + 4, "threading.max_workers": workers}
    with zarr.config.set(config):
        arr = zarr.create_array(
            out,
            shape=data.shape,
            chunks=(1, chunk, chunk),
            dtype=data.dtype,
            zarr_format=2,
            compressors=numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},
            fill_value=0,
        )
        started = time.perf_counter()
        for c in range(data.shape[0]):
            for row in range(0, data.shape[1], chunk):
                arr[c, row : row + chunk] = data[c, row : row + chunk]
        return {"seconds": time.perf_counter() - started, "bytes": data.nbytes}


def step_convert(
    path: Path, out: Path, workers: int, chunk: int, compressor: str
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "idrserve", "convert", str(path), str(out)]
    cmd += ["--workers", str(workers), "--chunks", str(chunk), "--compressor", compressor]
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"convert failed: {done.stderr}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": summary["seconds"], "wall": wall, "summary": summary}


def _in_child(step: str, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", step, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"step {step} failed: {done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _settle() -> None:
    os.sync()  # the next step does not pay for this one's writeback


# ---- the report ----------------------------------------------------------------------------


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _versions() -> str:
    import imagecodecs
    import numcodecs
    import tifffile
    import zarr

    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "idrserve", "bench"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    state = " + uncommitted changes" if dirty else ""
    return (
        f"python {sys.version.split()[0]}; idrserve {commit}{state};"
        f" tifffile {tifffile.__version__}; imagecodecs {imagecodecs.__version__};"
        f" numcodecs {numcodecs.__version__}; zarr {zarr.__version__}"
    )


def report(
    args: argparse.Namespace, path: Path, rounds: list[dict[str, Any]], loads: tuple[str, str]
) -> str:
    pixels = rounds[0]["read"]["bytes"]
    mb = pixels / 1e6
    ratios = [
        (r["read"]["seconds"] + r["write"]["seconds"]) / r["convert"]["seconds"] for r in rounds
    ]
    ratio = statistics.median(ratios)
    rss = max(r["convert"]["summary"]["peak_rss_mb"] for r in rounds)
    summary = rounds[0]["convert"]["summary"]
    lines = [
        f"# idrserve convert: a {args.size} × {args.size} × {CHANNELS} uint16 OME-TIFF"
        f" ({dt.date.today().isoformat()}, {args.machine})",
        "",
        f"Command: `python bench/bench_convert.py {' '.join(sys.argv[1:])}`",
        "",
        f"Input: {path.stat().st_size / 1e6:.0f} MB file (OME-TIFF, BigTIFF, {TILE}² zlib tiles,"
        f" CYX, no pyramid), {mb:.0f} MB of pixels. Output: NGFF 0.4, {args.chunks}²"
        f" {args.compressor} chunks, {len(summary['levels'])} levels"
        f" ({summary['stored_mb']:.0f} MB stored). `--workers {args.workers}` for every step;"
        f" nproc {os.cpu_count()}; loadavg before {loads[0]}, after {loads[1]}.",
        "",
        f"Versions: {_versions()}",
        "",
        "| round | read s | write s | limit MB/s | convert s | convert MB/s | convert / limit |"
        " peak RSS MB | loadavg (1, 5, 15 min) at the round's end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, (r, q) in enumerate(zip(rounds, ratios, strict=True), 1):
        read, write, conv = r["read"]["seconds"], r["write"]["seconds"], r["convert"]["seconds"]
        lines.append(
            f"| {i} | {read:.2f} | {write:.2f} | {mb / (read + write):.1f} | {conv:.2f} |"
            f" {mb / conv:.1f} | {q:.2f} | {r['convert']['summary']['peak_rss_mb']:.0f} |"
            f" {r['loadavg']} |"
        )
    lines += [
        "",
        "| target | measured | target | met |",
        "|---|---:|---:|---|",
        f"| convert / (plain read + plain write), median of rounds | {ratio:.2f} |"
        f" ≥ {RATIO_TARGET} | {'yes' if ratio >= RATIO_TARGET else 'no'} |",
        f"| peak RSS of `idrserve convert` (VmHWM), worst round | {rss:.0f} MB |"
        f" ≤ {RSS_TARGET_MB} MB | {'yes' if rss <= RSS_TARGET_MB else 'no'} |",
    ]
    zarr_rounds = [r["zarr_write"]["seconds"] for r in rounds if "zarr_write" in r]
    if zarr_rounds:
        direct = statistics.median(r["write"]["seconds"] for r in rounds)
        lines += [
            "",
            f"The same level-0 chunks written through zarr-python (`array[band] = data`,"
            f" informative): median {statistics.median(zarr_rounds):.2f} s against"
            f" {direct:.2f} s written directly.",
        ]
    lines += ["", "Raw:", "", "```json", json.dumps(rounds, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=256)
    parser.add_argument("--compressor", default="blosc-lz4")
    parser.add_argument("--zarr-write", action="store_true")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--machine", default="vm")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        paths = args.paths  # the input, then the output directory of a step that writes
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "read": lambda: step_read(paths[0], args.workers),
            "write": lambda: step_write(
                paths[0], paths[1], args.workers, args.chunks, args.compressor
            ),
            "zarr_write": lambda: step_zarr_write(paths[0], paths[1], args.workers, args.chunks),
        }
        print(json.dumps(steps[args.step]()))
        return 0
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-convert-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"input-{args.size}.ome.tif"
    if not path.exists():
        print(f"writing {path} …", file=sys.stderr, flush=True)
        write_input(path, args.size)
    common = ["--workers", str(args.workers), "--chunks", str(args.chunks)]
    common += ["--compressor", args.compressor]
    outputs = work / "outputs"
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir()
    loads = [_loadavg()]
    rounds = []
    _settle()
    for i in range(args.rounds):
        r: dict[str, Any] = {}
        r["read"] = _in_child("read", str(path), *common)
        _settle()
        r["write"] = _in_child("write", str(path), str(outputs / f"write-{i}"), *common)
        _settle()
        if args.zarr_write:
            out = outputs / f"zarr-{i}.zarr"
            r["zarr_write"] = _in_child("zarr_write", str(path), str(out), *common)
            _settle()
        out = outputs / f"convert-{i}.zarr"
        r["convert"] = step_convert(path, out, args.workers, args.chunks, args.compressor)
        _settle()
        r["loadavg"] = _loadavg()
        rounds.append(r)
        times = {k: round(v["seconds"], 2) for k, v in r.items() if isinstance(v, dict)}
        print(f"round {i + 1}: " + json.dumps(times) + f" load {r['loadavg']}",
              file=sys.stderr, flush=True)  # fmt: skip
    loads.append(_loadavg())
    shutil.rmtree(outputs, ignore_errors=True)
    text = report(args, path, rounds, (loads[0], loads[1]))
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
