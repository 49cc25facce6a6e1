"""IIIF tiles on one core: idrserve (cold and warm) against IIPImage, side by side in one run.

Mode A of performance.md §6: each server stack pinned to core 0 (`taskset`), wrk `-t1` pinned
to core 1 (bench_http.run_wrk). Same pixels for everyone: bench_http's seeded 3-channel uint16
4096² OME-Zarr pyramid (256² chunks, image 2001), and for IIPImage a pyramidal JPEG-q90 TIFF
holding idrserve's q=0.9 rendering of it (bench_deploy.write_iip_tiff), so iipsrv decodes and
re-encodes every tile like idrserve renders and encodes. Same tile list for everyone: the 256
level-0 256² tiles, JPEG q90, as IIIF Image API URLs (`x,y,256,256/256,256/0/default.jpg` on
idrserve's `/iiif/3/2001;q=0.9`, `…/256,/0/default.jpg` on iipsrv's IIIF 2 handler).

Contenders, interleaved per round after a warm-up:

1. idrserve cold: 1 worker, 1 CPU thread, response caches off (every request reads, decodes,
   renders 3 channels and encodes);
2. idrserve warm: 1 worker, 1 CPU thread, memory tier filled by one pass (cache hits through
   the URL fast path);
3. IIPImage: one iipsrv FastCGI process (no tile cache) behind one nginx worker, the
   performance.md §1.2 recipe.

Reports median req/s, min–max, p50/p99 and the per-round ratios idrserve/iipsrv (target ≥ 1.5).

    python bench/bench_iiif.py [--duration 5] [--rounds 3] [--conns 16]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import NGINX, NGINX_USER, Stack, get, version, wait_http
from bench_deploy import IIP_CONF, IIPSRV, write_iip_tiff
from bench_http import SIZE, free_port, run_wrk, write_image

ROOT = Path(__file__).resolve().parent
TILES = SIZE // 256
COLD = "idrserve IIIF cold (1 worker)"
WARM = "idrserve IIIF warm (1 worker, memory hits)"
IIP = "IIPImage IIIF (1 iipsrv)"
TARGET = 1.5


def iiif_urls() -> list[str]:
    return [
        f"/iiif/3/2001;q=0.9/{x * 256},{y * 256},256,256/256,256/0/default.jpg"
        for y in range(TILES)
        for x in range(TILES)
    ]


def iip_urls() -> list[str]:
    return [
        f"/fcgi-bin/iipsrv.fcgi?IIIF=rgb_pyr_jpeg.tif/{x * 256},{y * 256},256,256"
        "/256,/0/default.jpg"
        for y in range(TILES)
        for x in range(TILES)
    ]


def pin(pid: int, core: str = "0") -> None:
    """Pin a process and all its threads (already started ones included) to `core`."""
    subprocess.run(["taskset", "-a", "-p", "-c", core, str(pid)], check=True, capture_output=True)


def start_iip_one_core(stack: Stack, tmp: Path, source_base: str) -> str:
    """One iipsrv on core 0 behind one nginx worker on core 0 (performance.md §1.2)."""
    if not IIPSRV.exists():
        raise RuntimeError(f"{IIPSRV} missing (apt-get install iipimage-server)")
    data = tmp / "iip"
    data.mkdir()
    write_iip_tiff(data / "rgb_pyr_jpeg.tif", source_base)
    port = free_port()
    env = dict(
        os.environ,
        LOGFILE=str(tmp / "iipsrv.log"),
        VERBOSITY="0",
        JPEG_QUALITY="90",
        MAX_IMAGE_CACHE_SIZE="0",
        FILESYSTEM_PREFIX=f"{data}/",
        CORS="*",
        OMP_NUM_THREADS="1",
    )
    proc = stack.start(
        ["taskset", "-c", "0", str(IIPSRV), "--bind", f"127.0.0.1:{port}", "--backlog", "1024"],
        env,
    )
    prefix = tmp / "nginx-iip"
    prefix.mkdir()
    nginx_port = free_port()
    conf = IIP_CONF.format(
        user=NGINX_USER or "nobody",
        prefix=prefix,
        port=nginx_port,
        servers=f"server 127.0.0.1:{port};",
    ).replace("worker_processes 2;", "worker_processes 1;\nworker_cpu_affinity 01;")
    (prefix / "nginx.conf").write_text(conf)
    stack.nginx(
        prefix, ["taskset", "-c", "0", NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix)]
    )
    base = f"http://127.0.0.1:{nginx_port}"
    time.sleep(0.5)
    if proc.poll() is not None:
        raise RuntimeError("iipsrv exited")
    body, headers = get(base + iip_urls()[17])
    if not body.startswith(b"\xff\xd8") or "jpeg" not in headers.get("Content-Type", ""):
        raise RuntimeError(f"iipsrv answered {headers.get('Content-Type')}")
    return base


def jpeg_info(body: bytes) -> str:
    from PIL import Image

    img = Image.open(io.BytesIO(body))
    q = getattr(img, "quantization", {}) or {}
    first = q.get(0, [0])[0] if q else "?"
    return f"{img.size[0]}×{img.size[1]} {img.mode}, {len(body)} bytes, DQT[0][0]={first}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args()
    if not shutil.which("wrk") or not Path(NGINX).exists():
        print("wrk and nginx are needed (apt-get install wrk nginx-light)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="idrserve-iiifbench-"))
    tmp.chmod(0o755)
    load_before = Path("/proc/loadavg").read_text().strip()
    results: dict[str, list[dict[str, float]]] = {COLD: [], WARM: [], IIP: []}
    notes: list[str] = []
    with Stack(tmp) as stack:
        data = tmp / "data"
        write_image(data / "2001.zarr", 256, 1)
        off = {"IDRSERVE_CACHE__MEMORY_MAX_BYTES": "0", "IDRSERVE_CACHE__URL_INDEX_ENTRIES": "0"}
        cold_proc, cold = stack.idrserve(data, 1, off)
        warm_proc, warm = stack.idrserve(data, 1)
        pin(cold_proc.pid)
        pin(warm_proc.pid)
        urls = iiif_urls()
        for url in urls:  # one pass fills the warm server's memory tier
            get(warm + url)
        if get(warm + urls[5])[1].get("X-Cache") != "memory":
            raise RuntimeError("the warm contender did not answer from memory")
        iip = start_iip_one_core(stack, tmp, warm)
        contenders = {COLD: (cold, urls), WARM: (warm, urls), IIP: (iip, iip_urls())}
        ours, theirs = get(cold + urls[17])[0], get(iip + iip_urls()[17])[0]
        notes.append(f"idrserve tile 17: {jpeg_info(ours)}; iipsrv tile 17: {jpeg_info(theirs)}.")
        for base, url_list in contenders.values():
            wait_http(base + url_list[0])
            run_wrk(base, url_list, args.warmup, args.conns, tmp)  # discarded warm-up
        for _ in range(args.rounds):
            for name, (base, url_list) in contenders.items():
                results[name].append(run_wrk(base, url_list, args.duration, args.conns, tmp))
    load_after = Path("/proc/loadavg").read_text().strip()
    busy = float(load_before.split()[0])

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    lines = [
        f"# IIIF tiles on one core: idrserve vs IIPImage ({dt.date.today().isoformat()}, vm)",
        "",
        f"Command: `python bench/bench_iiif.py --duration {args.duration:g} --rounds {args.rounds}"
        f" --conns {args.conns}`",
        "",
        "Mode A (performance.md §6): each server stack pinned to core 0, wrk -t1 "
        f"-c{args.conns} on core 1, {args.rounds} interleaved rounds of {args.duration:g} s after "
        f"a {args.warmup:g} s warm-up each. 256 level-0 256² tiles, JPEG q90, IIIF URLs; same "
        "pixels (3-channel uint16 4096² OME-Zarr, 256² chunks; iipsrv reads a JPEG-q90 pyramidal "
        "TIFF of idrserve's rendering, no tile cache). Data in the OS page cache.",
        "",
        f"loadavg before: {load_before}; after: {load_after}; nproc {os.cpu_count()}. "
        f"Versions: python {platform.python_version()}; {version([NGINX, '-v'])}; "
        f"{version(['dpkg-query', '-W', 'iipimage-server'])}.",
        "",
        *(
            [
                f"**Machine busy** (1-min loadavg {busy:.2f} before the run, other processes "
                "on both cores): these figures are not a fair comparison; re-run on a quiet "
                "machine (performance.md §6.1).",
                "",
            ]
            if busy > 1.0
            else []
        ),
        "| contender | median req/s | min–max | p50 ms | p99 ms | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rounds in results.items():
        rps = [r["rps"] for r in rounds]
        lines.append(
            f"| {name} | {med(name, 'rps'):.0f} | {min(rps):.0f}–{max(rps):.0f} | "
            f"{med(name, 'p50_ms'):.2f} | {med(name, 'p99_ms'):.2f} | "
            f"{sum(r['non2xx'] + r['socket_errors'] for r in rounds):.0f} |"
        )
    lines += [
        "",
        "| ratio (per round, median) | value | rounds | target | met |",
        "|---|---:|---:|---:|---|",
    ]
    for name in (COLD, WARM):
        ratios = [a["rps"] / b["rps"] for a, b in zip(results[name], results[IIP], strict=True)]
        value = statistics.median(ratios)
        p99_ok = med(name, "p99_ms") <= med(IIP, "p99_ms")
        lines.append(
            f"| {name} / IIPImage | {value:.2f} | {', '.join(f'{r:.2f}' for r in ratios)} | "
            f"≥ {TARGET} and p99 no worse | {'yes' if value >= TARGET and p99_ok else 'no'} |"
        )
    lines += [
        "",
        *[f"- {n}" for n in notes],
        "",
        "Raw rounds:",
        "",
        "```json",
        json.dumps(results, indent=1),
        "```",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"iiif-vm-{dt.date.today().isoformat()}.md").write_text(text)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
