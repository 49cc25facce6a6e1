"""Multi-host throughput with one Redis vs a Redis Cluster, and a primary failover under load.

Two stacks run side by side (tests/integration/multihost.py starts them): three idrserve
hosts on 127.0.0.2-4 reading demo image 1002 from moto's S3 server, the shipped nginx in front
of 1, 2 or all 3 of them, and as the shared tier either one redis-server or a 3+3 Redis Cluster.
The hosts run without a memory tier and nginx caches nothing (`Cache-Control: no-store`), so a
warm request is a shared-tier hit and a cold one a render (S3 read, render, encode, lock, SET).

Per round, for each host count and each stack (order alternating between rounds):
* cold: a fresh list of tile URLs, GET once each by `--threads` Python clients through nginx;
  tiles/s and p99;
* warm: wrk cycling over that same list (now in Redis) for `--duration` s; tiles/s and p99.

Then, on the cluster with 3 hosts: a load of mixed warm and cold tiles through nginx while one
primary is SIGKILLed: failed requests, the longest gap with no answer (and the same before the
kill), time to promotion and until every host's breaker is closed again.

    python bench/bench_cluster.py [--rounds 3] [--duration 5] [--tiles 120] [--threads 8]

`--cpu-only` runs only the client-CPU-per-hit measurement (below), against one redis-server and
a 3+3 cluster started for it: no hosts, nginx or S3, and a result that the other load on a
shared machine disturbs far less than throughput.

    python bench/bench_cluster.py --cpu-only [--rounds 5] [--uvloop]

`--label b` adds `-b` after the date in the results file's name, so that a second run of the
day does not replace the first.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # the multi-host harness lives with the tests

from bench_http import run_wrk  # noqa: E402
from redis import __version__ as redis_version  # noqa: E402

import idrserve.cache.redis as redis_tier  # noqa: E402
from idrserve.cache import CacheEntry, TieredCache, response_key  # noqa: E402
from idrserve.settings import CacheSettings  # noqa: E402
from tests.cache.topology import RedisClusterNodes, node  # noqa: E402
from tests.integration.multihost import (  # noqa: E402
    Host,
    MultiHost,
    longest_gap,
    run_load,
    tile_urls,
)

MODES = ("single", "cluster")
SHIPPED_SHARDS = redis_tier.TAG_SHARDS
# Hash-tag shards per image compared for client CPU: one slot per image, two, the shipped
# value, and (16 384: every response its own slot) a tag per response.
CPU_SHARDS = tuple(sorted({1, 2, SHIPPED_SHARDS, 16384}))


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] * 1000


REDIS = 'idrserve_cache_requests_total{{result="{}",tier="redis"}}'


def redis_counts(hosts: list[Host]) -> tuple[float, float]:
    """(hits, lookups that were not hits) of the shared tier, summed over `hosts`."""
    hits = sum(h.metric(REDIS.format("hit")) for h in hosts)
    other = sum(h.metric(REDIS.format(r)) for h in hosts for r in ("miss", "error", "skipped"))
    return hits, other


def measure(
    hosts: list[Host], port: int, urls: list[str], args: argparse.Namespace, tmp: Path
) -> dict[str, float]:
    t0 = time.monotonic()
    cold = run_load("127.0.0.1", port, urls, args.threads)
    cold_s = time.monotonic() - t0
    time.sleep(0.5)  # background SETs land
    hits0, other0 = redis_counts(hosts)
    warm = run_wrk(f"http://127.0.0.1:{port}", urls, args.duration, args.conns, tmp)
    hits1, other1 = redis_counts(hosts)
    return {
        "warm_hit_ratio": (hits1 - hits0) / max(1.0, hits1 - hits0 + other1 - other0),
        "warm_p50_ms": warm["p50_ms"],
        "cold_tps": cold.ok / cold_s,
        "cold_p99_ms": p99(cold.latencies),
        "cold_failed": float(len(cold.failed)),
        "warm_tps": warm["rps"],
        "warm_p99_ms": warm["p99_ms"],
        "warm_errors": warm["non2xx"] + warm["socket_errors"],
    }


async def client_cpu(url: str, shards: int, gets: int) -> float:
    """µs of this process's CPU per Redis hit: 64 concurrent lookups at a time, the way a
    loaded host batches them, over 256 responses of one image (30 KB each)."""
    redis_tier.TAG_SHARDS = shards
    cache = TieredCache(
        CacheSettings(redis_url=url, memory_max_bytes=0, redis_timeout_s=5, max_pending_writes=1024)
    )
    await cache.start()
    keys = [response_key(1, 0, f"{i:04x}") for i in range(256)]
    for key in keys:
        cache.put(key, CacheEntry(b"x" * 30_000, "image/jpeg"))
    await cache.flush(30)

    async def worker(i: int) -> int:
        return sum([(await cache.get(keys[(i * 7 + j) % 256]))[1] == "redis" for j in range(gets)])

    t0 = time.process_time()
    hits = sum(await asyncio.gather(*(worker(i) for i in range(64))))
    cpu = time.process_time() - t0
    await cache.aclose()
    assert hits == 64 * gets, hits
    return cpu / hits * 1e6


def cpu_rounds(urls: dict[str, str], rounds: int, uvloop: bool = False) -> list[dict[str, object]]:
    """`uvloop`: on the event loop `idrserve serve` runs on, rather than asyncio's own."""
    run = asyncio.run
    if uvloop:
        import uvloop as loop_module

        run = loop_module.run
    out: list[dict[str, object]] = []
    for r in range(rounds):
        for shards in CPU_SHARDS:
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                us = run(client_cpu(urls[mode], shards, 100))
                out.append({"round": r, "redis": mode, "shards": shards, "cpu_us_per_hit": us})
                print(json.dumps(out[-1]), flush=True)
    redis_tier.TAG_SHARDS = SHIPPED_SHARDS
    return out


def cpu_only(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-cpu-"))
    single = node(work / "single")
    cluster = RedisClusterNodes(work / "cluster")
    load_start = os.getloadavg()
    try:
        single.start()
        cluster.start()
        urls = {"single": single.url, "cluster": cluster.url}
        cpu = cpu_rounds(urls, args.rounds, args.uvloop)
    finally:
        single.kill()
        cluster.stop()
    lines = [
        f"# idrserve Redis client CPU per hit: one Redis vs a Redis Cluster ({dt.date.today()})",
        "",
        f"Command: `python bench/bench_cluster.py --cpu-only --rounds {args.rounds}"
        f"{' --uvloop' if args.uvloop else ''}{label_flag(args)}`",
        "",
        f"Machine: {os.cpu_count()} cores, shared (load average {load_start[0]:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end), {platform.python_version()}, redis-py "
        f"{redis_version}, event loop {'uvloop' if args.uvloop else 'asyncio'}. "
        f"{args.rounds} interleaved rounds; median (min–max).",
        "",
        *cpu_table(cpu),
        "",
        "```json",
        json.dumps(cpu, indent=1),
        "```",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cluster-cpu-vm-{dt.date.today()}{label_suffix(args)}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:-4]))
    print(f"wrote {path}")
    return 0


def label_suffix(args: argparse.Namespace) -> str:
    return f"-{args.label}" if args.label else ""


def label_flag(args: argparse.Namespace) -> str:
    return f" --label {args.label}" if args.label else ""


def cpu_table(cpu: list[dict[str, object]]) -> list[str]:
    lines = [
        "| shards | single µs/hit | cluster µs/hit | single / cluster (≈ hit-rate ratio) |",
        "|---:|---:|---:|---:|",
    ]
    for shards in CPU_SHARDS:

        def of(mode: str, shards: int = shards) -> list[float]:
            return [
                float(c["cpu_us_per_hit"])  # type: ignore[arg-type]
                for c in cpu
                if c["shards"] == shards and c["redis"] == mode
            ]

        one, clu = of("single"), of("cluster")
        per = [a / b for a, b in zip(one, clu, strict=True)]
        lines.append(
            f"| {shards} | {statistics.median(one):.1f} | {statistics.median(clu):.1f} | "
            f"{statistics.median(per):.2f} ({min(per):.2f}–{max(per):.2f}) |"
        )
    return lines


def failover(stack: MultiHost, args: argparse.Namespace) -> dict[str, float]:
    assert stack.cluster is not None
    warm = tile_urls(60, salt=900)
    run_load("127.0.0.1", stack.nginx_port, warm, args.threads)  # into Redis
    cold = tile_urls(4000, salt=901)
    mixed = [u for pair in zip(warm * 70, cold, strict=False) for u in pair]
    victim = stack.cluster.primaries()[0]
    replica = stack.cluster.replica_of(victim)
    stop = threading.Event()
    holder: list[object] = []
    load = threading.Thread(
        target=lambda: holder.append(
            run_load("127.0.0.1", stack.nginx_port, mixed, args.threads, stop)
        )
    )
    load.start()
    time.sleep(args.failover_before)
    killed_at = time.monotonic()
    victim.kill()
    promoted_at = closed_at = float("nan")
    while time.monotonic() - killed_at < 60:
        if stack.cluster.roles().get(replica.port) == "master":
            promoted_at = time.monotonic()
            break
        time.sleep(0.05)
    while time.monotonic() - killed_at < 60:
        closed = all(h.metric("idrserve_cache_breaker_open") == 0 for h in stack.hosts if h.alive)
        if closed and time.monotonic() > promoted_at:
            closed_at = time.monotonic()
            break
        time.sleep(0.05)
    time.sleep(args.failover_after)
    stop.set()
    load.join(60)
    (res,) = holder
    spans = res.spans  # type: ignore[attr-defined]
    before = [s for s in spans if s[1] < killed_at]
    return {
        "requests_ok": float(res.ok),  # type: ignore[attr-defined]
        "failed": float(len(res.failed)),  # type: ignore[attr-defined]
        "longest_gap_ms": longest_gap(spans) * 1000,
        "longest_gap_before_kill_ms": longest_gap(before) * 1000,
        "promotion_s": promoted_at - killed_at,
        "breakers_closed_s": closed_at - killed_at,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--tiles", type=int, default=120)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--conns", type=int, default=32)
    parser.add_argument("--failover-before", type=float, default=3.0)
    parser.add_argument("--failover-after", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument("--cpu-only", action="store_true", help="client CPU per hit only")
    parser.add_argument("--uvloop", action="store_true", help="client CPU on uvloop")
    parser.add_argument("--label", default="", help="suffix of the results file names")
    args = parser.parse_args()
    if args.cpu_only:
        return cpu_only(args)
    os.environ["PYTHONPATH"] = str(BENCH.parent)  # the hosts import this checkout
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    no_memory = {"IDRSERVE_CACHE__MEMORY_MAX_BYTES": "0"}
    stacks = {m: MultiHost(work / m, redis=m, extra_env=no_memory) for m in MODES}
    load_start = os.getloadavg()
    rows: list[dict[str, object]] = []
    try:
        ports: dict[tuple[str, int], int] = {}
        for mode, stack in stacks.items():
            (work / mode).mkdir()
            stack.start()
            for n in (1, 2):
                ports[mode, n] = stack.add_nginx(stack.hosts[:n], f"nginx{n}")
            ports[mode, 3] = stack.nginx_port
        salt = 0
        for r in range(args.rounds):
            order = MODES if r % 2 == 0 else MODES[::-1]
            for n in (1, 2, 3):
                for mode in order:
                    salt += 1
                    urls = tile_urls(args.tiles, salt=salt)
                    m = measure(stacks[mode].hosts[:n], ports[mode, n], urls, args, work)
                    rows.append({"round": r, "hosts": n, "redis": mode, **m})
                    print(json.dumps(rows[-1]), flush=True)
        cpu = cpu_rounds({m: s.redis_url for m, s in stacks.items()}, args.rounds, args.uvloop)
        fo = failover(stacks["cluster"], args)
        print(json.dumps(fo), flush=True)
    finally:
        for stack in stacks.values():
            stack.stop()
    report(args, rows, cpu, fo, load_start, stacks["cluster"].hosts)
    return 0


def report(
    args: argparse.Namespace,
    rows: list[dict[str, object]],
    cpu: list[dict[str, object]],
    fo: dict[str, float],
    load_start: tuple[float, float, float],
    hosts: list[Host],
) -> None:
    def col(mode: str, n: int, key: str) -> list[float]:
        return [float(r[key]) for r in rows if r["redis"] == mode and r["hosts"] == n]  # type: ignore[arg-type]

    def med(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} ({min(values):.0f}–{max(values):.0f})"

    lines = [
        f"# idrserve multi-host benchmark: one Redis vs a Redis Cluster ({dt.date.today()}, vm)",
        "",
        f"Command: `python bench/bench_cluster.py --rounds {args.rounds} --duration "
        f"{args.duration:g} --tiles {args.tiles} --threads {args.threads} --conns {args.conns}"
        f"{' --uvloop' if args.uvloop else ''}{label_flag(args)}`",
        "",
        f"Machine: {os.cpu_count()} cores, **shared with other engineers' test runs** (load "
        f"average {load_start[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end), "
        f"{platform.python_version()}; nothing pinned. Hosts on "
        f"{', '.join(sorted({h.addr for h in hosts}))}; memory tier off and nginx caching "
        "nothing, so warm = shared-tier hit, cold = render from moto S3. Cold: "
        f"{args.tiles} fresh tiles per cell, {args.threads} Python clients; warm: wrk "
        f"{args.conns} connections for {args.duration:g} s over the same tiles. "
        f"{args.rounds} interleaved rounds; median (min–max).",
        "",
        "| hosts | redis | cold tiles/s | cold p99 ms | warm tiles/s | warm p50 ms | "
        "warm p99 ms | warm Redis hit ratio (lowest) | failed |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in (1, 2, 3):
        for mode in MODES:
            failed = sum(col(mode, n, "cold_failed")) + sum(col(mode, n, "warm_errors"))
            lines.append(
                f"| {n} | {mode} | {med(col(mode, n, 'cold_tps'))} | "
                f"{statistics.median(col(mode, n, 'cold_p99_ms')):.0f} | "
                f"{med(col(mode, n, 'warm_tps'))} | "
                f"{statistics.median(col(mode, n, 'warm_p50_ms')):.1f} | "
                f"{statistics.median(col(mode, n, 'warm_p99_ms')):.1f} | "
                f"{min(col(mode, n, 'warm_hit_ratio')):.3f} | {failed:.0f} |"
            )
    lines += [
        "",
        "Cluster / single, per round (target for warm: ≥ 0.9):",
        "",
        "| hosts | warm ratio, median (min–max) | cold ratio, median (min–max) |",
        "|---:|---:|---:|",
    ]
    for n in (1, 2, 3):
        ratios = {}
        for key in ("warm_tps", "cold_tps"):
            per = [
                c / s for c, s in zip(col("cluster", n, key), col("single", n, key), strict=True)
            ]
            ratios[key] = f"{statistics.median(per):.2f} ({min(per):.2f}–{max(per):.2f})"
        lines.append(f"| {n} | {ratios['warm_tps']} | {ratios['cold_tps']} |")
    lines += [
        "",
        "Client CPU per Redis hit (µs of the benchmark process's CPU, in-process TieredCache, "
        f"on {'uvloop' if args.uvloop else 'asyncio'}, "
        "64 concurrent lookups over 256 responses of one image; CPU time is far less "
        "disturbed by the other load on this machine than throughput), by hash-tag shards "
        f"per image (shipped: {SHIPPED_SHARDS}; 16384 = a slot per response):",
        "",
        *cpu_table(cpu),
    ]
    lines += [
        "",
        "Failover (cluster, 3 hosts, mixed warm/cold load through nginx, one primary SIGKILLed "
        f"after {args.failover_before:g} s, load kept {args.failover_after:g} s after recovery):",
        "",
        "| requests ok | failed | longest gap ms | longest gap before the kill ms | "
        "promotion s | all breakers closed s |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {fo['requests_ok']:.0f} | {fo['failed']:.0f} | {fo['longest_gap_ms']:.0f} | "
        f"{fo['longest_gap_before_kill_ms']:.0f} | {fo['promotion_s']:.2f} | "
        f"{fo['breakers_closed_s']:.2f} |",
        "",
        "Raw rows:",
        "",
        "```json",
        json.dumps({"rows": rows, "client_cpu": cpu, "failover": fo}, indent=1),
        "```",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cluster-vm-{dt.date.today()}{label_suffix(args)}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
