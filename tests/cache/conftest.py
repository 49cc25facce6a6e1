"""A real redis-server started with `cache/redis.conf` on a free loopback port, and cache factories.

No fakeredis: the Redis tier's failure handling (kill, restart, a hung server) is only proven
against the real thing. `scripts/test.sh` installs redis-server when it is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from idrserve.cache import TieredCache
from idrserve.settings import CacheSettings

REDIS_CONF = Path(__file__).resolve().parents[2] / "cache" / "redis.conf"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One redis-server process that a test can kill, restart (same port) and pause."""

    def __init__(
        self,
        executable: str,
        workdir: Path,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        conf: Path = REDIS_CONF,
    ) -> None:
        self.executable = executable
        self.workdir = workdir
        self.port = free_port() if port is None else port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "redis.log"
        self.extra_args = extra_args
        self.conf = conf

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.executable,
                    str(self.conf),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(self.workdir),
                    "--daemonize",
                    "no",
                    "--maxmemory",
                    "256mb",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.ping():
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start:\n{self.log.read_text()[-2000:]}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, like a crash: no clean shutdown, all data gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a hung host)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


def redis_executable(name: str = "redis-server") -> str:
    executable = shutil.which(name)
    if executable is None:
        pytest.fail(
            f"{name} is not on PATH: the cache tests need a real Redis. Run scripts/test.sh, "
            "which installs it (apt-get install redis-server redis-tools)."
        )
    return executable


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    executable = redis_executable()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(executable, workdir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client for looking behind the cache's back."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


# Fast timings so that breaker, lock and generation behaviour fit in a short test run.
FAST = {
    "redis_timeout_s": 0.2,
    "breaker_failures": 3,
    "breaker_backoff_s": 0.1,
    "breaker_backoff_max_s": 0.4,
    "lock_ttl_ms": 5000,
    "lock_wait_s": 1.0,
    "generation_ttl_s": 0.3,
}

CacheFactory = Callable[..., Awaitable[TieredCache]]


@pytest.fixture
async def make_cache(tmp_path: Path) -> AsyncIterator[CacheFactory]:
    """`await make_cache(redis_url=..., dir=..., **settings)`: a started TieredCache, closed
    at teardown. `dir=True` means a fresh directory under tmp_path."""
    caches: list[TieredCache] = []
    dirs = 0

    async def factory(*, start: bool = True, **overrides: Any) -> TieredCache:
        nonlocal dirs
        if overrides.get("dir") is True:
            dirs += 1
            overrides["dir"] = tmp_path / f"cache{dirs}"
        values: dict[str, Any] = {"memory_max_bytes": 1 << 20, **FAST, **overrides}
        cache = TieredCache(CacheSettings(**values))
        caches.append(cache)
        if start:
            await cache.start()
        return cache

    try:
        yield factory
    finally:
        for cache in caches:
            await cache.aclose(timeout_s=2)


def corrupt_byte(path: str | os.PathLike[str], offset: int = -1) -> None:
    """Flip the bits of one byte of a file in place."""
    with open(path, "r+b") as f:
        f.seek(offset, os.SEEK_END if offset < 0 else os.SEEK_SET)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
