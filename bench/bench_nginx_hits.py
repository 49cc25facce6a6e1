"""nginx proxy-cache hits of deploy/nginx against nginx serving the same bytes as static files.

bench_deploy.py's target (hits ≥ 0.9× static) moves with the machine: on 2026-11-25 wrk topped
out near 54 000 requests/s and both sides met it at 0.91×; on a faster hour static reached
74 000–84 000/s and the ratio read 0.82×, with the configuration of 2026-11-25 at the same 0.81×
in the same run. What separates a hit from a static file is nginx's own work, much of it set by
deploy/nginx: the regex location, the cache key's maps, the cache file's header. This runs the
shipped configuration beside another revision's (`--baseline-rev`) and nginx static, interleaved
round by round, so a change to the configuration is read against the ceiling on one machine
state. A third contender asks the shipped configuration with a jQuery cache buster (`&_=…`) on
every URL, the one case where the key's maps rewrite the query.

Whole-machine mode as bench_deploy.py: nothing pinned, wrk `-t1` (bench_http.run_wrk); every
nginx with the same worker count; the same 1 024 tiles (256 level-0 tiles × 4 JPEG qualities),
idrserve (memory tier, 1 worker) behind both deploy configurations, filled by one pass first.

    python bench/bench_nginx_hits.py [--duration 5] [--rounds 6] [--conns 64]
                                     [--baseline-rev REV]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from _harness import NGINX, Stack, get, nginx_bench_dir, version
from _results import unused
from bench_deploy import QUALITIES, start_static, tile_urls
from bench_http import CLIENT_CPU_NOTE, client_cpu_cell, run_wrk, write_image

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
STATIC = "nginx static"
SHIPPED = "deploy/nginx (this tree)"
BUSTED = "deploy/nginx (this tree), URLs with `&_=…`"


def revision_copy(rev: str, dest: Path) -> Path:
    """deploy/nginx's two files as of `rev`, in `dest`."""
    dest.mkdir(parents=True)
    for name in ("idrserve.conf", "nginx.conf"):
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:deploy/nginx/{name}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (dest / name).write_text(text)
    return dest


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument(
        "--baseline-rev", default=None, help="also run deploy/nginx as of this git revision"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    tmp = nginx_bench_dir("nginxhits")
    if tmp is None:
        return 2
    urls = tile_urls(QUALITIES)
    busted = [f"{u}&_={1_700_000_000_000 + i}" for i, u in enumerate(urls)]
    bases: dict[str, tuple[str, list[str]]] = {}
    results: dict[str, list[float]] = {}
    with Stack(tmp) as stack:
        data = tmp / "data"
        write_image(data / "2001.zarr", 256, 1)
        _, mem = stack.idrserve(data, 1)
        bodies = [get(mem + url)[0] for url in urls]
        bases[STATIC] = start_static(stack, tmp, bodies)
        sources: dict[str, Path | None] = {SHIPPED: None}
        if args.baseline_rev:
            label = f"deploy/nginx of {args.baseline_rev}"
            sources[label] = revision_copy(args.baseline_rev, tmp / "baseline-conf")
        for i, (label, source) in enumerate(sources.items()):
            base = stack.deploy_nginx(f"nginx-{i}", mem, source)
            for url in urls:  # one pass fills the proxy cache
                get(base + url)
            statuses = {get(base + u)[1].get("X-Cache-Status") for u in urls[::97]}
            if statuses != {"HIT"}:
                raise RuntimeError(f"{label}: the warm pass did not give HITs: {statuses}")
            bases[label] = (base, urls)
            if source is None:
                if {get(base + u)[1].get("X-Cache-Status") for u in busted[::97]} != {"HIT"}:
                    raise RuntimeError("a URL with a cache buster missed the shipped cache")
                bases[BUSTED] = (base, busted)
        results = {name: [] for name in bases}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in bases}
        for base, chosen in bases.values():  # warm-up, discarded
            run_wrk(base, chosen, 3, args.conns, tmp)
        for _ in range(args.rounds):
            for name, (base, chosen) in bases.items():
                run = run_wrk(base, chosen, args.duration, args.conns, tmp)
                results[name].append(run["rps"])
                runs[name].append(run)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    host = platform.node() or "host"
    command = "python bench/bench_nginx_hits.py " + " ".join(sys.argv[1:])
    lines = [
        f"# nginx proxy-cache hits against nginx static ({stamp}, {host})",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Whole-machine mode, nothing pinned; wrk -t1 -c{args.conns}; {args.rounds} interleaved "
        f"rounds of {args.duration:g} s after a 3 s warm-up; 1 024 URLs (256 level-0 256² tiles "
        "× 4 JPEG qualities), every request a HIT. nginx "
        f"{version([NGINX, '-v']).removeprefix('nginx version: ')}; tree "
        f"{version(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'])}; loadavg at end "
        f"{os.getloadavg()[0]:.2f}, nproc {os.cpu_count()}.",
        "",
        "| contender | median req/s | min–max | / nginx static (median of rounds) | wrk CPU |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in results.items():
        lines.append(
            f"| {name} | {statistics.median(values):.0f} | {min(values):.0f}–{max(values):.0f} "
            f"| {median_ratio(values, results[STATIC]):.2f} | {client_cpu_cell(runs[name])} |"
        )
    lines += ["", CLIENT_CPU_NOTE]
    if args.baseline_rev:
        baseline = results[f"deploy/nginx of {args.baseline_rev}"]
        lines += [
            "",
            f"This tree's configuration / {args.baseline_rev}'s, median of per-round ratios: "
            f"**{median_ratio(results[SHIPPED], baseline):.2f}×**.",
        ]
    lines += ["", "Rounds (req/s):", ""]
    lines += [f"- {name}: {', '.join(f'{v:.0f}' for v in vs)}" for name, vs in results.items()]
    args.out.mkdir(parents=True, exist_ok=True)
    out = unused(args.out / f"nginx-hits-{host}-{stamp}.md")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written to {out}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
