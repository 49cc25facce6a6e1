"""A whole 4096² uint16 plane through `/zarr/` with dask, against nginx serving the same files.

Issue 5's speed target: reading one full-resolution plane of the demo image 1001 (3 × 4096²
uint16, 256² Blosc-LZ4 chunks, NGFF 0.4) with `dask.array.from_zarr(url)[c].compute()` over
loopback from idrserve's `/zarr/1001.zarr/0` must reach ≥ 0.7× the speed of the same read from
nginx serving the store's files statically. Both contenders serve identical chunk bytes (idrserve
passes stored v2 chunks through, from its memory tier once read); the client (fsspec HTTP,
zarr-python, Blosc decode, dask threads) is the same process for both. Contenders are
interleaved per round and each round reads every channel's plane once; the ratio is computed
per round, the median reported.

    python bench/bench_zarr.py [--rounds 5] [--data DIR] [--out bench/results/zarr-vm-DATE.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import zarr
from _harness import NGINX, NGINX_USER, Stack, version, wait_http
from _results import unused
from bench_deploy import STATIC_CONF
from bench_http import free_port, run_wrk

from idrserve.demo import write_demo

BENCH = Path(__file__).resolve().parent
IMAGE = 1001
TARGET = 0.7
IDRSERVE, STATIC = "idrserve /zarr/ (1 worker)", "nginx static files"
NO_MEMORY = "idrserve /zarr/, memory tier off (file read per chunk)"


def start_static(stack: Stack, tmp: Path, data: Path) -> str:
    """nginx (bench_deploy's static configuration) with the data directory under /static/."""
    prefix = tmp / "nginx-static"
    prefix.mkdir()
    port = free_port()
    conf = STATIC_CONF.format(user=NGINX_USER or "nobody", prefix=prefix, port=port, static=data)
    (prefix / "nginx.conf").write_text(conf)
    stack.nginx(prefix, [NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)])
    base = f"http://127.0.0.1:{port}/static"
    wait_http(f"{base}/{IMAGE}.zarr/0/.zarray")
    return base


def read_plane(url: str, channel: int) -> tuple[float, np.ndarray]:
    """Seconds to read one whole level-0 plane lazily through zarr-python + fsspec + dask."""
    t0 = time.perf_counter()
    plane = da.from_zarr(url)[channel].compute()
    return time.perf_counter() - t0, plane


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache" / "idrserve" / "demo")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--wrk-s", type=float, default=3.0, help="server-side wrk run; 0: none")
    args = parser.parse_args()
    write_demo(args.data)
    source = zarr.open_array(str(args.data / f"{IMAGE}.zarr" / "0"), mode="r")
    channels = range(source.shape[0])
    dask.config.set(scheduler="threads")
    with tempfile.TemporaryDirectory() as tmp_name, Stack(Path(tmp_name)) as stack:
        tmp = Path(tmp_name)
        _, idr_base = stack.idrserve(args.data)
        _, cold_base = stack.idrserve(args.data, extra={"IDRSERVE_CACHE__MEMORY_MAX_BYTES": "0"})
        urls = {
            IDRSERVE: f"{idr_base}/zarr/{IMAGE}.zarr/0",
            STATIC: f"{start_static(stack, tmp, args.data)}/{IMAGE}.zarr/0",
            NO_MEMORY: f"{cold_base}/zarr/{IMAGE}.zarr/0",
        }
        for name, url in urls.items():  # warm-up, and proof both serve the stored pixels
            for c in channels:
                _, plane = read_plane(url, c)
                if not np.array_equal(plane, source[c]):
                    raise SystemExit(f"{name}: plane {c} differs from the stored array")
        seconds: dict[str, list[float]] = {name: [] for name in urls}
        for round_no in range(args.rounds):
            order = list(urls) if round_no % 2 == 0 else list(reversed(urls))
            for name in order:
                seconds[name].append(sum(read_plane(urls[name], c)[0] for c in channels))
        # Server side alone: wrk (core 1) cycling through every level-0 chunk URL.
        keys = [f"{c}/{y}/{x}" for c in channels for y in range(16) for x in range(16)]
        served: dict[str, dict[str, float]] = {}
        for name, url in urls.items() if args.wrk_s > 0 else ():
            base, _, path = url.partition("//")[2].partition("/")
            chunk_urls = [f"/{path}/{key}" for key in keys]
            served[name] = run_wrk(f"http://{base}", chunk_urls, args.wrk_s, 8, tmp)
    load = os.getloadavg()
    mb = source.shape[1] * source.shape[2] * source.dtype.itemsize * len(channels) / 1e6
    rates = {name: [mb / s for s in values] for name, values in seconds.items()}
    ratios = [a / b for a, b in zip(rates[IDRSERVE], rates[STATIC], strict=True)]
    ratio = statistics.median(ratios)
    lines = report(args, rates, ratios, ratio, load, len(channels), served)
    print("\n".join(lines))
    out = args.out or unused(BENCH / "results" / f"zarr-vm-{dt.date.today().isoformat()}.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"\nwritten to {out}")
    return 0


def report(
    args: argparse.Namespace,
    rates: dict[str, list[float]],
    ratios: list[float],
    ratio: float,
    load: tuple[float, float, float],
    n_planes: int,
    served: dict[str, dict[str, float]],
) -> list[str]:
    commit = subprocess.run(
        ["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(BENCH.parent), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    commit += " + uncommitted changes" if dirty else ""
    lines = [
        f"# Whole planes through /zarr/ with dask vs nginx static ({dt.date.today()}, vm)",
        "",
        f"Command: `python bench/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}`",
        "",
        f"Image {IMAGE} level 0 (3 × 4096² uint16, 256² Blosc-LZ4 chunks, stored NGFF 0.4); per "
        f"round and contender, `dask.array.from_zarr(url)[c].compute()` for each of the "
        f"{n_planes} channel planes (256 chunk requests each, dask threaded scheduler, "
        "zarr-python 3 over fsspec HTTP, Blosc decode in the client). Contenders interleaved, "
        "order alternating per round; a warm-up read of every plane first, checked equal to the "
        "stored array. idrserve: one worker, 1 CPU thread, access log off, stored chunks passed "
        "through byte for byte and kept in its in-process memory tier after the warm-up (as "
        "the page cache and open_file_cache keep them for nginx). nginx: 2 workers, sendfile, "
        "open_file_cache (bench_deploy's static config). A second idrserve with the memory "
        "tier off reads every chunk file again (informative). "
        "Client and servers share the 2 cores; data in the page cache. "
        f"loadavg at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, nproc {os.cpu_count()}.",
        "",
        f"Versions: python {platform.python_version()}; idrserve {commit}; zarr "
        f"{zarr.__version__}; dask {dask.__version__}; {version([NGINX, '-v'])}",
        "",
        "| contender | median MB/s (decoded) | min–max | planes/s |",
        "|---|---:|---:|---:|",
    ]
    plane_mb = 4096 * 4096 * 2 / 1e6
    for name, values in rates.items():
        med = statistics.median(values)
        lines.append(
            f"| {name} | {med:.0f} | {min(values):.0f}–{max(values):.0f} | {med / plane_mb:.2f} |"
        )
    per_round = ", ".join(f"{r:.2f}" for r in ratios)
    met = "yes" if ratio >= TARGET else "no"
    lines += [
        "",
        "| ratio | median | per round | target | met |",
        "|---|---:|---|---:|---|",
        f"| idrserve /zarr/ / nginx static | {ratio:.2f} | {per_round} | {TARGET} | {met} |",
    ]
    if NO_MEMORY in rates:
        cold = [a / b for a, b in zip(rates[NO_MEMORY], rates[STATIC], strict=True)]
        lines.append(
            f"| idrserve, memory tier off / nginx static (informative) | "
            f"{statistics.median(cold):.2f} | {', '.join(f'{r:.2f}' for r in cold)} | – | – |"
        )
    if served:
        lines += [
            "",
            f"Server side alone (`wrk -t1 -c8 -d{args.wrk_s:g}s` on core 1, cycling through the "
            "768 level-0 chunk URLs; informative, no target):",
            "",
            "| contender | chunks/s | MB/s (as sent) | p50 ms | p99 ms | non-2xx |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, r in served.items():
            lines.append(
                f"| {name} | {r['rps']:.0f} | {r['rps'] * r['bytes_per_req'] / 1e6:.0f} | "
                f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r.get('non2xx', 0):.0f} |"
            )
    if load[0] > (os.cpu_count() or 1):
        lines += [
            "",
            f"Note: the machine was busy during this run (1-minute load {load[0]:.1f} on "
            f"{os.cpu_count()} cores, other work sharing them), so single rounds vary widely; "
            "re-run on an idle machine for a fair figure.",
        ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
