"""The logs, read in blocks of lines turned into columns (polars), for `idrserve logs report`.

Reading line by line in Python topped out near 55 000 lines/s (bench/results/), a quarter of
what a day of IDR's logs needs. Here a block of a few hundred thousand lines is split into
columns and every line of the shapes idrserve and the deploy nginx write is read by column
operations: a strict pattern picks those lines, then fixed splits take their fields. Any
other line (truncated, escaped quotes, other field orders, unusual characters, times that
do not parse) is handed to the line-by-line reader (`LogReader.line`), so every line is read
exactly as that reader reads it and skipped lines are counted the same way.

Blocks come from a second thread, which also inflates gzip (zlib works without the GIL), so
reading and decompression overlap the column work. A gzip stream is inflated piece by piece,
so one that ends early or turns corrupt is read up to the break.
"""

from __future__ import annotations

import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from idrserve.logs.parse import LogReader, ParseStats

BLOCK_BYTES = 4 << 20
_READ = 1 << 20
FRAME_SCHEMA: dict[str, Any] = {
    "pos": pl.Int64,  # the line's place in its block: fallback lines are put back in order
    "ts": pl.Float64,
    "method": pl.String,
    "target": pl.String,
    "status": pl.Int64,
    "size": pl.Int64,
    "duration": pl.Float64,  # seconds; -1 when not logged
    "edge": pl.String,  # nginx's cache status, "" when none
    "tier": pl.String,  # idrserve's X-Cache tier
    "agent": pl.String,
}
_STR = r'"[^"\\]*"'
_NUM = r"[0-9]{1,15}(?:\.[0-9]{1,9})?"
# idrserve's own JSON line (idrserve/http/ops.py AccessLog): these keys in this order, strings
# without escapes, then the optional stage timings; `json.dumps`'s spaces are allowed.
_JSON_FAST = (
    r"^\{"
    + r", ?".join(
        f'"{key}": ?{value}'
        for key, value in (
            ("ts", _NUM),
            ("request_id", _STR),
            ("method", _STR),
            ("route", _STR),
            ("status", "[0-9]{3}"),
            ("bytes", "[0-9]{1,18}"),
            ("duration_ms", _NUM),
            ("cache", _STR),
            ("client", _STR),
        )
    )
    + rf'(?:, ?"(?:source_ms|render_ms|encode_ms|cache_ms)": ?{_NUM})*\}}$'
)
# Field places after splitting such a line at its quotes.
_JSON_AT = {"ts": 2, "method": 9, "route": 13, "status": 16, "bytes": 18, "duration_ms": 20}
_JSON_AT_CACHE = 23
# nginx's combined line (parse.py's pattern) with ASCII-only leading words, a time of exactly
# nginx's form, and the deploy format's tail or none; checked piece by piece once the line
# is split at its quotes (the quoted fields hold no quote: nginx writes it as \x22), which
# scans a third of what one pattern over the whole line did.
_NGINX_PIECES = {
    "field_0": r"^[!#-~]+ [!#-~]+ [!#-~]+ \[[0-9]{2}/[A-Za-z]{3}/[0-9]{4}:[0-9]{2}:[0-9]{2}:"
    r"[0-9]{2} [+-][0-9]{4}\] $",
    "field_2": r"^ [0-9]{3} (?:[0-9]{1,18}|-) $",
    "field_6": r"^(?: rt=[0-9]{1,9}(?:\.[0-9]{1,9})? cache=[!-~]+ xcache=[!-~]+)?$",
}


def read_blocks(
    paths: list[Path], stats: ParseStats, block_bytes: int | None = None
) -> Iterator[tuple[bytes, int]]:
    """(whole lines, bytes of the files read so far), from a reader thread."""
    block_bytes = block_bytes or BLOCK_BYTES
    out: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work() -> None:
        try:
            done = 0
            for path in paths:
                stats.files.append(str(path))
                at = 0
                try:
                    for block, at in _file_blocks(path, stats, block_bytes):
                        while not stop.is_set():
                            try:
                                out.put((block, done + at), timeout=0.5)
                                break
                            except queue.Full:
                                continue
                        if stop.is_set():
                            return
                except OSError as exc:
                    stats.warnings.append(f"{path}: {exc.strerror or exc}")
                done += at
            out.put(None)
        except BaseException as exc:  # handed to the consumer, raised there
            out.put(exc)

    thread = threading.Thread(target=work, name="idrserve-logs-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _file_blocks(path: Path, stats: ParseStats, block_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole lines of one file (plain or gzip) and the file bytes read so far."""
    with path.open("rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        pending = bytearray()
        inflate: Any = zlib.decompressobj(31) if gz else None
        fed = False
        try:
            while True:
                # compressed, a read holds ~8× its size of lines: keep blocks near their size
                chunk = raw.read(_READ // 8 if gz else _READ)
                if not chunk:
                    break
                if inflate is None:
                    pending += chunk
                else:
                    # a gzip file may be several members one after the other
                    while chunk:
                        if inflate.eof:
                            inflate = zlib.decompressobj(31)
                        pending += inflate.decompress(chunk)
                        fed = True
                        chunk = inflate.unused_data if inflate.eof else b""
                if len(pending) >= block_bytes:
                    cut = pending.rfind(b"\n") + 1
                    if cut:
                        yield bytes(pending[:cut]), raw.tell()
                        del pending[:cut]
            if inflate is not None and fed and not inflate.eof:
                raise EOFError("the stream stops before its end marker")
        except (EOFError, zlib.error) as exc:
            stats.warnings.append(
                f"{path}: compressed data ends early or is corrupt ({exc}); read up to that point"
            )
        if pending:
            yield bytes(pending), raw.tell()


def lines_of(block: bytes) -> pl.Series:
    """The lines of a block as a string column (undecodable bytes become U+FFFD). Split by
    Python: `pl.read_lines` was faster but kept 2.5× the memory."""
    text = block.decode("utf-8", "replace")
    if text.endswith("\n"):
        text = text[:-1]
    return pl.Series("line", text.split("\n"))


class BlockParser:
    """Turns a block of lines into request frames (nginx's, idrserve's), counting in
    `reader.stats` what it read and skipped."""

    def __init__(self, reader: LogReader) -> None:
        self.reader = reader
        self._midnights: dict[str, float | None] = {}
        self._rows: dict[str, list[tuple[Any, ...]]] = {"nginx": [], "idrserve": []}
        self._pos = 0
        reader.nginx = self._sink("nginx")
        reader.idrserve = self._sink("idrserve")

    def _sink(self, source: str) -> Callable[..., None]:
        rows = self._rows[source]

        def add(ts: float, _source: str, method: str, target: str, status: int, size: int,
                duration: float, edge: str, tier: str, agent: str) -> None:  # fmt: skip
            rows.append((self._pos, ts, method, target, status, size, duration, edge, tier, agent))

        return add

    def parse(self, lines: pl.Series) -> dict[str, pl.DataFrame]:
        stats = self.reader.stats
        frame = pl.DataFrame({"line": lines}).with_row_index("pos")
        frame = frame.with_columns(pl.col("pos").cast(pl.Int64))
        is_json = frame["line"].str.starts_with("{")
        json_lines, other = frame.filter(is_json), frame.filter(~is_json)
        fast = json_lines["line"].str.contains(_JSON_FAST)
        fast_json = json_lines.filter(fast)
        slow = [json_lines.filter(~fast)]
        fast_nginx, rejected = self._nginx(other)
        slow.append(rejected)
        stats.json_lines += fast_json.height
        stats.nginx_lines += fast_nginx.height
        stats.requests += fast_json.height + fast_nginx.height
        stats.lines += fast_json.height + fast_nginx.height  # the others: in `line`
        for pos, line in pl.concat(slow).sort("pos").iter_rows():
            self._pos = pos
            self.reader.line(line)
        out = {"nginx": fast_nginx, "idrserve": self._json(fast_json)}
        for source, rows in self._rows.items():
            if rows:
                late = pl.DataFrame(rows, schema=FRAME_SCHEMA, orient="row")
                out[source] = pl.concat([out[source], late]).sort("pos")
                rows.clear()
        return out

    @staticmethod
    def _json(lines: pl.DataFrame) -> pl.DataFrame:
        parts = lines.select("pos", pl.col("line").str.splitn('"', 25).alias("p")).unnest("p")

        def number(name: str, dtype: Any) -> pl.Expr:
            return pl.col(f"field_{_JSON_AT[name]}").str.strip_chars(": ,").cast(dtype)

        def text(i: int) -> pl.Expr:
            value = pl.col(f"field_{i}")
            return pl.when(value == "").then(pl.lit("-")).otherwise(value)

        return parts.select(
            "pos",
            ts=number("ts", pl.Float64),
            method=text(_JSON_AT["method"]),
            target=text(_JSON_AT["route"]),
            status=number("status", pl.Int64),
            size=number("bytes", pl.Int64),
            duration=number("duration_ms", pl.Float64) / 1000.0,
            edge=pl.lit(""),
            tier=text(_JSON_AT_CACHE),
            agent=pl.lit(""),
        )

    def _nginx(self, lines: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """The requests of the lines of nginx's shape, and the other lines."""
        parts = lines.select("pos", "line", pl.col("line").str.splitn('"', 7).alias("p")).unnest(
            "p"
        )
        shaped = pl.col("field_4") == " "
        for name, pattern in _NGINX_PIECES.items():
            shaped &= pl.col(name).str.contains(pattern)
        shaped_mask = parts.select(shaped.fill_null(False)).to_series()
        other = parts.filter(~shaped_mask).select("pos", "line")
        parts = parts.filter(shaped_mask).select(
            "pos",
            "line",
            request="field_1",
            counts="field_2",
            agent="field_5",
            tail="field_6",
            when=pl.col("field_0").str.slice(-28, 26),
        )
        day = pl.col("when").str.slice(0, 11) + pl.col("when").str.slice(20)
        parts = parts.with_columns(day=day)
        for key in parts["day"].unique().to_list():
            if key not in self._midnights:
                self._midnights[key] = _midnight(key)
        parts = parts.with_columns(
            midnight=pl.col("day").replace_strict(
                self._midnights, default=None, return_dtype=pl.Float64
            )
        )
        other = pl.concat([other, parts.filter(pl.col("midnight").is_null()).select("pos", "line")])
        parts = (
            parts.filter(pl.col("midnight").is_not_null())
            .select(
                "pos",
                "when",
                "midnight",
                "counts",
                "agent",
                three=pl.col("request").str.count_matches(" ", literal=True) == 2,
                timed=pl.col("tail") != "",
                words=pl.col("request")
                .str.split_exact(" ", 2)
                .struct.rename_fields(["method", "target", "protocol"]),
                fields=pl.col("tail")
                .str.split_exact(" ", 3)
                .struct.rename_fields(["lead", "rt", "cache", "xcache"]),
            )
            .unnest("words", "fields")
        )
        size = pl.col("counts").str.slice(5).str.strip_chars(" ")
        timed = pl.col("timed")

        def cache(name: str, prefix: int) -> pl.Expr:
            value = pl.col(name).str.slice(prefix)
            return pl.when(timed & (value != "-")).then(value).otherwise(pl.lit(""))

        def clock(start: int) -> pl.Expr:
            return pl.col("when").str.slice(start, 2).cast(pl.Int64)

        frame = parts.select(
            "pos",
            ts=pl.col("midnight") + clock(12) * 3600 + clock(15) * 60 + clock(18),
            method=pl.when("three").then("method").otherwise(pl.lit("-")),
            target=pl.when("three").then("target").otherwise(pl.lit("-")),
            status=pl.col("counts").str.slice(1, 3).cast(pl.Int64),
            size=pl.when(size == "-").then(pl.lit("0")).otherwise(size).cast(pl.Int64),
            duration=pl.when(timed)
            .then(pl.col("rt").str.slice(3).cast(pl.Float64, strict=False))
            .otherwise(-1.0),
            edge=cache("cache", 6),
            tier=cache("xcache", 7),
            agent="agent",
        )
        return frame, other


def _midnight(day: str) -> float | None:
    """Unix time of a day's midnight from `04/Dec/2026 +0000` (as parse.py's time parser)."""
    try:
        return datetime.strptime(
            day[:11] + ":00:00:00" + day[11:], "%d/%b/%Y:%H:%M:%S %z"
        ).timestamp()
    except ValueError:
        return None
