"""A circuit breaker: stop calling a failing dependency, probe it again after a backoff."""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed → open after `failures` consecutive errors; one probe per backoff while open.

    The backoff doubles after each failed probe, from `backoff_s` up to `backoff_max_s`, and
    a success closes the breaker and resets it. Failures of calls that were already in flight
    when the breaker opened do not double the backoff: only a failed probe does.
    """

    def __init__(
        self,
        failures: int,
        backoff_s: float,
        backoff_max_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = max(1, failures)
        self._base = backoff_s
        self._max = max(backoff_s, backoff_max_s)
        self._clock = clock
        self._backoff = backoff_s
        self._consecutive = 0
        self._open_until: float | None = None
        self._probing = False
        self.opened = 0  # how many times the breaker opened (for stats and tests)

    @property
    def is_open(self) -> bool:
        """True while calls are being skipped (a probe is not due yet)."""
        return self._open_until is not None and self._clock() < self._open_until

    @property
    def backoff_s(self) -> float:
        return self._backoff

    @property
    def state(self) -> str:
        if self._open_until is None:
            return "closed"
        return "open" if self._clock() < self._open_until else "half-open"

    def allow(self) -> bool:
        """Whether a call may go through now; while open, lets one probe through per backoff."""
        if self._open_until is None:
            return True
        now = self._clock()
        if now < self._open_until:
            return False
        # This call is the probe. Keep every other call out for another backoff period in
        # case the probe never reports back (for example because it was cancelled).
        self._open_until = now + self._backoff
        self._probing = True
        return True

    def record_success(self) -> None:
        self._consecutive = 0
        self._open_until = None
        self._probing = False
        self._backoff = self._base

    def record_failure(self) -> None:
        self._consecutive += 1
        if self._probing:
            self._probing = False
            self._backoff = min(self._backoff * 2, self._max)
            self._open_until = self._clock() + self._backoff
        elif self._open_until is None and self._consecutive >= self._threshold:
            self._open()

    def trip(self) -> None:
        """Open at once (an error that will certainly repeat, such as a full disk)."""
        self._consecutive = max(self._consecutive, self._threshold)
        if self._probing:
            self.record_failure()
        elif self._open_until is None:
            self._open()

    def _open(self) -> None:
        self._open_until = self._clock() + self._backoff
        self.opened += 1
