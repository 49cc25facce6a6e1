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
import datetime as dt
import os
import platform
import shutil
import tempfile
from pathlib import Path

from _harness import Stack, run_locust

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
LOCUSTFILE = ROOT / "locustfile.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-s", type=int, default=15)
    parser.add_argument("--users", default="100,200,400,800,1200,1600")
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="idrserve-locustbench-"))
    tmp.chmod(0o755)
    from idrserve.demo import write_demo

    write_demo(tmp / "data")
    results: list[dict[str, float]] = []
    with Stack(tmp) as stack:
        _, backend = stack.idrserve(
            tmp / "data", workers=2, extra={"IDRSERVE_SERVER__CPU_THREADS": "2"}
        )
        host = stack.deploy_nginx("nginx", backend)
        run_locust(LOCUSTFILE, host, 20, 30, tmp / "warm")  # fill idrserve's and nginx's caches
        for users in (int(u) for u in args.users.split(",")):
            results.append(run_locust(LOCUSTFILE, host, users, args.step_s, tmp / f"u{users}"))
            print(results[-1], flush=True)
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
