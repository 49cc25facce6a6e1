"""Stalled readers: clients that ask for a large body and never read it, and the server's RSS.

    python bench/bench_stalled.py --clients 12 --out bench/results/stalled-vm-DATE.md
    python bench/bench_stalled.py --pythonpath /tmp/idrserve-before   # another source tree

Starts `idrserve serve` (one worker, the demo images, `limits.max_concurrent_renders=2`),
fetches one large `/api/v1` region completely (the warm-up: imports, compiled loops, heap),
then opens `--clients` raw sockets one after the other. Each has a 64 KiB receive buffer,
sends a GET for the region (one channel of image 1001 at full resolution: 4096 × 2048 uint16,
16 MiB) and reads only the response head, then nothing more. The server's RSS
(/proc/<pid>/status VmRSS) and `/readyz` admission counters are sampled while the sockets
hang, and again after they are closed; a last complete GET checks that the server answers.

`--env NAME=VALUE` passes settings (e.g. `IDRSERVE_LIMITS__MAX_INFLIGHT_BODY_BYTES`);
`--pythonpath` serves another checkout, so the same scenario measures code before and after
a change (settings a tree does not know must not be passed to it: they are errors).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REGION = "/api/v1/images/1001/region?level=0&c=0&y=0:2048&format=npy"
RCVBUF = 64 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def fetch(url: str, timeout: float = 60) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def open_stalled(port: int, path: str, timeout: float = 30) -> tuple[socket.socket, int, bytes]:
    """A connection that sent a GET for `path` and read only the response head (and
    whatever came in with it): its status and the body bytes read. It reads nothing more."""
    sock = socket.socket()
    # A small receive window, so the kernel cannot absorb the body on the client's behalf.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            break
        head += data
    status_line, _, _ = head.partition(b"\r\n")
    parts = status_line.split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    _, _, body = head.partition(b"\r\n\r\n")
    return sock, status, body


def readyz(base: str) -> dict[str, Any]:
    status, body = fetch(base + "/readyz", timeout=10)
    doc: dict[str, Any] = json.loads(body)
    admission: dict[str, Any] = doc.get("admission", {})
    return admission | {"http_status": status}


def run(
    clients: int, env: dict[str, str], pythonpath: str | None, zarr_root: Path, hold_s: float
) -> dict[str, Any]:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server_env = {
        **os.environ,
        "IDRSERVE_SOURCE__ZARR_ROOT": str(zarr_root),
        "IDRSERVE_SERVER__PORT": str(port),
        "IDRSERVE_LOG__ACCESS_LOG": "false",
        "IDRSERVE_LIMITS__MAX_CONCURRENT_RENDERS": "2",
        **env,
    }
    if pythonpath:
        server_env["PYTHONPATH"] = pythonpath
    proc = subprocess.Popen(
        [sys.executable, "-m", "idrserve", "serve"],
        env=server_env,
        # `-m` puts the working directory first on sys.path: run from the tree to be served.
        cwd=pythonpath,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    out: dict[str, Any] = {"clients": clients, "region": REGION, "env": env}
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if fetch(base + "/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"server did not start: {err[-2000:]}")
            time.sleep(0.2)
        status, body = fetch(base + REGION)
        assert status == 200, (status, body[:200])
        out["body_bytes"] = len(body)
        time.sleep(1)
        out["rss_before_mib"] = rss_mib(proc.pid)
        statuses = []
        for _ in range(clients):
            sock, status, _ = open_stalled(port, REGION)
            socks.append(sock)
            statuses.append(status)
        out["statuses"] = statuses
        peak = 0.0
        end = time.monotonic() + hold_s
        while time.monotonic() < end:
            peak = max(peak, rss_mib(proc.pid))
            time.sleep(0.25)
        out["rss_stalled_mib"] = peak
        out["readyz_stalled"] = readyz(base)
        for sock in socks:
            sock.close()
        socks.clear()
        time.sleep(2)
        out["rss_after_close_mib"] = rss_mib(proc.pid)
        out["readyz_after_close"] = readyz(base)
        status, body = fetch(base + REGION)
        out["final_get"] = [status, len(body)]
    finally:
        for sock in socks:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    out["growth_mib"] = round(out["rss_stalled_mib"] - out["rss_before_mib"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--hold-s", type=float, default=3.0, help="how long to sample RSS")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--pythonpath", help="serve the idrserve package from this tree")
    parser.add_argument("--zarr-root", type=Path)
    parser.add_argument("--out", type=Path, help="write the result as JSON")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    tmp = None
    zarr_root = args.zarr_root
    if zarr_root is None:
        from idrserve.demo import write_demo

        tmp = tempfile.TemporaryDirectory(prefix="idrserve-stalled-")
        zarr_root = Path(tmp.name)
        write_demo(zarr_root)
    try:
        result = run(args.clients, env, args.pythonpath, zarr_root, args.hold_s)
    finally:
        if tmp is not None:
            tmp.cleanup()
    result["command"] = "python bench/bench_stalled.py " + " ".join(argv or sys.argv[1:])
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
