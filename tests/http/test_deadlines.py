"""Request deadlines on one sweeping timer (http/deadlines.py)."""

from __future__ import annotations

import asyncio
import time

from idrserve.http.deadlines import Deadlines


async def guarded(deadlines: Deadlines, seconds: float) -> str:
    """What the error middleware does around a handler that takes `seconds`."""
    task = asyncio.current_task()
    assert task is not None
    deadlines.start(task)
    try:
        await asyncio.sleep(seconds)
        return "done"
    except asyncio.CancelledError:
        if deadlines.expired(task):
            return "deadline"
        raise
    finally:
        deadlines.stop(task)


async def test_slow_requests_stop_at_their_deadline_and_fast_ones_finish() -> None:
    deadlines = Deadlines(0.3)
    t0 = time.monotonic()
    slow = asyncio.create_task(guarded(deadlines, 5))
    await asyncio.sleep(0.2)
    later = asyncio.create_task(guarded(deadlines, 0.25))  # due at 0.5 s, done at 0.45 s
    fast = [asyncio.create_task(guarded(deadlines, 0.01)) for _ in range(20)]
    assert await slow == "deadline"
    assert 0.3 <= time.monotonic() - t0 < 0.3 + deadlines.tick_s + 0.1
    assert await later == "done"
    assert [await f for f in fast] == ["done"] * 20
    assert len(deadlines) == 0
    await asyncio.sleep(2 * deadlines.tick_s)
    assert deadlines._sweeping is None  # no timer left running once nothing is pending


async def test_a_client_that_goes_away_is_not_a_deadline() -> None:
    deadlines = Deadlines(10)
    task = asyncio.create_task(guarded(deadlines, 5))
    await asyncio.sleep(0.01)
    task.cancel()  # what aiohttp does when the connection drops
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the cancellation was swallowed as a deadline")
    assert len(deadlines) == 0


async def test_an_answered_deadline_leaves_the_task_usable() -> None:
    """After `expired()` the task is no longer being cancelled: it can still await (write
    its 504), as after `asyncio.timeout`."""
    deadlines = Deadlines(0.1)

    async def answer_late() -> str:
        result = await guarded(deadlines, 5)
        await asyncio.sleep(0.01)  # would raise CancelledError if the cancel were pending
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0
        return result

    assert await answer_late() == "deadline"


async def test_a_call_is_made_at_its_deadline_unless_stopped_first() -> None:
    """What a request waited for without a task registers (a cold tile in the pool): its
    call at the deadline, none once stopped, and one failing call stops no other."""
    deadlines = Deadlines(0.2)
    loop = asyncio.get_running_loop()
    made: list[str] = []
    called = asyncio.Event()

    def fails() -> None:
        raise RuntimeError("boom")

    deadlines.call_at(loop, "failing", fails)
    deadlines.call_at(loop, "overdue", lambda: (made.append("overdue"), called.set()))
    deadlines.call_at(loop, "answered", lambda: made.append("answered"))
    deadlines.stop("answered")
    t0 = time.monotonic()
    await asyncio.wait_for(called.wait(), 2)
    assert made == ["overdue"]
    assert 0.2 <= time.monotonic() - t0 < 0.2 + deadlines.tick_s + 0.1
    assert len(deadlines) == 0
