"""CPU time of the event loop's thread and of the CPU pool's threads, on /metrics.

Why per thread: a worker is full when its event loop is, whatever the process's CPU says. The
loop parses every request, plans it, answers cache hits and writes every response; the pool
decodes, renders and encodes. `process_cpu_seconds_total` adds the two, so a worker at 100 %
of a core cannot tell an operator whether requests wait for the loop (another worker would
help) or for renders (more CPU threads would). `idrserve_thread_cpu_seconds_total{thread}`
splits it: `loop` and `cpu_pool`, in seconds, one series per worker process (`pid`). The
workers' figures travel in the snapshots `idrserve_http_*` are summed from
(http/reqmetrics.py), so every scrape shows every worker of `serve --workers N`, each at most
a second old, whichever worker answers it; a full loop is one worker's, hence a label rather
than a sum.

It is also how bench/bench_http.py splits a tile rendered in the pool: the loop's CPU a tile
is the request handling around the kernel, measured rather than inferred from wall time.
Measured with it (docs/benchmarks.md#1024²-tiles-the-chunk-bioformats2raw-writes-2026-12-07):
the loop spends about 0.9 ms of CPU on each cold 1024² tile rendered in the pool, against
0.06 ms for a memory hit of the same body.

Linux only: the time comes from `/proc/self/task/<tid>/schedstat` (nanoseconds on the CPU),
or from `/proc/self/task/<tid>/stat` (clock ticks) where schedstat is missing. Elsewhere the
metric has no samples. A thread that has exited keeps the last time read for it, so the
counter never goes down.
"""

from __future__ import annotations

import os
import sys
import threading

ROLES = ("loop", "cpu_pool")
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def thread_cpu_seconds(tid: int) -> float | None:
    """CPU seconds thread `tid` of this process has run, or None when it cannot be read."""
    task = f"/proc/self/task/{tid}"
    try:
        with open(f"{task}/schedstat", "rb") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"{task}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces and parentheses): state is 3rd,
    # utime the 14th and stime the 15th of the whole line.
    fields = text[text.rindex(b")") + 2 :].split()
    try:
        return (int(fields[11]) + int(fields[12])) * _TICK_S
    except (ValueError, IndexError):
        return None


class ThreadCpu:
    """Threads register under a role; `seconds` reads their time (for /metrics)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, dict[int, float]] = {role: {} for role in ROLES}

    def add_current(self, role: str) -> None:
        """Count the calling thread under `role` (the loop at start-up, each pool thread in
        its initializer)."""
        if role not in self._last:
            raise ValueError(f"unknown thread role {role!r}")
        if sys.platform != "linux":
            return
        with self._lock:
            self._last[role].setdefault(threading.get_native_id(), 0.0)

    def seconds(self) -> dict[str, float]:
        """Each role's CPU seconds so far ({} where they cannot be read)."""
        if sys.platform != "linux":
            return {}
        out = {}
        with self._lock:
            for role, threads in self._last.items():
                for tid, last in threads.items():
                    now = thread_cpu_seconds(tid)
                    if now is not None and now > last:
                        threads[tid] = now
                out[role] = sum(threads.values())
        return out
