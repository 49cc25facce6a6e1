"""Locust viewer sessions through the deploy nginx in front of 2 idrserve workers: p99 at 80 % of
saturation, warm (issue 7).

Writes the demo data, starts `idrserve serve --workers 2` behind `deploy/nginx/` (rendered into a
temp prefix as the tests do), warms every cache with one locust run, then sweeps the number of
locust users. Saturation is the highest aggregate request rate of the sweep; the reported point is
the sweep step whose rate is closest to 80 % of it. Everything shares the 2 cores of this machine,
locust included (one process), so "saturation" here is that of the whole stack, load generator
included — say so when comparing.

    python bench/bench_locust.py [--step-s 15] [--users 100,200,400,800,1200,1600]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_http import free_port

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
DEPLOY = REPO / "deploy" / "nginx"


def wait_http(url: str) -> None:
    for _ in range(300):
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def run_locust(host: str, users: int, seconds: int, csv_prefix: Path) -> dict[str, float]:
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--headless",
           "-u", str(users), "-r", str(max(1, users)), "-t", f"{seconds}s", "--host", host,
           "--csv", str(csv_prefix), "--only-summary"]  # fmt: skip
    subprocess.run(cmd, check=False, capture_output=True, timeout=seconds + 120)
    with open(f"{csv_prefix}_stats.csv", newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    agg = rows["Aggregated"]
    return {
        "users": float(users),
        "rps": float(agg["Requests/s"]),
        "requests": float(agg["Request Count"]),
        "failures": float(agg["Failure Count"]),
        "p50_ms": float(agg["50%"]),
        "p99_ms": float(agg["99%"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-s", type=int, default=15)
    parser.add_argument("--users", default="100,200,400,800,1200,1600")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = Path(tempfile.mkdtemp(prefix="idrserve-locustbench-"))
    tmp.chmod(0o755)
    from idrserve.demo import write_demo

    write_demo(tmp / "data")
    backend, front = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}
    env["IDRSERVE_LOG__ACCESS_LOG"] = "false"
    server = subprocess.Popen(
        [sys.executable, "-m", "idrserve", "serve", "--zarr-root", str(tmp / "data"),
         "--port", str(backend), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    prefix = tmp / "nginx"
    for sub in ("logs", "tmp", "cache"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    conf = (DEPLOY / "idrserve.conf").read_text()
    for old, new in {
        "listen 80;": f"listen 127.0.0.1:{front};",
        "127.0.0.1:8080": f"127.0.0.1:{backend}",
        "127.0.0.1:8000": f"127.0.0.1:{free_port()}",
        "/var/cache/nginx/idrserve": str(prefix / "cache"),
    }.items():
        conf = conf.replace(old, new)
    (prefix / "idrserve.conf").write_text(conf)
    shutil.copy(DEPLOY / "nginx.conf", prefix / "nginx.conf")
    host = f"http://127.0.0.1:{front}"
    results: list[dict[str, float]] = []
    try:
        wait_http(f"http://127.0.0.1:{backend}/healthz")
        subprocess.run([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                        "-g", "user root;"], check=True)  # fmt: skip
        wait_http(host + "/healthz")
        run_locust(host, 20, 30, tmp / "warm")  # fill idrserve's and nginx's caches
        for users in (int(u) for u in args.users.split(",")):
            results.append(run_locust(host, users, args.step_s, tmp / f"u{users}"))
            print(results[-1], flush=True)
    finally:
        pid = prefix / "logs" / "nginx.pid"
        for candidate in (pid, prefix / "nginx.pid"):
            if candidate.exists():
                subprocess.run(["kill", "-QUIT", candidate.read_text().strip()], check=False)
        server.terminate()
        server.wait(30)
    saturation = max(r["rps"] for r in results)
    point = min(results, key=lambda r: abs(r["rps"] - 0.8 * saturation))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    node = platform.node() or "host"
    lines = [
        f"# Locust viewer sessions at 80 % of saturation ({stamp}, {node})",
        "",
        f"Command: `python bench/bench_locust.py --step-s {args.step_s} --users {args.users}`",
        "",
        "deploy/nginx in front of `idrserve serve --workers 2` on the demo data, warm (one 30 s "
        "locust run first); bench/locustfile.py (viewer sessions 10 : grid browsing 1); one "
        "locust process; everything on the same 2 cores, so saturation includes the load "
        f"generator. loadavg at end {os.getloadavg()[0]:.2f}.",
        "",
        "| users | requests/s | requests | failures | p50 ms | p99 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['users']:.0f} | {r['rps']:.0f} | {r['requests']:.0f} | {r['failures']:.0f} | "
        f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} |"
        for r in results
    ]
    lines += [
        "",
        f"Saturation: {saturation:.0f} requests/s. "
        f"Closest step to 80 % ({0.8 * saturation:.0f}/s): "
        f"{point['users']:.0f} users at {point['rps']:.0f}/s ({point['rps'] / saturation:.2f} of "
        f"saturation): **p99 {point['p99_ms']:.0f} ms** (target ≤ 50 ms), failures "
        f"{point['failures']:.0f} (target 0).",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"locust-{node}-{stamp}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
