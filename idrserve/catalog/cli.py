"""`idrserve catalog index | info`: build an index from catalogs, or check one."""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from idrserve.catalog.build import CatalogSourceError, build_index, dump_json_progress
from idrserve.catalog.index import CatalogFormatError, open_index, write_index


def _index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    sources: list[Path] = args.sources
    missing = [str(p) for p in sources if not p.exists()]
    if missing:
        print(
            f"idrserve catalog index: no such file or directory: {', '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    total = sum(p.stat().st_size for p in sources if p.is_file())
    bar = tqdm(
        total=total or None,
        unit="B",
        unit_scale=True,
        desc="indexing",
        disable=True if args.quiet else None,  # None: only on a terminal
        file=sys.stderr,
    )
    last = [0.0]
    progress_file: Path | None = args.progress_file

    def progress(rows: int, done: int, all_bytes: int) -> None:
        bar.n = done
        bar.set_postfix(rows=rows, refresh=False)
        bar.update(0)
        now = time.monotonic()
        if progress_file is not None and now - last[0] >= 0.2:
            last[0] = now
            dump_json_progress(
                progress_file, {"rows": rows, "bytes": done, "total_bytes": all_bytes}
            )

    try:
        index, report = build_index(sources, max_scan_depth=args.scan_depth, progress=progress)
        write_index(index, args.output)
    except (CatalogSourceError, OSError) as exc:
        bar.close()
        print(f"idrserve catalog index: {exc}", file=sys.stderr)
        return 1
    finally:
        if progress_file is not None:
            progress_file.unlink(missing_ok=True)
    bar.close()
    summary: dict[str, Any] = report.summary()
    summary["output"] = str(args.output)
    summary["bytes"] = args.output.stat().st_size
    summary["peak_rss_mb"] = peak_rss_mb()
    if not args.quiet:
        print(json.dumps(summary))
    return 0


def peak_rss_mb() -> float:
    """This process's peak RSS since it started (VmHWM; `ru_maxrss` would include the RSS of
    the process it was forked from, which Linux carries across exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _info(args: argparse.Namespace) -> int:
    try:
        index = open_index(args.index)
    except CatalogFormatError as exc:
        print(f"idrserve catalog info: {args.index}: {exc}", file=sys.stderr)
        return 1
    doc = dict(index.meta)
    doc["images"] = len(index)
    if len(index):
        doc["first_id"], doc["last_id"] = int(index.ids[0]), int(index.ids[-1])
    print(json.dumps(doc, indent=2))
    return 0


def catalog_command(args: argparse.Namespace) -> int:
    return _index(args) if args.action == "index" else _info(args)
