"""`SingleFlight`: one computation per key for concurrent callers, owned until `aclose`."""

from __future__ import annotations

import asyncio

import pytest

from idrserve.flight import SingleFlight


def leftover_tasks() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


async def test_concurrent_callers_share_one_computation() -> None:
    flights: SingleFlight[int, str] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def work() -> str:
        nonlocal calls
        calls += 1
        await gate.wait()
        return "done"

    tasks = [asyncio.create_task(flights.run(7, work)) for _ in range(20)]
    await asyncio.sleep(0)
    assert len(flights) == 1
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert [r for r, _ in results] == ["done"] * 20
    assert [joined for _, joined in results] == [False] + [True] * 19
    assert len(flights) == 0
    assert (await flights.run(7, work)) == ("done", False) and calls == 2  # nothing remembered
    assert not leftover_tasks()


async def test_an_exception_reaches_every_waiter() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()

    async def fail() -> int:
        await gate.wait()
        raise LookupError("gone")

    tasks = [asyncio.create_task(flights.run("k", fail)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, LookupError) and str(r) == "gone" for r in results)
    assert len(flights) == 0 and not leftover_tasks()


async def test_a_cancelled_waiter_does_not_cancel_the_others() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()

    async def work() -> int:
        await gate.wait()
        return 42

    tasks = [asyncio.create_task(flights.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    tasks[0].cancel()  # the caller that started it leaves
    tasks[3].cancel()
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [results[i] for i in (1, 2, 4)] == [(42, True)] * 3
    assert not leftover_tasks()


@pytest.mark.parametrize("cancel_abandoned", [True, False])
async def test_work_every_caller_abandoned(cancel_abandoned: bool) -> None:
    """Cancelled by default; run to the end (and its error retrieved) when asked."""
    flights: SingleFlight[str, int] = SingleFlight(cancel_abandoned=cancel_abandoned)
    gate = asyncio.Event()
    started = asyncio.Event()
    outcome: list[str] = []

    async def work() -> int:
        started.set()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("finished")
        raise ValueError("nobody listens")

    waiters = [asyncio.create_task(flights.run("k", work)) for _ in range(3)]
    await started.wait()
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert outcome == ["cancelled" if cancel_abandoned else "finished"]
    assert len(flights) == 0 and not leftover_tasks()


async def test_aclose_cancels_pending_work_and_leaves_no_task() -> None:
    flights: SingleFlight[int, int] = SingleFlight(cancel_abandoned=False)
    cancelled: list[int] = []

    async def forever(i: int) -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    callers = [asyncio.create_task(flights.run(i, lambda i=i: forever(i))) for i in range(3)]
    await asyncio.sleep(0)
    callers[0].cancel()  # flight 0 runs on without callers: still owned
    await asyncio.sleep(0)
    assert len(flights) == 3
    assert await flights.aclose() == 3
    assert sorted(cancelled) == [0, 1, 2] and len(flights) == 0
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert not leftover_tasks()
    # Closed: a late caller runs its own work in its own task, unshared.
    assert await flights.run(9, lambda: _value(5)) == (5, False)
    assert not leftover_tasks()


async def test_aclose_lets_running_work_finish_within_the_timeout() -> None:
    flights: SingleFlight[str, int] = SingleFlight()

    async def quick() -> int:
        await asyncio.sleep(0.01)
        return 1

    caller = asyncio.create_task(flights.run("k", quick))
    await asyncio.sleep(0)
    assert await flights.aclose(timeout_s=5.0) == 0
    assert await caller == (1, False)
    assert not leftover_tasks()


async def _value(v: int) -> int:
    return v
