"""IIIF tiles on one core: idrserve (cold and warm) against IIPImage, side by side in one run.

Mode A of docs/benchmarks.md#protocol: each server stack pinned to core 0 (`taskset`), wrk `-t1`
pinned to core 1 (bench_http.run_wrk). Same tile list for everyone: the 256 level-0 256² tiles of
bench_http's seeded 3-channel uint16 4096² OME-Zarr pyramid (256² chunks, blosc-lz4, image 2001),
JPEG q90, as IIIF Image API URLs (`x,y,256,256/256,256/0/default.jpg` on idrserve's
`/iiif/3/2001;q=0.9`, `…/256,/0/default.jpg` on iipsrv's IIIF 2 handler).

Contenders, interleaved per round after a warm-up:

1. idrserve cold: 1 worker, 1 CPU thread (so small renders run inline, server.inline_render_
   pixels), response caches off: every request reads three chunks, decodes, renders and
   encodes;
2. idrserve warm: the same, memory tier filled by one pass (cache hits, URL fast path);
3. IIPImage on the same pixels: one iipsrv FastCGI process (no tile cache) behind one nginx worker
   (docs/benchmarks.md#iipimage-as-a-peer), reading the same uint16 pyramid as a 3-sample 16-bit
   tiled TIFF, uncompressed (iipsrv's fastest on these pixels: 570 tiles/s against 370 for zstd and
   300 for deflate in a trial run), channels in R, G, B order of the image's colours and the window
   (100–1500) in SMin/SMaxSampleValue, so iipsrv's own 16→8-bit scaling renders what idrserve
   renders (PSNR between the two tiles is reported); the target is measured against this one;
4. IIPImage on a pre-rendered JPEG TIFF: idrserve's q=0.9 rendering stored as a JPEG-q90
   pyramid (bench_deploy.write_iip_tiff), so iipsrv only decodes and re-encodes 8-bit RGB.
   Not the same pixels (rendered, 8-bit, lossy) and no rendering work: iipsrv's best case,
   reported for reference.

Reports median req/s, min–max, p50/p99 and the per-round ratios idrserve/iipsrv (target ≥ 1.5
with p99 no worse, against contender 3).

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

import numpy as np
from _harness import NGINX, NGINX_USER, Stack, get, version, wait_http
from bench_deploy import IIP_CONF, IIPSRV, write_iip_tiff
from bench_http import SIZE, free_port, run_wrk, write_image

ROOT = Path(__file__).resolve().parent
TILES = SIZE // 256
COLD = "idrserve IIIF cold (1 worker)"
WARM = "idrserve IIIF warm (1 worker, memory hits)"
IIP_RAW = "IIPImage IIIF, same pixels (uint16 TIFF, 1 iipsrv)"
IIP_JPEG = "IIPImage IIIF, pre-rendered JPEG TIFF (1 iipsrv)"
RAW_TIFF = "same_pixels_u16.tif"
JPEG_TIFF = "rgb_pyr_jpeg.tif"
TARGET = 1.5
PROBE = 17  # the tile whose bytes are compared between servers


def iiif_urls() -> list[str]:
    return [
        f"/iiif/3/2001;q=0.9/{x * 256},{y * 256},256,256/256,256/0/default.jpg"
        for y in range(TILES)
        for x in range(TILES)
    ]


def iip_urls(tiff: str) -> list[str]:
    return [
        f"/fcgi-bin/iipsrv.fcgi?IIIF={tiff}/{x * 256},{y * 256},256,256/256,/0/default.jpg"
        for y in range(TILES)
        for x in range(TILES)
    ]


def pin(pid: int, core: str = "0") -> None:
    """Pin a process and all its threads (already started ones included) to `core`."""
    subprocess.run(["taskset", "-a", "-p", "-c", core, str(pid)], check=True, capture_output=True)


def write_same_pixels_tiff(path: Path, image: Path) -> None:
    """The OME-Zarr image's pyramid, pixel for pixel, as a tiled 16-bit RGB TIFF for iipsrv.

    Samples go in the order of the channels' colours (red, green, blue), and the shared
    window goes in SMinSampleValue/SMaxSampleValue, which iipsrv scales 16-bit data by; so
    iipsrv's output is idrserve's default rendering up to rounding (PSNR in the report).
    """
    import tifffile
    import zarr

    group = zarr.open_group(str(image), mode="r")
    channels = group.attrs["omero"]["channels"]
    order = [
        next(i for i, ch in enumerate(channels) if ch["color"].upper() == colour)
        for colour in ("FF0000", "00FF00", "0000FF")
    ]
    windows = {(ch["window"]["start"], ch["window"]["end"]) for ch in channels}
    if len(windows) != 1:
        raise RuntimeError("iipsrv takes one window for all samples; the image has several")
    ((lo, hi),) = windows
    paths = [d["path"] for d in group.attrs["multiscales"][0]["datasets"]]
    with tifffile.TiffWriter(path) as tif:
        for level, key in enumerate(paths):
            data = np.asarray(group[key][:])[order]  # (3, y, x) in R, G, B order
            tif.write(
                np.ascontiguousarray(data.transpose(1, 2, 0)),
                tile=(256, 256),
                photometric="rgb",
                planarconfig="contig",
                subfiletype=1 if level else 0,
                extratags=[(340, 3, 3, (int(lo),) * 3, False), (341, 3, 3, (int(hi),) * 3, False)],
            )


def start_iip_one_core(stack: Stack, tmp: Path, image: Path, rendered_from: str) -> str:
    """One iipsrv on core 0 behind one nginx worker on core 0, serving both TIFFs.

    Set up as docs/benchmarks.md#iipimage-as-a-peer says; iipsrv keeps no tile cache here, so
    one TIFF never warms the other.
    """
    if not IIPSRV.exists():
        raise RuntimeError(f"{IIPSRV} missing (apt-get install iipimage-server)")
    data = tmp / "iip"
    data.mkdir()
    write_same_pixels_tiff(data / RAW_TIFF, image)
    write_iip_tiff(data / JPEG_TIFF, rendered_from)
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
    for tiff in (RAW_TIFF, JPEG_TIFF):
        body, headers = get(base + iip_urls(tiff)[PROBE])
        if not body.startswith(b"\xff\xd8") or "jpeg" not in headers.get("Content-Type", ""):
            raise RuntimeError(f"iipsrv answered {headers.get('Content-Type')} for {tiff}")
    return base


def decode(body: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.float64)


def jpeg_info(body: bytes) -> str:
    from PIL import Image

    img = Image.open(io.BytesIO(body))
    q = getattr(img, "quantization", {}) or {}
    first = q.get(0, [0])[0] if q else "?"
    return f"{img.size[0]}×{img.size[1]} {img.mode}, {len(body)} bytes, DQT[0][0]={first}"


def psnr(a: bytes, b: bytes) -> float:
    mse = float(np.mean((decode(a) - decode(b)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


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
    results: dict[str, list[dict[str, float]]] = {COLD: [], WARM: [], IIP_RAW: [], IIP_JPEG: []}
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
        iip = start_iip_one_core(stack, tmp, data / "2001.zarr", warm)
        contenders = {
            COLD: (cold, urls),
            WARM: (warm, urls),
            IIP_RAW: (iip, iip_urls(RAW_TIFF)),
            IIP_JPEG: (iip, iip_urls(JPEG_TIFF)),
        }
        ours = get(cold + urls[PROBE])[0]
        notes.append(f"idrserve tile {PROBE}: {jpeg_info(ours)}.")
        for name in (IIP_RAW, IIP_JPEG):
            base, url_list = contenders[name]
            theirs = get(base + url_list[PROBE])[0]
            notes.append(
                f"{name}, tile {PROBE}: {jpeg_info(theirs)}; PSNR against idrserve's "
                f"{psnr(ours, theirs):.1f} dB."
            )
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
        "Mode A (docs/benchmarks.md#protocol): each server stack pinned to core 0, wrk -t1 "
        f"-c{args.conns} on core 1, {args.rounds} interleaved rounds of {args.duration:g} s after "
        f"a {args.warmup:g} s warm-up each. 256 level-0 256² tiles, JPEG q90, IIIF URLs. "
        "idrserve reads a 3-channel uint16 4096² OME-Zarr (256² chunks, blosc-lz4) and renders "
        "it; iipsrv (no tile cache) reads the same pixels as an uncompressed 16-bit RGB tiled "
        "TIFF and scales them by the same window, or, for reference, a JPEG-q90 TIFF of "
        "idrserve's rendering (8-bit and lossy: not the same pixels, no rendering). Data in "
        "the OS page cache.",
        "",
        f"loadavg before: {load_before}; after: {load_after}; nproc {os.cpu_count()}. "
        f"Versions: python {platform.python_version()}; {version([NGINX, '-v'])}; "
        f"{version(['dpkg-query', '-W', 'iipimage-server'])}.",
        "",
        *(
            [
                f"**Machine busy** (1-min loadavg {busy:.2f} before the run, other processes "
                "on both cores): these figures are not a fair comparison; re-run on a quiet "
                "machine (docs/benchmarks.md#protocol).",
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
    for peer, target in ((IIP_RAW, True), (IIP_JPEG, False)):
        for name in (COLD, WARM):
            ratios = [
                a["rps"] / b["rps"] for a, b in zip(results[name], results[peer], strict=True)
            ]
            value = statistics.median(ratios)
            p99_ok = med(name, "p99_ms") <= med(peer, "p99_ms")
            verdict = "yes" if value >= TARGET and p99_ok else "no"
            lines.append(
                f"| {name} / {peer} | {value:.2f} | {', '.join(f'{r:.2f}' for r in ratios)} | "
                + (
                    f"≥ {TARGET} and p99 no worse | {verdict} |"
                    if target
                    else f"reference | {verdict} |"
                )
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
