"""Two idrserve workers behind the shipped nginx: both get traffic; one dying is invisible."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from idrserve import demo
from tests.integration.test_nginx import (
    STAND_IN,
    free_port,
    get,
    nginx_args,
    nginx_binary,
    render_config,
    stop,
    wait_until,
)

SECOND = "# server 10.0.0.12:8080 max_fails=1 fail_timeout=5s;"


def misses(port: int) -> float:
    """Renders done by one worker: its memory-tier misses, from its own /metrics."""
    text = get(port, "/metrics").body.decode()
    for line in text.splitlines():
        if line.startswith('idrserve_cache_requests_total{result="miss",tier="memory"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.fixture(scope="module")
def two_workers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, list[int], list[subprocess.Popen[bytes]]]]:
    nginx_binary()
    root = tmp_path_factory.mktemp("workers")
    for image_id, _name, write in demo._IMAGES:
        if image_id == 1003:
            write(root / "zarr" / f"{image_id}.zarr")
    ports = [free_port(), free_port()]
    omeroweb, listen = free_port(), free_port()
    prefix = root / "nginx"
    render_config(
        prefix,
        listen=listen,
        idrserve=ports[0],
        omeroweb=omeroweb,
        cache=root / "cache",
        extra={SECOND: f"server 127.0.0.1:{ports[1]} max_fails=1 fail_timeout=5s;"},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}
    # No nginx caching of tiles here: every request must reach a worker.
    env["IDRSERVE_SERVER__CACHE_CONTROL"] = "no-store"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "idrserve",
                    "serve",
                    "--zarr-root",
                    str(root / "zarr"),
                    "--port",
                    str(port),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for port in ports
        ]
        procs += workers
        stand_in = subprocess.Popen([sys.executable, "-c", STAND_IN, str(omeroweb)])
        procs.append(stand_in)
        nginx = subprocess.Popen(
            nginx_args(prefix, "daemon off;"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        procs.append(nginx)
        for port, proc in zip(ports, workers, strict=True):
            wait_until(port, "/healthz", proc, "idrserve worker")
        wait_until(omeroweb, "/", stand_in, "OMERO.web stand-in")
        wait_until(listen, "/healthz", nginx, "nginx")
        yield listen, ports, workers
    finally:
        for proc in reversed(procs):
            stop(proc)


def test_both_workers_serve_and_one_can_die(
    two_workers: tuple[int, list[int], list[subprocess.Popen[bytes]]],
) -> None:
    listen, ports, workers = two_workers
    urls = [
        f"/webgateway/render_image_region/1003/0/0/?region={x},0,20,20" for x in range(0, 400, 20)
    ]
    for url in urls:
        resp = get(listen, url)
        assert resp.status == 200, (url, resp.status)
        assert resp.header("X-Cache-Status") != "HIT"  # no-store: nothing cached by nginx
    per_worker = [misses(port) for port in ports]
    assert all(n > 0 for n in per_worker), per_worker  # round robin reached both
    assert sum(per_worker) >= len(urls)
    workers[0].send_signal(signal.SIGKILL)
    workers[0].wait(10)
    for url in urls + [u.replace(",0,20,20", ",40,20,20") for u in urls]:
        resp = get(listen, url)
        assert resp.status == 200, (url, resp.status)  # retried on the live worker
    assert misses(ports[1]) > per_worker[1]
