"""Where a cold tile's time goes: a sampling profile of the server under cold-tile load.

Starts `idrserve serve` on core 0 (memory tier off, one CPU thread, as `bench_http.py` does)
over the same generated 3-channel uint16 image, drives it with wrk on core 1 (16 connections,
256 distinct 256² webgateway tiles), and samples it meanwhile with py-spy (`pip install -e
'.[bench]'`), which reads the process from outside: no profiler hook slows the code it
measures. C code (Blosc, simplejpeg, numpy, uvloop) is counted in the Python frame that
called it, so the stages below are whole: a decode includes Blosc's own time.

    python bench/profile_cold.py [--duration 12] [--rate 500] [--request-path]

`--request-path` profiles bench/_request_path.py instead (the kernel replaced by a constant
body): the request handling alone. `--redis` puts a Redis tier behind the server, as
`bench_http.py --redis` does (an LRU so small that every lookup misses), to see what a cold
tile costs in a deployment. Writes bench/results/profile-cold-<host>-<date>.md with the
command, the share of each stage and µs a tile at the measured rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# Stages by the frames a sample's stack holds, first match wins (kernel stages first: a tile
# rendered in `data_received` counts as kernel, not as request parsing).
STAGES: tuple[tuple[str, frozenset[str]], ...] = tuple(
    (stage, frozenset(names))
    for stage, names in (
        ("JPEG encode (simplejpeg)", ("encode_jpeg",)),
        ("render: LUTs and compositing", ("render_rgb",)),
        ("reading chunk files", ("DirectV2Array._raw",)),
        ("Blosc decode", ("DirectV2Array._put",)),
        ("the kernel's other Python", ("_read_render_encode",)),
        ("the constant body (request-path server)", ("constant",)),
        ("writing responses", ("JsonErrorRequestHandler.flush_unsent", "_send_cold")),
        ("parsing and planning the request", ("JsonErrorRequestHandler.data_received",)),
        (
            "the Redis tier: commands, replies, the write queue",
            (
                "RedisTier._call",
                "RedisTier._mget",
                "RedisTier._flush",
                "Multiplexed.execute",
                "Multiplexed._read",
                "JobRunner._run",
            ),
        ),
        (
            "single flight, cache lookups around them",
            ("SingleFlight.run", "TieredCache.get_or_render", "ColdRenders.render"),
        ),
    )
)
PINNED = ("taskset", "-c", "0")
OTHER = "event loop (uvloop), turns, answer, metrics, other"


def stage_of(stack: str) -> str:
    """The first stage one of whose functions is on `stack` (py-spy frames read
    `Class.function (file:line)`; a name matches the qualified name or its tail)."""
    qualified = [frame.split(" (", 1)[0] for frame in stack.split(";")]
    names = set(qualified) | {q.rsplit(".", 1)[-1] for q in qualified}
    for stage, wanted in STAGES:
        if names & wanted:
            return stage
    return OTHER


def shares(lines: Iterable[str]) -> tuple[dict[str, float], int]:
    """Share of samples per stage from py-spy's raw (collapsed) output, and the sample count."""
    counts: Counter[str] = Counter()
    for line in lines:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if stack and n.isdigit():
            counts[stage_of(stack)] += int(n)
    total = sum(counts.values())
    return ({k: v / total for k, v in counts.most_common()} if total else {}), total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--rate", type=int, default=500, help="py-spy samples a second")
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--request-path", action="store_true")
    parser.add_argument("--redis", action="store_true", help="a Redis tier behind the server")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    # Here, not at the top: tests import `shares` without bench/ on sys.path.
    from _results import unused
    from bench_http import SIZE, free_port, run_wrk, start_redis, wait_healthy, write_image

    with tempfile.TemporaryDirectory(prefix="idrserve-profile-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "zarr"
        data.mkdir()
        write_image(data / "2001.zarr", 256, 1)
        port = free_port()
        env = dict(
            os.environ,
            IDRSERVE_SERVER__CPU_THREADS="1",
            IDRSERVE_LOG__ACCESS_LOG="false",
            IDRSERVE_CACHE__MEMORY_MAX_BYTES="0",
            PYTHONPATH=str(ROOT.parent),
        )
        redis = None
        if args.redis:
            redis, env["IDRSERVE_CACHE__REDIS_URL"] = start_redis()
        script = [str(ROOT / "_request_path.py")] if args.request_path else ["-m", "idrserve"]
        server = subprocess.Popen(
            [
                *PINNED,
                sys.executable,
                *script,
                "serve",
                "--zarr-root",
                str(data),
                "--port",
                str(port),
            ],
            env=env,
            cwd=ROOT.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        urls = [
            f"/webgateway/render_image_region/2001/0/0/?tile=0,{x},{y},256,256"
            for y in range(SIZE // 256)
            for x in range(SIZE // 256)
        ]
        raw = tmp / "profile.txt"
        try:
            wait_healthy(base)
            run_wrk(base, urls, 3, args.conns, tmp)  # warm-up: opens arrays, page cache
            spy = subprocess.Popen(
                [
                    *("py-spy", "record", "--pid", str(server.pid), "--rate", str(args.rate)),
                    *("--duration", str(int(args.duration) + 2), "--format", "raw"),
                    *("--output", str(raw), "--nonblocking"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)  # py-spy attached before the load starts
            load = run_wrk(base, urls, args.duration, args.conns, tmp)
            spy.wait(timeout=60)
        finally:
            server.terminate()
            server.wait(timeout=10)
            if redis is not None:
                redis.terminate()
                redis.wait(timeout=10)
        if args.raw is not None:
            args.raw.write_bytes(raw.read_bytes())
        with raw.open() as f:
            stage_shares, samples = shares(f)
    rps = load["rps"]
    per_tile_us = 1e6 / rps if rps else 0.0
    cmd = "python bench/profile_cold.py " + " ".join(sys.argv[1:])
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    lines = [
        f"# Cold 256² tiles: where the time goes ({today})",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"{'bench/_request_path.py' if args.request_path else 'idrserve serve'} on core 0"
        f"{' (a Redis tier on core 1 that every lookup misses)' if args.redis else ''}, "
        f"wrk -c{args.conns} on core 1, {rps:.0f} requests/s ({per_tile_us:.0f} µs each), "
        f"p99 {load['p99_ms']:.1f} ms; py-spy at {args.rate}/s: {samples} samples.",
        "",
        "| stage | share of samples | µs a request |",
        "|---|---:|---:|",
    ]
    lines += [
        f"| {stage} | {100 * share:.1f} % | {share * per_tile_us:.0f} |"
        for stage, share in stage_shares.items()
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    kind = ("path" if args.request_path else "cold") + ("-redis" if args.redis else "")
    out = unused(args.out / f"profile-{kind}-{platform.node() or 'host'}-{today}.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
