"""Several idrserve "hosts" on this machine: the shipped nginx in front, one shared Redis (a
3+3 Redis Cluster, a Sentinel-managed primary and replica, or one server for comparison),
OME-Zarr on moto's S3 server.

Each host is one `idrserve serve` process on its own loopback address (127.0.0.2, .3, .4, …;
all of 127/8 is local on Linux) and the same port, as distinct machines would be on one
subnet. Where those addresses cannot be bound, every host falls back to 127.0.0.1 on its own
port (`MultiHost.distinct_addresses` says which). Used by tests/integration/test_multihost.py
and bench/bench_cluster.py.
"""

from __future__ import annotations

import http.client
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from idrserve import demo
from tests.cache.conftest import RedisServer, free_port, redis_executable
from tests.cache.topology import RedisClusterNodes, RedisSentinelSet
from tests.integration.test_nginx import nginx_args, render_config, stop
from tests.sources.conftest import upload_tree, wait_for_port

IMAGE = 1002  # 512² × 9 z × 2 channels: many distinct cold tiles
BUCKET_ROOT = "s3://idr/zarr"
GENERATION_TTL_S = 1.0
FIRST = "server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;"
SECOND = "# server 10.0.0.12:8080 max_fails=1 fail_timeout=5s;"


def tile_urls(n: int, salt: int = 0) -> list[str]:
    """`n` distinct tile URLs of IMAGE (z, tile, quality vary): each a separate cold render."""
    urls = []
    for i in range(n):
        k = i + salt * 100_000
        z, x, y, q = k % 9, (k // 9) % 2, (k // 18) % 2, k // 36
        quality = f"0.{50 + q % 50:02d}{q // 50:03d}" if q >= 50 else f"0.{50 + q:02d}"
        urls.append(f"/webgateway/render_image_region/{IMAGE}/{z}/0/?tile=0,{x},{y}&q={quality}")
    return urls


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(addr: str, port: int, path: str, timeout: float = 10) -> Answer:
    conn = http.client.HTTPConnection(addr, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return Answer(resp.status, dict(resp.headers), resp.read())
    finally:
        conn.close()


@dataclass
class Host:
    addr: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def get(self, path: str) -> Answer:
        return fetch(self.addr, self.port, path)

    def metric(self, name: str) -> float:
        """One unlabelled sample (or the sum of a labelled family's samples) from /metrics."""
        total = 0.0
        for line in self.get("/metrics").body.decode().splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
        return total


def loopback_addresses(n: int) -> list[str]:
    """127.0.0.2 … 127.0.0.(n+1) when they can be bound here, else 127.0.0.1 n times."""
    addrs = [f"127.0.0.{2 + i}" for i in range(n)]
    try:
        for addr in addrs:
            with socket.socket() as s:
                s.bind((addr, 0))
    except OSError:
        return ["127.0.0.1"] * n
    return addrs


@dataclass
class MultiHost:
    """Start with `start()`, stop everything with `stop()` (also on a failed start)."""

    workdir: Path
    hosts_n: int = 3
    redis: str = "cluster"  # or "sentinel", "single"
    extra_env: dict[str, str] = field(default_factory=dict)
    hosts: list[Host] = field(default_factory=list)
    cluster: RedisClusterNodes | None = None
    sentinels: RedisSentinelSet | None = None
    single: RedisServer | None = None
    nginx_port: int = 0
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def redis_url(self) -> str:
        if self.replicated is not None:
            return self.replicated.url
        assert self.single is not None
        return self.single.url

    @property
    def replicated(self) -> RedisClusterNodes | RedisSentinelSet | None:
        """The cluster or the sentinel set: a Redis with a primary to kill and a replica."""
        return self.cluster or self.sentinels

    @property
    def distinct_addresses(self) -> bool:
        return len({h.addr for h in self.hosts}) == len(self.hosts)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}
        env.update(
            {
                "IDRSERVE_REDIS_URL": self.redis_url,
                "IDRSERVE_SOURCE__S3_ENDPOINT": self.s3_endpoint,
                # Every request must reach a host: nginx caches nothing here.
                "IDRSERVE_SERVER__CACHE_CONTROL": "no-store",
                "IDRSERVE_CACHE__GENERATION_TTL_S": str(GENERATION_TTL_S),
                # A failover is over in seconds: probe Redis again at most every 2 s.
                "IDRSERVE_CACHE__BREAKER_BACKOFF_MAX_S": "2",
                **self.extra_env,
            }
        )
        return env

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        redis_executable()
        s3_port = free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._procs.append(moto)
        self.s3_endpoint = f"http://127.0.0.1:{s3_port}"
        if self.redis == "cluster":
            self.cluster = RedisClusterNodes(self.workdir / "redis-cluster")
            self.cluster.start()
        elif self.redis == "sentinel":
            self.sentinels = RedisSentinelSet(self.workdir / "redis-sentinel")
            self.sentinels.start()
        else:
            (self.workdir / "redis").mkdir()
            self.single = RedisServer(redis_executable(), self.workdir / "redis")
            self.single.start()
        local = self.workdir / "zarr"
        writer = dict((i, w) for i, _n, w in demo._IMAGES)[IMAGE]
        writer(local / f"{IMAGE}.zarr")
        wait_for_port(s3_port, moto)
        upload_tree(self.s3_endpoint, "idr", "zarr", local)
        port = free_port()
        env = self.env()
        addrs = loopback_addresses(self.hosts_n)
        for i, addr in enumerate(addrs):
            host_port = port if addr != "127.0.0.1" else (port if i == 0 else free_port())
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "idrserve", "serve", "--zarr-root", BUCKET_ROOT,
                    "--host", addr, "--port", str(host_port),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(self.workdir / f"host{i}.log", "wb"),  # noqa: SIM115
            )  # fmt: skip
            self._procs.append(proc)
            self.hosts.append(Host(addr, host_port, proc))
        for host in self.hosts:
            wait_ready(lambda h=host: h.get("/healthz").status == 200, host.proc, "idrserve host")
        self._start_nginx()

    def _start_nginx(self) -> None:
        self.nginx_port = self.add_nginx(self.hosts, "nginx")

    def add_nginx(self, hosts: list[Host], name: str) -> int:
        """The shipped nginx with `hosts` as its upstreams, under `workdir/name`; its port."""
        first, *others = hosts
        upstreams = "\n    ".join(
            f"server {h.addr}:{h.port} max_fails=1 fail_timeout=5s;" for h in others
        )
        prefix = self.workdir / name
        port = free_port()
        render_config(
            prefix,
            listen=port,
            idrserve=first.port,
            omeroweb=free_port(),  # nothing there: no OMERO.web route is asked for
            cache=self.workdir / f"{name}-cache",
            extra={
                FIRST.format(port=first.port): (
                    f"server {first.addr}:{first.port} max_fails=1 fail_timeout=5s;"
                ),
                SECOND: upstreams,
            },
        )
        nginx = subprocess.Popen(
            nginx_args(prefix, "daemon off;"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._procs.append(nginx)
        wait_ready(
            lambda: fetch("127.0.0.1", port, "/healthz").status == 200, nginx, f"nginx {name}"
        )
        return port

    def get(self, path: str, timeout: float = 10) -> Answer:
        """A request through nginx."""
        return fetch("127.0.0.1", self.nginx_port, path, timeout)

    def kill_host(self, host: Host) -> None:
        host.proc.send_signal(signal.SIGKILL)
        host.proc.wait(10)

    def renders(self) -> float:
        return sum(h.metric("idrserve_cache_renders_total") for h in self.hosts if h.alive)

    def purge(self, image_id: int) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "idrserve", "cache", "purge", "--image", str(image_id)],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout

    def stop(self) -> None:
        for proc in reversed(self._procs):
            stop(proc)
        if self.replicated is not None:
            self.replicated.stop()
        if self.single is not None:
            self.single.kill()


def wait_ready(
    check: object, proc: subprocess.Popen[bytes], what: str, timeout_s: float = 60
) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early (code {proc.returncode})")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not become ready")


@dataclass
class LoadResult:
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    # (start, end) of every successful request, for the longest gap without an answer.
    spans: list[tuple[float, float]] = field(default_factory=list)


def run_load(
    addr: str,
    port: int,
    urls: list[str],
    threads: int,
    stop_event: threading.Event | None = None,
    progress: threading.Event | None = None,
    progress_after: int = 0,
) -> LoadResult:
    """GET every URL once (spread over `threads` keep-alive clients), or until `stop_event`;
    a non-200 or a transport error is a failure. `progress` is set after `progress_after`
    answers."""
    result = LoadResult()
    lock = threading.Lock()
    todo = iter(list(urls))

    def client() -> None:
        conn = http.client.HTTPConnection(addr, port, timeout=30)
        while stop_event is None or not stop_event.is_set():
            with lock:
                path = next(todo, None)
            if path is None:
                break
            t0 = time.monotonic()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:
                status = 0
                conn.close()
                conn = http.client.HTTPConnection(addr, port, timeout=30)
                error = f"{path}: {type(exc).__name__} {exc}"
            t1 = time.monotonic()
            with lock:
                if status == 200:
                    result.ok += 1
                    result.latencies.append(t1 - t0)
                    result.spans.append((t0, t1))
                else:
                    result.failed.append(error if status == 0 else f"{path}: HTTP {status}")
                if progress is not None and result.ok >= progress_after:
                    progress.set()
        conn.close()

    pool = [threading.Thread(target=client) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return result


def longest_gap(spans: list[tuple[float, float]]) -> float:
    """The longest time during the run in which no request completed."""
    ends = sorted(end for _, end in spans)
    return max((b - a for a, b in itertools.pairwise(ends)), default=0.0)


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="idrserve-multihost-"))
