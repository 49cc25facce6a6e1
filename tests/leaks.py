"""What must never appear in a public error body, and the check behind the suite-wide audit.

A JSON error body (`{"error", "detail", "param", "request_id"}`) may name the parameter, the
image and the kind of fault. It must not carry a filesystem path of the server (the test run's
temporary directories, the user's home or cache, the checkout, site-packages), a store URL
with a password in it, a traceback, or Python exception text (`KeyError('shape')`,
`FileNotFoundError: …`). `tests/conftest.py` runs `LeakChecker.leaks` on every error body an
in-process app builds during the run; `tests/unit/test_leak_audit.py` proves it catches each
kind of leak.

Text the client sent itself (a URL path such as `/webgateway/…` or `/etc/passwd` in a
traversal test, a header value) is no leak when the body echoes it: `echo` holds it.
"""

from __future__ import annotations

import os
import re
import sysconfig
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote

# Python's own words: exception text and reprs.
_PYTHON = [
    ("traceback", re.compile(r"Traceback \(most recent call last\)|\bTraceback\b")),
    (
        "exception class",
        re.compile(r"\b[A-Z][A-Za-z0-9_]*(?:Error|Exception|Exit|Interrupt|Warning)\b(?=\s*[:(])"),
    ),
    ("errno", re.compile(r"\[Errno -?\d+\]")),
    ("object repr", re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")),
]
# Store URLs: any password in one, and schemes only the server's side uses.
_URLS = [
    (
        "URL with credentials",
        re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:(?!\*\*\*@)[^/\s@]+@"),
    ),
    ("store URL", re.compile(r"\b(?:file|s3|gs|az|abfs)://")),
]


def _path_pattern(path: str) -> re.Pattern[str]:
    # `/root` must not match `/rootless`: the next character may not continue a name.
    return re.compile(re.escape(path.rstrip("/")) + r"(?![\w.-])")


def server_paths(basetemp: Path | None = None) -> list[str]:
    """Directories whose names must not reach a client: the test run's temporary dirs, the
    user's home and cache, the checkout, and where Python and packages live."""
    home = Path.home()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    candidates = [home, cache, Path(__file__).resolve().parents[1], Path(tempfile.gettempdir())]
    candidates += [Path(p) for k, p in sysconfig.get_paths().items() if k.endswith("lib")]
    if basetemp is not None:
        candidates += [basetemp, basetemp.resolve()]
    texts = {str(path).rstrip("/") for path in candidates}
    # `/tmp` has its own pattern ("/tmp/"); `/` would match everything.
    return sorted(texts - {"", "/tmp"}, key=len, reverse=True)


class LeakChecker:
    """Finds internals in error bodies (see the module docstring)."""

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self.patterns: list[tuple[str, re.Pattern[str]]] = [
            *_PYTHON,
            *_URLS,
            ("temporary directory", re.compile(r"/tmp/")),
            *((f"server path {p}", _path_pattern(p)) for p in paths),
        ]

    def leaks(self, body: Mapping[str, object], echo: str = "") -> list[str]:
        """Why `body` leaks (empty if it does not); text found in `echo` is the client's."""
        text = "\n".join(str(v) for v in body.values())
        found: list[str] = []
        for name, pattern in self.patterns:
            for match in pattern.finditer(text):
                if match.group(0) not in echo:
                    found.append(f"{name}: {match.group(0)!r}")
                    break
        return found


def request_echo(raw_path: str, headers: Iterable[str] = ()) -> str:
    """What a client sent, as an error detail might quote it: the URL raw and decoded (once
    and twice, for double-encoded input), and header values."""
    once = unquote(raw_path)
    return "\n".join([raw_path, once, unquote(once), unquote(raw_path.replace("+", " ")), *headers])
