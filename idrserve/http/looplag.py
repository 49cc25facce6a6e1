"""Event-loop lag on /metrics: how long a ready socket waits for the loop, sampled 20×/s.

A cold tile small enough renders inline on the event loop (`server.inline_render_pixels`), so
every request queued behind it waits for it; a garbage-collection pass or a slow handler does
the same to all of them. `idrserve_event_loop_lag_seconds` is the histogram of that wait.

On Linux the sample is a timer file descriptor (timerfd, CLOCK_MONOTONIC) the loop watches like
a client socket: the kernel makes it readable at the tick, with no thread and no GIL involved,
and the loop's reader observes how long after the tick it ran. That is what a request arriving
at the tick waits: for the loop to finish what it is doing (the renders and parses of its
turn, including those of sockets that were ready in the same poll) and come back to its
sockets. Nothing else is counted: an idle loop reads tens of microseconds.

Until 2026-12-06 the sampler was a thread handing the loop a callback (`call_soon_threadsafe`),
which is still the fallback where timerfd is missing. That thread needs the GIL to hand
anything over, and while the loop runs Python it gets it only when the loop lets go (as a
render starts, the kernels release it) or after the interpreter's 5 ms switch interval: its
samples counted its own wait for the GIL, which no request arriving on a socket waits, and read
the 5–10 ms buckets at 16 cold 256² connections (bench/results/http-lag-vm-2026-12-05.md).
An `asyncio.sleep` timer would not do either: epoll's timeout is whole milliseconds, so it is
late by up to one even when idle. Ticks are jittered (0.5–1.5 intervals apart) so they do not
fall in step with the loop's own periodic work. Per process, like the other non-request
metrics. bench/bench_http.py reads its p99 under load (issue target: ≤ 2 ms).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable

from prometheus_client import CollectorRegistry, Histogram

INTERVAL_S = 0.05
# Fine between 1 and 5 ms, where the 2 ms target lies: with only 2 and 5 ms bounds a p99 of
# 2.1 ms read as 5 (bench_http.lag_p99_ms reports the bucket's upper bound).
BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.0015,
    0.002,
    0.0025,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
    2.5,
)
_TFD_TIMER_ABSTIME = 1
log = logging.getLogger(__name__)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class TimerFd:
    """A one-shot timer on `time.monotonic()`'s clock that the event loop can watch as a file.

    Python 3.13 has `os.timerfd_create`; before it, glibc's functions are called through
    ctypes (the same two system calls). `open()` is None where neither exists (not Linux).
    """

    def __init__(self, fd: int, settime: Callable[[int, float], None]) -> None:
        self.fd = fd
        self._settime = settime

    @classmethod
    def open(cls) -> TimerFd | None:
        flags = os.O_NONBLOCK | os.O_CLOEXEC  # TFD_NONBLOCK and TFD_CLOEXEC are these
        clock = getattr(time, "CLOCK_MONOTONIC", None)
        if clock is None:
            return None
        create = getattr(os, "timerfd_create", None)
        if create is not None:  # Python ≥ 3.13
            try:
                fd = create(clock, flags=flags)
            except OSError:  # out of descriptors, or refused: the thread samples instead
                return None
            return cls(fd, _os_settime)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc_create = libc.timerfd_create
            libc_settime = libc.timerfd_settime
        except (OSError, AttributeError):
            return None
        libc_create.argtypes = (ctypes.c_int, ctypes.c_int)
        libc_create.restype = ctypes.c_int
        libc_settime.argtypes = (
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        )
        libc_settime.restype = ctypes.c_int
        fd = libc_create(clock, flags)
        if fd < 0:
            return None

        def settime(fd: int, at: float) -> None:
            sec = int(at)
            nsec = min(int((at - sec) * 1e9), 999_999_999)
            spec = _Itimerspec(_Timespec(0, 0), _Timespec(sec, nsec))
            if libc_settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))

        return cls(fd, settime)

    def arm(self, at: float) -> None:
        """Readable once `time.monotonic()` reaches `at` (one shot)."""
        self._settime(self.fd, at)

    def expired(self) -> bool:
        """Whether the timer went off (and clear it); False on a spurious wake-up."""
        try:
            return len(os.read(self.fd, 8)) == 8
        except BlockingIOError:
            return False

    def close(self) -> None:
        os.close(self.fd)


def _os_settime(fd: int, at: float) -> None:
    os.timerfd_settime(fd, flags=os.TFD_TIMER_ABSTIME, initial=at)  # type: ignore[attr-defined]


class LoopLag:
    """The sampler; `run()` is a context for the app's `cleanup_ctx` (starts and stops it)."""

    def __init__(
        self, registry: CollectorRegistry, interval_s: float = INTERVAL_S, timerfd: bool = True
    ) -> None:
        self.histogram = Histogram(
            "idrserve_event_loop_lag_seconds",
            "How long a ready file descriptor waited for the event loop (sampled)",
            buckets=BUCKETS,
            registry=registry,
        )
        self.interval_s = interval_s
        self._timerfd = timerfd
        # What took the samples: "timerfd", "thread" (the fallback), or "" before `run`.
        self.source = ""
        self._stop = threading.Event()
        self._jitter = random.Random()
        self._due = 0.0

    def _next(self, due: float, now: float) -> float:
        due += self.interval_s * self._jitter.uniform(0.5, 1.5)
        return now + self.interval_s if due < now else due  # behind: skip, never burst

    def _fired(self, timer: TimerFd) -> None:
        now = time.monotonic()
        if not timer.expired():
            return
        self.histogram.observe(now - self._due)
        self._due = self._next(self._due, now)
        try:
            timer.arm(self._due)
        except OSError:  # never seen; if it happens, sampling stops and the server goes on
            log.warning("event-loop lag sampling stopped: the timer could not be re-armed")
            asyncio.get_running_loop().remove_reader(timer.fd)

    def _observe(self, due: float) -> None:
        self.histogram.observe(time.perf_counter() - due)

    def _sample(self, loop: asyncio.AbstractEventLoop) -> None:
        due = time.perf_counter() + self.interval_s
        while not self._stop.wait(max(0.0, due - time.perf_counter())):
            try:
                loop.call_soon_threadsafe(self._observe, due)
            except RuntimeError:  # the loop is closed
                return
            due = self._next(due, time.perf_counter())

    async def run(self, _app: object) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        timer = TimerFd.open() if self._timerfd else None
        if timer is not None:
            self._due = time.monotonic() + self.interval_s
            try:
                timer.arm(self._due)
            except OSError:  # refused at the first arming: the thread samples instead
                timer.close()
                timer = None
        if timer is not None:
            self.source = "timerfd"
            loop.add_reader(timer.fd, self._fired, timer)
            try:
                yield
            finally:
                loop.remove_reader(timer.fd)
                timer.close()
            return
        self.source = "thread"
        thread = threading.Thread(
            target=self._sample, args=(loop,), name="idrs-looplag", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join(1.0)
