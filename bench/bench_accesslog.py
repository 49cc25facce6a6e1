"""What the operability layer costs a memory hit: admission middleware and the access log.

    python bench/bench_accesslog.py --rounds 3 --duration 5

Three servers on the demo data, one process each, pinned to core 0 (wrk on core 1), a
cached tile URL (a fast-path memory hit), `wrk -t1 -c32`, rounds interleaved (order rotated):

* `bare`: without the admission middleware and without an access log (the fast path as
  before this layer existed),
* `admission`: the admission middleware, access log off,
* `json-log`: the admission middleware and the JSON access log (to a file).

Prints requests/s per round and the medians. Needs `wrk` and `taskset`.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SERVER = r"""
import logging, sys
from aiohttp import web
from idrserve.app import create_app
from idrserve.cli import _install_uvloop, _tune_malloc
from idrserve.http.ops import AccessLog
from idrserve.settings import load_settings

variant, root, port, log_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
settings = load_settings({"source": {"zarr_root": root}})
app = create_app(settings)
if variant == "bare":
    del app._middlewares[0]  # drop the admission middleware (measurement only)
access = None
if variant == "json-log":
    access = logging.getLogger("idrserve.access")
    handler = logging.FileHandler(log_path)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
_tune_malloc()
_install_uvloop()
web.run_app(app, host="127.0.0.1", port=port, access_log=access, access_log_class=AccessLog,
            access_log_format="json", print=None, handler_cancellation=True)
"""

TILE = "/webgateway/render_image_region/1001/0/0/?tile=2,1,1,256,256"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(variant: str, root: Path, duration: int, workdir: Path) -> float:
    port = _port()
    log = workdir / f"{variant}.log"
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-c",
            SERVER,
            variant,
            str(root),
            str(port),
            str(log),
        ]
    )
    url = f"http://127.0.0.1:{port}{TILE}"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:  # renders, then cached
                    resp.read()
                break
            except OSError:
                time.sleep(0.1)
        out = subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{duration}s", url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        assert match, out
        return float(match.group(1))
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--zarr-root", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        root = args.zarr_root
        if root is None:
            from idrserve.demo import write_demo

            root = workdir / "demo"
            write_demo(root)
        results: dict[str, list[float]] = {"bare": [], "admission": [], "json-log": []}
        names = list(results)
        for r in range(args.rounds):
            # rotate the order each round so no variant always runs last (machine drift)
            for variant in names[r % 3 :] + names[: r % 3]:
                rate = _run(variant, root, args.duration, workdir)
                results[variant].append(rate)
                print(f"round {r + 1} {variant:10s} {rate:9.0f} req/s", flush=True)
        lines = (workdir / "json-log.log").read_text().count("\n")
    base = statistics.median(results["bare"])
    for variant, rates in results.items():
        med = statistics.median(rates)
        print(f"{variant:10s} median {med:9.0f} req/s  ({med / base:.3f} of bare)")
    print(f"json-log wrote {lines} lines in its last round")
    print(f"(cpu count {os.cpu_count()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
