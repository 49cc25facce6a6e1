"""Event-loop lag on /metrics: how long a callback waits for the loop, sampled 20 times a second.

A cold tile small enough renders inline on the event loop (`server.inline_render_pixels`), so
every request queued behind it waits for it; a garbage-collection pass or a slow handler does
the same to all of them. `idrserve_event_loop_lag_seconds` is the histogram of that wait: a
thread hands the loop a callback about every `INTERVAL_S` (`call_soon_threadsafe`, which wakes
an idle loop at once) and the callback observes how long after the tick it ran. A timer in the
loop itself (`asyncio.sleep`) would be late by up to a millisecond even when idle, as epoll's
timeout is rounded up to whole milliseconds.

The wait is counted from the tick the thread was due at, not from when the thread got to run:
the thread needs the GIL to hand anything over and gets it only when the loop lets it go, most
often as a render starts (the render kernels release the GIL), so timed from then a sample
skipped however long the loop had held the GIL, which a request arriving at the tick waits
too. Timed from the tick, 78–85 % of samples are under 2 ms at 16 cold 256² connections where
the old way read 98 % (bench/results/http-lag-vm-2026-12-05.md); the thread's own wake-up
counts as well, so the figure errs high, never low. Ticks are jittered (0.5–1.5 intervals apart) so
they do not fall in step with the loop's own periodic work. Per process, like the other
non-request metrics. bench/bench_http.py reads its p99 under load (issue target: ≤ 2 ms).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator

from prometheus_client import CollectorRegistry, Histogram

INTERVAL_S = 0.05
BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5)


class LoopLag:
    """The sampler; `run()` is a context for the app's `cleanup_ctx` (starts and stops it)."""

    def __init__(self, registry: CollectorRegistry, interval_s: float = INTERVAL_S) -> None:
        self.histogram = Histogram(
            "idrserve_event_loop_lag_seconds",
            "How long a callback handed to the event loop waited to run (sampled)",
            buckets=BUCKETS,
            registry=registry,
        )
        self.interval_s = interval_s
        self._stop = threading.Event()

    def _observe(self, due: float) -> None:
        self.histogram.observe(time.perf_counter() - due)

    def _sample(self, loop: asyncio.AbstractEventLoop) -> None:
        jitter = random.Random()
        due = time.perf_counter() + self.interval_s
        while not self._stop.wait(max(0.0, due - time.perf_counter())):
            try:
                loop.call_soon_threadsafe(self._observe, due)
            except RuntimeError:  # the loop is closed
                return
            due += self.interval_s * jitter.uniform(0.5, 1.5)
            now = time.perf_counter()
            if due < now:  # this thread fell a tick behind: skip it rather than burst
                due = now + self.interval_s

    async def run(self, _app: object) -> AsyncIterator[None]:
        thread = threading.Thread(
            target=self._sample,
            args=(asyncio.get_running_loop(),),
            name="idrs-looplag",
            daemon=True,
        )
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join(1.0)
