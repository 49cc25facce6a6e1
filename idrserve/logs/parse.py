"""Read idrserve's JSON access log and nginx's combined log, one line at a time.

Each line is recognised on its own (a `{` starts idrserve's JSON, anything else is tried as
nginx's combined format), so one file may mix both. Lines that cannot be read are counted by
kind and skipped. The bulk of a log is read by columns (idrserve/logs/columnar.py); every
line that reader does not take in its fast path comes here, so this is where the rules for
odd lines live, and each request read is handed to a sink.

nginx's format is the shipped one (deploy/nginx/idrserve.conf, `idrserve_combined`): the
combined format followed by `rt=$request_time cache=$upstream_cache_status
xcache=$upstream_http_x_cache`; plain combined lines are read too (no timing, no cache).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

# Everything after the user agent's closing quote is the tail (`rt=… cache=… xcache=…`).
# nginx writes a `"` inside a value as \x22, so quoted fields hold no quote.
_COMBINED = re.compile(
    r'^(\S+) \S+ \S+ \[([^\]]+)\] "([^"]*)" (\d{3}) (\d+|-) "[^"]*" "([^"]*)"(.*)$'
)
_COMBINED_START = re.compile(r"^\S+ \S+ \S+ \[")
JSON_FIELDS = frozenset(
    {
        "ts", "request_id", "method", "route", "status", "bytes", "duration_ms", "cache",
        "client", "source_ms", "render_ms", "encode_ms", "cache_ms",
    }
)  # fmt: skip
MAX_UNKNOWN_FIELDS = 20
_ROTATED = re.compile(r"^(.*?)(?:\.(\d+))?(\.gz)?$")


# What a request line becomes: ts, source ("nginx" or "idrserve"), method, target (path or
# route template), status, body bytes, seconds taken (-1: not logged), nginx cache status,
# idrserve cache tier, user agent (the last three "" when the log has none).
Sink = Callable[[float, str, str, str, int, int, float, str, str, str], None]


@dataclass(slots=True)
class ParseStats:
    """What was read, and what was skipped and why (shown in the report)."""

    files: list[str] = field(default_factory=list)
    lines: int = 0
    requests: int = 0
    json_lines: int = 0
    nginx_lines: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    unknown_fields: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def order_logs(paths: Iterable[Path]) -> list[Path]:
    """Files in the order they were written: directories expanded, and a rotated set
    (`access.log.3.gz`, `access.log.2.gz`, `access.log.1`, `access.log`) oldest first."""
    files: list[Path] = []
    for path in paths:
        files += sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]

    def rank(p: Path) -> tuple[str, int]:
        m = _ROTATED.match(p.name)
        assert m is not None  # the pattern matches any name
        return (str(p.parent / m.group(1)), -int(m.group(2) or 0))

    return sorted(dict.fromkeys(files), key=rank)


class _TimeParser:
    """nginx's `$time_local` (`04/Dec/2026:18:43:49 +0000`) to Unix time: strptime once per
    day and zone, then the time of day by arithmetic (strptime per second was 7 % of a run)."""

    __slots__ = ("_day", "_midnight")

    def __init__(self) -> None:
        self._day = ""
        self._midnight = 0.0

    def __call__(self, text: str) -> float:
        try:
            return self._parse(text)
        except ValueError:
            raise ValueError(f"not an nginx time: {text!r}") from None

    def _parse(self, text: str) -> float:
        day = text[:11] + text[20:]
        if day != self._day:
            self._midnight = datetime.strptime(
                text[:12] + "00:00:00" + text[20:], "%d/%b/%Y:%H:%M:%S %z"
            ).timestamp()
            self._day = day
        if len(text) != 26 or text[14] != ":" or text[17] != ":":
            raise ValueError
        return self._midnight + int(text[12:14]) * 3600 + int(text[15:17]) * 60 + int(text[18:20])


def _ignore(*_request: Any) -> None:
    pass


class LogReader:
    """Feeds each request line to the sink of its log kind, counting in `stats` what was read
    and what was skipped."""

    def __init__(self, nginx: Sink = _ignore, idrserve: Sink = _ignore) -> None:
        self.nginx = nginx
        self.idrserve = idrserve
        self.stats = ParseStats()
        self._time = _TimeParser()

    def line(self, line: str) -> None:
        """One line of either format."""
        stats = self.stats
        stats.lines += 1
        if not line.strip():
            stats.skip("blank")
            return
        if line[0] == "{":
            self._json(line)
        else:
            self._nginx(line)

    def _json(self, line: str) -> None:
        stats = self.stats
        try:
            doc: Any = json.loads(line)
        except ValueError:
            stats.skip("truncated" if not line.rstrip().endswith("}") else "not_json")
            return
        try:
            ts = float(doc["ts"])
            if not math.isfinite(ts):
                raise ValueError(ts)
            status = int(doc["status"])
            size = int(doc.get("bytes") or 0)
            duration = float(doc.get("duration_ms", -1000.0)) / 1000.0
            route = str(doc.get("route") or "-")
            method = str(doc.get("method") or "-")
            tier = str(doc.get("cache") or "-")
        except (KeyError, TypeError, ValueError, AttributeError):
            stats.skip("missing_fields")
            return
        if len(stats.unknown_fields) < MAX_UNKNOWN_FIELDS and not JSON_FIELDS.issuperset(doc):
            stats.unknown_fields.update(k for k in doc if k not in JSON_FIELDS and len(k) <= 64)
        stats.json_lines += 1
        stats.requests += 1
        self.idrserve(ts, "idrserve", method, route, status, size, duration, "", tier, "")

    def _nginx(self, line: str) -> None:
        stats = self.stats
        m = _COMBINED.match(line)
        if m is None:
            # the start of a combined line that stops short, or something else altogether
            stats.skip("truncated" if _COMBINED_START.match(line) else "not_a_log_line")
            return
        _addr, when, request, status, size, agent, tail = m.groups()
        try:
            ts = self._time(when)
        except ValueError:
            stats.skip("bad_time")
            return
        parts = request.split(" ")
        method, target = (parts[0], parts[1]) if len(parts) == 3 else ("-", "-")
        duration, edge, tier = -1.0, "", ""
        if tail:
            for token in tail.split():
                key, _, value = token.partition("=")
                if key == "rt":
                    with contextlib.suppress(ValueError):
                        duration = float(value)
                elif key == "cache":
                    edge = value if value != "-" else ""
                elif key == "xcache":
                    tier = value if value != "-" else ""
        stats.nginx_lines += 1
        stats.requests += 1
        nbytes = 0 if size == "-" else int(size)
        self.nginx(ts, "nginx", method, target, int(status), nbytes, duration, edge, tier, agent)


def progress_bar(total: int, quiet: bool) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A tqdm bar over the bytes to read (stderr, only on a terminal unless asked)."""
    if quiet:
        return (lambda _done: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(
        total=total, unit="B", unit_scale=True, desc="reading logs", file=sys.stderr, leave=False
    )

    def update(done: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close
