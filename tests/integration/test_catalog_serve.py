"""`idrserve serve --catalog …` for real: what it prints, a corrupt index refused, a large CSV
indexed in the background with 503s meanwhile (not 504s), SIGHUP re-reading it, two workers."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from idrserve.catalog.build import build_index
from idrserve.catalog.index import write_index
from idrserve.catalog.locate import index_path_for
from tests.integration.test_cli import free_port
from tests.sources.test_catalog import make_zarr
from tests.sources.test_catalog_runtime import big_csv


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def serve(
    *args: str, env: dict[str, str] | None = None, port: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "idrserve", "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "IDRSERVE_LOG__ACCESS_LOG": "false",
            **(env or {}),
        },
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_for(
    base: str, proc: subprocess.Popen[bytes], path: str, status: int, timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server exited"
        try:
            if get(base + path)[0] == status:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path} never answered {status}")


def stop(proc: subprocess.Popen[bytes]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out.decode(errors="replace")


def test_serve_prints_what_it_sees_and_urls_that_work(tmp_path: Path) -> None:
    make_zarr(tmp_path / "data" / "idr0001A" / "42.zarr")
    (tmp_path / "c.csv").write_text(
        "id,path\n42,data/idr0001A/42.zarr\n43,data/none/43.zarr\nx,y\n"
    )
    index, _ = build_index([tmp_path / "c.csv"])
    write_index(index, tmp_path / "c.idrcat")
    (tmp_path / "empty").mkdir()
    proc, base = serve(
        "--catalog", str(tmp_path / "c.idrcat"), "--zarr-root", str(tmp_path / "empty")
    )
    try:
        wait_for(base, proc, "/readyz", 200)
    finally:
        out = stop(proc)
    assert "catalog: " in out and "2 images, 0 id ranges, 0 study prefixes" in out
    assert "1 catalog rows were skipped" in out
    assert f"the zarr root {tmp_path / 'empty'} is empty" in out
    urls = [
        w for line in out.splitlines() for w in line.split() if w.startswith("http://localhost:")
    ]
    assert any(u.endswith("/webgateway/imgData/42/") for u in urls), out
    proc, base = serve("--catalog", str(tmp_path / "c.idrcat"), port=int(base.rsplit(":", 1)[1]))
    try:
        wait_for(base, proc, "/readyz", 200)
        for url in urls:
            status, _, body = get(url.replace("localhost", "127.0.0.1"))
            assert status == 200, (url, body[:200])
    finally:
        stop(proc)


def test_a_corrupt_index_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("id,path\n1,a.zarr\n")
    write_index(build_index([tmp_path / "c.csv"])[0], tmp_path / "c.idrcat")
    raw = (tmp_path / "c.idrcat").read_bytes()
    (tmp_path / "c.idrcat").write_bytes(raw[:-16])
    proc, _ = serve("--catalog", str(tmp_path / "c.idrcat"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"truncated or corrupt" in out
    proc, _ = serve("--catalog", str(tmp_path / "missing.csv"))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and b"missing or unreadable" in out


# Over the in-process threshold (INLINE_BUILD_BYTES), so a child process indexes it.
ROWS = 200_000


def test_large_csv_loads_in_the_background_and_sighup_rereads(tmp_path: Path) -> None:
    csv_path = big_csv(tmp_path / "big.csv", ROWS)
    index_dir = tmp_path / "idx"
    index_dir.mkdir()
    env = {"IDRSERVE_SOURCE__CATALOG_INDEX_DIR": str(index_dir)}
    # The build lock held here, as by another worker indexing the same file: the server
    # follows that build and stays loading until the lock is let go, however fast this
    # machine is (a load timed to outlast the start was once over before the first poll).
    out_path = index_path_for(csv_path, index_dir)
    lock = open(out_path.with_name(out_path.name + ".lock"), "a+b")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    proc, base = serve("--catalog", str(csv_path), env=env)
    try:
        wait_for(base, proc, "/healthz", 200)
        deadline = time.monotonic() + 60
        while True:  # "warming" first, while the process starts
            status, headers, body = get(base + "/readyz")
            assert status == 503, body  # never ready while the build is another's
            doc = json.loads(body)
            if doc["status"] == "loading" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert doc["status"] == "loading" and "progress" in doc["catalog"], doc
        assert headers["Retry-After"]
        status, headers, body = get(base + "/webgateway/imgData/1000001/")
        assert status == 503 and json.loads(body)["error"] == "catalog_loading", body
        assert int(headers["Retry-After"]) > 0
        fcntl.flock(lock, fcntl.LOCK_UN)  # the "other worker" stops: this one builds it
        lock.close()
        wait_for(base, proc, "/readyz", 200)
        doc = json.loads(get(base + "/readyz")[2])
        assert doc["dependencies"]["catalog"]["images"] == ROWS
        # SIGHUP: the changed catalog is read again and swapped in
        with open(csv_path, "a") as f:
            f.write("7,extra/7.zarr\n")
        make_zarr(tmp_path / "extra" / "7.zarr")
        proc.send_signal(signal.SIGHUP)
        wait_for(base, proc, "/webgateway/imgData/7/", 200)
        doc = json.loads(get(base + "/readyz")[2])
        assert doc["dependencies"]["catalog"]["images"] == ROWS + 1
    finally:
        lock.close()
        out = stop(proc)
    assert "loading…" in out


@pytest.mark.slow
def test_two_workers_share_one_build(tmp_path: Path) -> None:
    csv_path = big_csv(tmp_path / "big.csv", 200_000)
    make_zarr(tmp_path / "v0.4" / "idr0000A" / "1000000.zarr")
    env = {
        "IDRSERVE_SOURCE__CATALOG_INDEX_DIR": str(tmp_path / "idx"),
        "IDRSERVE_LOG__LEVEL": "INFO",
    }
    proc, base = serve("--catalog", str(csv_path), "--workers", "2", env=env)
    try:
        wait_for(base, proc, "/webgateway/imgData/1000000/", 200, timeout_s=120)
        # Both workers ready: 30 answers in a row are 200 (SO_REUSEPORT spreads connections).
        deadline, streak = time.monotonic() + 60, 0
        while streak < 30 and time.monotonic() < deadline:
            status = get(base + "/webgateway/imgData/1000000/")[0]
            assert status in (200, 503)  # 503: a worker still opening the shared index
            streak = streak + 1 if status == 200 else 0
        assert streak == 30
    finally:
        out = stop(proc)
    assert out.count("indexing catalog") == 1, out
    assert out.count("catalog ready") == 2, out
