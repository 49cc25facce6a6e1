"""Deployment side-by-side: idrserve alone, behind the deploy/ nginx, nginx static, IIPImage.

Whole-machine mode (performance.md §6, mode B): no server is pinned; wrk runs as
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

    python bench/bench_deploy.py [--duration 8] [--rounds 3] [--conns 64] [--cold-conns 16]
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
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_http import SIZE, free_port, run_wrk, write_image

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
DEPLOY = REPO / "deploy" / "nginx"
IIPSRV = Path("/usr/lib/iipimage-server/iipsrv.fcgi")
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

# performance.md §1.2: plain fastcgi_pass, no upstream keepalive (one connection per iipsrv).
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


def get(url: str, timeout: float = 30) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read(), dict(resp.headers)


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    for _ in range(300):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


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


def version(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError as exc:
        return f"unavailable ({exc})"
    return (res.stdout + res.stderr).strip().splitlines()[0] if res.stdout + res.stderr else "?"


def write_iip_tiff(path: Path, base: str) -> None:
    """idrserve's 256 level-0 tiles at q=0.9 as a pyramidal JPEG TIFF (performance.md §1.2)."""
    import numpy as np
    import tifffile
    from PIL import Image

    rgb = np.zeros((SIZE, SIZE, 3), np.uint8)
    for y in range(TILES):
        for x in range(TILES):
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", type=int, default=64, help="wrk connections for cache hits")
    parser.add_argument("--cold-conns", type=int, default=16, help="wrk connections, cold tiles")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not shutil.which("wrk") or not Path(nginx).exists():
        print("wrk and nginx are needed (apt-get install wrk nginx-light)", file=sys.stderr)
        return 2
    user = "root" if os.geteuid() == 0 else ""
    tmp = Path(tempfile.mkdtemp(prefix="idrserve-deploybench-"))
    tmp.chmod(0o755)
    notes: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    nginx_pids: list[Path] = []

    def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(tmp / f"proc-{len(procs)}.log", "wb")  # noqa: SIM115 (closed with tmp)
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    def start_nginx(prefix: Path, args_: list[str]) -> None:
        nginx_pids.append(prefix / "nginx.pid")
        subprocess.run(args_, check=True)

    def idrserve(workers: int, extra: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        env = dict(
            os.environ,
            IDRSERVE_LOG__ACCESS_LOG="false",
            IDRSERVE_SERVER__CPU_THREADS="1",
            **extra,
        )
        cmd = [sys.executable, "-m", "idrserve", "serve", "--zarr-root", str(tmp / "data")]
        cmd += ["--port", str(port), "--workers", str(workers)]
        return start(cmd, env), port

    def deploy_nginx(name: str, upstream: int) -> int:
        """deploy/nginx rendered into tmp/name as tests/integration/test_nginx.py does."""
        prefix = tmp / name
        port = free_port()
        conf = (DEPLOY / "idrserve.conf").read_text()
        for old, new in {
            "listen 80;": f"listen 127.0.0.1:{port};",
            "127.0.0.1:8080": f"127.0.0.1:{upstream}",
            "127.0.0.1:8000": f"127.0.0.1:{free_port()}",  # OMERO.web: nothing listens
            "/var/cache/nginx/idrserve": str(prefix / "cache"),
        }.items():
            if old not in conf:
                raise RuntimeError(f"deploy/nginx/idrserve.conf no longer contains {old!r}")
            conf = conf.replace(old, new)
        for sub in ("logs", "tmp", "cache"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        (prefix / "idrserve.conf").write_text(conf)
        shutil.copy(DEPLOY / "nginx.conf", prefix / "nginx.conf")
        cmd = [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
        cmd += ["-e", str(prefix / "logs" / "startup.log")]
        if user:
            cmd += ["-g", f"user {user};"]
        start_nginx(prefix, cmd)
        return port

    results: dict[str, list[dict[str, float]]] = {}
    cold_sizes: list[int] = []
    try:
        write_image(tmp / "data" / "2001.zarr", 256, 1)
        urls = tile_urls(QUALITIES)
        mem_proc, mem_port = idrserve(1, {})
        cold1_proc, cold1_port = idrserve(1, {"IDRSERVE_CACHE__MEMORY_MAX_BYTES": "0"})
        cold2_proc, cold2_port = idrserve(2, {"IDRSERVE_CACHE__MEMORY_MAX_BYTES": "0"})
        for proc, port in (
            (mem_proc, mem_port),
            (cold1_proc, cold1_port),
            (cold2_proc, cold2_port),
        ):
            wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        mem = f"http://127.0.0.1:{mem_port}"
        static = tmp / "static"
        static.mkdir()
        for i, url in enumerate(urls):  # warm the memory tier; static copies byte for byte
            body, _ = get(mem + url)
            (static / f"{i}.jpg").write_bytes(body)
        body, headers = get(mem + urls[0])
        if headers.get("X-Cache") != "memory":
            raise RuntimeError(f"idrserve memory server answered from {headers.get('X-Cache')!r}")

        bases: dict[str, tuple[str, list[str] | None, int]] = {}  # name → base, urls, conns

        static_prefix = tmp / "nginx-static"
        static_prefix.mkdir()
        static_port = free_port()
        (static_prefix / "nginx.conf").write_text(
            STATIC_CONF.format(
                user=user or "nobody", prefix=static_prefix, port=static_port, static=static
            )
        )
        start_nginx(
            static_prefix,
            [nginx, "-c", str(static_prefix / "nginx.conf"), "-p", str(static_prefix)],
        )
        static_urls = [f"/static/{i}.jpg" for i in range(len(urls))]
        wait_http(f"http://127.0.0.1:{static_port}{static_urls[0]}")
        bases[STATIC] = (f"http://127.0.0.1:{static_port}", static_urls, args.conns)
        bases[MEMORY] = (mem, urls, args.conns)

        warm_port = deploy_nginx("nginx-warm", mem_port)
        warm = f"http://127.0.0.1:{warm_port}"
        wait_http(warm + "/healthz")
        for url in urls:  # one pass fills the proxy cache
            get(warm + url)
        statuses = {get(warm + u)[1].get("X-Cache-Status") for u in urls[::97]}
        if statuses != {"HIT"}:
            raise RuntimeError(f"deploy nginx warm pass did not give HITs: {statuses}")
        bases[PROXY_WARM] = (warm, urls, args.conns)

        cold_port = deploy_nginx("nginx-cold", cold1_port)
        cold = f"http://127.0.0.1:{cold_port}"
        wait_http(cold + "/healthz")
        # Enough distinct URLs per round that wrk cannot wrap around at up to 3 000 req/s.
        n_cold = max(len(urls), int(args.duration * 3000))
        bases[PROXY_COLD] = (cold, None, args.cold_conns)
        bases[COLD1] = (f"http://127.0.0.1:{cold1_port}", urls, args.cold_conns)
        bases[COLD2] = (f"http://127.0.0.1:{cold2_port}", urls, args.cold_conns)

        iip_reason = ""
        if not IIPSRV.exists():
            iip_reason = f"{IIPSRV} missing (apt-get install iipimage-server failed or not run)"
        else:
            iip_data = tmp / "iip"
            iip_data.mkdir()
            write_iip_tiff(iip_data / "rgb_pyr_jpeg.tif", mem)
            iip_ports = [free_port(), free_port()]
            for i, port in enumerate(iip_ports):
                env = dict(
                    os.environ,
                    LOGFILE=str(tmp / f"iipsrv-{i}.log"),
                    VERBOSITY="0",
                    JPEG_QUALITY="90",
                    MAX_IMAGE_CACHE_SIZE="0",
                    FILESYSTEM_PREFIX=f"{iip_data}/",
                    CORS="*",
                    OMP_NUM_THREADS="1",
                )
                start([str(IIPSRV), "--bind", f"127.0.0.1:{port}", "--backlog", "1024"], env)
            iip_prefix = tmp / "nginx-iip"
            iip_prefix.mkdir()
            iip_port = free_port()
            servers = " ".join(f"server 127.0.0.1:{p};" for p in iip_ports)
            (iip_prefix / "nginx.conf").write_text(
                IIP_CONF.format(
                    user=user or "nobody", prefix=iip_prefix, port=iip_port, servers=servers
                )
            )
            start_nginx(
                iip_prefix, [nginx, "-c", str(iip_prefix / "nginx.conf"), "-p", str(iip_prefix)]
            )
            iip = f"http://127.0.0.1:{iip_port}"
            iip_urls = [
                "/fcgi-bin/iipsrv.fcgi?IIIF=rgb_pyr_jpeg.tif/"
                f"{x * 256},{y * 256},256,256/256,/0/default.jpg"
                for y in range(TILES)
                for x in range(TILES)
            ]
            time.sleep(0.5)
            try:
                body, headers = get(iip + iip_urls[17])
                if not body.startswith(b"\xff\xd8") or "jpeg" not in headers.get(
                    "Content-Type", ""
                ):
                    raise RuntimeError(f"IIPImage answered {headers.get('Content-Type')}")
                bases[IIP] = (iip, iip_urls, args.cold_conns)
                notes.append(
                    f"IIPImage IIIF tile {len(body)} bytes vs idrserve q=0.9 "
                    f"{len(get(mem + urls[2 * 256 + 17])[0])} bytes (same tile)."
                )
            except (OSError, RuntimeError) as exc:
                iip_reason = f"iipsrv did not answer a IIIF tile: {exc}"
        if iip_reason:
            notes.append(f"IIPImage not measured: {iip_reason}.")

        results = {name: [] for name in bases}
        for base, chosen, conns in bases.values():  # warm-up, discarded
            chosen = chosen if chosen is not None else cold_urls(0, n_cold)
            run_wrk(base, chosen, 3, conns, tmp)
        for r in range(1, args.rounds + 1):
            for name, (base, chosen, conns) in bases.items():
                chosen = chosen if chosen is not None else cold_urls(r, n_cold)
                if name == PROXY_COLD:
                    cold_sizes.append(len(chosen))
                results[name].append(run_wrk(base, chosen, args.duration, conns, tmp))
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
    finally:
        for pid_file in nginx_pids:
            if pid_file.exists():
                pid = pid_file.read_text().strip()
                subprocess.run(["kill", "-QUIT", pid], check=False)
                for _ in range(100):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.05)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    for name, rounds in results.items():
        if name == PROXY_COLD:
            for n, row in zip(cold_sizes, rounds, strict=True):
                if row["rps"] * args.duration > n:
                    notes.append(
                        f"WARNING: cold proxy round wrapped ({row['rps']:.0f}/s vs {n} URLs)."
                    )
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    host = platform.node() or "host"
    cmdline = (
        f"python bench/bench_deploy.py --duration {args.duration:g} --rounds {args.rounds} "
        f"--conns {args.conns} --cold-conns {args.cold_conns}"
    )
    versions = {
        "python": sys.version.split()[0],
        "idrserve": version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "nginx": version([nginx, "-v"]).removeprefix("nginx version: "),
        "wrk": version(["wrk", "-v"]).split(" [")[0].removeprefix("wrk "),
        "iipimage-server": version(["dpkg-query", "-W", "-f", "${Version}", "iipimage-server"]),
        "kernel": platform.release(),
    }
    lines = [
        f"# idrserve deployment benchmark ({stamp}, {host})",
        "",
        f"Command: `{cmdline}`",
        "",
        "Whole-machine mode (performance.md §6 B): no server pinned; nginx with 2 workers "
        "(static, IIPImage) or `worker_processes auto` (deploy/nginx/nginx.conf as shipped, access "
        "log on); idrserve with 1 CPU thread per worker; wrk `-t1` on core 1 (bench_http.run_wrk), "
        f"sharing that core with the servers; `-c{args.conns}` for cache hits and static, "
        f"`-c{args.cold_conns}` for rendering contenders. Same pixels for everyone (3-channel "
        "uint16 4096² OME-Zarr, 256² chunks); 1 024 URLs = 256 level-0 256² tiles × "
        "q 0.8/0.85/0.9/0.95; "
        "IIPImage serves 256 IIIF tiles of a JPEG q90 pyramidal TIFF made from idrserve's q=0.9 "
        "tiles (so it decodes + re-encodes; no tile cache, MAX_IMAGE_CACHE_SIZE=0). Cold proxy "
        "cache: each round uses URLs with a round-specific spelling of q (same JPEG quality), "
        "upstream is the cold 1-worker idrserve, so every request is a nginx MISS and an idrserve "
        f"render. 3 s warm-up per contender, then {args.rounds} interleaved rounds of "
        f"{args.duration:g} s. Data and tiles in the OS page cache. "
        f"loadavg at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}, nproc {os.cpu_count()}.",
        "",
        "Versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()),
        "",
        "| contender | median req/s | min–max | p50 ms | p99 ms | non-2xx | socket errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rounds in results.items():
        rps = [r["rps"] for r in rounds]
        lines.append(
            f"| {name} | {statistics.median(rps):.0f} | {min(rps):.0f}–{max(rps):.0f} | "
            f"{statistics.median(r['p50_ms'] for r in rounds):.2f} | "
            f"{statistics.median(r['p99_ms'] for r in rounds):.2f} | "
            f"{sum(r['non2xx'] for r in rounds):.0f} | "
            f"{sum(r['socket_errors'] for r in rounds):.0f} |"
        )
    lines += [
        "",
        "Ratios, computed per round (median, then the per-round values):",
        "",
        "| ratio | median | per round | target | met |",
        "|---|---:|---|---:|---|",
    ]
    for label, num, den, target in RATIOS:
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
    lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    lines += ["", "Raw rounds:", "", "```json", json.dumps(results, indent=1), "```", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"deploy-{host}-{stamp}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines[: lines.index("Raw rounds:")]))
    print(f"written to {out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
