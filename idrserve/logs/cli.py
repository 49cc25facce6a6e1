"""`idrserve logs report LOG… --out DIR`: access logs in, `report.json` and `report.html` out."""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from idrserve.logs.parse import LogReader, order_logs, progress_bar

# Without --cache-bytes the replay draws a curve over these capacities (16 MB to 64 GB).
DEFAULT_CAPACITIES = tuple(16_000_000 * 4**i for i in range(7))
MULTIPLES = (0.25, 0.5, 1, 2, 4, 8)


def add_parser(sub: Any) -> None:
    """The `logs` command and its options (called by idrserve/cli.py)."""
    logs = sub.add_parser("logs", help="usage reports from access logs")
    logs_sub = logs.add_subparsers(dest="action", required=True)
    report = logs_sub.add_parser(
        "report",
        help="read idrserve JSON and nginx access logs (plain, gzip, rotated sets) and write "
        "report.json and report.html",
    )
    report.add_argument("logs", type=Path, nargs="+", metavar="LOG", help="files or directories")
    report.add_argument("--out", type=Path, required=True, help="directory for the report")
    report.add_argument("--catalog", type=Path, help="catalog (CSV/JSON or index): top studies")
    report.add_argument(
        "--cache-bytes",
        type=int,
        help="nginx's cache size: the replay then tries 1/4× to 8× of it "
        "(default: 16 MB to 64 GB in steps of 4×)",
    )
    report.add_argument("--top", type=int, default=20, help="rows in the top-N tables")
    report.add_argument(
        "--max-keys",
        type=int,
        default=200_000,
        help="URLs the cache replay keeps (bounds its memory; beyond, it samples)",
    )
    report.add_argument("--quiet", action="store_true", help="no progress bar")


def capacities(cache_bytes: int | None) -> list[int]:
    if cache_bytes is None:
        return list(DEFAULT_CAPACITIES)
    return [max(1, int(cache_bytes * m)) for m in MULTIPLES]


def run_report(
    paths: list[Path],
    *,
    cache_bytes: int | None = None,
    max_keys: int = 200_000,
    top: int = 20,
    catalog: Path | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Read the logs in one pass and return the `report.json` document."""
    if "polars" not in sys.modules:
        # polars' allocator (jemalloc) keeps freed pages for 10 s by default, and one arena
        # per thread: on a 10 M-line log that was 100 MB of the peak RSS
        os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0")
    # polars and numba load here, not with the `idrserve` command line every command builds
    from idrserve.logs.aggregate import Derive, SourceAggregate
    from idrserve.logs.columnar import BlockParser, lines_of, read_blocks
    from idrserve.logs.report import build_report

    caps = capacities(cache_bytes)
    aggregates = {
        "nginx": SourceAggregate("nginx", caps, max_keys),
        "idrserve": SourceAggregate("idrserve", [], max_keys),
    }
    files = order_logs(paths)
    total = sum(p.stat().st_size for p in files if p.is_file())
    update, close = progress_bar(total, quiet or not sys.stderr.isatty())
    reader = LogReader()
    parser = BlockParser(reader)

    derive = Derive()

    def parse(block: bytes) -> dict[str, Any]:
        frames = parser.parse(lines_of(block))
        return {source: derive(frame, source) for source, frame in frames.items()}

    def add(parsed: Future[dict[str, Any]], done: int) -> None:
        for source, frame in parsed.result().items():
            aggregates[source].add_frame(frame)
        update(done)

    # One block is parsed (polars, mostly without the GIL) while the one before is summed.
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="idrserve-logs-parse") as pool:
            ahead: tuple[Future[dict[str, Any]], int] | None = None
            for block, done in read_blocks(files, reader.stats):
                parsing = pool.submit(parse, block)
                if ahead is not None:
                    add(*ahead)
                ahead = (parsing, done)
            if ahead is not None:
                add(*ahead)
    finally:
        close()
    return build_report(aggregates, reader.stats, top=top, catalog=catalog)


def logs_command(args: argparse.Namespace) -> int:
    missing = [str(p) for p in args.logs if not p.exists()]
    if missing:
        print(f"idrserve logs report: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.catalog is not None and not args.catalog.is_file():
        print(f"idrserve logs report: --catalog {args.catalog}: no such file", file=sys.stderr)
        return 2
    from idrserve.logs.render_html import human_bytes, render

    report = run_report(
        args.logs,
        cache_bytes=args.cache_bytes,
        max_keys=args.max_keys,
        top=args.top,
        catalog=args.catalog,
        quiet=args.quiet,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "report.html").write_text(render(report))
    inp = report["input"]
    if report["empty"]:
        summary = f"no requests in {inp['lines']} lines"
    else:
        main = report["sources"][report["primary"]]
        summary = (
            f"{main['requests']} requests ({report['primary']}), "
            f"{human_bytes(main['bytes'])}, {main['errors']} errors"
        )
    skipped = sum(inp["skipped"].values())
    print(f"{summary}; {skipped} lines skipped; wrote {args.out}/report.html and report.json")
    for warning in inp["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0
