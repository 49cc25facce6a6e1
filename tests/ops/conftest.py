"""Real processes for the operability and chaos tests: the server, a storage server, Redis.

* `Server`: `python -m idrserve serve` in a subprocess on a free port, settings through
  `IDRSERVE_*` variables, its stdout (the access log) kept in a file.
* `StorageServer`: the demo OME-Zarr images served over HTTP by a subprocess
  (`storage_server.py`) that can be told, while it runs, to answer slowly or to fail for
  some images: storage faults injected at the network boundary, as a real object store
  would produce them.
* `redis_server` comes from tests/cache/conftest.py (a real redis-server).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idrserve.demo import write_demo
from tests.cache.conftest import RedisServer, redis_server  # noqa: F401  (fixture re-export)

HERE = Path(__file__).resolve().parent
TILE = "/webgateway/render_image_region/1001/0/0/?tile={level},{col},{row},256,256"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a GET (urllib, no session state)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ops-demo")
    write_demo(root)
    return root


class Server:
    """One idrserve process; `env` entries are IDRSERVE_* settings."""

    def __init__(self, zarr_root: str, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"server-{self.port}.log"
        self.stderr = workdir / f"server-{self.port}.err"
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "IDRSERVE_SOURCE__ZARR_ROOT": zarr_root,
            "IDRSERVE_SERVER__PORT": str(self.port),
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60) -> Server:
        with open(self.log, "wb") as out, open(self.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "idrserve", "serve"],
                stdout=out,
                stderr=err,
                env=self.env,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.stderr.read_text()[-3000:]}")
            try:
                if get(self.base + "/healthz", timeout=2)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def readyz(self) -> dict[str, Any]:
        status, _, body = get(self.base + "/readyz")
        doc: dict[str, Any] = json.loads(body)
        doc["http_status"] = status
        return doc

    def access_lines(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]  # not the banner

    def rss_bytes(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def terminate(self, timeout_s: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Any]:
    servers: list[Server] = []

    def factory(zarr_root: str | Path, start: bool = True, **env: str) -> Server:
        server = Server(str(zarr_root), tmp_path, env)
        servers.append(server)
        return server.start() if start else server

    yield factory
    for server in servers:
        server.stop()


class StorageServer:
    """The demo images over HTTP, with faults switched on and off through `/_control`."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "storage_server.py"), str(root), str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.control()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("storage server did not start")

    def control(self, **state: Any) -> dict[str, Any]:
        """Set `delay_s` (every data request), `fail` (image ids answered with 500)."""
        req = urllib.request.Request(
            self.url + "/_control", data=json.dumps(state).encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            out: dict[str, Any] = json.loads(resp.read())
            return out

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def storage(demo_data: Path) -> Iterator[StorageServer]:
    server = StorageServer(demo_data)
    try:
        yield server
    finally:
        server.close()


def tile_urls(base: str, n: int, level: int = 0, per_row: int = 16) -> list[str]:
    """`n` distinct 256² tiles of image 1001 (4096², so 16 × 16 tiles at full resolution)."""
    return [
        base
        + TILE.format(level=level, col=i % per_row, row=(i // per_row) % per_row)
        + (f"&q=0.{50 + i // 256}" if i >= 256 else "")
        for i in range(n)
    ]
