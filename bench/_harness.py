"""What every side-by-side benchmark needs: processes on loopback, the deploy/ nginx rendered into
a temp prefix, readiness waits, wrk and locust runs, and a clean stop of everything it started.

The benchmarks import this instead of each carrying its own copy, so a change to the shipped nginx
configuration (the strings `render_deploy_nginx` replaces) breaks every harness loudly at once.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from bench_http import free_port, padded

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEPLOY = REPO / "deploy" / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# nginx refuses `user` when not root; the benchmarks run as root on the VM.
NGINX_USER = "root" if os.geteuid() == 0 else ""


def nginx_bench_dir(name: str) -> Path | None:
    """A fresh world-readable temp directory for an nginx benchmark (nginx's workers read
    it), or None, said on stderr, when wrk or nginx is missing."""
    if not shutil.which("wrk") or not Path(NGINX).exists():
        print("wrk and nginx are needed (apt-get install wrk nginx-light)", file=sys.stderr)
        return None
    tmp = Path(tempfile.mkdtemp(prefix=f"idrserve-{name}-"))
    tmp.chmod(0o755)
    return tmp


def pinned_child(
    script: Path,
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Any:
    """What `script args`, run on core 0, printed as JSON: the micro-benchmarks' child mode
    (bench_plan.py, bench_kernel_cache.py), a process per measurement so that none inherits
    another's caches, allocator state or a tree's imports."""
    cmd = ["taskset", "-c", "0", sys.executable, str(script), *args]
    done = subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def cpu_times(stat: str) -> tuple[int, int]:
    """(busy, total) clock ticks of all cores from the text of /proc/stat's aggregate line;
    idle and iowait are not busy, everything else is (user, nice, system, irq, softirq, steal)."""
    fields = [int(v) for v in stat.split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of all cores' time spent busy between two `cpu_times` samples."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0


def busy_now(seconds: float = 2.0) -> float:
    """How busy the machine is right now: the share of all cores' time not idle over the next
    `seconds`. Unlike the 1-minute loadavg, which still counts a benchmark that ended a
    minute ago, this says whether anything else is running while this one starts."""
    stat = Path("/proc/stat")
    before = cpu_times(stat.read_text())
    time.sleep(seconds)
    return busy_share(before, cpu_times(stat.read_text()))


def get(url: str, timeout: float = 30) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read(), dict(resp.headers)


def wait_http(url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until `url` answers; fail fast when the process behind it has died."""
    for _ in range(300):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def version(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError as exc:
        return f"unavailable ({exc})"
    out = (res.stdout + res.stderr).strip()
    return out.splitlines()[0] if out else "?"


def render_deploy_nginx(
    prefix: Path, port: int, upstream: int, omero_web: int, source: Path | None = None
) -> list[str]:
    """deploy/nginx as shipped (or the copy in `source`, e.g. another revision's), with ports
    and paths templated into `prefix`; the start command."""
    source = source or DEPLOY
    conf = (source / "idrserve.conf").read_text()
    for old, new in {
        "listen 80;": f"listen 127.0.0.1:{port};",
        "127.0.0.1:8080": f"127.0.0.1:{upstream}",
        "127.0.0.1:8000": f"127.0.0.1:{omero_web}",
        "/var/cache/nginx/idrserve": str(prefix / "cache"),
    }.items():
        if old not in conf:
            raise RuntimeError(f"deploy/nginx/idrserve.conf no longer contains {old!r}")
        conf = conf.replace(old, new)
    # The site's access log (since 2026-12-04) goes under the prefix too, not into the host's
    # /var/log/nginx; an older revision (`source`) has none.
    conf = conf.replace(
        "/var/log/nginx/idrserve.access.log", str(prefix / "logs" / "idrserve.access.log")
    )
    for sub in ("logs", "tmp", "cache"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    (prefix / "idrserve.conf").write_text(conf)
    shutil.copy(source / "nginx.conf", prefix / "nginx.conf")
    cmd = [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    cmd += ["-e", str(prefix / "logs" / "startup.log")]
    if NGINX_USER:
        cmd += ["-g", f"user {NGINX_USER};"]
    return cmd


class Stack:
    """Owns every process and nginx a benchmark starts; `with Stack(tmp) as s:` stops them all."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nginx_pids: list[Path] = []

    def __enter__(self) -> Stack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(
        self, cmd: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"proc-{len(self.procs)}.log", "wb")  # noqa: SIM115 (in tmp)
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def idrserve(
        self,
        data: Path,
        workers: int = 1,
        extra: Mapping[str, str] | None = None,
        tree: Path | None = None,
    ) -> tuple[subprocess.Popen[bytes], str]:
        """`idrserve serve` on a free port, access log off, one render thread per worker;
        `tree`: the package of that checkout, not the installed one."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}
        env |= {"IDRSERVE_LOG__ACCESS_LOG": "false", "IDRSERVE_SERVER__CPU_THREADS": "1"}
        env |= dict(extra or {})
        cmd = [sys.executable, "-m", "idrserve", "serve", "--zarr-root", str(data)]
        cmd += ["--port", str(port), "--workers", str(workers)]
        if tree is not None:  # `python -m` puts its working directory first on sys.path
            env["PYTHONPATH"] = str(tree)
        proc = self.start(cmd, padded(env), cwd=tree)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz", proc)
        return proc, base

    def nginx(self, prefix: Path, cmd: list[str], pid_file: Path | None = None) -> None:
        """Start an nginx whose pid file is `pid_file` (default `prefix/nginx.pid`)."""
        self.nginx_pids += [pid_file or prefix / "nginx.pid", prefix / "logs" / "nginx.pid"]
        subprocess.run(cmd, check=True)

    def deploy_nginx(self, name: str, upstream: str, source: Path | None = None) -> str:
        """deploy/nginx (or `source`'s copy) in front of `upstream` (an http://127.0.0.1:port
        base); its base URL."""
        prefix = self.tmp / name
        port = free_port()
        upstream_port = int(upstream.rsplit(":", 1)[1])
        cmd = render_deploy_nginx(prefix, port, upstream_port, free_port(), source)
        self.nginx(prefix, cmd)
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/healthz")
        return base

    def stop(self) -> None:
        for pid_file in self.nginx_pids:
            if not pid_file.exists():
                continue
            pid = pid_file.read_text().strip()
            subprocess.run(["kill", "-QUIT", pid], check=False)
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_locust(
    locustfile: Path,
    host: str,
    users: int,
    seconds: float,
    csv_prefix: Path,
    env: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """A headless locust run; the aggregate row of its CSV (req/s, p50/p99, failures)."""
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless",
           "-u", str(users), "-r", str(max(1, users)), "-t", f"{round(seconds)}s",
           "--host", host, "--csv", str(csv_prefix), "--only-summary"]  # fmt: skip
    run_env = dict(os.environ) | dict(env or {})
    subprocess.run(cmd, check=False, capture_output=True, timeout=seconds + 120, env=run_env)
    with open(f"{csv_prefix}_stats.csv", newline="") as fh:
        rows = {row["Name"]: row for row in csv.DictReader(fh)}
    agg = rows["Aggregated"]
    requests = float(agg["Request Count"])
    return {
        "users": float(users),
        "rps": float(agg["Requests/s"]),
        "requests": requests,
        "failures": float(agg["Failure Count"]),
        "p50_ms": float(agg["50%"]),
        "p99_ms": float(agg["99%"]),
        "bytes_per_req": float(agg["Average Content Size"]),
    }
