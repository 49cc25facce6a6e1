"""The CPU pool: threads for chunk decode, render and encode, at a lower priority than the loop.

With a worker per core, the event loop and the pool's threads share a core. A cold 512² tile
keeps a pool thread busy for about 2 ms of C code that holds no GIL, and at equal priority the
kernel's scheduler lets it run out its slice before the loop thread, woken by a new request,
gets the core: every request on the process (a memory hit, `/readyz`) then waits for it. Pool
threads niced by `server.cpu_thread_nice` give the loop the core as soon as it has work, and
still take every cycle the loop leaves idle. Measured at 16 cold connections on one core
(bench/results/http-lag-vm-2026-12-05.md, two runs), 512² tiles: request p99 45.9–46.6 →
43.9–44.7 ms, p99/p50 1.10–1.11 → 1.04–1.06, throughput within noise (0.98–1.01×). Five and
ten measured alike; ten is the default. Linux sets a thread's nice value by its thread id; elsewhere
the value would apply to the whole process, so it is left alone. Raising one's own nice value
needs no capability; a sandbox that refuses it gets a warning, not a broken pool.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from idrserve.threadcpu import ThreadCpu

log = logging.getLogger(__name__)


def _lower_priority(nice: int) -> None:
    """Pool-thread initializer: add `nice` to this thread's own nice value (Linux)."""
    if nice <= 0 or sys.platform != "linux":
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError as exc:  # a sandbox that forbids it: run at the loop's priority
        log.warning("could not lower the CPU pool's priority: %s", exc)


def _start_thread(nice: int, cpu: ThreadCpu | None) -> None:
    _lower_priority(nice)
    if cpu is not None:
        cpu.add_current("cpu_pool")


def cpu_pool(threads: int, nice: int = 0, cpu: ThreadCpu | None = None) -> ThreadPoolExecutor:
    """The pool the app decodes, renders and encodes in, its threads `nice` steps below us
    and their CPU time counted in `cpu` (idrserve_thread_cpu_seconds_total)."""
    return ThreadPoolExecutor(
        threads, thread_name_prefix="idrs-cpu", initializer=_start_thread, initargs=(nice, cpu)
    )
