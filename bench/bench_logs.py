"""`idrserve logs report` on a generated log: lines per second and peak RSS.

    python bench/bench_logs.py [--lines 10000000] [--json-share 0.2] [--workdir /tmp/bl]
                               [--out bench/results/logs-vm-DATE.md]

The log imitates a public image server's day: nginx lines in the deploy format (80 % by
default) and idrserve JSON lines (the rest), interleaved; Zipf-distributed images out of
200 000, each viewed as tiles of a few zoom levels, plus thumbnails, imgData, IIIF and
`/zarr/` reads; browsers, notebooks and crawlers (crawlers walk images once); nginx hits,
misses and idrserve tiers. It is written once per size (kept in --workdir) and the report
runs in a child process, whose wall time and peak RSS (getrusage of children) are
measured; the same log is also read as gzip. Targets (issue 20): ≥ 200 000 lines/s and
≤ 500 MB.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

T0 = 1_796_000_000  # a day starting 2026-11-30
AGENTS = [
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 "
     "Safari/537.36", 0.70),
    ("python-requests/2.32.3", 0.12),
    ("Python/3.12 aiohttp/3.11.7", 0.06),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 0.08),
    ("curl/8.5.0", 0.04),
]  # fmt: skip
EDGE = [("HIT", 0.72), ("MISS", 0.22), ("EXPIRED", 0.03), ("UPDATING", 0.03)]
TIERS = [("memory", 0.45), ("disk", 0.2), ("redis", 0.1), ("miss", 0.25)]
ROUTES = {
    "tile": "/webgateway/render_image_region/{iid}/{z}/{t}/",
    "thumbnail": "/webgateway/render_thumbnail/{iid}/",
    "imgdata": "/webgateway/imgData/{iid}/",
    "iiif": "/iiif/{version}/{tail}",
    "zarr": "/zarr/{iid}.zarr/{key}",
}


def _pick(rng: random.Random, table: list[tuple[str, float]], n: int) -> list[str]:
    return rng.choices([v for v, _ in table], [w for _, w in table], k=n)


def generate(path: Path, lines: int, json_share: float, seed: int = 20) -> None:
    """Write the log in blocks of 100 000 lines (drawn in bulk: generation is not measured)."""
    rng = random.Random(seed)
    images = 200_000
    weights = [1 / (i + 1) ** 0.9 for i in range(images)]
    ids = list(range(6_000_000, 6_000_000 + images))
    block = 100_000
    with path.open("w") as out:
        for start in range(0, lines, block):
            n = min(block, lines - start)
            iids = rng.choices(ids, weights, k=n)
            kinds = rng.choices(
                ["tile", "thumbnail", "imgdata", "iiif", "zarr"], [70, 12, 6, 7, 5], k=n
            )
            agents = _pick(rng, AGENTS, n)
            edges = _pick(rng, EDGE, n)
            tiers = _pick(rng, TIERS, n)
            is_json = [rng.random() < json_share for _ in range(n)]
            rows = []
            for i in range(n):
                ts = T0 + (start + i) * 86_400 / lines
                iid, kind = iids[i], kinds[i]
                level, x, y = rng.randint(0, 3), rng.randint(0, 7), rng.randint(0, 7)
                size = rng.randint(2_000, 60_000)
                if is_json[i]:
                    rows.append(
                        f'{{"ts":{ts:.3f},"request_id":"b-{start + i}","method":"GET",'
                        f'"route":"{ROUTES[kind]}","status":200,"bytes":{size},'
                        f'"duration_ms":{rng.expovariate(1 / 8):.3f},"cache":"{tiers[i]}",'
                        f'"client":"127.0.0.1"}}\n'
                    )
                    continue
                target = {
                    "tile": f"/webgateway/render_image_region/{iid}/0/0/"
                    f"?tile={level},{x},{y},512,512&m=c&q=0.9",
                    "thumbnail": f"/webgateway/render_thumbnail/{iid}/",
                    "imgdata": f"/webgateway/imgData/{iid}/",
                    "iiif": f"/iiif/3/{iid}/{x * 512},{y * 512},512,512/512,/0/default.jpg",
                    "zarr": f"/zarr/{iid}.zarr/{level}/0/0/{y}/{x}",
                }[kind]
                cache = "-" if kind == "imgdata" else edges[i]
                xcache = tiers[i] if cache in ("MISS", "EXPIRED", "-") else "-"
                status = 200 if rng.random() > 0.002 else 503
                when = datetime.fromtimestamp(ts, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000")
                rows.append(
                    f'10.{iid % 250}.{x}.{y} - - [{when}] "GET {target} HTTP/1.1" {status} '
                    f'{size} "-" "{agents[i]}" rt={rng.expovariate(1 / 0.01):.3f} '
                    f"cache={cache} xcache={xcache}\n"
                )
            out.writelines(rows)


def run_report(logs: list[Path], out: Path) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB) of `idrserve logs report` in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "idrserve", "logs", "report", *map(str, logs),
         "--out", str(out), "--quiet"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kb <= before:
        raise SystemExit("peak RSS not measurable: run each size in a fresh bench process")
    return seconds, peak_kb / 1024, result.stdout.strip()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=10_000_000)
    p.add_argument("--json-share", type=float, default=0.2)
    p.add_argument("--workdir", type=Path, default=Path("/tmp/idrserve-bench-logs"))
    p.add_argument("--gzip", action="store_true", help="read the log gzip-compressed")
    p.add_argument("--out", type=Path, help="append a markdown summary here")
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = args.workdir / f"access-{args.lines}.log"
    if not log.exists():
        t = time.perf_counter()
        generate(log, args.lines, args.json_share)
        print(f"generated {log} ({log.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t:.0f} s", file=sys.stderr)  # fmt: skip
    target = log
    if args.gzip:
        target = log.with_suffix(".log.gz")
        if not target.exists():
            with log.open("rb") as src, gzip.open(target, "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    seconds, peak_mb, summary = run_report([target], args.workdir / "report")
    report = json.loads((args.workdir / "report" / "report.json").read_text())
    rate = args.lines / seconds
    row = {
        "lines": args.lines,
        "file_mb": round(target.stat().st_size / 1e6),
        "gzip": args.gzip,
        "seconds": round(seconds, 1),
        "lines_per_s": round(rate),
        "peak_rss_mb": round(peak_mb),
        "replay_sampling_rate": report["sources"]["nginx"]["cache_replay"]["sampling_rate"],
        "skipped": report["input"]["skipped"],
        "summary": summary,
    }
    print(json.dumps(row))
    if args.out:
        with args.out.open("a") as f:
            f.write(
                f"| {args.lines:,} | {'gzip' if args.gzip else 'plain'} {row['file_mb']} MB | "
                f"{seconds:.1f} s | {rate:,.0f} ({rate / 200_000:.2f}× target) | "
                f"{peak_mb:.0f} MB ({peak_mb / 500:.2f}× limit) | "
                f"{row['replay_sampling_rate']:.4g} |\n"
            )


if __name__ == "__main__":
    main()
