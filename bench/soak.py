"""Soak: viewer-like load against one idrserve worker for N minutes, RSS sampled throughout.

    python bench/soak.py --minutes 10 --sample-s 10 --users 32 --out bench/results/soak.json

Starts `idrserve serve` (one worker, the demo images unless `--zarr-root` is given) with small
cache bounds so that every bounded structure (response memory tier, URL index, metadata
cache) fills during the warm-up and must evict from then on. Each simulated user opens an
image's imgData, pans and zooms through random tiles with random rendering settings (so new
renders never stop), and fetches thumbnails. Every `--sample-s` seconds the server's RSS
(/proc/<pid>/status VmRSS) and the window's request count and p99 latency are recorded.

`--stalled N` adds N clients that never read a whole answer: each asks for a 16 MiB
`/api/v1` region on a socket with a 64 KiB receive window, reads the head and a little of the
body, then reads nothing for longer than the server's send timeout (`--send-timeout-s`, 5 s
here), and starts over on a new connection. The server runs with a byte budget of
`--body-budget-mib` (64 MiB) for them to fill; each sample also records `/readyz`'s
in-flight body bytes and the response memory tier's fill, and the summary says whether that
tier (16 MiB here) reached its cap.

The verdict compares RSS after the warm-up (the first `--warmup` fraction of the run) with
the end: growth ≤ `--max-growth` (10 %) passes. `tests/ops/test_soak.py` runs a 40-second
version of this in CI; the 10-minute run is not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

# Demo images and their full-resolution size (see idrserve/demo.py).
IMAGES = {1001: (4096, 4096, 6), 1002: (512, 512, 3), 1004: (1024, 768, 2), 1005: (2048, 2048, 3)}
COLOURS = ("FF0000", "00FF00", "0000FF", "FFFFFF", "FF00FF")
# What a stalled reader asks for: one channel of 1001, 4096 × 2048 uint16 (16 MiB).
STALLED_REGION = "/api/v1/images/1001/region?level=0&c={c}&y=0:2048&format=npy"
MIB = 1024 * 1024


@dataclass
class Sample:
    t_s: float
    rss_mib: float
    requests: int
    errors: int
    p99_ms: float
    # From /readyz: bodies charged to limits.max_inflight_body_bytes, and the memory tier.
    inflight_body_mib: float = 0.0
    memory_cache_mib: float = 0.0


@dataclass
class SoakResult:
    duration_s: float
    users: int
    samples: list[Sample] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    warmup_rss_mib: float = 0.0
    final_rss_mib: float = 0.0
    max_rss_mib: float = 0.0
    growth: float = 0.0
    stalled: int = 0
    # Outcomes of the stalled readers' requests: "200 disconnected" (the server let go after
    # its send timeout), "200 complete", "503", or a client error's name.
    stalled_outcomes: dict[str, int] = field(default_factory=dict)
    body_budget_mib: float = 0.0
    memory_cache_max_mib: float = 0.0
    memory_cache_peak_mib: float = 0.0
    admission_end: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        p99s = [s.p99_ms for s in self.samples if s.requests]
        text = (
            f"{self.duration_s:.0f} s, {self.users} users, {sum(self.statuses.values())} "
            f"requests {self.statuses}; RSS after warm-up {self.warmup_rss_mib:.1f} MiB, "
            f"end {self.final_rss_mib:.1f} MiB, max {self.max_rss_mib:.1f} MiB, growth "
            f"{self.growth * 100:+.1f} %; p99 per window {min(p99s):.1f}-{max(p99s):.1f} ms"
        )
        if self.memory_cache_max_mib:
            reached = self.memory_cache_peak_mib >= 0.95 * self.memory_cache_max_mib
            text += (
                f"; memory tier peak {self.memory_cache_peak_mib:.1f} of "
                f"{self.memory_cache_max_mib:.1f} MiB ({'cap reached' if reached else 'NOT full'})"
            )
        if self.stalled:
            peak = max(s.inflight_body_mib for s in self.samples)
            text += (
                f"; {self.stalled} stalled readers {self.stalled_outcomes}, in-flight body bytes "
                f"peak {peak:.1f} of {self.body_budget_mib:.0f} MiB"
            )
        return text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _random_url(rng: random.Random, base: str) -> str:
    iid = rng.choice(list(IMAGES))
    width, height, levels = IMAGES[iid]
    kind = rng.random()
    if kind < 0.05:
        return f"{base}/webgateway/imgData/{iid}/"
    if kind < 0.15:
        return f"{base}/webgateway/render_thumbnail/{iid}/{rng.choice((64, 96, 128))}/"
    level = rng.randrange(levels)
    lw, lh = max(1, width >> level), max(1, height >> level)
    col, row = rng.randrange(max(1, lw // 256)), rng.randrange(max(1, lh // 256))
    channels = ",".join(
        f"{c}|0:{rng.choice((2000, 4000, 8000, 20000))}${rng.choice(COLOURS)}" for c in (1, 2)
    )
    return (
        f"{base}/webgateway/render_image_region/{iid}/0/0/?tile={level},{col},{row},256,256"
        f"&c={channels}&m=c&q=0.{rng.randrange(50, 99)}"
    )


async def _user(
    base: str, seed: int, stop: float, latencies: list[float], statuses: dict[str, int]
) -> None:
    rng = random.Random(seed)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < stop:
            url = _random_url(rng, base)
            t0 = time.monotonic()
            try:
                async with session.get(url) as resp:
                    await resp.read()
                    key = str(resp.status)
            except (TimeoutError, aiohttp.ClientError) as exc:
                key = type(exc).__name__
            latencies.append(time.monotonic() - t0)
            statuses[key] = statuses.get(key, 0) + 1


async def _stalled_reader(
    host: str, port: int, seed: int, stop: float, stall_s: float, outcomes: dict[str, int]
) -> None:
    """Ask for a large body, read its head and a little, stall past the send timeout, and
    start over on a new connection; count what became of each request."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    while time.monotonic() < stop:
        sock = socket.socket()
        # A small receive window: the kernel must not absorb the body for the client.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.setblocking(False)
        writer = None
        try:
            await loop.sock_connect(sock, (host, port))
            # A small stream buffer too: reading pauses after 2 × 16 KiB.
            reader, writer = await asyncio.open_connection(sock=sock, limit=16 * 1024)
            path = STALLED_REGION.format(c=rng.randrange(3))
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            status = head.split(b" ", 2)[1].decode()
            length = int(re.findall(rb"(?i)\r\ncontent-length: *(\d+)", head)[0])
            if status != "200":
                await asyncio.wait_for(reader.readexactly(length), 10)
                key = status
                await asyncio.sleep(0.5)  # as a client honouring Retry-After would, roughly
            else:
                got = len(await reader.read(4096))  # a little of the body
                await asyncio.sleep(stall_s)  # then nothing, past the server's send timeout
                try:
                    while got < length:
                        more = await asyncio.wait_for(reader.read(1 << 20), 30)
                        if not more:
                            break  # EOF before the end: the server closed the connection
                        got += len(more)
                except ConnectionResetError:
                    pass
                key = "200 complete" if got >= length else "200 disconnected"
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
            key = type(exc).__name__
        finally:
            if writer is not None:
                writer.close()
            else:
                sock.close()
        outcomes[key] = outcomes.get(key, 0) + 1


def _readyz(base: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
            return doc
    except (OSError, ValueError):
        return {}


def _p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000


async def _drive(
    base: str,
    pid: int,
    duration_s: float,
    sample_s: float,
    users: int,
    result: SoakResult,
    stall_s: float = 0.0,
) -> None:
    stop = time.monotonic() + duration_s
    latencies: list[float] = []
    statuses = result.statuses
    tasks = [
        asyncio.create_task(_user(base, seed, stop, latencies, statuses)) for seed in range(users)
    ]
    host, port = base.removeprefix("http://").split(":")
    tasks += [
        asyncio.create_task(
            _stalled_reader(host, int(port), seed, stop, stall_s, result.stalled_outcomes)
        )
        for seed in range(result.stalled)
    ]
    start = time.monotonic()
    errors_before = 0
    while time.monotonic() < stop:
        await asyncio.sleep(min(sample_s, max(0.0, stop - time.monotonic())))
        window, latencies[:] = list(latencies), []
        errors = sum(n for k, n in statuses.items() if not k.startswith(("2", "3", "4")))
        ready = await asyncio.to_thread(_readyz, base)
        memory = ready.get("dependencies", {}).get("memory_cache", {})
        result.memory_cache_max_mib = memory.get("max_bytes", 0) / MIB
        result.samples.append(
            Sample(
                round(time.monotonic() - start, 1),
                round(rss_mib(pid), 1),
                len(window),
                errors - errors_before,
                round(_p99(window), 1),
                round(ready.get("admission", {}).get("inflight_body_bytes", 0) / MIB, 1),
                round(memory.get("bytes", 0) / MIB, 1),
            )
        )
        errors_before = errors
    await asyncio.gather(*tasks)
    result.admission_end = (await asyncio.to_thread(_readyz, base)).get("admission", {})


def run_soak(
    duration_s: float,
    sample_s: float = 10,
    users: int = 32,
    zarr_root: Path | None = None,
    warmup: float = 0.3,
    env: dict[str, str] | None = None,
    stalled: int = 0,
    send_timeout_s: float = 5.0,
    body_budget_mib: float = 64.0,
) -> SoakResult:
    """Start a server, load it for `duration_s`, stop it; RSS growth after `warmup`."""
    tmp = None
    if zarr_root is None:
        from idrserve.demo import write_demo

        tmp = tempfile.TemporaryDirectory(prefix="idrserve-soak-")
        zarr_root = Path(tmp.name)
        write_demo(zarr_root)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server_env = {
        **os.environ,
        "IDRSERVE_SOURCE__ZARR_ROOT": str(zarr_root),
        "IDRSERVE_SERVER__PORT": str(port),
        "IDRSERVE_SERVER__WORKERS": "1",
        "IDRSERVE_LOG__ACCESS_LOG": "false",
        # Small bounds, reached during the warm-up, so the run shows them holding.
        "IDRSERVE_CACHE__MEMORY_MAX_BYTES": str(16 * 1024 * 1024),
        "IDRSERVE_CACHE__URL_INDEX_MAX_BYTES": str(2 * 1024 * 1024),
        "IDRSERVE_SOURCE__META_CACHE_MAX_BYTES": str(64 * 1024),
        **(
            {
                "IDRSERVE_LIMITS__SEND_TIMEOUT_S": str(send_timeout_s),
                "IDRSERVE_LIMITS__MAX_INFLIGHT_BODY_BYTES": str(int(body_budget_mib * MIB)),
            }
            if stalled
            else {}
        ),
        **(env or {}),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "idrserve", "serve"],
        env=server_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.2)
        result = SoakResult(duration_s, users, stalled=stalled)
        if stalled:
            result.body_budget_mib = body_budget_mib
        stall_s = send_timeout_s + 2
        asyncio.run(_drive(base, proc.pid, duration_s, sample_s, users, result, stall_s))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if tmp is not None:
            tmp.cleanup()
    after = [s for s in result.samples if s.t_s >= warmup * duration_s]
    result.warmup_rss_mib = after[0].rss_mib
    result.final_rss_mib = after[-1].rss_mib
    result.max_rss_mib = max(s.rss_mib for s in after)
    result.growth = (result.max_rss_mib - result.warmup_rss_mib) / result.warmup_rss_mib
    result.memory_cache_peak_mib = max(s.memory_cache_mib for s in result.samples)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=0.3, help="fraction of the run")
    parser.add_argument("--max-growth", type=float, default=0.10)
    parser.add_argument("--zarr-root", type=Path)
    parser.add_argument("--stalled", type=int, default=0, help="stalled large-body readers")
    parser.add_argument("--send-timeout-s", type=float, default=5.0)
    parser.add_argument("--body-budget-mib", type=float, default=64.0)
    parser.add_argument("--out", type=Path, help="write the samples and summary as JSON")
    args = parser.parse_args(argv)
    result = run_soak(
        args.minutes * 60,
        args.sample_s,
        args.users,
        args.zarr_root,
        args.warmup,
        stalled=args.stalled,
        send_timeout_s=args.send_timeout_s,
        body_budget_mib=args.body_budget_mib,
    )
    for s in result.samples:
        print(
            f"t={s.t_s:7.1f}s rss={s.rss_mib:7.1f}MiB requests={s.requests:6d} "
            f"errors={s.errors} p99={s.p99_ms:.1f}ms inflight_body={s.inflight_body_mib}MiB "
            f"memory_tier={s.memory_cache_mib}MiB"
        )
    print(result.summary())
    if args.out:
        doc: dict[str, Any] = asdict(result)
        doc["command"] = "python bench/soak.py " + " ".join(argv or sys.argv[1:])
        doc["summary"] = result.summary()
        args.out.write_text(json.dumps(doc, indent=1))
    return 0 if result.growth <= args.max_growth else 1


if __name__ == "__main__":
    raise SystemExit(main())
