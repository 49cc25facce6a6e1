"""One bounded runner for background cache writes: no fire-and-forget tasks elsewhere."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class JobRunner:
    """Runs at most `max_pending` jobs at once as tasks it owns; extra jobs are refused.

    Jobs are independent tasks, so a cancelled request does not cancel the write it
    scheduled. `drain` waits for them (bounded) and cancels what is left.
    """

    def __init__(self, max_pending: int) -> None:
        self._max = max(1, max_pending)
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.failed = 0

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def submit(self, job: Callable[[], Awaitable[None]]) -> bool:
        """Start `job()` in the background; False (and nothing started) when full or closed."""
        if self._closed or len(self._tasks) >= self._max:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        task = loop.create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, job: Callable[[], Awaitable[None]]) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Jobs handle their own expected failures; anything else is a bug worth one line.
            self.failed += 1
            log.exception("cache background job failed")

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until no job is pending (including jobs started meanwhile); False on timeout."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
        except TimeoutError:
            return False
        return True

    async def drain(self, timeout_s: float) -> int:
        """Refuse new jobs, wait up to `timeout_s` for running ones, cancel the rest."""
        self._closed = True
        await self.wait(timeout_s)
        left = list(self._tasks)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)
        return len(left)
