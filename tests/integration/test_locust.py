"""A short headless locust run of bench/locustfile.py against a real `idrserve demo` server.

locust runs in a subprocess, never imported here: it monkey-patches the standard library with
gevent at import, which would break pytest's and aiohttp's event loops.
"""

from __future__ import annotations

import csv
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

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
LOCUSTFILE = ROOT / "bench" / "locustfile.py"

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _clean_env() -> dict[str, str]:
    """The parent's environment without IDRSERVE_* settings that would change the server."""
    return {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"demo server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"demo server not healthy after {timeout} s:\n{log.read_text()[-4000:]}")


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "idrserve",
                "demo",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "demo"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
            cwd=tmp_path,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        # Writing the demo data takes ~5 s on 2 cores; allow for a busy machine.
        _wait_healthy(proc, f"{base}/healthz", log, timeout=90)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _stats(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


def _requests(stats: dict[str, dict[str, str]], prefix: str) -> int:
    return sum(int(row["Request Count"]) for name, row in stats.items() if name.startswith(prefix))


def test_headless_locust_run_has_no_failures(demo_server: str, tmp_path: Path) -> None:
    env = _clean_env()
    env["IDRSERVE_LOCUST_IMAGES"] = "1001,1002,1003,1004,1005,1006"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "-u",
            "8",
            "-r",
            "8",
            "-t",
            "12s",
            "--stop-timeout",
            "10",
            "--host",
            demo_server,
            "--csv",
            str(tmp_path / "run"),
            "--exit-code-on-error",
            "1",
            "--only-summary",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=90,
        check=False,
    )
    output = f"stdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-6000:]}"
    assert result.returncode == 0, output

    stats = _stats(tmp_path / "run_stats.csv")
    for prefix in (
        "/webgateway/imgData/",
        "/webgateway/render_image_region/",
        "/webgateway/render_thumbnail/",
        "/webgateway/render_birds_eye_view/",
    ):
        assert _requests(stats, prefix) > 0, f"no {prefix} requests\n{output}"
    # Grouped by route template: one line per endpoint, not one per URL.
    assert len(stats) < 15, sorted(stats)
    aggregated = stats["Aggregated"]
    assert int(aggregated["Failure Count"]) == 0, output
    with (tmp_path / "run_failures.csv").open(newline="") as f:
        assert list(csv.DictReader(f)) == []
    with (tmp_path / "run_exceptions.csv").open(newline="") as f:
        assert list(csv.DictReader(f)) == [], output


def _run_url_sessions(base: str, urls: list[str], tmp_path: Path) -> dict[str, dict[str, str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    url_file = tmp_path / "urls.txt"
    url_file.write_text("\n".join(urls) + "\n")
    env = _clean_env() | {"IDRSERVE_BENCH_URLS": str(url_file), "IDRSERVE_BENCH_RUN": "4"}
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locust_urls.py"),
         "--headless", "-u", "4", "-r", "4", "-t", "4s", "--host", base,
         "--csv", str(tmp_path / "urls"), "--only-summary"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60, check=False,
    )  # fmt: skip
    assert (tmp_path / "urls_stats.csv").exists(), result.stderr[-4000:]
    return _stats(tmp_path / "urls_stats.csv")


def test_url_list_sessions_used_by_the_side_by_side_harness(
    demo_server: str, tmp_path: Path
) -> None:
    """bench/locust_urls.py counts good tiles as successes and anything else as failures."""
    tiles = [
        f"/webgateway/render_image_region/1001/0/0/?tile=0,{x},{y},256,256" for y in (0, 1)
        for x in (0, 1)
    ]  # fmt: skip
    good = _run_url_sessions(demo_server, tiles, tmp_path / "good")
    assert int(good["Aggregated"]["Request Count"]) > 20
    assert int(good["Aggregated"]["Failure Count"]) == 0
    bad = _run_url_sessions(demo_server, [*tiles, "/webgateway/imgData/999999/"], tmp_path / "bad")
    assert int(bad["Aggregated"]["Failure Count"]) > 0


# A viewer session killed while it waits for a free connection: the stand-in client's
# requests take 50 ms, so after 10 ms all six connections are busy and `fetch_all` is blocked
# in the pool's spawn with six more tiles to go. The kill must not leave the six in flight
# uncounted when the user is gone (locust then logs its tallies and exits).
_KILL_WHILE_SPAWNING = r"""
import json, sys
from contextlib import contextmanager
import gevent
sys.path.insert(0, sys.argv[1])
import locustfile

started, finished = [], []

class Resp:
    status_code = 200
    def success(self): pass

class Client:
    @contextmanager
    def get(self, url, **_kw):
        started.append(url)
        gevent.sleep(0.05)
        finished.append(url)
        yield Resp()

class User:
    client = Client()

session = locustfile.Session(User(), 1)
urls = [(f"/tile/{i}", "tile") for i in range(12)]
g = gevent.spawn(session.fetch_all, urls)
gevent.sleep(0.01)
g.kill(block=True)
print(json.dumps({"started": len(started), "finished": len(finished),
                  "dead": g.dead, "value": type(g.value).__name__}))
"""


def test_a_session_killed_while_spawning_finishes_what_it_sent(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _KILL_WHILE_SPAWNING, str(BENCH)],
        capture_output=True, text=True, timeout=60, env=_clean_env(), cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    # six were sent before the kill, none after it, and all six finished before the user died
    assert got == {"started": 6, "finished": 6, "dead": True, "value": "GreenletExit"}, got
