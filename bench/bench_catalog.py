"""IDR's catalog on one host: build, start, idle memory, lookups and listing under load.

Generates an IDR-shaped catalog CSV (`--rows` image ids in shuffled order under ~400 study
folders, `v0.4/idr0123A/<id>.zarr`, with some `.ome.zarr` names, absolute paths and repeated
ids), then measures, in one run:

1. the storage chosen (`idrserve catalog index`: a memory-mapped sorted id array) against the
   alternatives it was chosen over, each built from the same CSV in a process of its own:
   an embedded SQLite table (`WITHOUT ROWID`, the obvious embedded index) and a Python dict
   (what the server held before). Build time and peak RSS, file size, open time, RSS once
   open, lookup latency in-process, and a listing page at a deep offset;
2. the server: `idrserve serve --catalog INDEX` from spawn to `/readyz` 200, its idle RSS
   against the same server over an empty catalog, and, with the server on core 0 and the
   clients on core 1, latency p50/p99 of 16 clients flooding lookups of unknown ids, of
   catalogued ids whose data is missing, of catalogued ids with data (`imgData`), and of
   `GET /?limit=100` at random offsets;
3. `idrserve serve --catalog CSV`: spawn to ready when the server indexes the CSV itself.

Targets (issue 14, this 2-core machine): index built in ≤ 60 s in ≤ 1 GB; ready ≤ 5 s; idle
RSS ≤ 400 MB over an empty catalog; lookups ≤ 1 ms p99; `/` ≤ 5 ms.

    python bench/bench_catalog.py --rows 5300000 [--duration 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from bench_http import free_port  # noqa: E402

from idrserve.catalog.cli import peak_rss_mb  # noqa: E402

FIRST_ID = 1_000_000
REAL_IMAGES = 200  # catalogued ids whose data exists (symlinks to one small image)
MISSING_STUDY = "idr9999Z"  # catalogued, no data on disk


# ---- the catalog ---------------------------------------------------------------------------


def write_catalog(path: Path, rows: int, seed: int = 0) -> dict[str, Any]:
    """An IDR-shaped CSV; returns sample ids: known with data, known without, unknown."""
    rng = np.random.default_rng(seed)
    ids = rng.choice(np.arange(FIRST_ID, FIRST_ID + rows * 3), rows, replace=False)
    studies = rng.integers(1, 400, rows)
    t0 = time.perf_counter()
    with open(path, "w", buffering=1 << 20) as f:
        f.write("id,path\n")
        for n, (i, s) in enumerate(zip(ids.tolist(), studies.tolist(), strict=True)):
            if n % 100 == 7:
                f.write(f"{i},v0.4/idr{s:04d}A/{i}.ome.zarr\n")
            elif n % 200 == 11:
                f.write(f"{i},/data/idr/v0.5/idr{s:04d}B/{i}.zarr\n")
            else:
                f.write(f"{i},v0.4/idr{s:04d}A/{i}.zarr\n")
        # a few repeated ids (the last row wins)
        for i in ids[:1000].tolist():
            f.write(f"{i},v0.4/{MISSING_STUDY}/{i}.zarr\n")
    real = [int(i) for i in ids[1000 : 1000 + REAL_IMAGES]]
    candidates = rng.integers(FIRST_ID, FIRST_ID + rows * 3, 20_000)
    unknown = [int(i) for i in candidates[~np.isin(candidates, ids)]]
    return {
        "seconds": time.perf_counter() - t0,
        "bytes": path.stat().st_size,
        "real": real,
        "missing": [int(i) for i in ids[:1000]],
        "known": [int(i) for i in rng.choice(ids, 20_000)],
        "unknown": unknown[:10_000],
    }


def real_data(catalog: Path, sample: dict[str, Any]) -> None:
    """Give `REAL_IMAGES` catalogued ids real OME-Zarr data (symlinks to one demo image)."""
    from idrserve.demo import write_demo

    demo = catalog.parent / "demo"
    images = write_demo(demo)
    small = min(images, key=lambda im: im.image_id)  # any of them serves
    target = next(demo.rglob(f"{small.image_id}.zarr"))
    lines = {}
    for i in sample["real"]:
        link = catalog.parent / "real" / f"{i}.zarr"
        link.parent.mkdir(exist_ok=True)
        if not link.exists():
            link.symlink_to(target)
        lines[i] = f"real/{i}.zarr"
    with open(catalog, "a") as f:
        f.writelines(f"{i},{p}\n" for i, p in lines.items())


# ---- storage alternatives, each probed in a process of its own ------------------------------


def probe(kind: str, csv_path: Path, store: Path, sample_file: Path) -> dict[str, Any]:
    """Build (if needed), open, look up and page one storage; run as a child process."""
    sample = json.loads(sample_file.read_text())
    known, unknown = sample["known"][:5000], sample["unknown"][:5000]
    out: dict[str, Any] = {"kind": kind}
    lookup: Callable[[int], object]  # an image's path, or None
    t0 = time.perf_counter()
    if kind == "index":
        from idrserve.catalog.index import open_index

        index = open_index(store)
        out["open_s"] = time.perf_counter() - t0
        lookup = index.locate

        def page(offset: int) -> list[int]:
            return index.page(offset, 100)

        total = len(index)
    elif kind == "sqlite":
        db = sqlite3.connect(store)
        db.execute("PRAGMA mmap_size=1073741824")
        out["open_s"] = time.perf_counter() - t0

        def lookup(i: int) -> Any:
            row = db.execute("SELECT path FROM images WHERE id=?", (i,)).fetchone()
            return None if row is None else row[0]

        def page(offset: int) -> list[int]:
            rows = db.execute("SELECT id FROM images ORDER BY id LIMIT 100 OFFSET ?", (offset,))
            return [r[0] for r in rows]

        total = db.execute("SELECT count(*) FROM images").fetchone()[0]
    else:  # dict: the whole CSV parsed into memory, as the server did before
        import csv

        table: dict[int, str] = {}
        with open(csv_path, newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for row in reader:
                try:
                    table[int(row[0])] = os.path.normpath(
                        os.path.join(str(csv_path.parent), row[1])
                    )
                except (ValueError, IndexError):
                    continue
        out["open_s"] = time.perf_counter() - t0
        lookup = table.get
        keys = sorted(table)

        def page(offset: int) -> list[int]:
            return keys[offset : offset + 100]

        total = len(table)
    out["rss_mb"] = rss_mb(os.getpid())
    for name, ids in (("known", known), ("unknown", unknown)):
        times = []
        for i in ids:
            t = time.perf_counter()
            lookup(i)
            times.append(time.perf_counter() - t)
        out[f"lookup_{name}_p50_us"] = statistics.median(times) * 1e6
        out[f"lookup_{name}_p99_us"] = float(np.percentile(times, 99)) * 1e6
    deep = []
    for offset in (0, total // 2, total - 100):
        t = time.perf_counter()
        page(offset)
        deep.append((time.perf_counter() - t) * 1000)
    out["page_ms_first_mid_last"] = [round(x, 3) for x in deep]
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def build_sqlite(csv_path: Path, db_path: Path) -> dict[str, Any]:
    """The same rows in SQLite (id INTEGER PRIMARY KEY, path TEXT) WITHOUT ROWID."""
    import csv

    db_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("CREATE TABLE images (id INTEGER PRIMARY KEY, path TEXT NOT NULL) WITHOUT ROWID")
    base = str(csv_path.parent)
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        batch: list[tuple[int, str]] = []
        for row in reader:
            batch.append((int(row[0]), os.path.normpath(os.path.join(base, row[1]))))
            if len(batch) >= 100_000:
                db.executemany("INSERT OR REPLACE INTO images VALUES (?, ?)", batch)
                batch = []
        db.executemany("INSERT OR REPLACE INTO images VALUES (?, ?)", batch)
    db.commit()
    db.close()
    return {
        "build_s": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "bytes": db_path.stat().st_size,
    }


# ---- the server ----------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(
    catalog: Path | None, root: Path | None, workdir: Path, port: int
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "idrserve", "serve", "--port", str(port)]
    if catalog is not None:
        cmd += ["--catalog", str(catalog)]
    if root is not None:
        cmd += ["--zarr-root", str(root)]
    env = {
        **os.environ,
        "IDRSERVE_LOG__ACCESS_LOG": "false",
        "IDRSERVE_SOURCE__CATALOG_INDEX_DIR": str(workdir / "built"),
        "IDRSERVE_SERVER__CPU_THREADS": "1",
    }
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    os.sched_setaffinity(proc.pid, {0})
    return proc


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 600) -> float:
    import urllib.error
    import urllib.request

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except (urllib.error.HTTPError, OSError):
            pass
        time.sleep(0.02)
    raise RuntimeError("server not ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def flood(port: int, urls: list[str], duration_s: float, clients: int) -> dict[str, Any]:
    """`clients` connections each sending the next URL as soon as the last answered."""
    import aiohttp

    times: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = time.perf_counter() + duration_s
    rng = random.Random(1)

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < stop_at:
            url = f"http://127.0.0.1:{port}{rng.choice(urls)}"
            t = time.perf_counter()
            async with session.get(url) as resp:
                await resp.read()
            times.append(time.perf_counter() - t)
            statuses[resp.status] = statuses.get(resp.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(clients)))
    ms = np.array(times) * 1000
    return {
        "requests": len(times),
        "per_s": len(times) / duration_s,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "statuses": statuses,
    }


def lookup_histogram(port: int) -> list[tuple[float, float]]:
    """(upper bound s, cumulative count) of the server's catalog lookup-duration histogram."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = []
    for line in text.splitlines():
        if line.startswith("idrserve_catalog_lookup_duration_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            out.append((bound, float(line.rsplit(" ", 1)[1])))
    return out


def quantile_bound(
    before: list[tuple[float, float]], after: list[tuple[float, float]], q: float
) -> float:
    """The upper bound of the bucket holding quantile `q` of the lookups between two scrapes."""
    counts = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1][1]
    for le, n in counts:
        if total and n >= q * total:
            return le
    return float("nan")


# ---- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_300_000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--skip-alternatives", action="store_true")
    parser.add_argument("--probe", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--build-sqlite", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_sqlite:
        print(json.dumps(build_sqlite(*map(Path, args.build_sqlite))))
        return
    if args.probe:
        kind, csv_path, store, sample = args.probe
        print(json.dumps(probe(kind, Path(csv_path), Path(store), Path(sample))))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-catalog-"))
    work.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {1})
    csv_path = work / "idr.csv"
    print(f"writing {args.rows:,} rows to {csv_path} …", flush=True)
    sample = write_catalog(csv_path, args.rows)
    real_data(csv_path, sample)
    sample_file = work / "sample.json"
    sample_file.write_text(json.dumps(sample))
    results: dict[str, Any] = {"rows": args.rows, "csv_bytes": csv_path.stat().st_size}

    # 1. build the index (a child process: its peak RSS is its own)
    index_path = work / "idr.idrcat"
    t0 = time.perf_counter()
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "idrserve",
            "catalog",
            "index",
            str(csv_path),
            "-o",
            str(index_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(built.stdout)
    results["index_build"] = {
        "wall_s": time.perf_counter() - t0,
        "peak_rss_mb": report["peak_rss_mb"],  # the child's own VmHWM
        "bytes": index_path.stat().st_size,
        "report": report,
    }
    print("index built:", results["index_build"], flush=True)
    probes: dict[str, Any] = {}
    kinds = ["index"] if args.skip_alternatives else ["index", "sqlite", "dict"]
    if "sqlite" in kinds:
        db = work / "idr.sqlite"
        out = subprocess.run(
            [sys.executable, __file__, "--build-sqlite", str(csv_path), str(db)],
            capture_output=True,
            text=True,
            check=True,
        )
        results["sqlite_build"] = json.loads(out.stdout)
        print("sqlite built:", results["sqlite_build"], flush=True)
    for kind in kinds:
        store = {"index": index_path, "sqlite": work / "idr.sqlite", "dict": csv_path}[kind]
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--probe",
                kind,
                str(csv_path),
                str(store),
                str(sample_file),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        probes[kind] = json.loads(out.stdout)
        print(kind, probes[kind], flush=True)
    results["storage"] = probes

    # 2. the server over the built index, and over an empty catalog
    empty = work / "empty.csv"
    empty.write_text("id,path\n")
    servers: dict[str, Any] = {}
    for name, catalog in (("empty catalog", empty), ("index", index_path)):
        port = free_port()
        proc = start_server(catalog, None, work, port)
        try:
            ready_s = wait_ready(port, proc)
            time.sleep(2)
            servers[name] = {"ready_s": ready_s, "idle_rss_mb": rss_mb(proc.pid)}
            if name == "index":
                loads = {
                    "unknown ids (imgData 404)": [
                        f"/webgateway/imgData/{i}/" for i in sample["unknown"]
                    ],
                    "catalogued, data missing (imgData 404)": [
                        f"/webgateway/imgData/{i}/" for i in sample["missing"]
                    ],
                    "catalogued with data (imgData 200)": [
                        f"/webgateway/imgData/{i}/" for i in sample["real"]
                    ],
                    "GET /?limit=100 (random offset)": [
                        f"/?offset={o}&limit=100"
                        for o in random.Random(2).sample(range(args.rows), 500)
                    ],
                }
                servers[name]["floods"] = {}
                for label, urls in loads.items():
                    asyncio.run(flood(port, urls[:50], 1.0, args.clients))  # warm
                    before = lookup_histogram(port)
                    got = asyncio.run(flood(port, urls, args.duration, args.clients))
                    after = lookup_histogram(port)
                    got["lookup_p50_le_ms"] = quantile_bound(before, after, 0.5) * 1000
                    got["lookup_p99_le_ms"] = quantile_bound(before, after, 0.99) * 1000
                    got["lookups"] = after[-1][1] - before[-1][1]
                    got["one_client"] = asyncio.run(flood(port, urls, args.duration / 2, 1))
                    servers[name]["floods"][label] = got
                    print(label, got, flush=True)
                servers[name]["rss_after_load_mb"] = rss_mb(proc.pid)
            print(name, {k: v for k, v in servers[name].items() if k != "floods"}, flush=True)
        finally:
            stop(proc)
    # 3. the server given the CSV itself (it indexes it in a child process)
    shutil.rmtree(work / "built", ignore_errors=True)
    port = free_port()
    proc = start_server(csv_path, None, work, port)
    try:
        servers["csv (indexed at start)"] = {
            "ready_s": wait_ready(port, proc),
            "idle_rss_mb": rss_mb(proc.pid),
        }
        print("csv", servers["csv (indexed at start)"], flush=True)
    finally:
        stop(proc)
    results["servers"] = servers
    report = render(results, " ".join(sys.argv))
    print(report)
    if args.out:
        args.out.write_text(report)


def render(r: dict[str, Any], command: str) -> str:
    b, s = r["index_build"], r["servers"]
    idx = s["index"]
    floods = idx["floods"]
    over_empty = idx["idle_rss_mb"] - s["empty catalog"]["idle_rss_mb"]
    lookups = [v["lookup_p99_le_ms"] for k, v in floods.items() if "imgData" in k]
    index_ms = floods["GET /?limit=100 (random offset)"]["one_client"]["p99_ms"]
    rows = [
        (
            "index built (child process)",
            f"{b['wall_s']:.1f} s, peak RSS {b['peak_rss_mb']:.0f} MB",
            "≤ 60 s, ≤ 1 GB",
            b["wall_s"] <= 60 and b["peak_rss_mb"] <= 1024,
        ),
        (
            "server start → /readyz 200 (index)",
            f"{idx['ready_s']:.2f} s",
            "≤ 5 s",
            idx["ready_s"] <= 5,
        ),
        (
            "idle RSS over an empty catalog",
            f"{idx['idle_rss_mb']:.0f} − {s['empty catalog']['idle_rss_mb']:.0f}"
            f" = {over_empty:.0f} MB",
            "≤ 400 MB",
            over_empty <= 400,
        ),
        (
            "lookup p99 in the server under 16 clients (unknown, missing, present)",
            " / ".join(f"≤ {x:.3f} ms" for x in lookups),
            "≤ 1 ms",
            max(lookups) <= 1,
        ),
        ("`GET /?limit=100` p99, one client", f"{index_ms:.2f} ms", "≤ 5 ms", index_ms <= 5),
    ]
    lines = [
        f"# Catalog at IDR scale: {r['rows']:,} images on one host ({dt.date.today()}, vm)",
        "",
        f"Command: `{command}`",
        "",
        f"CSV {r['csv_bytes'] / 1e6:.0f} MB; index file {b['bytes'] / 1e6:.0f} MB. "
        "Server pinned to core 0, the bench's clients (aiohttp, 16 connections) on core 1; "
        "client-side time is included.",
        "",
        "| target | measured | target | met |",
        "|---|---|---|---|",
        *(f"| {a} | {m} | {t} | {'yes' if ok else 'NO'} |" for a, m, t, ok in rows),
        "",
        "Storage alternatives, each built from the same CSV and probed in a process of its own "
        "(lookups in-process, 5 000 known and 5 000 unknown ids; a page of 100 ids at offset "
        "0, n/2, n−100):",
        "",
        "| storage | build | file | open | RSS open | lookup known p50/p99 µs "
        "| unknown p50/p99 µs | page ms (first, mid, last) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    builds = {
        "index": (b["wall_s"], b["bytes"]),
        "sqlite": (
            r.get("sqlite_build", {}).get("build_s"),
            r.get("sqlite_build", {}).get("bytes"),
        ),
        "dict": (None, None),
    }
    for kind, p in r["storage"].items():
        build_s, size = builds[kind]
        lines.append(
            f"| {kind} | {'-' if build_s is None else f'{build_s:.1f} s'} | "
            f"{'-' if size is None else f'{size / 1e6:.0f} MB'} | {p['open_s']:.2f} s | "
            f"{p['rss_mb']:.0f} MB | "
            f"{p['lookup_known_p50_us']:.1f} / {p['lookup_known_p99_us']:.1f} | "
            f"{p['lookup_unknown_p50_us']:.1f} / {p['lookup_unknown_p99_us']:.1f} | "
            f"{p['page_ms_first_mid_last']} |"
        )
    lines += [
        "",
        "Floods against the server over the index, 16 clients. HTTP latency includes queueing "
        "behind the other 15 requests on one core; the lookup column is the server's own "
        "`idrserve_catalog_lookup_duration_seconds` (bucket upper bounds); one client: the "
        "same URLs sent one at a time.",
        "",
        "| requests | req/s | p50 ms | p99 ms | lookup p50 / p99 ≤ ms "
        "| one client p50 / p99 ms | statuses |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for label, f in floods.items():
        lines.append(
            f"| {label} | {f['per_s']:.0f} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} "
            f"| {f['lookup_p50_le_ms']:.3f} / {f['lookup_p99_le_ms']:.3f} "
            f"| {f['one_client']['p50_ms']:.2f} / {f['one_client']['p99_ms']:.2f} "
            f"| {f['statuses']} |"
        )
    lines += ["", "Servers:", "", "| server | ready s | idle RSS MB |", "|---|---:|---:|"]
    for name, v in s.items():
        lines.append(f"| {name} | {v['ready_s']:.2f} | {v['idle_rss_mb']:.0f} |")
    lines += [
        "",
        f"RSS of the index server after the floods: {idx['rss_after_load_mb']:.0f} MB.",
        "",
        "Raw:",
        "",
        "```json",
        json.dumps(r, indent=1, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
