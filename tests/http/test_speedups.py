"""The HTTP stack's compiled parts are in use, and a pure-Python fallback is reported."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

from idrserve.http.speedups import python_fallbacks, startup_warnings

NO_EXTENSIONS = {
    "AIOHTTP_NO_EXTENSIONS": "1",
    "MULTIDICT_NO_EXTENSIONS": "1",
    "YARL_NO_EXTENSIONS": "1",
    "PROPCACHE_NO_EXTENSIONS": "1",
}


def test_everything_is_compiled_here() -> None:
    """What the test command installs must be the fast build (a wheel without its C extension
    would pass every other test while serving slower)."""
    assert python_fallbacks() == []
    assert startup_warnings() == []


def test_each_fallback_is_named() -> None:
    code = (
        "import json; from idrserve.http.speedups import python_fallbacks as f; "
        "print(json.dumps(f()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **NO_EXTENSIONS},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == [
        "aiohttp's HTTP parser",
        "aiohttp's header writer",
        "multidict",
        "yarl's URL quoting",
        "propcache",
    ]


def test_serve_warns_at_start(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "data").mkdir()
    with open(tmp_path / "err.log", "wb") as err:
        _serve_and_check(tmp_path, port, err)


def _serve_and_check(tmp_path: Path, port: int, err: IO[bytes]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "idrserve", "serve", "--zarr-root", str(tmp_path / "data"),
         "--port", str(port)],
        env={**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=err,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "err.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        log = (tmp_path / "err.log").read_text()
        assert "aiohttp's HTTP parser runs as pure Python" in log, log
        assert "multidict runs as pure Python" not in log  # only what really fell back
    finally:
        proc.terminate()
        proc.wait(10)
