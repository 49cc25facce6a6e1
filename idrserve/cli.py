"""`idrserve demo | serve | config show`: build settings from flags and run the server."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import multiprocessing
import os
import signal
import sys
from pathlib import Path
from typing import Any

from idrserve import __version__
from idrserve.settings import Settings, load_settings

log = logging.getLogger("idrserve")


def default_demo_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "idrserve" / "demo"


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080)")
    p.add_argument("--workers", type=int, help="processes sharing the port (SO_REUSEPORT)")
    p.add_argument("--config", type=Path, help="TOML settings file (also IDRSERVE_CONFIG)")
    p.add_argument("--lut-dir", type=Path, help="directory of ImageJ .lut files")
    p.add_argument("--redis-url", help="shared Redis cache tier (also IDRSERVE_REDIS_URL)")
    p.add_argument("--cache-dir", type=Path, help="disk cache tier (also IDRSERVE_CACHE_DIR)")
    p.add_argument("--cache-dir-max-bytes", type=int, help="byte budget of the disk cache tier")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idrserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"idrserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write the demo data set (once) and serve it")
    _add_server_flags(demo)
    demo.add_argument("--data-dir", type=Path, help=f"where to write it ({default_demo_dir()})")
    demo.add_argument("--write-only", action="store_true", help="write the data and exit")

    serve = sub.add_parser("serve", help="serve OME-Zarr images")
    _add_server_flags(serve)
    serve.add_argument("--zarr-root", help="directory or URL scanned for <image id>.zarr")
    serve.add_argument("--catalog", type=Path, help="CSV or JSON file: image id -> path or URL")
    serve.add_argument("--omero-host", help="read images not found as OME-Zarr from this OMERO")
    serve.add_argument("--omero-port", type=int, help="OMERO port (default 4064)")
    serve.add_argument("--omero-user", help="OMERO user (default: public)")
    serve.add_argument(
        "--omero-password", help="OMERO password (IDRSERVE_OMERO__PASSWORD hides it from ps)"
    )

    cache = sub.add_parser("cache", help="inspect, purge or warm the response caches")
    cache_sub = cache.add_subparsers(dest="action", required=True)
    stats = cache_sub.add_parser("stats", help="per-tier entries and bytes (disk, Redis)")
    stats.add_argument("--config", type=Path)
    purge = cache_sub.add_parser("purge", help="invalidate every cached response of images")
    purge.add_argument("--image", type=int, action="append", required=True, metavar="ID")
    purge.add_argument("--config", type=Path)
    warm = cache_sub.add_parser("warm", help="pre-render through a running server")
    warm.add_argument("--server", default="http://127.0.0.1:8080", help="base URL of idrserve")
    warm.add_argument(
        "--image",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="thumbnails and low-resolution levels of this image",
    )
    warm.add_argument("--access-log", type=Path, help="replay rendering URLs of an access log")
    warm.add_argument(
        "--max-side",
        type=int,
        default=2048,
        help="warm every tile of levels at most this many pixels wide",
    )
    warm.add_argument("--concurrency", type=int, default=8)

    catalog = sub.add_parser("catalog", help="build or inspect a catalog index")
    catalog_sub = catalog.add_subparsers(dest="action", required=True)
    index = catalog_sub.add_parser(
        "index", help="build an index from CSV/JSON catalogs and directories (for --catalog)"
    )
    index.add_argument("sources", type=Path, nargs="+", metavar="SOURCE")
    index.add_argument("-o", "--output", type=Path, required=True, help="the index file")
    index.add_argument("--scan-depth", type=int, default=6, help="depth of directory scans")
    index.add_argument("--progress-file", type=Path, help=argparse.SUPPRESS)
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    info = catalog_sub.add_parser("info", help="check an index file and print what it holds")
    info.add_argument("index", type=Path)

    config = sub.add_parser("config", help="print the effective settings")
    config.add_argument("action", choices=["show"])
    config.add_argument("--config", type=Path)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {"server": {}, "source": {}, "cache": {}, "omero": {}}
    for flag, group, key in (
        ("host", "server", "host"),
        ("port", "server", "port"),
        ("workers", "server", "workers"),
        ("lut_dir", "source", "lut_dir"),
        ("zarr_root", "source", "zarr_root"),
        ("catalog", "source", "catalog"),
        ("omero_host", "omero", "host"),
        ("omero_port", "omero", "port"),
        ("omero_user", "omero", "user"),
        ("omero_password", "omero", "password"),
        ("redis_url", "cache", "redis_url"),
        ("cache_dir", "cache", "dir"),
        ("cache_dir_max_bytes", "cache", "dir_max_bytes"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            out[group][key] = value
    return {k: v for k, v in out.items() if v}


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works, uvloop is ~20 % faster per request
        return
    uvloop.install()


def _tune_malloc() -> None:
    """Keep tile-sized buffers on the heap instead of fresh mmap()s.

    glibc raises its mmap threshold to the largest block freed so far. A server that starts on
    256² tiles (≈ 0.4 MB buffers) then mmaps, page-faults and zeroes every 1.5 MB buffer of a
    512² tile: bench/bench_http.py measured 512² tiles at 200/s after 256² tiles against 350/s
    with the threshold fixed at 32 MiB. Fixing it (and the trim threshold) ends that history
    dependence; memory is still returned to the OS for blocks above 32 MiB.

    Two malloc arenas instead of glibc's 8 per core: every pool thread (render, cache,
    zarr) otherwise gets an arena of its own, each holding its own high-water mark of
    tile buffers, and RSS kept creeping for minutes under a soak (bench/soak.py, 60 s, one
    worker: default arenas +5 MiB over the last 40 s and still rising; 2 arenas flat from
    35 s on and 22 MiB lower). `MALLOC_ARENA_MAX` in the environment still wins.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 128 * 1024 * 1024)
        if "MALLOC_ARENA_MAX" not in os.environ:
            libc.mallopt(m_arena_max, 2)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return


def _run_one(settings: Settings, reuse_port: bool) -> None:
    from idrserve.app import create_app, reload_catalog_on_sighup
    from idrserve.http.keys import ADMISSION
    from idrserve.http.ops import AccessLog, configure_access_log, mark_draining
    from idrserve.http.server import serve

    _tune_malloc()
    _install_uvloop()
    # Worker processes are spawned: they inherit no logging configuration from the parent.
    logging.basicConfig(level=settings.log.level, format="%(asctime)s %(name)s %(message)s")
    app = create_app(settings)
    app.on_startup.append(reload_catalog_on_sighup)
    serve(
        app,
        host=settings.server.host,
        port=settings.server.port,
        reuse_port=reuse_port or None,
        cors_origin=settings.server.cors_origin,
        header_timeout_s=settings.limits.header_timeout_s,
        send_timeout_s=settings.limits.send_timeout_s,
        on_send_timeout=app[ADMISSION].note_send_timeout,
        keepalive_timeout=settings.limits.keepalive_timeout_s,
        drain_grace_s=settings.server.drain_grace_s,
        on_drain=lambda: mark_draining(app),
        shutdown_timeout=settings.server.shutdown_timeout_s,
        handler_cancellation=True,
        # One JSON line per request on `idrserve.access` (http/ops.py), or none.
        access_log=configure_access_log(settings),
        access_log_class=AccessLog,
        access_log_format=settings.log.access_log_format,
    )


def run(settings: Settings) -> None:
    """Serve in this process, or in N worker processes sharing the port."""
    n = settings.server.workers
    if n == 1:
        _run_one(settings, reuse_port=False)
        return
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_run_one, args=(settings, True), daemon=False) for _ in range(n)]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # workers re-read the catalog
    for p in procs:
        p.join()


async def _cache_command(args: argparse.Namespace) -> int:
    if args.action == "warm":
        from idrserve.warm import urls_for_images, urls_from_access_log, warm

        base = args.server.rstrip("/")
        urls: list[str] = []
        if args.access_log:
            urls += urls_from_access_log(args.access_log)
        if args.image:
            import aiohttp

            async with aiohttp.ClientSession() as session:
                urls += await urls_for_images(session, base, args.image, args.max_side)
        if not urls:
            print(
                "idrserve cache warm: nothing to warm (give --image or --access-log)",
                file=sys.stderr,
            )
            return 2
        report = await warm(base, urls, concurrency=args.concurrency)
        print(
            json.dumps(
                {
                    "urls": len(urls),
                    "failed": report.failed,
                    "seconds": round(report.seconds, 2),
                    "statuses": report.statuses,
                }
            )
        )
        return 1 if report.failed else 0

    from idrserve.cache import CachePurgeError, TieredCache

    settings = load_settings(config_file=args.config)
    cache = TieredCache(settings.cache)
    try:
        if args.action == "purge":
            if settings.cache.dir is None and not settings.cache.redis_url:
                print(
                    "idrserve cache purge: no shared tier configured (IDRSERVE_CACHE_DIR or "
                    "IDRSERVE_REDIS_URL); a process-local memory cache cannot be purged from "
                    "outside",
                    file=sys.stderr,
                )
                return 2
            status = 0
            for image_id in args.image:
                try:
                    generation = await cache.purge_image(image_id)
                except CachePurgeError as exc:
                    print(
                        f"image {image_id}: {exc} (generation {exc.generation})",
                        file=sys.stderr,
                    )
                    status = 1
                    continue
                print(f"image {image_id}: cache generation now {generation}")
            return status
        summary = {
            "tiers": list(cache.tiers),
            "disk": await cache.disk_stats(),
            "redis": await cache.redis_stats(count_keys=True),
        }
        print(json.dumps(summary, indent=2, default=str))
        return 0
    finally:
        await cache.aclose()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "catalog":
        from idrserve.catalog.cli import catalog_command

        logging.basicConfig(level="WARNING", format="%(message)s")
        return catalog_command(args)
    if args.command == "config":
        from idrserve.cache.tiered import redact_url

        settings = load_settings(config_file=args.config)
        shown = settings.model_dump(mode="json")
        if shown["cache"]["redis_url"]:
            shown["cache"]["redis_url"] = redact_url(shown["cache"]["redis_url"])
        print(json.dumps(shown, indent=2))
        return 0
    if args.command == "cache":
        return asyncio.run(_cache_command(args))
    overrides = _overrides(args)
    if args.command == "demo":
        from idrserve.demo import write_demo

        data_dir: Path = args.data_dir or default_demo_dir()
        overrides.setdefault("source", {})["zarr_root"] = str(data_dir)
        settings = load_settings(overrides, args.config)
        logging.basicConfig(level=settings.log.level, format="%(asctime)s %(name)s %(message)s")
        print(f"idrserve {__version__}: demo data in {data_dir}", flush=True)
        images = write_demo(data_dir)
        if args.write_only:
            return 0
        host = settings.server.host
        base = f"http://{'localhost' if host in ('0.0.0.0', '127.0.0.1') else host}"
        base += f":{settings.server.port}"
        print("images:", flush=True)
        for image in images:
            print(f"  {image.image_id}  {image.name}: {image.description}")
            print(f"        {base}/webgateway/imgData/{image.image_id}/")
            print(f"        {base}/webgateway/render_thumbnail/{image.image_id}/")
            print(f"        {base}/viewer/{image.image_id}")
        first = images[0].image_id
        print("try:")
        print(f"  {base}/webgateway/render_image_region/{first}/0/0/?tile=2,0,0,256,256")
        print(
            f"  {base}/webgateway/render_image_region/{first}/0/0/?tile=0,3,3"
            "&c=1|0:8000$0000FF,2|0:8000$00FF00,-3&m=c"
        )
        print(f"  {base}/webgateway/get_thumbnails/?id=1001&id=1002&id=1003")
        print(f"  {base}/iiif/3/{first}/info.json")
        print(f"  {base}/iiif/3/{first}/full/!512,512/0/default.jpg")
        print(f"  {base}/iiif/3/{first}/manifest.json")
        print(f"  {base}/deepzoom/{first}.dzi", flush=True)
        print(f"viewer: {base}/viewer/  (API docs: {base}/docs)", flush=True)
        print(f"serving on {base}/ (Ctrl-C to stop)", flush=True)
        run(settings)
        return 0
    settings = load_settings(overrides, args.config)
    logging.basicConfig(level=settings.log.level, format="%(asctime)s %(name)s %(message)s")
    if not settings.source.zarr_root and not settings.source.catalog and not settings.omero.enabled:
        print(
            "idrserve serve: give --zarr-root or --catalog (or IDRSERVE_SOURCE__ZARR_ROOT)"
            " or --omero-host",
            file=sys.stderr,
        )
        return 2
    from idrserve.catalog.startup import describe_sources

    lines, status = describe_sources(settings)
    if status:
        for line in lines:
            print(line, file=sys.stderr)
        return status
    host = settings.server.host
    base = f"http://{'localhost' if host in ('0.0.0.0', '127.0.0.1', '::') else host}"
    base += f":{settings.server.port}"
    print(f"idrserve {__version__} serving on {base}/", flush=True)
    for line in lines:
        print(line.replace("{base}", base), flush=True)
    run(settings)
    return 0
