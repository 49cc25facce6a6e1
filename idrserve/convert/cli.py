"""`idrserve convert INPUT OUTPUT.zarr`: its arguments, progress bar and one-line errors.

The parser needs only the standard library, so `idrserve --help` stays fast; tifffile and
zarr are imported when a conversion starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from idrserve.convert.options import (
    AUTO_MIN_SIDE,
    COMPRESSORS,
    DEFAULT_SHARD_CHUNKS,
    ConvertError,
    Options,
    OptionsError,
)


def _levels(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("auto or a number of levels") from None


def add_convert_parser(sub: Any) -> None:
    """The `convert` subcommand, on the `idrserve` command's subparsers."""
    p = sub.add_parser(
        "convert",
        help="write OME-Zarr from a TIFF (OME-TIFF, SVS, NDPI, …) or re-chunk an OME-Zarr",
        description="Convert a TIFF-family file or an OME-Zarr image to OME-Zarr, streaming"
        " with bounded memory into a hidden directory that is renamed into place when the"
        " result reads back through idrserve (docs/convert.md).",
    )
    p.add_argument("input", type=Path, metavar="INPUT", help="TIFF file or OME-Zarr directory")
    p.add_argument("output", type=Path, metavar="OUTPUT.zarr")
    p.add_argument(
        "--ngff",
        choices=("0.4", "0.5"),
        default="0.4",
        help="0.4: Zarr v2, '/' chunk keys (IDR's; default); 0.5: Zarr v3",
    )
    p.add_argument("--chunks", type=int, default=256, help="chunk side in y and x (default 256)")
    p.add_argument(
        "--shard",
        type=int,
        nargs="?",
        const=0,
        metavar="SIDE",
        help=f"0.5 only: shards of SIDE pixels (default {DEFAULT_SHARD_CHUNKS} chunks)",
    )
    p.add_argument("--compressor", choices=COMPRESSORS, default="blosc-lz4")
    p.add_argument("--level", type=int, help="compression level (default: blosc 5, zstd 3)")
    p.add_argument(
        "--levels",
        type=_levels,
        default=None,
        metavar="auto|N",
        help=f"pyramid levels (auto: until the longest side is ≤ {AUTO_MIN_SIDE})",
    )
    p.add_argument("--series", type=int, default=0, help="which series of the file (default 0)")
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 2),
        help="threads decoding and encoding (default: CPUs, at most 4)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted conversion to the same OUTPUT",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT")
    p.add_argument(
        "--catalog-out",
        type=Path,
        metavar="CSV",
        help="append an `id,path` row for the catalog (--catalog)",
    )
    p.add_argument(
        "--id",
        type=int,
        dest="image_id",
        help="image id of that row (default: from OUTPUT named <id>.zarr)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--crash-after-bands", type=int, help=argparse.SUPPRESS)  # tests


class _Bar:
    """tqdm over the input's level-0 bytes: throughput and ETA, only on a terminal."""

    def __init__(self, quiet: bool) -> None:
        self._quiet = quiet
        self._bar: Any = None

    def start(self, total: int, done: int) -> None:
        from tqdm import tqdm

        self._bar = tqdm(
            total=total,
            initial=done,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="converting",
            disable=True if self._quiet else None,  # None: only on a terminal
            file=sys.stderr,
        )

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.update(nbytes)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def convert_command(args: argparse.Namespace) -> int:
    from idrserve.catalog.cli import peak_rss_mb
    from idrserve.convert.run import convert, partial_path

    logging.basicConfig(level="WARNING", format="idrserve convert: %(message)s")
    # tifffile logs what it skips (a missing file of a set, a bad tag) before the checks
    # here report the consequence in one line.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    shard = args.shard
    if shard == 0:
        shard = DEFAULT_SHARD_CHUNKS * args.chunks
    options = Options(
        input=args.input,
        output=args.output,
        ngff=args.ngff,
        chunks=args.chunks,
        shard=shard,
        compressor=args.compressor,
        level=args.level,
        levels=args.levels,
        series=args.series,
        workers=args.workers,
        resume=args.resume,
        overwrite=args.overwrite,
        image_id=args.image_id,
        catalog_out=args.catalog_out,
    )
    bar = _Bar(args.quiet)
    kept = f"the partial output {partial_path(args.output)} is kept: --resume continues it"
    try:
        report = convert(options, bar, crash_after=args.crash_after_bands)
    except OptionsError as exc:
        bar.close()
        print(f"idrserve convert: {exc}", file=sys.stderr)
        return 2
    except ConvertError as exc:
        bar.close()
        print(f"idrserve convert: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bar.close()
        print(f"idrserve convert: interrupted; {kept}", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a permission: worth resuming once fixed
        bar.close()
        what = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
        print(f"idrserve convert: {what}; {kept}", file=sys.stderr)
        return 1
    bar.close()
    if not args.quiet:
        print(json.dumps(report.summary() | {"peak_rss_mb": peak_rss_mb()}))
    return 0
