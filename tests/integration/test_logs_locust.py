"""`idrserve logs report` on the logs of a real locust run through the deploy nginx and idrserve.

idrserve runs with two workers behind deploy/nginx (rendered as test_nginx.py does); locust
(bench/locustfile.py) drives viewer sessions through nginx for a few seconds. Then:

* the report's per-family request counts and bytes from idrserve's own log equal the deltas
  of the server's /metrics over the run (summed over both workers);
* the nginx hit ratio and cache-status counts in the report equal those of the
  X-Cache-Status headers locust received;
* the report page opens in headless Chromium without console errors, and each plot has
  drawn pixels;
* `cache warm --from-report` warms the hottest images through nginx.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import pytest
from PIL import Image

from idrserve import demo
from idrserve.http.reqmetrics import SNAPSHOT_S
from idrserve.logs.aggregate import EDGE_HITS, EDGE_LOOKUPS, hit_ratio

from .test_nginx import (
    STAND_IN,
    free_port,
    get,
    nginx_args,
    nginx_binary,
    render_config,
    stop,
    wait_until,
)
from .test_viewer_browser import console_problems, headless_chromium

ROOT = Path(__file__).resolve().parents[2]
IMAGES = (1002, 1003, 1004)
FAMILIES = ("tile", "plane", "thumbnail", "imgdata")
SAMPLE = re.compile(r"^idrserve_http_(requests_total|response_bytes_total)\{([^}]*)\} ([0-9.e+]+)$")

pytestmark = pytest.mark.slow


@dataclass
class Run:
    root: Path
    nginx_port: int
    idrserve_port: int
    nginx_log: Path
    idrserve_log: Path
    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    headers: dict[str, int]
    report: dict[str, Any]
    out: Path


def metrics_of_both_workers(port: int, timeout_s: float = 60) -> str:
    """/metrics once both workers have started and reported their counts."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = get(port, "/metrics").body.decode()
        workers = re.search(r"^idrserve_http_workers_reporting ([0-9.]+)$", text, re.M)
        assert workers is not None, text[-2000:]
        if float(workers.group(1)) == 2:
            return text
        assert time.monotonic() < deadline, "the second worker never reported"
        time.sleep(0.2)


def per_family(port: int) -> dict[str, dict[str, float]]:
    """idrserve_http_requests_total and _response_bytes_total summed per family."""
    text = metrics_of_both_workers(port)
    out: dict[str, dict[str, float]] = {"requests": {}, "bytes": {}}
    for m in re.finditer(SAMPLE.pattern, text, re.M):
        kind = "requests" if m.group(1) == "requests_total" else "bytes"
        fam = re.search(r'family="([^"]+)"', m.group(2))
        assert fam is not None
        out[kind][fam.group(1)] = out[kind].get(fam.group(1), 0.0) + float(m.group(3))
    return out


def locust(host: str, cwd: Path) -> dict[str, int]:
    """A short headless run; the X-Cache-Status/X-Cache counts the clients saw."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}
    env["IDRSERVE_LOCUST_IMAGES"] = ",".join(map(str, IMAGES))
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"),
         "--headless", "-u", "6", "-r", "6", "-t", "6s", "--stop-timeout", "40",
         "--host", host, "--only-summary", "--loglevel", "INFO"],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=90, check=False,
    )  # fmt: skip
    m = re.search(r"cache headers seen: (\{.*\})", result.stderr)
    assert m is not None, result.stderr[-4000:]
    return {k: int(v) for k, v in json.loads(m.group(1)).items()}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    nginx_binary()
    root = tmp_path_factory.mktemp("logs")
    data = root / "zarr"
    for image_id, _name, write in demo._IMAGES:
        if image_id in IMAGES:
            write(data / f"{image_id}.zarr")
    idrserve_port, omeroweb_port, nginx_port = free_port(), free_port(), free_port()
    prefix = root / "nginx"
    render_config(
        prefix, listen=nginx_port, idrserve=idrserve_port, omeroweb=omeroweb_port,
        cache=root / "cache",
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}
    env["PYTHONUNBUFFERED"] = "1"
    procs: list[subprocess.Popen[bytes]] = []
    files: list[IO[bytes]] = []

    def spawn(args: list[str], out: Path, err: Path, e: Any = None) -> subprocess.Popen[bytes]:
        files.extend([open(out, "wb"), open(err, "wb")])  # noqa: SIM115 - closed below
        proc = subprocess.Popen(args, stdout=files[-2], stderr=files[-1], env=e)
        procs.append(proc)
        return proc

    idrserve_log = root / "idrserve-access.log"  # idrserve's access log is its stdout
    try:
        idrserve = spawn(
            [sys.executable, "-m", "idrserve", "serve", "--zarr-root", str(data),
             "--port", str(idrserve_port), "--workers", "2"],
            idrserve_log, root / "idrserve.err", env,
        )  # fmt: skip
        stand_in = spawn(
            [sys.executable, "-c", STAND_IN, str(omeroweb_port)], root / "o.out", root / "o.err"
        )
        nginx = spawn(nginx_args(prefix, "daemon off;"), root / "n.out", root / "n.err")
        wait_until(idrserve_port, "/healthz", idrserve, "idrserve", timeout_s=60)
        wait_until(omeroweb_port, "/", stand_in, "OMERO.web stand-in")
        wait_until(nginx_port, "/healthz", nginx, "nginx")
        before = per_family(idrserve_port)
        headers = locust(f"http://127.0.0.1:{nginx_port}", root)
        nginx.send_signal(signal.SIGUSR1)  # reopen: writes out its buffered log lines
        time.sleep(SNAPSHOT_S + 0.5)  # the workers' counts and access-log batches are out
        after = per_family(idrserve_port)
        nginx_log = prefix / "logs" / "idrserve.access.log"
        out = root / "report"
        result = subprocess.run(
            [sys.executable, "-m", "idrserve", "logs", "report", str(nginx_log),
             str(idrserve_log), "--out", str(out), "--top", "5"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        report = json.loads((out / "report.json").read_text())
        yield Run(
            root, nginx_port, idrserve_port, nginx_log, idrserve_log, before, after,
            headers, report, out,
        )  # fmt: skip
    finally:
        for proc in reversed(procs):
            stop(proc)
        for f in files:
            f.close()


def test_report_counts_equal_the_servers_metrics(run: Run) -> None:
    src = run.report["sources"]["idrserve"]
    # idrserve's stdout starts with its banner; every other line is a request
    banner = [x for x in run.idrserve_log.read_text().splitlines() if not x.startswith("{")]
    assert run.report["input"]["skipped"] == {"not_a_log_line": len(banner)}, banner
    seen = 0
    for fam in FAMILIES:
        delta = run.after["requests"].get(fam, 0) - run.before["requests"].get(fam, 0)
        got = src["families"].get(fam, {}).get("requests", 0)
        assert got == delta, (fam, got, delta)
        size = run.after["bytes"].get(fam, 0) - run.before["bytes"].get(fam, 0)
        assert src["families"].get(fam, {}).get("bytes", 0) == size, fam
        seen += got
    assert seen > 50, src["families"]  # the run did reach idrserve


def test_every_workers_thread_cpu_is_in_each_scrape(run: Run) -> None:
    # Per worker, not summed (a full loop is one worker's), from the same snapshots as the
    # request counts: whichever worker answers, both show, each under its own pid.
    text = metrics_of_both_workers(run.idrserve_port)
    seconds: dict[tuple[str, str], float] = {}
    for m in re.finditer(r"^idrserve_thread_cpu_seconds_total\{([^}]*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        seconds[(labels["pid"], labels["thread"])] = float(m.group(2))
    pids = {pid for pid, _ in seconds}
    assert len(pids) == 2, seconds
    for pid in pids:
        assert seconds[(pid, "loop")] > 0  # each loop has at least started its worker
        assert (pid, "cpu_pool") in seconds


def test_nginx_hit_ratio_equals_what_the_clients_saw(run: Run) -> None:
    seen = {
        k.removeprefix("X-Cache-Status: "): n
        for k, n in run.headers.items()
        if k.startswith("X-Cache-Status: ")
    }
    edge = run.report["sources"]["nginx"]["tiers"]["nginx"]
    assert edge["counts"] == seen
    assert edge["hit_ratio"] == hit_ratio(seen, EDGE_HITS, EDGE_LOOKUPS)
    assert 0 < edge["hit_ratio"] < 1, seen
    # every client request is in nginx's log
    assert run.report["sources"]["nginx"]["requests"] >= sum(seen.values())


def data_pixels(png: bytes) -> int:
    """Pixels in a plot's data colours: axes, grid and text are grey, data is saturated."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((pixels.max(axis=2) - pixels.min(axis=2) > 80).sum())


def test_report_page_in_headless_chromium(run: Run) -> None:
    from selenium.webdriver.common.by import By

    with headless_chromium() as driver:
        console_problems(driver)
        driver.get((run.out / "report.html").as_uri())
        assert driver.title == "idrserve usage report"
        plots = driver.find_elements(By.TAG_NAME, "svg")
        assert len(plots) >= 8
        for plot in plots:
            # more than the legend's 10×10 swatches
            assert data_pixels(plot.screenshot_as_png) > 300, plot.get_attribute("aria-label")
        assert console_problems(driver) == []


def test_warm_from_the_report(run: Run) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "idrserve", "cache", "warm", "--server",
         f"http://127.0.0.1:{run.nginx_port}", "--from-report", str(run.out / "report.json"),
         "--top", "2", "--concurrency", "4"],
        capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    nginx = run.report["sources"]["nginx"]
    hot = [r["image"] for r in nginx["top_images"]["by_requests"][:2]]
    wanted = {u["url"] for u in nginx["warm"]["urls"] if u["image"] in hot}
    for iid in hot:
        wanted |= {
            f"/webgateway/{kind}/{iid}/"
            for kind in ("render_thumbnail", "render_birds_eye_view", "imgData")
        }
    assert summary["urls"] == len(wanted), summary
    assert summary["failed"] == 0 and summary["bytes"] > 0
    # the warmed thumbnails are now in nginx's cache
    for iid in hot:
        again = get(run.nginx_port, f"/webgateway/render_thumbnail/{iid}/")
        assert again.header("X-Cache-Status") == "HIT"
    # one request at a time and a 1-byte budget: the first URL spends it, the rest wait
    budget = subprocess.run(
        [sys.executable, "-m", "idrserve", "cache", "warm", "--server",
         f"http://127.0.0.1:{run.nginx_port}", "--from-report", str(run.out / "report.json"),
         "--top", "2", "--concurrency", "1", "--max-bytes", "1"],
        capture_output=True, text=True, timeout=120, check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")},
    )  # fmt: skip
    spent = json.loads(budget.stdout.strip().splitlines()[-1])
    assert spent["skipped_over_budget"] == spent["urls"] - 1, spent
