"""Cache-hit throughput per tier on one core, side by side with nginx serving the same tiles.

Starts on core 0: redis-server (cache/redis.conf), nginx serving static copies of the tiles, and
five idrserve servers — memory tier only (as configured by default, without the direct
hits of `http/fastpath.py`, and without its URL index at all), disk tier only, Redis tier
only. Each server is warmed with every URL once, then wrk on core 1 cycles through 1 024
distinct tile URLs (256 tiles × 4 JPEG qualities) in interleaved rounds. Reported as tiles/s
and as ratios to nginx static, per round (docs/benchmarks.md#protocol). Targets from issue 3:
memory ≥ 15 000/s, disk ≥ 10 000/s, Redis ≥ 5 000/s; issue 19: memory ≥ 25 000/s.

With `--baseline TREE` (another checkout, e.g. `git worktree add /tmp/before <commit>`), every
idrserve server is started a second time from that tree, and each round runs both side by side,
so a change is measured against its parent in one interleaved run; the servers of this tree
always import idrserve from this checkout (PYTHONPATH), whatever is installed. Each server
starts once a run with an environment of a random size (`bench_http.padded`), so where its
stack and heap land is one draw a run: an A/B of hits should be run more than once, or both
ways round, before a difference of 2–3 % is read as one.

    python bench/bench_cache.py [--duration 8] [--rounds 3] [--baseline TREE] [--browser-heads]
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
import time
import urllib.request
from pathlib import Path

from _results import unused
from bench_http import (
    BROWSER_HEADS,
    BROWSER_HEADS_HELP,
    CLIENT_CPU_NOTE,
    SIZE,
    client_cpu_cell,
    free_port,
    padded,
    run_wrk,
    write_image,
)

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
BASELINE = " (baseline)"
TARGETS = {
    "memory": 15000.0,
    "memory, no direct hits": 15000.0,
    "memory, no URL index": 15000.0,
    "disk": 10000.0,
    "redis": 5000.0,
}

NGINX_CONF = """
worker_processes 1;
worker_cpu_affinity 01;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    open_file_cache max=4096;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    types {{ image/jpeg jpg; }}
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{ alias {tmp}/static/; }}
    }}
}}
"""


def wait_http(url: str) -> None:
    for _ in range(200):
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument(
        "--baseline", type=Path, help="another idrserve checkout to measure in the same rounds"
    )
    parser.add_argument("--browser-heads", action="store_true", help=BROWSER_HEADS_HELP)
    args = parser.parse_args()
    heads = BROWSER_HEADS if args.browser_heads else ()
    if args.baseline is not None and not (args.baseline / "idrserve" / "__init__.py").exists():
        print(f"{args.baseline} is not an idrserve checkout", file=sys.stderr)
        return 2
    for tool in ("wrk", "nginx", "redis-server"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(
                f"{tool} is needed (apt-get install wrk nginx-light redis-server)", file=sys.stderr
            )
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="idrserve-cachebench-"))
    tmp.chmod(0o755)  # nginx workers run as an unprivileged user
    write_image(tmp / "data" / "2001.zarr", 256, 1)
    urls = [
        f"/webgateway/render_image_region/2001/0/0/?tile=0,{x},{y},256,256&q={q}"
        for q in ("0.8", "0.85", "0.9", "0.95")
        for y in range(SIZE // 256)
        for x in range(SIZE // 256)
    ]
    procs: list[subprocess.Popen[bytes]] = []

    def start(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        procs.append(
            subprocess.Popen(
                ["taskset", "-c", "0", *cmd],
                env=env,
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    redis_port = free_port()
    start(
        [
            "redis-server",
            str(REPO / "cache" / "redis.conf"),
            "--port",
            str(redis_port),
            "--dir",
            str(tmp),
            "--daemonize",
            "no",
        ]
    )
    base_env = dict(os.environ, IDRSERVE_LOG__ACCESS_LOG="false", IDRSERVE_SERVER__CPU_THREADS="1")
    tiers = {
        "memory": {},
        # the middleware fast path only (http/fastpath.py's DirectHits off)
        "memory, no direct hits": {"IDRSERVE_SERVER__DIRECT_HITS": "false"},
        "memory, no URL index": {"IDRSERVE_CACHE__URL_INDEX_ENTRIES": "0"},
        "disk": {"IDRSERVE_CACHE__MEMORY_MAX_BYTES": "0", "IDRSERVE_CACHE_DIR": str(tmp / "disk")},
        "redis": {
            "IDRSERVE_CACHE__MEMORY_MAX_BYTES": "0",
            "IDRSERVE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        },
    }
    trees = {"": REPO}
    if args.baseline is not None:
        trees[BASELINE] = args.baseline.resolve()
    bases: dict[str, str] = {}
    for tier, extra in tiers.items():
        for suffix, tree in trees.items():
            path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH")) if p)
            port = free_port()
            start(
                [
                    sys.executable,
                    "-m",
                    "idrserve",
                    "serve",
                    "--zarr-root",
                    str(tmp / "data"),
                    "--port",
                    str(port),
                ],
                env=padded({**base_env, **extra, "PYTHONPATH": path}),
                # `-m` puts the working directory ahead of PYTHONPATH: start in the tree.
                cwd=tree,
            )
            bases[tier + suffix] = f"http://127.0.0.1:{port}"
    try:
        for name, base in bases.items():
            tier = name.removesuffix(BASELINE)
            wait_http(base + "/healthz")
            for url in urls:  # fill the tier (and check that it answers from it)
                with urllib.request.urlopen(base + url) as resp:
                    body = resp.read()
            with urllib.request.urlopen(base + urls[0]) as resp:
                answered = resp.headers.get("X-Cache")
            if answered != tier.split(",")[0]:
                raise RuntimeError(f"{name} server answered from {answered!r}")
            if name == "memory":  # static copies for nginx, byte for byte what we serve
                static = tmp / "static"
                static.mkdir()
                for i, url in enumerate(urls):
                    with urllib.request.urlopen(base + url) as resp:
                        (static / f"{i}.jpg").write_bytes(resp.read())
        del body
        nginx_port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=nginx_port))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        subprocess.run(["taskset", "-c", "0", nginx, "-c", str(conf), "-p", str(tmp)], check=True)
        bases["nginx static"] = f"http://127.0.0.1:{nginx_port}"
        static_urls = [f"/static/{i}.jpg" for i in range(len(urls))]
        wait_http(bases["nginx static"] + static_urls[0])
        results: dict[str, list[dict[str, float]]] = {name: [] for name in bases}
        for name, base in bases.items():  # warm-up
            run_wrk(
                base, static_urls if name == "nginx static" else urls, 2, args.conns, tmp, heads
            )
        for _ in range(args.rounds):
            for name, base in bases.items():
                chosen = static_urls if name == "nginx static" else urls
                results[name].append(run_wrk(base, chosen, args.duration, args.conns, tmp, heads))
    finally:
        pid_file = tmp / "nginx.pid"
        if pid_file.exists():
            subprocess.run(["kill", "-QUIT", pid_file.read_text().strip()], check=False)
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    host = platform.node() or "host"
    lines = [
        f"# idrserve cache-hit benchmark ({stamp}, {host})",
        "",
        f"Command: `python bench/bench_cache.py --duration {args.duration:g} --rounds "
        f"{args.rounds} --conns {args.conns}"
        + (" --browser-heads" if args.browser_heads else "")
        + (f" --baseline {args.baseline}`" if args.baseline else "`"),
        "",
        "Everything server-side pinned to core 0 (idrserve, redis-server, nginx with 1 worker); "
        f"wrk -t1 -c{args.conns} on core 1; 1 024 distinct 256² JPEG tiles (256 tiles × 4 "
        f"qualities), {args.rounds} interleaved rounds of {args.duration:g} s. "
        f"loadavg at end {os.getloadavg()[0]:.2f}, nproc {os.cpu_count()}.",
        "",
        "| server | median tiles/s | min–max | p50 ms | p99 ms | target | vs target "
        "| vs nginx static | wrk CPU | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    nginx_rounds = [r["rps"] for r in results["nginx static"]]
    for name, rounds in results.items():
        rps = [r["rps"] for r in rounds]
        med = statistics.median(rps)
        ratio = statistics.median(a / b for a, b in zip(rps, nginx_rounds, strict=True))
        target = TARGETS.get(name.removesuffix(BASELINE))
        lines.append(
            f"| {name} | {med:.0f} | {min(rps):.0f}–{max(rps):.0f} | "
            f"{statistics.median(r['p50_ms'] for r in rounds):.2f} | "
            f"{statistics.median(r['p99_ms'] for r in rounds):.2f} | "
            f"{target or 0:.0f} | {med / target if target else 1:.2f} | {ratio:.3f} | "
            f"{client_cpu_cell(rounds)} | "
            f"{sum(r['non2xx'] + r['socket_errors'] for r in rounds):.0f} |"
        )
    lines += ["", CLIENT_CPU_NOTE]
    if args.baseline is not None:
        lines += [
            "",
            f"This tree against the baseline ({args.baseline}), ratio of tiles/s within each "
            "round, median (min–max):",
            "",
            "| server | this / baseline | min–max |",
            "|---|---:|---:|",
        ]
        for name in tiers:
            ratios = [
                a["rps"] / b["rps"]
                for a, b in zip(results[name], results[name + BASELINE], strict=True)
            ]
            lines.append(
                f"| {name} | {statistics.median(ratios):.3f} | "
                f"{min(ratios):.3f}–{max(ratios):.3f} |"
            )
    lines += ["", "Raw rounds:", "", "```json", json.dumps(results, indent=1), "```", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    out = unused(args.out / f"cache-{host}-{stamp}.md")
    out.write_text("\n".join(lines))
    print("\n".join(lines[: lines.index("Raw rounds:")]))
    print(f"written to {out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
