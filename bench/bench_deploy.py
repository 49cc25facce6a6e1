"""Deployment side-by-side: idrserve alone, behind the deploy/ nginx, nginx static, IIPImage.

Whole-machine mode (docs/benchmarks.md#protocol, mode B): no server is pinned; wrk runs as
`bench_http.run_wrk` does (`-t1`, on core 1), so it shares a core with the servers. Everyone
serves the same pixels (`write_image(..., 256, 1)`: 3-channel uint16 4096² pyramid, 256² chunks)
and the same 1 024 tiles (256 level-0 tiles × 4 JPEG qualities). Contenders, interleaved per round:

1. idrserve alone, memory-cache hits (1 worker, warmed);
2. idrserve behind the deploy/ nginx, warm proxy cache (one pass beforehand; HIT asserted);
3. idrserve behind the deploy/ nginx, cold proxy cache: every round uses URLs with a distinct
   `q` spelling (same JPEG quality, e.g. `q=0.8` → `q=0.801005`), so nginx misses and the
   upstream idrserve (response caches off) renders each request;
4. nginx serving the same JPEG bytes as static files (the ceiling);
5. IIPImage (Debian iipimage-server, 2 FastCGI processes behind their own nginx), IIIF tiles
   from a pyramidal JPEG TIFF holding idrserve's q=0.9 rendering of the same pixels;
6. idrserve cold tiles (response caches off), `--workers 1` and `--workers 2`.

All idrserve processes run with `IDRSERVE_SERVER__CPU_THREADS=1` (one render thread per worker).

This is the one side-by-side command (issue 7): each round runs every contender under wrk
(throughput on one URL list) and then under locust (`bench/locust_urls.py`: sessions of
neighbouring tiles from the same list), contenders interleaved, so a machine hiccup hits one round
of everyone rather than all rounds of one contender. `--locust-s 0` leaves locust out.

    python bench/bench_deploy.py [--duration 8] [--rounds 3] [--conns 64] [--cold-conns 16]
                                 [--locust-s 8] [--locust-users 32]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from _harness import (
    NGINX,
    NGINX_USER,
    Stack,
    get,
    nginx_bench_dir,
    run_locust,
    version,
    wait_http,
)
from bench_http import CLIENT_CPU_NOTE, SIZE, client_cpu_cell, free_port, run_wrk, write_image

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
DEPLOY = REPO / "deploy" / "nginx"
IIPSRV = Path("/usr/lib/iipimage-server/iipsrv.fcgi")
LOCUSTFILE = ROOT / "locust_urls.py"
QUALITIES = ("0.8", "0.85", "0.9", "0.95")
TILES = SIZE // 256

STATIC = "nginx static"
MEMORY = "idrserve memory hits"
PROXY_WARM = "nginx proxy cache, warm"
PROXY_COLD = "nginx proxy cache, cold"
COLD1 = "idrserve cold, 1 worker"
COLD2 = "idrserve cold, 2 workers"
IIP = "IIPImage ×2 (FastCGI)"

# (label, numerator, denominator, target or None)
RATIOS = [
    ("nginx proxy-cache hits / nginx static", PROXY_WARM, STATIC, 0.9),
    ("idrserve memory hits / nginx static", MEMORY, STATIC, 0.3),
    ("2 workers / 1 worker, cold", COLD2, COLD1, 1.8),
    ("idrserve cold 2 workers / IIPImage ×2 (informative)", COLD2, IIP, None),
    ("nginx cold proxy / idrserve cold 1 worker (informative)", PROXY_COLD, COLD1, None),
]

STATIC_CONF = """
user {user};
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    open_file_cache max=4096;
    client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
    types {{ image/jpeg jpg; }}
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{ alias {static}/; }}
    }}
}}
"""

# docs/benchmarks.md#iipimage-as-a-peer: plain fastcgi_pass, no upstream keepalive (one
# connection per iipsrv).
IIP_CONF = """
user {user};
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
    upstream iipsrv {{ {servers} }}
    server {{
        listen 127.0.0.1:{port};
        location /fcgi-bin/iipsrv.fcgi {{
            fastcgi_pass iipsrv;
            fastcgi_param PATH_INFO $fastcgi_script_name;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param HTTP_HOST $host;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param SERVER_NAME $server_name;
            fastcgi_param SERVER_PORT $server_port;
        }}
    }}
}}
"""


def tile_urls(qualities: tuple[str, ...] | list[str]) -> list[str]:
    return [
        f"/webgateway/render_image_region/2001/0/0/?tile=0,{x},{y},256,256&q={q}"
        for q in qualities
        for y in range(TILES)
        for x in range(TILES)
    ]


def cold_urls(round_no: int, n_urls: int) -> list[str]:
    """Round-specific spellings of the 4 qualities: q=0.8 → 0.8RRKKK (same JPEG quality)."""
    per_q = math.ceil(n_urls / (len(QUALITIES) * TILES * TILES))
    spellings = [f"{q}{round_no:02d}{k:03d}" for k in range(per_q) for q in QUALITIES]
    return tile_urls(spellings)


def write_iip_tiff(path: Path, base: str, size: int = SIZE) -> None:
    """idrserve's level-0 tiles of a `size`² image at q=0.9 as a pyramidal JPEG TIFF (iipsrv's
    layout); lower levels are Lanczos reductions of level 0."""
    import numpy as np
    import tifffile
    from PIL import Image

    rgb = np.zeros((size, size, 3), np.uint8)
    for y in range(size // 256):
        for x in range(size // 256):
            body, _ = get(
                f"{base}/webgateway/render_image_region/2001/0/0/?tile=0,{x},{y},256,256&q=0.9"
            )
            tile = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
            rgb[y * 256 : (y + 1) * 256, x * 256 : (x + 1) * 256] = tile
    img = Image.fromarray(rgb)
    with tifffile.TiffWriter(path) as tif:
        level = 0
        while True:
            arr = np.asarray(img)
            tif.write(
                arr,
                tile=(256, 256),
                compression="jpeg",
                compressionargs={"level": 90},
                photometric="rgb",
                subfiletype=1 if level else 0,
            )
            if min(img.size) <= 256:
                break
            img = img.resize((img.size[0] // 2, img.size[1] // 2), Image.Resampling.LANCZOS)
            level += 1


def start_static(stack: Stack, tmp: Path, bodies: list[bytes]) -> tuple[str, list[str]]:
    """nginx serving `bodies` as static files: the ceiling every contender is compared to."""
    static = tmp / "static"
    static.mkdir()
    for i, body in enumerate(bodies):
        (static / f"{i}.jpg").write_bytes(body)
    prefix = tmp / "nginx-static"
    prefix.mkdir()
    port = free_port()
    (prefix / "nginx.conf").write_text(
        STATIC_CONF.format(user=NGINX_USER or "nobody", prefix=prefix, port=port, static=static)
    )
    stack.nginx(prefix, [NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)])
    urls = [f"/static/{i}.jpg" for i in range(len(bodies))]
    base = f"http://127.0.0.1:{port}"
    wait_http(base + urls[0])
    return base, urls


def start_iip(stack: Stack, tmp: Path, mem: str) -> tuple[str, list[str]]:
    """Two iipsrv FastCGI processes behind their own nginx (docs/benchmarks.md)."""
    if not IIPSRV.exists():
        raise RuntimeError(f"{IIPSRV} missing (apt-get install iipimage-server)")
    data = tmp / "iip"
    data.mkdir()
    write_iip_tiff(data / "rgb_pyr_jpeg.tif", mem)
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        env = dict(
            os.environ,
            LOGFILE=str(tmp / f"iipsrv-{i}.log"),
            VERBOSITY="0",
            JPEG_QUALITY="90",
            MAX_IMAGE_CACHE_SIZE="0",
            FILESYSTEM_PREFIX=f"{data}/",
            CORS="*",
            OMP_NUM_THREADS="1",
        )
        stack.start([str(IIPSRV), "--bind", f"127.0.0.1:{port}", "--backlog", "1024"], env)
    prefix = tmp / "nginx-iip"
    prefix.mkdir()
    port = free_port()
    servers = " ".join(f"server 127.0.0.1:{p};" for p in ports)
    (prefix / "nginx.conf").write_text(
        IIP_CONF.format(user=NGINX_USER or "nobody", prefix=prefix, port=port, servers=servers)
    )
    stack.nginx(prefix, [NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)])
    base = f"http://127.0.0.1:{port}"
    urls = [
        f"/fcgi-bin/iipsrv.fcgi?IIIF=rgb_pyr_jpeg.tif/{x * 256},{y * 256},256,256"
        "/256,/0/default.jpg"
        for y in range(TILES)
        for x in range(TILES)
    ]
    time.sleep(0.5)
    body, headers = get(base + urls[17])
    if not body.startswith(b"\xff\xd8") or "jpeg" not in headers.get("Content-Type", ""):
        raise RuntimeError(f"iipsrv answered {headers.get('Content-Type')}")
    return base, urls


def table(results: dict[str, list[dict[str, float]]], what: str) -> list[str]:
    wrk = what == "wrk"  # only wrk's rounds time the client's CPU (run_wrk)
    lines = [
        f"| contender ({what}) | median req/s | min–max | p50 ms | p99 ms | bytes/resp | "
        + ("wrk CPU | " if wrk else "")
        + "failed |",
        "|---|---:|---:|---:|---:|---:|" + ("---:|" if wrk else "") + "---:|",
    ]
    for name, rounds in results.items():
        rps = [r["rps"] for r in rounds]
        failed = sum(r.get("non2xx", 0) + r.get("socket_errors", 0) + r.get("failures", 0)
                     for r in rounds)  # fmt: skip
        lines.append(
            f"| {name} | {statistics.median(rps):.0f} | {min(rps):.0f}–{max(rps):.0f} | "
            f"{statistics.median(r['p50_ms'] for r in rounds):.2f} | "
            f"{statistics.median(r['p99_ms'] for r in rounds):.2f} | "
            f"{statistics.median(r['bytes_per_req'] for r in rounds):.0f} | "
            + (f"{client_cpu_cell(rounds)} | " if wrk else "")
            + f"{failed:.0f} |"
        )
    return [*lines, "", CLIENT_CPU_NOTE] if wrk else lines


def ratio_table(
    results: dict[str, list[dict[str, float]]], what: str, with_targets: bool = True
) -> list[str]:
    """Per-round ratios; the issue's targets are wrk figures, so locust rows are informative."""
    lines = [
        f"| ratio ({what}) | median | per round | target | met |",
        "|---|---:|---|---:|---|",
    ]
    for label, num, den, goal in RATIOS:
        target = goal if with_targets else None
        if num not in results or den not in results:
            lines.append(f"| {label} | n/a | contender missing | {target or '–'} | – |")
            continue
        per = [a["rps"] / b["rps"] for a, b in zip(results[num], results[den], strict=True)]
        med = statistics.median(per)
        met = "–" if target is None else ("yes" if med >= target else "**no**")
        lines.append(
            f"| {label} | {med:.2f} | {', '.join(f'{x:.2f}' for x in per)} | "
            f"{target if target is not None else '–'} | {met} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", type=int, default=64, help="wrk connections for cache hits")
    parser.add_argument("--cold-conns", type=int, default=16, help="wrk connections, cold tiles")
    parser.add_argument("--locust-s", type=float, default=8.0, help="seconds per locust round")
    parser.add_argument("--locust-users", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    tmp = nginx_bench_dir("deploybench")
    if tmp is None:
        return 2
    notes: list[str] = []
    # name → (base URL, URL list or None for "fresh cold URLs each round", wrk connections)
    bases: dict[str, tuple[str, list[str] | None, int]] = {}
    wrk_results: dict[str, list[dict[str, float]]] = {}
    locust_results: dict[str, list[dict[str, float]]] = {}
    cold_sizes: list[int] = []
    with Stack(tmp) as stack:
        data = tmp / "data"
        write_image(data / "2001.zarr", 256, 1)
        urls = tile_urls(QUALITIES)
        no_mem = {"IDRSERVE_CACHE__MEMORY_MAX_BYTES": "0"}
        _, mem = stack.idrserve(data, 1)
        _, cold1 = stack.idrserve(data, 1, no_mem)
        _, cold2 = stack.idrserve(data, 2, no_mem)
        bodies = [get(mem + url)[0] for url in urls]  # warms the memory tier
        if get(mem + urls[0])[1].get("X-Cache") != "memory":
            raise RuntimeError("the idrserve memory contender did not answer from memory")
        bases[STATIC] = (*start_static(stack, tmp, bodies), args.conns)
        bases[MEMORY] = (mem, urls, args.conns)

        warm = stack.deploy_nginx("nginx-warm", mem)
        for url in urls:  # one pass fills the proxy cache
            get(warm + url)
        statuses = {get(warm + u)[1].get("X-Cache-Status") for u in urls[::97]}
        if statuses != {"HIT"}:
            raise RuntimeError(f"deploy nginx warm pass did not give HITs: {statuses}")
        bases[PROXY_WARM] = (warm, urls, args.conns)
        cold = stack.deploy_nginx("nginx-cold", cold1)
        # Enough distinct URLs per round that wrk cannot wrap around at up to 3 000 req/s.
        n_cold = max(len(urls), int(args.duration * 3000))
        bases[PROXY_COLD] = (cold, None, args.cold_conns)
        bases[COLD1] = (cold1, urls, args.cold_conns)
        bases[COLD2] = (cold2, urls, args.cold_conns)
        try:
            iip, iip_urls = start_iip(stack, tmp, mem)
            bases[IIP] = (iip, iip_urls, args.cold_conns)
            notes.append(
                f"IIPImage IIIF tile {len(get(iip + iip_urls[17])[0])} bytes vs idrserve q=0.9 "
                f"{len(bodies[2 * 256 + 17])} bytes (same tile)."
            )
        except (OSError, RuntimeError) as exc:
            notes.append(f"IIPImage not measured: {exc}.")

        wrk_results = {name: [] for name in bases}
        locust_results = {name: [] for name in bases} if args.locust_s > 0 else {}
        for base, chosen, conns in bases.values():  # warm-up, discarded
            run_wrk(base, chosen if chosen is not None else cold_urls(0, n_cold), 3, conns, tmp)
        for r in range(1, args.rounds + 1):
            for name, (base, chosen, conns) in bases.items():
                wrk_urls = chosen if chosen is not None else cold_urls(r, n_cold)
                if name == PROXY_COLD:
                    cold_sizes.append(len(wrk_urls))
                wrk_results[name].append(run_wrk(base, wrk_urls, args.duration, conns, tmp))
                if not locust_results:
                    continue
                # Sessions right after the same contender's wrk round, on the same URL list
                # (cold contenders get their own never-seen spelling for this round).
                session_urls = chosen if chosen is not None else cold_urls(100 + r, n_cold)
                url_file = tmp / "session-urls.txt"
                url_file.write_text("\n".join(session_urls) + "\n")
                locust_results[name].append(
                    run_locust(
                        LOCUSTFILE, base, args.locust_users, args.locust_s,
                        tmp / f"locust-{r}-{len(locust_results[name])}-{abs(hash(name))}",
                        {"IDRSERVE_BENCH_URLS": str(url_file), "IDRSERVE_BENCH_RUN": "16"},
                    )
                )  # fmt: skip
        statuses = {get(warm + u)[1].get("X-Cache-Status") for u in urls[::97]}
        if statuses != {"HIT"}:
            notes.append(f"WARNING: warm proxy cache sample after the rounds: {statuses}")
        else:
            notes.append(
                "Warm proxy cache: every sampled URL was X-Cache-Status: HIT before and after."
            )
        probe = cold_urls(args.rounds + 1, len(urls))[5]
        first = get(cold + probe)[1].get("X-Cache-Status")
        notes.append(f"Cold proxy cache: a never-seen URL gave X-Cache-Status: {first}.")

    for n, row in zip(cold_sizes, wrk_results.get(PROXY_COLD, []), strict=True):
        if row["rps"] * args.duration > n:
            notes.append(f"WARNING: cold proxy round wrapped ({row['rps']:.0f}/s vs {n} URLs).")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    host = platform.node() or "host"
    cmdline = (
        f"python bench/bench_deploy.py --duration {args.duration:g} --rounds {args.rounds} "
        f"--conns {args.conns} --cold-conns {args.cold_conns} --locust-s {args.locust_s:g} "
        f"--locust-users {args.locust_users}"
    )
    versions = {
        "python": sys.version.split()[0],
        "idrserve": version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "nginx": version([NGINX, "-v"]).removeprefix("nginx version: "),
        "wrk": version(["wrk", "-v"]).split(" [")[0].removeprefix("wrk "),
        "locust": version([sys.executable, "-m", "locust", "--version"]),
        "iipimage-server": version(["dpkg-query", "-W", "-f", "${Version}", "iipimage-server"]),
        "kernel": platform.release(),
    }
    lines = [
        f"# idrserve deployment benchmark ({stamp}, {host})",
        "",
        f"Command: `{cmdline}`",
        "",
        "Whole-machine mode (docs/benchmarks.md#protocol, mode B): no server pinned; nginx with "
        "2 workers (static, IIPImage) or `worker_processes auto` (deploy/nginx/nginx.conf as "
        "shipped, access log on); idrserve with 1 CPU thread per worker; wrk `-t1` on core 1 "
        "(bench_http.run_wrk), "
        f"sharing that core with the servers; `-c{args.conns}` for cache hits and static, "
        f"`-c{args.cold_conns}` for rendering contenders. Same pixels for everyone (3-channel "
        "uint16 4096² OME-Zarr, 256² chunks); 1 024 URLs = 256 level-0 256² tiles × "
        "q 0.8/0.85/0.9/0.95; "
        "IIPImage serves 256 IIIF tiles of a JPEG q90 pyramidal TIFF made from idrserve's q=0.9 "
        "tiles (so it decodes + re-encodes; no tile cache, MAX_IMAGE_CACHE_SIZE=0). Cold proxy "
        "cache: each round uses URLs with a round-specific spelling of q (same JPEG quality), "
        "upstream is the cold 1-worker idrserve, so every request is a nginx MISS and an idrserve "
        f"render. 3 s warm-up per contender, then {args.rounds} interleaved rounds; in each round "
        f"every contender gets a {args.duration:g} s wrk run and then a {args.locust_s:g} s "
        f"locust run ({args.locust_users} users, bench/locust_urls.py: sessions of 16 "
        "neighbouring tiles of the same URL list, no think time, one locust process sharing the "
        "2 cores, so locust's own CPU caps the fastest contenders). Data and tiles in the OS "
        f"page cache. loadavg at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"nproc {os.cpu_count()}.",
        "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        *table(wrk_results, "wrk"),
        "",
    ]
    if locust_results:
        lines += [*table(locust_results, "locust sessions"), ""]
    lines += ["Ratios, computed per round (median, then the per-round values):", ""]
    lines += ratio_table(wrk_results, "wrk")
    if locust_results:
        lines += ["", *ratio_table(locust_results, "locust sessions", with_targets=False)]
    lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    raw = {"wrk": wrk_results, "locust": locust_results}
    lines += ["", "Raw rounds:", "", "```json", json.dumps(raw, indent=1), "```", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"deploy-{host}-{stamp}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines[: lines.index("Raw rounds:")]))
    print(f"written to {out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
