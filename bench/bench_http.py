"""Cold-tile HTTP throughput of idrserve on one core, with wrk on the other.

Mode A of docs/benchmarks.md#protocol.

Writes a seeded 3-channel uint16 OME-Zarr pyramid twice (256² and 512² chunks), starts
`idrserve serve` pinned to core 0, and replays every level-0 tile of each image with wrk pinned
to core 1: 256² tiles from 256² chunks and 512² tiles from 512² chunks. With no response cache
in front, every request reads, decodes, renders and encodes. Results are compared with the
targets of issue 2 (≥ 900 and ≥ 240 tiles/s on one core) and written as markdown.

Each round also runs the kernel (bench/_kernel.py) pinned to the same core for the same time:
the same tiles read, decoded, rendered and encoded by the server's own function with no HTTP
around them, after checking that it makes byte-identical bodies. `idrserve / kernel` is the
share of a core the request handling leaves to the work itself (issue 19 target: ≥ 0.9). The
server's event-loop lag p99 under the load comes from its /metrics histogram
(`idrserve_event_loop_lag_seconds`, before/after each run), next to wrk's p99 / p50, and
the CPU each of its threads spent a tile (`idrserve_thread_cpu_seconds_total`: the event
loop's, and the render pool's for tiles rendered there, `--large`'s 1024² ones).

    python bench/bench_http.py [--duration 8] [--rounds 3] [--redis]
        [--baseline DIR [--baseline-python PY]]

`--redis` puts a shared Redis tier behind every server, as a deployment runs, so small that
every lookup misses: the cold path with the tier's lookup, render lock and store. wrk cycles
through a fixed set of URLs, so after its first pass each is one the server has answered (its
URL index knows it: a plain lookup first, then the lock); `--new-urls` turns every server's
URL index off, so each tile is looked up as a URL never answered, as a new image's first view
is.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import zarr
from _results import unused
from _variants import VARIANT_HELP, parse_settings, parse_variants

ROOT = Path(__file__).resolve().parent
SIZE = 4096
# The `--large` case's name.
LARGE = "1024² tiles, 1024² chunks"


def write_image(path: Path, chunk: int, seed: int, size: int = SIZE) -> None:
    """A fluorescence-like 3-channel uint16 `size`² pyramid (blobs + noise), NGFF 0.4, blosc lz4."""
    from numcodecs import Blosc

    rng = np.random.default_rng(seed)
    small = rng.gamma(2.0, 300.0, size=(3, size // 16, size // 16)).astype(np.float32)
    base = np.repeat(np.repeat(small, 16, axis=1), 16, axis=2)
    noise = rng.normal(0, 60, size=base.shape).astype(np.float32)
    data = np.clip(base + noise + 100, 0, 65535).astype(np.uint16)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets: list[dict[str, Any]] = []
    level = data
    for i in range(5):
        arr = root.create_array(
            str(i),
            shape=level.shape,
            chunks=(1, min(chunk, level.shape[1]), min(chunk, level.shape[2])),
            dtype="uint16",
            compressors=Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE),
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        arr[...] = level
        datasets.append(
            {
                "path": str(i),
                "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0**i, 2.0**i]}],
            }
        )
        level = level[:, ::2, ::2]
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
            ],
            "omero": {
                "channels": [
                    {
                        "label": n,
                        "color": c,
                        "active": True,
                        "window": {"min": 0, "max": 65535, "start": 100, "end": 1500},
                    }
                    for n, c in (("DAPI", "0000FF"), ("GFP", "00FF00"), ("RFP", "FF0000"))
                ],
                "rdefs": {"model": "color"},
            },
        }
    )


def wait_healthy(base: str, tries: int = 100) -> None:
    """Until `base`/healthz answers (a server started a moment ago), at most `tries` × 0.1 s."""
    for _ in range(tries):
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What OMERO.iviewer adds to each tile URL (its rendering settings, the same for every tile
# of a view): windows and colours of the three channels, the model, projection, quality and
# inversions, `maps` percent-encoded as a browser sends it.
VIEWER_QUERY = (
    "c=1|100:3000$FF0000,2|200:4000$00FF00,3|0:5000$0000FF&m=c&p=normal&ia=0&q=0.9&maps="
    + urllib.parse.quote("[" + ",".join(['{"inverted":{"enabled":false}}'] * 3) + "]")
)

LUA = """
local urls = {}
for line in io.lines("%s") do urls[#urls + 1] = line end
local i = 0
request = function()
  i = i %% #urls + 1
  return wrk.format("GET", urls[i])
end
"""


def wrk_seconds(duration: float) -> int:
    """What wrk runs for `duration`: whole seconds (its unit), at least one."""
    return max(1, round(duration))


def client_cpu_share(
    before: resource.struct_rusage, after: resource.struct_rusage, wall_s: float
) -> float:
    """wrk's CPU seconds (user + system, from this process's reaped children) over its wall
    time: the share of its one core it used. Near 1.00 the client, not the server, set the
    rate, and a ratio against that contender says less about the servers."""
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu / wall_s if wall_s > 0 else 0.0


def client_cpu_cell(rounds: list[dict[str, float]]) -> str:
    """The median `client_cpu` of a contender's wrk rounds for a report's table, "–" for
    rounds without it (locust's)."""
    shares = [r["client_cpu"] for r in rounds if "client_cpu" in r]
    return f"{statistics.median(shares):.2f}" if shares else "–"


# What the reports' "wrk CPU" column means, said under each table that has one.
CLIENT_CPU_NOTE = (
    "wrk CPU: wrk's CPU seconds over its wall time, the share of its one core (median of the "
    "rounds); near 1.00 wrk, not the server, set the rate, and a ratio against that contender "
    "understates how far apart the servers are."
)


# The fields Chromium 131 sends with an image a page asks for (OMERO.iviewer's tiles, say),
# besides Host: what `--browser-heads` makes wrk send, where it sends Host alone otherwise.
BROWSER_HEADS = (
    "Connection: keep-alive",
    'sec-ch-ua-platform: "Linux"',
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    'sec-ch-ua: "Chromium";v="131", "Not_A Brand";v="24"',
    "sec-ch-ua-mobile: ?0",
    "Accept: image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
    "Sec-Fetch-Site: same-origin",
    "Sec-Fetch-Mode: no-cors",
    "Sec-Fetch-Dest: image",
    "Referer: http://127.0.0.1/iviewer/?images=2001",
    "Accept-Encoding: gzip, deflate, br, zstd",
    "Accept-Language: en-GB,en;q=0.9",
)
BROWSER_HEADS_HELP = (
    "send each request with the dozen header fields a browser sends for an image (Chromium "
    "131's: User-Agent, Accept, Referer, Sec-Fetch-*, …) instead of wrk's Host alone"
)


LAYOUT_PAD = "BENCH_LAYOUT_PAD"


def padded(env: dict[str, str]) -> dict[str, str]:
    """`env` with one more variable, of a random length up to 4 KiB, for a server's start.

    Where a process's stack and heap land moves with its environment's size, and with it
    its speed, by a few per cent (Mytkowicz et al., "Producing wrong data without doing
    anything obviously wrong", ASPLOS 2009). Two checkouts differ in their paths, so a
    fixed layout leans every round of an A/B the same way: one tree against itself read
    1.02x run from its first checkout and 0.98x run from the second. A new length at every
    start turns that lean into noise, which rounds average out (with `--fresh`;
    bench_iiif.py starts every round anew anyway)."""
    return {**env, LAYOUT_PAD: "x" * random.randrange(4097)}


def spawn(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """A server of this benchmark, quiet, with its environment `padded` anew."""
    return subprocess.Popen(
        cmd, env=padded(env), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def restart(
    proc: subprocess.Popen[bytes], cmd: list[str], env: dict[str, str], cwd: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Stop `proc` and start `cmd` again on a new port, once it answers: `--fresh`."""
    proc.terminate()
    proc.wait(10)
    port = free_port()
    fresh = spawn([*cmd, "--port", str(port)], env, cwd)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(base)
    return fresh, base


def run_wrk(
    base: str,
    urls: list[str],
    duration: float,
    conns: int,
    tmp: Path,
    heads: Sequence[str] = (),
) -> dict[str, float]:
    url_file = tmp / "urls.txt"
    url_file.write_text("\n".join(urls) + "\n")
    script = tmp / "cycle.lua"
    script.write_text(LUA % url_file)
    cmd = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{wrk_seconds(duration)}s",
        "--timeout",
        "5s",
        "--latency",
        *(arg for head in heads for arg in ("-H", head)),
        "-s",
        str(script),
        base,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    client_cpu = client_cpu_share(
        before, resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def latency(pct: str) -> float:
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
        return float(m.group(1)) * scale

    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    per_sec = 0.0
    if transfer:  # wrk prints binary units: 1KB = 1024 B
        per_sec = float(transfer.group(1)) * 1024 ** "BKMG".index(transfer.group(2)[0])
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "bytes_per_req": per_sec / rps if rps else 0.0,
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
        "client_cpu": client_cpu,
    }


LAG = "idrserve_event_loop_lag_seconds_bucket"
REQUEST_PATH = "request path only"
FLOOR = "bare uvloop responder"
FLOOR_AIOHTTP = "minimal aiohttp app"
FLOOR_KERNEL = "bare uvloop responder + kernel"
# The same, its renders taking idrserve's turns (bench/_floor.py --turns): the ceiling under
# issue 19's loop-lag target.
FLOOR_TURNS = "bare uvloop responder + kernel, idrserve's turns"
FLOORS = (FLOOR, FLOOR_AIOHTTP, FLOOR_KERNEL, FLOOR_TURNS)
KERNEL_FLOORS = (FLOOR_KERNEL, FLOOR_TURNS)


def lag_buckets(base: str) -> dict[float, float] | None:
    """The loop-lag histogram's cumulative buckets on /metrics (None: a server without it)."""
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            text = resp.read().decode(errors="replace")  # a server without /metrics
    except OSError:
        return None
    out = {}
    for m in re.finditer(LAG + r'\{le="([^"]+)"\} ([\d.e+-]+)', text):
        out[float(m.group(1))] = float(m.group(2))
    return out or None


STAGE = re.compile(
    r'idrserve_http_render_stage_seconds_total\{family="[^"]*",stage="(\w+)"\} (\S+)'
)
RENDERS = re.compile(r'idrserve_http_cache_answers_total\{family="[^"]*",tier="miss"\} (\S+)')


def render_stages(base: str) -> dict[str, float] | None:
    """Seconds spent per stage (source, render, encode) and renders so far, summed over the
    route families, from /metrics (None: a server without them, e.g. an older baseline)."""
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            text = resp.read().decode(errors="replace")
    except OSError:
        return None
    if "# TYPE idrserve_http_render_stage_seconds" not in text:
        return None
    out: dict[str, float] = {}  # no stage yet in a server that has not rendered
    for m in STAGE.finditer(text):
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    out["renders"] = sum(float(m.group(1)) for m in RENDERS.finditer(text))
    return out


THREAD_CPU = re.compile(r'idrserve_thread_cpu_seconds_total\{[^}]*\bthread="(\w+)"[^}]*\} (\S+)')


def thread_cpu(base: str) -> dict[str, float] | None:
    """CPU seconds of the server's loop thread and of its CPU pool so far, from /metrics
    (None: a server without idrserve_thread_cpu_seconds_total, e.g. an older baseline)."""
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
            text = resp.read().decode(errors="replace")
    except OSError:
        return None
    found: dict[str, float] = {}
    for m in THREAD_CPU.finditer(text):  # summed over workers (the benchmark runs one)
        found[m.group(1)] = found.get(m.group(1), 0.0) + float(m.group(2))
    return found or None


def thread_cpu_us(
    before: dict[str, float] | None, after: dict[str, float] | None, requests: float
) -> dict[str, float]:
    """µs of CPU a request of each thread role in between: the loop's is the request
    handling around a kernel rendered in the pool (and the whole tile when it renders on
    the loop)."""
    if before is None or after is None or requests <= 0:
        return {}
    return {
        f"{role}_cpu_us": (after[role] - before.get(role, 0.0)) / requests * 1e6 for role in after
    }


def stages_us(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float]:
    """µs a render of each stage in between: the kernel's time inside the server."""
    if before is None or after is None:
        return {}
    renders = after["renders"] - before.get("renders", 0.0)
    if renders <= 0:
        return {}
    return {
        f"{stage}_us": (after[stage] - before.get(stage, 0.0)) / renders * 1e6
        for stage in STAGES
        if stage in after
    }


STAGES = ("source", "render", "encode")


def renders_per_request(
    before: dict[str, float] | None, after: dict[str, float] | None, requests: float
) -> dict[str, float]:
    """Renders a request in between: 1 when every request rendered (the cold load the
    benchmark means), less when some were answered by a cache tier or joined a render."""
    if before is None or after is None or requests <= 0:
        return {}
    return {"renders_per_req": (after["renders"] - before.get("renders", 0.0)) / requests}


def split_cells(served: list[dict[str, float]], alone: list[dict[str, float]]) -> list[str] | None:
    """A cold tile's time split, median of the rounds, as table cells: µs a tile in the
    server, each stage in the server (alone), the kernel in the server, alone, the kernel's
    slowdown, and the rest. None when either side has no stage times."""
    if not served or not alone or "source_us" not in served[0] or "source_us" not in alone[0]:
        return None

    def med(rounds: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    wall = 1e6 / med(served, "rps")
    inside = {st: med(served, f"{st}_us") for st in STAGES}
    lone = {st: med(alone, f"{st}_us") for st in STAGES}
    k_in, k_alone = sum(inside.values()), sum(lone.values())
    cells = [f"{wall:.0f}", *(f"{inside[st]:.0f} ({lone[st]:.0f})" for st in STAGES)]
    return [*cells, f"{k_in:.0f}", f"{k_alone:.0f}", f"{k_in - k_alone:+.0f}", f"{wall - k_in:.0f}"]


def lag_p99_ms(before: dict[float, float] | None, after: dict[float, float] | None) -> float:
    """Upper bound of the bucket holding the 99th percentile of the samples in between."""
    if not before or not after:
        return float("nan")
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if counts[-1] <= 0:
        return float("nan")
    i = bisect.bisect_left(counts, 0.99 * counts[-1])
    return bounds[min(i, len(bounds) - 1)] * 1e3


def lag_share(
    before: dict[float, float] | None, after: dict[float, float] | None, bound: float
) -> float:
    """The share of the loop-lag samples in between that waited at most `bound` seconds."""
    if not before or not after or bound not in after:
        return float("nan")
    total = after[float("inf")] - before.get(float("inf"), 0.0)
    return (after[bound] - before.get(bound, 0.0)) / total if total > 0 else float("nan")


class KernelRun(TypedDict):
    """The JSON line bench/_kernel.py prints."""

    rps: float  # tiles/s
    stages_us: dict[str, float]  # mean µs a tile of each timed stage
    sha256: dict[str, str]  # each URL's body


# Redis for --redis: about 1 MB of its own plus a few hundred KB of tiles (a dozen 256²
# ones), far fewer than the 256 (or 64) tiles wrk cycles through, so every lookup misses:
# each tile pays the tier's whole cold path (lookup and render lock, store and unlock) and
# renders. Until 2026-12-07 it had 3 MB: Redis's LRU clock ticks once a second, so the
# tiles of one second look equally old and eviction among them is random, and 11 % of 256²
# and 18–22 % of 512² requests were Redis hits (the report's "renders a request" says so).
REDIS_MAXMEMORY = "1500kb"


def start_redis(maxmemory: str | None = REDIS_MAXMEMORY) -> tuple[subprocess.Popen[bytes], str]:
    """Start a redis-server pinned to core 1 (an LRU of `maxmemory`, or unbounded); the
    process (to stop) and its URL."""
    port = free_port()
    limit = ("--maxmemory", maxmemory, "--maxmemory-policy", "allkeys-lru") if maxmemory else ()
    proc = subprocess.Popen(
        [
            *("taskset", "-c", "1", "redis-server", "--port", str(port), *limit),
            *("--save", "", "--appendonly", "no"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    proc.terminate()
    raise SystemExit("redis-server did not start")


def floor_kernel_args(data: Path, urls: list[str], tmp: Path) -> list[str]:
    """bench/_floor.py's arguments after its port for the bare responder + kernel serving
    `urls` (written to a file it plans from, one per call: a floor started before reads its
    own while the next one's is written)."""
    fd, name = tempfile.mkstemp(prefix="floor-urls-", suffix=".txt", dir=tmp)
    os.close(fd)
    url_file = Path(name)
    url_file.write_text("\n".join(urls) + "\n")
    return ["--kernel", str(data), str(url_file)]


def run_kernel(data: Path, urls: list[str], duration: float, tmp: Path) -> KernelRun:
    """bench/_kernel.py on core 0 (the server's core, idle meanwhile): tiles/s and digests."""
    url_file = tmp / "kernel-urls.txt"
    url_file.write_text("\n".join(urls) + "\n")
    cmd = ["taskset", "-c", "0", sys.executable, str(ROOT / "_kernel.py")]
    cmd += [str(data), str(url_file), str(duration)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    run: KernelRun = json.loads(out)
    return run


def check_bytes(base: str, digests: dict[str, str]) -> int:
    """How many URLs the server answers with other bytes than the kernel makes (0 expected)."""
    bad = 0
    for url, digest in digests.items():
        with urllib.request.urlopen(base + url, timeout=10) as resp:
            bad += hashlib.sha256(resp.read()).hexdigest() != digest
    return bad


def fresh_rounds(args: argparse.Namespace) -> bool:
    """Whether every idrserve server starts anew before each round: when asked (`--fresh`),
    and for every A/B (`--baseline`). Servers that start once carry one draw each of their
    layout (`padded`) through every round: the same tree against itself read 1.01-1.03x
    with its servers started once, 1.00x padded and started anew each round."""
    return bool(args.fresh or args.baseline is not None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of another revision (e.g. `git worktree add /tmp/base REV`): its "
        "server replaces the zarr-python variant and runs interleaved, reported as a ratio",
    )
    parser.add_argument(
        "--baseline-python",
        type=Path,
        help="the interpreter the baseline's server runs on (e.g. a venv of another Python "
        "holding this package's dependencies); with `--baseline .` it compares interpreters "
        "on one tree",
    )
    parser.add_argument(
        "--request-path",
        action="store_true",
        help="also run bench/_request_path.py (the server with a constant body instead of the "
        "kernel), to split a cold tile into request handling and work",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run bench/_floor.py (a bare uvloop HTTP responder with a constant body, "
        "a minimal aiohttp app, and the bare responder answering with the kernel's tiles, "
        "once rendering every ready request at once and once taking idrserve's turns): the "
        "least a Python event loop spends a request here, and the most it makes of the kernel",
    )
    parser.add_argument(
        "--viewer-query",
        action="store_true",
        help="add OMERO.iviewer's rendering parameters (c, m, p, ia, q, maps) to every tile "
        "URL, as the viewer sends them, instead of the bare `tile=`",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="give every server a shared Redis tier (a redis-server started here, pinned to "
        "core 1 beside wrk, so small an LRU that every lookup misses): cold tiles as a "
        "deployment with Redis renders them",
    )
    parser.add_argument(
        "--large",
        action="store_true",
        help="also 1024² tiles from 1024² chunks (bioformats2raw's default chunk, so common "
        "in IDR's OME-Zarr): over the direct path's 512² output and the inline pixels, they "
        "take aiohttp's usual path and the CPU pool",
    )
    parser.add_argument(
        "--new-urls",
        action="store_true",
        help="every server without its URL index (IDRSERVE_CACHE__URL_INDEX_ENTRIES=0): each "
        "tile looked up as a URL the server has not answered, as a new image's first view",
    )
    parser.add_argument("--browser-heads", action="store_true", help=BROWSER_HEADS_HELP)
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start every idrserve server again before each round (after a 1 s warm-up of "
        "each case), as bench_iiif.py does: what differs between two processes of one tree "
        "(where the allocator and ASLR put things, the environment's size: `padded`) is "
        "then averaged over the rounds; implied by --baseline",
    )
    parser.add_argument(
        "--query",
        default="",
        metavar="QUERY",
        help="append QUERY to every tile URL, e.g. 'c=1|110:1800&m=g' (one channel, "
        "greyscale) or 'c=1|110:1800$00FF00&m=c' (one green channel)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:VAR=VALUE[,VAR=VALUE]",
        help=VARIANT_HELP,
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="an IDRSERVE_* setting for every server, baseline included (e.g. "
        "`IDRSERVE_SERVER__INLINE_RENDER_PIXELS=0`: every render in the CPU pool, as on a "
        "worker with several CPU threads)",
    )
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    try:
        extra_env = parse_variants(args.variant)
    except ValueError as exc:
        parser.error(str(exc))
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    if args.baseline_python is not None and args.baseline is None:
        parser.error("--baseline-python needs --baseline (`--baseline .` for this tree)")
    args.fresh = fresh_rounds(args)
    if args.redis and not shutil.which("redis-server"):
        print("--redis needs redis-server: apt-get install redis-server", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="idrserve-bench-"))
    data = tmp / "data"
    write_image(data / "2001.zarr", 256, 1)
    write_image(data / "2002.zarr", 512, 2)
    if args.large:
        write_image(data / "2003.zarr", 1024, 3)
    # Two builds of the same server, interleaved: the default (direct chunk reads for local
    # Zarr v2) and reads through zarr-python + zarrs, so the fast path is measured as a ratio.
    # With --baseline, the other variant is the same default server from another checkout.
    other = "baseline" if args.baseline else "idrserve, zarr-python reads"
    variants = {"idrserve": "true", other: "true" if args.baseline else "false"}
    variants.update(dict.fromkeys(extra_env, "true"))
    if args.request_path:
        variants[REQUEST_PATH] = "true"
    if args.floor:
        variants[FLOOR] = "true"
        variants[FLOOR_AIOHTTP] = "true"
        variants[FLOOR_KERNEL] = "true"
        variants[FLOOR_TURNS] = "true"
    cases = {
        "256² tiles, 256² chunks": [
            f"/webgateway/render_image_region/2001/0/0/?tile=0,{x},{y},256,256"
            for y in range(SIZE // 256)
            for x in range(SIZE // 256)
        ],
        "512² tiles, 512² chunks": [
            f"/webgateway/render_image_region/2002/0/0/?tile=0,{x},{y},512,512"
            for y in range(SIZE // 512)
            for x in range(SIZE // 512)
        ],
    }
    if args.large:
        # Only 16 such tiles: four JPEG qualities make 64 distinct responses, as many as the
        # 512² case, so that 16 connections never ask for one tile twice at once (a second
        # request would join the first's render, not render).
        cases[LARGE] = [
            f"/webgateway/render_image_region/2003/0/0/?tile=0,{x},{y},1024,1024&q={q}"
            for q in ("0.85", "0.86", "0.87", "0.88")
            for y in range(SIZE // 1024)
            for x in range(SIZE // 1024)
        ]
    if args.viewer_query:
        cases = {name: [f"{url}&{VIEWER_QUERY}" for url in urls] for name, urls in cases.items()}
    if args.query:
        cases = {name: [f"{url}&{args.query}" for url in urls] for name, urls in cases.items()}
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    shared_env: dict[str, str] = {}
    redis = None
    if args.redis:
        redis, shared_env["IDRSERVE_CACHE__REDIS_URL"] = start_redis()
    heads = BROWSER_HEADS if args.browser_heads else ()
    if args.new_urls:
        shared_env["IDRSERVE_CACHE__URL_INDEX_ENTRIES"] = "0"
    try:
        shared_env.update(parse_settings(args.setting))
    except ValueError as exc:
        parser.error(str(exc))
    launches: dict[str, tuple[list[str], dict[str, str], Path]] = {}
    for label, direct in variants.items():
        port = free_port()
        env = dict(
            os.environ,
            IDRSERVE_SERVER__CPU_THREADS="1",
            IDRSERVE_LOG__ACCESS_LOG="false",
            IDRSERVE_SOURCE__DIRECT_READS=direct,
            # Cold means cold: no response cache, every request renders.
            IDRSERVE_CACHE__MEMORY_MAX_BYTES="0",
            **shared_env,
        )
        env.update(extra_env.get(label, {}))
        # `python -m` puts the working directory first on sys.path, ahead of PYTHONPATH: run
        # each server from its own checkout, or a baseline run from this one imports this tree.
        cwd = ROOT.parent
        # The scripts under bench/ (floors, request path) import this tree even when it is
        # not the installed one.
        env["PYTHONPATH"] = str(cwd)
        if label == "baseline":
            cwd = args.baseline.resolve()
            env["PYTHONPATH"] = str(cwd)
        python = sys.executable
        if label == "baseline" and args.baseline_python is not None:
            python = str(args.baseline_python)
        cmd = ["taskset", "-c", "0", python]
        if label in FLOORS:
            cmd += [str(ROOT / "_floor.py"), str(port)]
            cmd += ["--aiohttp"] if label == FLOOR_AIOHTTP else []
            if label in KERNEL_FLOORS:  # every case's tiles, planned before it listens
                cmd += floor_kernel_args(data, [u for urls in cases.values() for u in urls], tmp)
                cmd += ["--turns"] if label == FLOOR_TURNS else []
        else:
            cmd += [str(ROOT / "_request_path.py")] if label == REQUEST_PATH else ["-m", "idrserve"]
            cmd += ["serve", "--zarr-root", str(data)]
            launches[label] = (cmd, env, cwd)  # `--fresh` starts it again each round
            cmd = [*cmd, "--port", str(port)]
        servers[label] = (spawn(cmd, env, cwd), f"http://127.0.0.1:{port}")
    targets = {"256² tiles, 256² chunks": 900.0, "512² tiles, 512² chunks": 240.0}
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for _proc, base in servers.values():
            wait_healthy(base)
            for urls in cases.values():  # warm-up: opens arrays, fills the OS page cache
                run_wrk(base, urls, 3, args.conns, tmp, heads)
        mismatched = {}
        for name, urls in cases.items():
            digests = run_kernel(data, urls, 0.0, tmp)["sha256"]
            mismatched[name] = (check_bytes(servers["idrserve"][1], digests), len(urls))
            for label in KERNEL_FLOORS:
                if label in servers:
                    mismatched[f"{name}, {label}"] = (
                        check_bytes(servers[label][1], digests),
                        len(urls),
                    )
        for round_no in range(args.rounds):
            if args.fresh and round_no:
                for label, (cmd, env, cwd) in launches.items():
                    servers[label] = restart(servers[label][0], cmd, env, cwd)
                    for urls in cases.values():  # the new process's arrays and code
                        run_wrk(servers[label][1], urls, 1, args.conns, tmp, heads)
            # Every other round in the reverse order: whatever runs first after the kernel's
            # run (or second) in every round would otherwise carry that place's bias. A run
            # comparing this tree with itself (`--baseline` of the same commit) read 1.02×
            # with the order fixed.
            order = list(servers.items())
            if round_no % 2:
                order.reverse()
            for name, urls in cases.items():
                for label, (_proc, base) in order:
                    row = f"{name} ({label})"
                    before, spent = lag_buckets(base), render_stages(base)
                    cpu = thread_cpu(base)
                    result = run_wrk(base, urls, args.duration, args.conns, tmp, heads)
                    result.update(
                        thread_cpu_us(
                            cpu, thread_cpu(base), result["rps"] * wrk_seconds(args.duration)
                        )
                    )
                    after = lag_buckets(base)
                    result["lag_p99_ms"] = lag_p99_ms(before, after)
                    result["lag_le_2ms"] = lag_share(before, after, 0.002)
                    spent_after = render_stages(base)
                    result.update(stages_us(spent, spent_after))
                    requests = result["rps"] * wrk_seconds(args.duration)
                    result.update(renders_per_request(spent, spent_after, requests))
                    results.setdefault(row, []).append(result)
                kernel = run_kernel(data, urls, args.duration, tmp)
                alone = {"rps": kernel["rps"]}
                alone.update({f"{k}_us": v for k, v in kernel["stages_us"].items()})
                results.setdefault(f"{name} (kernel)", []).append(alone)
    finally:
        for proc, _base in servers.values():
            proc.terminate()
            proc.wait(10)
        if redis is not None:
            redis.terminate()
            redis.wait(10)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    host = platform.node() or "host"
    lines = [
        f"# idrserve cold-tile HTTP benchmark ({stamp}, {host})",
        "",
        f"Command: `python bench/bench_http.py --duration {args.duration:g} --rounds "
        f"{args.rounds} --conns {args.conns}"
        f"{' --request-path' if args.request_path else ''}"
        f"{' --floor' if args.floor else ''}"
        f"{' --viewer-query' if args.viewer_query else ''}"
        f"{f' --query {shlex.quote(args.query)}' if args.query else ''}"
        f"{' --redis' if args.redis else ''}"
        f"{' --new-urls' if args.new_urls else ''}"
        f"{' --browser-heads' if args.browser_heads else ''}"
        f"{' --fresh' if args.fresh else ''}"
        f"{' --large' if args.large else ''}"
        + "".join(f" --setting {shlex.quote(v)}" for v in args.setting)
        + f"{f' --baseline {args.baseline}' if args.baseline else ''}"
        + f"{f' --baseline-python {args.baseline_python}' if args.baseline_python else ''}"
        + "".join(f" --variant '{v}'" for v in args.variant)
        + "`",
        "",
        f"Server: `idrserve serve` pinned to core 0 (`taskset -c 0`, 1 cpu thread); wrk -t1 "
        f"-c{args.conns} pinned to core 1; {args.rounds} interleaved rounds of "
        f"{args.duration:g} s after a 3 s warm-up, every other round in reverse order"
        + (
            "; every idrserve server started again before each round (a 1 s warm-up of each case)"
            if args.fresh
            else ""
        )
        + ". No response cache: every request reads, "
        "decodes (blosc lz4), renders 3 uint16 channels (or the channels --query names) and "
        "encodes JPEG q85. "
        f"loadavg at end: {os.getloadavg()[0]:.2f}; nproc {os.cpu_count()}.",
        "",
        "| case | median tiles/s | min–max | p50 ms | p99 ms | p99 / p50 | loop lag p99 ms "
        "| lag ≤ 2 ms | target | ratio | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def med(rounds: list[dict[str, float]], field: str) -> float:
        return statistics.median(r[field] for r in rounds)

    for name, rounds in results.items():
        target = targets.get(name.split(" (")[0])
        rps = [r["rps"] for r in rounds]
        cells = [f"{statistics.median(rps):.0f}", f"{min(rps):.0f}–{max(rps):.0f}"]
        if "p50_ms" in rounds[0]:
            p50, p99 = med(rounds, "p50_ms"), med(rounds, "p99_ms")
            lag = med(rounds, "lag_p99_ms") if "lag_p99_ms" in rounds[0] else float("nan")
            non2xx = sum(r["non2xx"] for r in rounds)
            share = med(rounds, "lag_le_2ms") if "lag_le_2ms" in rounds[0] else float("nan")
            cells += [f"{p50:.1f}", f"{p99:.1f}", f"{p99 / p50:.2f}", f"{lag:.2f}"]
            cells += [f"{share:.0%}"]
        else:  # the kernel: no HTTP, no latency
            cells += ["–", "–", "–", "–", "–"]
            non2xx = 0
        if target is None:  # a case without one of issue 2's targets (--large)
            cells += ["–", "–", f"{non2xx:.0f}"]
        else:
            cells += [f"{target:.0f}", f"{statistics.median(rps) / target:.2f}", f"{non2xx:.0f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Server / kernel (issue 19 target ≥ 0.9), median of per-round ratios:", ""]
    for name in cases:
        kernel_rounds = results[f"{name} (kernel)"]
        for label in servers:
            if label in (REQUEST_PATH, FLOOR, FLOOR_AIOHTTP):
                continue  # constant bodies: not tiles
            served = results[f"{name} ({label})"]
            ratios = [a["rps"] / b["rps"] for a, b in zip(served, kernel_rounds, strict=True)]
            lines.append(f"- {name}, {label}: {statistics.median(ratios):.2f}×")
        if REQUEST_PATH in servers:
            # Time per tile = kernel time + request time, if the two only add up.
            path = results[f"{name} ({REQUEST_PATH})"]
            k_us = 1e6 / statistics.median(r["rps"] for r in kernel_rounds)
            p_us = 1e6 / statistics.median(r["rps"] for r in path)
            s_us = 1e6 / statistics.median(r["rps"] for r in results[f"{name} (idrserve)"])
            lines.append(
                f"- {name}: kernel {k_us:.0f} µs + request path {p_us:.0f} µs = "
                f"{k_us + p_us:.0f} µs a tile, against {s_us:.0f} µs measured"
            )
        if FLOOR in servers:
            k_us = 1e6 / statistics.median(r["rps"] for r in kernel_rounds)
            f_us = 1e6 / statistics.median(r["rps"] for r in results[f"{name} ({FLOOR})"])
            a_us = 1e6 / statistics.median(r["rps"] for r in results[f"{name} ({FLOOR_AIOHTTP})"])
            lines.append(
                f"- {name}: 0.9× the kernel leaves {k_us / 0.9 - k_us:.0f} µs a tile for "
                f"everything around it; a bare uvloop responder takes {f_us:.0f} µs a request, "
                f"a minimal aiohttp app {a_us:.0f} µs (bench/_floor.py)"
            )
            served = results[f"{name} (idrserve)"]
            for label, what in (
                (FLOOR_KERNEL, "the most a Python server on this loop makes of this kernel"),
                (FLOOR_TURNS, "the same with its loop's lag bounded as idrserve's"),
            ):
                ceiling = results[f"{name} ({label})"]
                ratios = [a["rps"] / b["rps"] for a, b in zip(served, ceiling, strict=True)]
                lines.append(
                    f"- {name}: idrserve / the {label} ({what}), per-round median: "
                    f"{statistics.median(ratios):.2f}×"
                )
    shares = [
        (name, rounds)
        for name, rounds in results.items()
        if rounds and "renders_per_req" in rounds[0]
    ]
    if shares:
        lines += [
            "",
            "Renders a request, median of the rounds (1.00: every request rendered; less: the "
            "rest were answered by a cache tier or joined another request's render):",
            "",
            *(f"- {name}: {med(rounds, 'renders_per_req'):.2f}" for name, rounds in shares),
        ]
    lines += [
        "",
        "Where a tile's time goes, µs a tile, median of the rounds: the kernel's stages as the "
        "server times them (idrserve_http_render_stage_seconds_total over its renders) and "
        "alone (bench/_kernel.py); the rest of the server's time per tile is everything "
        "around the kernel (HTTP, planning, the loop, writing):",
        "",
        "| case | server µs a tile | source | render | encode | kernel in server "
        "| kernel alone | kernel's slowdown in server | the rest |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in cases:
        for label in ("idrserve", *KERNEL_FLOORS):
            rows = results.get(f"{name} ({label})")
            split = split_cells(rows or [], results[f"{name} (kernel)"])
            if split is not None:
                row = name if label == "idrserve" else f"{name}, {label}"
                lines.append(f"| {row} | " + " | ".join(split) + " |")
    cpu_rows = [
        (name, rounds) for name, rounds in results.items() if rounds and "loop_cpu_us" in rounds[0]
    ]
    if cpu_rows:
        lines += [
            "",
            "CPU a tile by thread, µs, median of the rounds (idrserve_thread_cpu_seconds_total "
            "over wrk's requests; a tile rendered on the loop counts there whole, one rendered "
            "in the pool leaves the loop only its request handling):",
            "",
            "| case | µs a tile (wall) | loop thread | CPU pool | kernel alone |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, rounds in cpu_rows:
            case = name.split(" (")[0]
            lone_rounds = results.get(f"{case} (kernel)")
            lone = f"{1e6 / med(lone_rounds, 'rps'):.0f}" if lone_rounds else "–"
            lines.append(
                f"| {name} | {1e6 / med(rounds, 'rps'):.0f} | {med(rounds, 'loop_cpu_us'):.0f} "
                f"| {med(rounds, 'cpu_pool_cpu_us'):.0f} | {lone} |"
            )
    lines += [
        "",
        "Stage cells: in the server, alone in brackets. Stage times are wall time: a tile "
        "rendered in the CPU pool (above `server.inline_render_pixels`: the 512² tiles here) "
        "shares the core with the event loop, so its stages also hold the loop's work "
        "meanwhile and its 'rest' is understated; a tile rendered inline (256²) splits "
        "cleanly.",
        "",
        "Bodies that differ between the server and the kernel (0 expected): "
        + ", ".join(f"{name}: {n} of {total}" for name, (n, total) in mismatched.items())
        + ".",
    ]
    on = f" on {args.baseline_python}" if args.baseline_python else ""
    title = (
        f"This tree vs the baseline ({args.baseline}{on})"
        if args.baseline
        else "Direct chunk reads vs zarr-python reads"
    )
    lines += ["", f"{title}, median of per-round ratios:", ""]
    for name in cases:
        fast = results[f"{name} (idrserve)"]
        slow = results[f"{name} ({other})"]
        ratios = [a["rps"] / b["rps"] for a, b in zip(fast, slow, strict=True)]
        lines.append(f"- {name}: {statistics.median(ratios):.2f}×")
    for label in extra_env:
        lines += ["", f"{label} vs idrserve, median of per-round ratios:", ""]
        for name in cases:
            ratios = [
                a["rps"] / b["rps"]
                for a, b in zip(
                    results[f"{name} ({label})"], results[f"{name} (idrserve)"], strict=True
                )
            ]
            lines.append(f"- {name}: {statistics.median(ratios):.2f}×")
    lines += ["", "Raw rounds:", "", "```json", json.dumps(results, indent=1), "```", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    out = unused(args.out / f"http-{host}-{stamp}.md")
    out.write_text("\n".join(lines))
    print("\n".join(lines[: lines.index("Raw rounds:")]))
    print(f"written to {out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
