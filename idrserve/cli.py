"""`idrserve demo | serve | config show | cache | catalog | logs`: settings from flags, then run."""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from idrserve import __version__
from idrserve.convert.cli import add_convert_parser
from idrserve.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from idrserve.demo import DemoImage

log = logging.getLogger("idrserve")


def default_demo_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "idrserve" / "demo"


class SettingFlag(NamedTuple):
    """A command-line flag that sets one setting (it wins over IDRSERVE_* and the file)."""

    flag: str
    group: str
    key: str
    help: str
    type: Callable[[str], Any] = str


# `serve`, `config show` and the `cache` commands take every one; `demo` all but the image
# sources (it serves the demo set).
SETTINGS_FLAGS = (
    SettingFlag("--host", "server", "host", "address to listen on (default 127.0.0.1; 0.0.0.0: "
                "every interface, to be reached from other machines)"),
    SettingFlag("--port", "server", "port", "port to listen on (default 8080)", int),
    SettingFlag("--workers", "server", "workers", "processes sharing the port (SO_REUSEPORT)", int),
    SettingFlag("--zarr-root", "source", "zarr_root", "directory or URL scanned for <id>.zarr"),
    SettingFlag("--catalog", "source", "catalog",
                "CSV or JSON file, or a built index: image id -> path or URL", Path),
    SettingFlag("--lut-dir", "source", "lut_dir", "directory of ImageJ .lut files", Path),
    SettingFlag("--redis-url", "cache", "redis_url",
                "shared Redis cache tier (also IDRSERVE_REDIS_URL)"),
    SettingFlag("--cache-dir", "cache", "dir", "disk cache tier (also IDRSERVE_CACHE_DIR)", Path),
    SettingFlag("--cache-dir-max-bytes", "cache", "dir_max_bytes",
                "byte budget of the disk cache tier", int),
    SettingFlag("--omero-host", "omero", "host",
                "read images not found as OME-Zarr from this OMERO"),
    SettingFlag("--omero-port", "omero", "port", "OMERO port (default 4064)", int),
    SettingFlag("--omero-user", "omero", "user", "OMERO user (default: public)"),
    SettingFlag("--omero-password", "omero", "password",
                "OMERO password (IDRSERVE_OMERO__PASSWORD hides it from ps)"),
)  # fmt: skip
SOURCE_FLAGS = frozenset(
    f.flag for f in SETTINGS_FLAGS if f.group == "omero" or f.key in ("zarr_root", "catalog")
)
# The flag behind each setting, to name it in a settings error.
OVERRIDE_NAMES: dict[tuple[str, ...], str] = {(f.group, f.key): f.flag for f in SETTINGS_FLAGS}


def _add_settings_flags(p: argparse.ArgumentParser, *, sources: bool = True) -> None:
    group = p.add_argument_group("settings (override IDRSERVE_* variables and the --config file)")
    group.add_argument("--config", type=Path, help="TOML settings file (also IDRSERVE_CONFIG)")
    for f in SETTINGS_FLAGS:
        if sources or f.flag not in SOURCE_FLAGS:
            group.add_argument(f.flag, type=f.type, help=f.help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idrserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"idrserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="write the demo data set (once) and serve it")
    _add_settings_flags(demo, sources=False)
    demo.add_argument("--data-dir", type=Path, help=f"where to write it ({default_demo_dir()})")
    demo.add_argument("--write-only", action="store_true", help="write the data and exit")

    serve = sub.add_parser("serve", help="serve OME-Zarr images")
    _add_settings_flags(serve)

    cache = sub.add_parser("cache", help="inspect, purge or warm the response caches")
    cache_sub = cache.add_subparsers(dest="action", required=True)
    stats = cache_sub.add_parser("stats", help="per-tier entries and bytes (disk, Redis)")
    _add_settings_flags(stats)
    purge = cache_sub.add_parser("purge", help="invalidate every cached response of images")
    purge.add_argument("--image", type=int, action="append", required=True, metavar="ID")
    _add_settings_flags(purge)
    warm = cache_sub.add_parser("warm", help="pre-render through a running server")
    warm.add_argument(
        "--server", help="base URL of idrserve (default: from the settings' host and port)"
    )
    warm.add_argument(
        "--image",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="thumbnails and low-resolution levels of this image",
    )
    warm.add_argument(
        "--plate",
        type=int,
        action="append",
        default=[],
        metavar="ID",
        help="an HCS plate's grids, every field's thumbnails and its montage (docs/plates.md)",
    )
    warm.add_argument("--access-log", type=Path, help="replay rendering URLs of an access log")
    warm.add_argument("--from-report", type=Path, help="hottest images of a logs report.json")
    warm.add_argument("--from-log", type=Path, nargs="+", help="the same, reading logs first")
    warm.add_argument("--top", type=int, default=20, help="images to warm (--from-report/-log)")
    warm.add_argument("--max-bytes", type=int, help="stop once this many bytes were fetched")
    warm.add_argument(
        "--max-side",
        type=int,
        default=2048,
        help="warm every tile of levels at most this many pixels wide",
    )
    warm.add_argument("--concurrency", type=int, default=8)
    _add_settings_flags(warm)

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

    add_convert_parser(sub)

    from idrserve.logs.cli import add_parser as add_logs_parser

    add_logs_parser(sub)

    config = sub.add_parser("config", help="print the effective settings")
    config.add_argument("action", choices=["show"])
    _add_settings_flags(config)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gives, as nested groups for `load_settings`."""
    out: dict[str, dict[str, Any]] = {}
    for f in SETTINGS_FLAGS:
        value = getattr(args, f.flag.removeprefix("--").replace("-", "_"), None)
        if value is not None:
            out.setdefault(f.group, {})[f.key] = value
    return out


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    """The effective settings: flags (and `extra` overrides), then environment, file, defaults."""
    overrides = _overrides(args)
    for group, values in extra.items():
        overrides.setdefault(group, {}).update(values)
    return load_settings(overrides, args.config, OVERRIDE_NAMES)


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


def _run_one(settings: Settings, reuse_port: bool, metrics_dir: str | None = None) -> None:
    from idrserve.app import create_app, freeze_heap_when_warm, reload_catalog_on_sighup
    from idrserve.http.keys import ADMISSION
    from idrserve.http.ops import AccessLog, configure_access_log, mark_draining
    from idrserve.http.reqmetrics import share_across_workers
    from idrserve.http.server import serve
    from idrserve.http.speedups import log_fallbacks

    _tune_malloc()
    _install_uvloop()
    # Worker processes are spawned: they inherit no logging configuration from the parent.
    logging.basicConfig(level=settings.log.level, format="%(asctime)s %(name)s %(message)s")
    if metrics_dir is not None:
        share_across_workers(Path(metrics_dir))  # /metrics sums every worker's requests
    app = create_app(settings)
    app.on_startup.append(reload_catalog_on_sighup)
    app.on_startup.append(freeze_heap_when_warm)
    app.on_startup.append(log_fallbacks)
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
    metrics_dir = tempfile.mkdtemp(prefix="idrserve-metrics-")
    procs = [
        ctx.Process(target=_run_one, args=(settings, True, metrics_dir), daemon=False)
        for _ in range(n)
    ]
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
    shutil.rmtree(metrics_dir, ignore_errors=True)


def _cannot_start(settings: Settings) -> str | None:
    """Why `serve`/`demo` cannot start (a port taken, a missing LUT directory), else None.

    Checked before the data is written or workers spawn, so the operator gets one line instead
    of a traceback from every worker process; the server still binds for real afterwards.
    """
    lut_dir = settings.source.lut_dir
    if lut_dir is not None and not lut_dir.is_dir():
        return f"source.lut_dir {lut_dir}: no such directory (--lut-dir, IDRSERVE_SOURCE__LUT_DIR)"
    host, port = settings.server.host, settings.server.port
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"cannot listen on {host}: {exc.strerror} (--host: an address or host name)"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
            try:
                sock.bind(address)
            except OSError as exc:
                return (
                    f"cannot listen on {host}:{port}: {exc.strerror} (another server running?"
                    " --port picks another port)"
                )
    return None


def _demo_banner(base: str, images: list[DemoImage]) -> list[str]:
    """The URLs `demo` prints, each alone after its label, to copy or click."""
    lines = ["images:"]
    for image in images:
        iid = image.image_id
        lines += [
            f"  {iid}  {image.name}: {image.description}",
            f"    viewer:     {base}/viewer/{iid}",
            f"    thumbnail:  {base}/webgateway/render_thumbnail/{iid}/",
            f"    imgData:    {base}/webgateway/imgData/{iid}/",
            f"    raw pixels: {base}/api/v1/images/{iid}",
            f"    OME-Zarr:   {base}/zarr/{iid}.zarr/",
        ]
    first = images[0].image_id
    lines += [
        "try:",
        f"  tile:       {base}/webgateway/render_image_region/{first}/0/0/?tile=2,0,0,256,256",
        f"  channels:   {base}/webgateway/render_image_region/{first}/0/0/?tile=0,3,3"
        "&c=1|0:8000$0000FF,2|0:8000$00FF00,-3&m=c",
        f"  thumbnails: {base}/webgateway/get_thumbnails/?id=1001&id=1002&id=1003",
        f"  IIIF:       {base}/iiif/3/{first}/info.json",
        f"  IIIF image: {base}/iiif/3/{first}/full/!512,512/0/default.jpg",
        f"  manifest:   {base}/iiif/3/{first}/manifest.json",
        f"  DeepZoom:   {base}/deepzoom/{first}.dzi",
        f"viewer:   {base}/viewer/",
        f"API docs: {base}/docs",
        "notebooks: docs/jupyter.md (numpy regions, zarr, dask)",
    ]
    return lines


def _demo(args: argparse.Namespace) -> int:
    from idrserve.demo import write_demo

    data_dir: Path = args.data_dir or default_demo_dir()
    settings = _settings(args, source={"zarr_root": str(data_dir)})
    logging.basicConfig(level=settings.log.level, format="%(asctime)s %(name)s %(message)s")
    problem = None if args.write_only else _cannot_start(settings)
    if problem:
        print(f"idrserve demo: {problem}", file=sys.stderr)
        return 2
    print(f"idrserve {__version__}: demo data in {data_dir}", flush=True)
    images = write_demo(data_dir)
    if args.write_only:
        return 0
    base = settings.server.local_url()
    print("\n".join(_demo_banner(base, images)), flush=True)
    print(f"serving on {base}/ (Ctrl-C to stop)", flush=True)
    run(settings)
    return 0


def _serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    logging.basicConfig(level=settings.log.level, format="%(asctime)s %(name)s %(message)s")
    if not settings.source.zarr_root and not settings.source.catalog and not settings.omero.enabled:
        print(
            "idrserve serve: give --zarr-root or --catalog (or IDRSERVE_SOURCE__ZARR_ROOT)"
            " or --omero-host",
            file=sys.stderr,
        )
        return 2
    from idrserve.catalog.startup import describe_sources

    problem = _cannot_start(settings)
    if problem:
        print(f"idrserve serve: {problem}", file=sys.stderr)
        return 2
    lines, status = describe_sources(settings)
    if status:
        for line in lines:
            print(line, file=sys.stderr)
        return status
    base = settings.server.local_url()
    print(f"idrserve {__version__} serving on {base}/", flush=True)
    for line in lines:
        print(line.replace("{base}", base), flush=True)
    run(settings)
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from idrserve.cache.tiered import redact_url

    shown = _settings(args).model_dump(mode="json")
    if shown["cache"]["redis_url"]:
        shown["cache"]["redis_url"] = redact_url(shown["cache"]["redis_url"])
    print(json.dumps(shown, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "catalog":
        from idrserve.catalog.cli import catalog_command

        logging.basicConfig(level="WARNING", format="%(message)s")
        return catalog_command(args)
    if args.command == "convert":
        from idrserve.convert.cli import convert_command

        return convert_command(args)
    if args.command == "logs":
        from idrserve.logs.cli import logs_command

        return logs_command(args)
    try:
        if args.command == "config":
            return _config_show(args)
        if args.command == "cache":
            from idrserve.cache.cli import cache_command

            return cache_command(args, _settings(args))
        if args.command == "demo":
            return _demo(args)
        return _serve(args)
    except SettingsError as exc:  # one line naming the setting: no traceback for a typo
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        print(f"idrserve {command}: {exc}", file=sys.stderr)
        return 2
