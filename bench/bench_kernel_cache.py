"""The cold kernel alone, with other memory touched between its tiles: the core's caches.

bench_http.py's stage table shows the kernel (read, decode, render, encode) running 30–70 µs
a 256² tile slower inside a server than alone, and a bare responder that does nothing but
serve the kernel's tiles losing about half of that too. What a server does between two
renders (parsing, planning, writing, the loop) does not run inside the kernel's stages, so
the slowdown must come through what the stages find in the core's caches. This benchmark
checks that explanation without a server: bench/_kernel.py's loop over the same 256 distinct
256² tiles of bench_http.py's image, with `KIB` KiB of an unrelated array read and written
between every two tiles, each size interleaved with the others round by round, pinned to
core 0. If the stages slow by about what the server costs them at some size near the core's
L2 (2 MiB here), the server's slowdown is that: its own work evicting the kernel's data.

    python bench/bench_kernel_cache.py [--rounds 5] [--duration 3] [--kib 0 256 1024 2048]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
STAGES = ("source", "render", "encode")


def child(zarr_root: str, kib: int, duration: float) -> dict[str, float]:
    """µs a tile of each stage (and all), with `kib` KiB touched between tiles."""
    import numpy as np
    from _kernel import _plan

    from idrserve.render import kernels
    from idrserve.service import _read_render_encode

    urls = [
        f"/webgateway/render_image_region/2001/0/0/?tile=0,{x},{y},256,256"
        for y in range(16)
        for x in range(16)
    ]
    deps, jobs = asyncio.run(_plan(Path(zarr_root), urls))
    kernels.warm()
    junk = np.ones(max(kib, 1) * 1024 // 8)
    for req, meta, read, key in jobs:  # one pass to warm code and page cache
        _read_render_encode(req, meta, deps, read, key)
    spent = dict.fromkeys(STAGES, 0.0)
    tiles = 0
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        for req, meta, read, key in jobs:
            if kib:
                junk += 1.0  # reads and writes every line of the array
            for stage, seconds in _read_render_encode(req, meta, deps, read, key).timings.items():
                spent[stage] += seconds
        tiles += len(jobs)
    out = {stage: seconds / tiles * 1e6 for stage, seconds in spent.items()}
    out["kernel"] = sum(out.values())
    return out


def report(results: dict[int, list[dict[str, float]]], cmd: str, stamp: str, host: str) -> str:
    """The report: median µs a tile by size, and each size against none, per round."""
    sizes = sorted(results)
    lines = [
        f"# The kernel alone with other memory touched between tiles ({stamp}, {host})",
        "",
        f"Command: `{cmd}`",
        "",
        "bench/_kernel.py's loop over 256 distinct 256² tiles (3 uint16 channels, 256² "
        "blosc-lz4 chunks, JPEG), pinned to core 0, with the given KiB of another array "
        "read and written between every two tiles; sizes interleaved round by round. µs a "
        "tile, median of the rounds.",
        "",
        "| KiB touched between tiles | " + " | ".join(STAGES) + " | kernel | vs none |",
        "|---:|" + "---:|" * (len(STAGES) + 2),
    ]
    base = results.get(0)
    for kib in sizes:
        rounds = results[kib]
        cells = [f"{statistics.median(r[s] for r in rounds):.0f}" for s in (*STAGES, "kernel")]
        if base is None or kib == 0:
            versus = "–"
        else:
            diffs = [r["kernel"] - b["kernel"] for r, b in zip(rounds, base, strict=True)]
            versus = f"{statistics.median(diffs):+.0f} µs"
        lines.append(f"| {kib} | " + " | ".join(cells) + f" | {versus} |")
    lines += ["", "Raw rounds:", "", "```json", json.dumps(results, indent=1), "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds a size a round")
    parser.add_argument("--kib", type=int, nargs="+", default=[0, 256, 1024, 2048])
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--child", nargs=3, metavar=("ZARR", "KIB", "S"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        zarr_root, kib, duration = args.child
        print(json.dumps(child(zarr_root, int(kib), float(duration))))
        return 0
    from _harness import pinned_child
    from _results import unused
    from bench_http import write_image

    results: dict[int, list[dict[str, float]]] = {kib: [] for kib in args.kib}
    with tempfile.TemporaryDirectory(prefix="idrserve-kcache-") as tmp:
        write_image(Path(tmp) / "2001.zarr", 256, 1)
        for round_no in range(args.rounds):
            order = args.kib if round_no % 2 == 0 else args.kib[::-1]
            for kib in order:
                child_args = ["--child", tmp, str(kib), str(args.duration)]
                script = ROOT / "bench_kernel_cache.py"
                results[kib].append(pinned_child(script, child_args, cwd=ROOT))
    cmd = f"python bench/bench_kernel_cache.py --rounds {args.rounds} --duration {args.duration}"
    cmd += " --kib " + " ".join(map(str, args.kib))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    host = platform.node() or "host"
    text = report(results, cmd, stamp, host)
    args.out.mkdir(parents=True, exist_ok=True)
    out = unused(args.out / f"kernel-cache-{host}-{stamp}.md")
    out.write_text(text)
    print(text[: text.index("Raw rounds:")])
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
