"""Inline renders take one event-loop iteration each, in arrival order (idrserve/turns.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from idrserve.turns import InlineTurns


class IterationClock:
    """Counts event-loop iterations: a callback that re-schedules itself once per iteration."""

    def __init__(self) -> None:
        self.now = 0
        self._stopped = False

    def start(self) -> None:
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        if not self._stopped:
            self.now += 1
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._stopped = True


async def _render(turns: InlineTurns, clock: IterationClock, name: str, log: list) -> None:
    await turns.turn()
    log.append((name, clock.now))


async def test_a_lone_render_does_not_wait() -> None:
    turns = InlineTurns()
    coro = turns.turn()
    with pytest.raises(StopIteration):
        coro.send(None)  # finished without suspending: no future, no extra iteration
    assert turns.queued == 0


async def test_one_render_per_iteration_in_arrival_order() -> None:
    turns, clock, log = InlineTurns(per_turn=1), IterationClock(), []
    clock.start()
    tasks = [asyncio.create_task(_render(turns, clock, f"r{i}", log)) for i in range(6)]
    await asyncio.gather(*tasks)
    clock.stop()
    assert [name for name, _ in log] == [f"r{i}" for i in range(6)]
    iterations = [it for _, it in log]
    assert len(set(iterations)) == 6, iterations  # never two in one iteration
    assert turns.queued == 5


async def test_other_callbacks_run_between_queued_renders() -> None:
    """What the queue is for: work that becomes ready (a socket, the lag sampler) is not held
    behind every queued render, only behind the one of the current iteration."""
    turns, clock, log = InlineTurns(per_turn=1), IterationClock(), []
    clock.start()
    loop = asyncio.get_running_loop()
    tasks = [asyncio.create_task(_render(turns, clock, f"r{i}", log)) for i in range(4)]
    await asyncio.sleep(0)  # r0 has rendered, the others wait
    loop.call_soon(lambda: log.append(("other", clock.now)))
    await asyncio.gather(*tasks)
    clock.stop()
    names = [name for name, _ in log]
    assert names.index("other") < names.index("r2"), names


async def test_a_cancelled_waiter_does_not_stall_the_queue() -> None:
    turns, clock, log = InlineTurns(per_turn=1), IterationClock(), []
    clock.start()
    tasks = [asyncio.create_task(_render(turns, clock, f"r{i}", log)) for i in range(4)]
    await asyncio.sleep(0)
    tasks[1].cancel()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    clock.stop()
    assert isinstance(results[1], asyncio.CancelledError)
    assert [name for name, _ in log] == ["r0", "r2", "r3"]


async def test_the_queue_empties_and_the_next_render_goes_at_once() -> None:
    turns, clock, log = InlineTurns(per_turn=1), IterationClock(), []
    clock.start()
    await asyncio.gather(*(_render(turns, clock, f"r{i}", log) for i in range(3)))
    for _ in range(3):
        await asyncio.sleep(0)  # let the turn of the last render's iteration pass
    before = turns.queued
    coro = turns.turn()
    with pytest.raises(StopIteration):
        coro.send(None)
    clock.stop()
    assert turns.queued == before


async def test_per_turn_lets_that_many_through_each_iteration() -> None:
    turns, clock, log = InlineTurns(per_turn=3), IterationClock(), []
    clock.start()
    await asyncio.gather(*(_render(turns, clock, f"r{i}", log) for i in range(10)))
    clock.stop()
    assert [name for name, _ in log] == [f"r{i}" for i in range(10)]
    per_iteration = Counter(it for _, it in log)
    # r0 at once, then r1–r9 three per iteration
    assert sorted(per_iteration.values()) == [1, 3, 3, 3], per_iteration


async def test_take_now_takes_only_a_free_iteration() -> None:
    turns = InlineTurns(per_turn=1)
    assert turns.take_now()  # the iteration's first render
    assert not turns.take_now()  # its second would have to wait
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert turns.take_now()  # a later iteration, nobody queued
    assert turns.queued == 0


async def test_deferred_renders_keep_arrival_order_with_waiting_tasks() -> None:
    """Deferred renders (no task: the connection handler's cold tiles) and tasks' turns share
    one queue: called in arrival order, `per_turn` an iteration, one that had nothing to do
    taking no turn, one that raised taking its turn and stopping nothing."""
    turns, clock, log = InlineTurns(per_turn=2), IterationClock(), []
    clock.start()
    assert turns.take_now()

    def deferred(name: str, result: bool = True) -> None:
        def job() -> bool:
            log.append((name, clock.now))
            if name == "boom":
                raise RuntimeError(name)
            return result

        turns.defer(job)

    deferred("d0")
    task = asyncio.create_task(_render(turns, clock, "t1", log))
    await asyncio.sleep(0)  # t1 is queued now
    deferred("gone", result=False)
    deferred("boom")
    deferred("d4")
    deferred("d5")
    await task
    for _ in range(4):
        await asyncio.sleep(0)
    clock.stop()
    # One iteration lets through t1 (its task runs in the next iteration), "gone" (no turn
    # taken) and "boom" (a turn); the next one d4 and d5, after t1 has run.
    assert [name for name, _ in log] == ["d0", "gone", "boom", "t1", "d4", "d5"]
    at = dict(log)
    assert at["d0"] < at["gone"] == at["boom"] < at["t1"] == at["d4"] == at["d5"]
    assert turns.queued == 6


async def test_the_second_part_of_a_render_goes_ahead_of_the_queue() -> None:
    """A render in two turns (service.ONE_TURN_PIXELS) queues its second part first, whether
    it is a deferred call or a task's turn: begun work finishes before new work starts, so
    its decoded planes are not held while the queue drains."""
    turns, clock, log = InlineTurns(per_turn=1), IterationClock(), []
    clock.start()
    assert turns.take_now()  # a render under way this iteration: the rest queue

    def job(name: str) -> Callable[[], bool]:
        def run() -> bool:
            log.append((name, clock.now))
            if name == "a1":  # the first part of a: its rest goes first
                turns.defer(job("a2"), first=True)
            return True

        return run

    async def task_in_two_parts() -> None:
        await turns.turn()
        log.append(("t1", clock.now))
        await turns.turn(first=True)
        log.append(("t2", clock.now))

    turns.defer(job("a1"))
    task = asyncio.create_task(task_in_two_parts())
    await asyncio.sleep(0)  # t1 queued
    turns.defer(job("b"))
    turns.defer(job("c"))
    await task
    for _ in range(6):
        await asyncio.sleep(0)
    clock.stop()
    assert [name for name, _ in log] == ["a1", "a2", "t1", "t2", "b", "c"]
    assert turns.queued == 6  # every part waited for a turn of its own (per_turn=1)


class FakeClock:
    """Time that moves only when a render says it spent some: a budget test that cannot be
    thrown by a busy machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def _deferred_renders(turns: InlineTurns, time_: FakeClock, costs: list[float]) -> list[int]:
    """Defer renders of the given costs (seconds, spent on `time_`); the iteration each ran in."""
    iterations, ran = IterationClock(), []
    iterations.start()
    assert turns.take_now()  # an iteration's first render is under way: the rest queue

    def job(cost: float) -> Callable[[], bool]:
        def render() -> bool:
            time_.now += cost
            turns.record(cost)
            ran.append(iterations.now)
            return True

        return render

    for cost in costs:
        turns.defer(job(cost))
    for _ in range(2 * len(costs) + 2):  # at least one render an iteration
        await asyncio.sleep(0)
    iterations.stop()
    assert len(ran) == len(costs)
    return ran


async def test_a_time_budget_lets_through_what_fits() -> None:
    """Renders of 0.4 ms under a 1 ms budget: two an iteration (0.4 + 0.4 fits, a third
    would not), though the count alone would allow eight."""
    time_ = FakeClock()
    turns = InlineTurns(per_turn=8, budget_s=0.001, clock=time_)
    turns.record(0.0004)
    ran = await _deferred_renders(turns, time_, [0.0004] * 6)
    assert sorted(Counter(ran).values()) == [2, 2, 2], ran


async def test_fast_renders_go_up_to_the_count_and_slow_ones_one_at_a_time() -> None:
    time_ = FakeClock()
    turns = InlineTurns(per_turn=4, budget_s=0.0014, clock=time_)
    turns.record(0.00025)
    ran = await _deferred_renders(turns, time_, [0.00025] * 8)
    assert sorted(Counter(ran).values()) == [4, 4], ran  # the count binds, not the budget
    # Slower renders move the estimate within a few; the first of an iteration always goes.
    ran = await _deferred_renders(turns, time_, [0.003] * 4)
    assert sorted(Counter(ran).values()) == [1, 1, 1, 1], ran
    assert turns.estimate_s > 0.0014


async def test_woken_tasks_count_at_the_estimate() -> None:
    """A task's render runs after `_next`, in the same iteration: it is counted at the recent
    renders' duration, not timed."""
    time_ = FakeClock()
    turns, iterations, log = (
        InlineTurns(per_turn=8, budget_s=0.005, clock=time_),
        IterationClock(),
        [],
    )
    turns.record(0.002)
    iterations.start()
    await asyncio.gather(*(_render(turns, iterations, f"r{i}", log) for i in range(7)))
    iterations.stop()
    # r0 at once; then (1 + 1) × 2 ms fits 5 ms, (2 + 1) × 2 ms does not: two an iteration
    assert sorted(Counter(it for _, it in log).values()) == [1, 2, 2, 2], log


async def test_no_budget_is_the_count_alone() -> None:
    time_ = FakeClock()
    turns = InlineTurns(per_turn=3, clock=time_)
    turns.record(1.0)  # however slow
    ran = await _deferred_renders(turns, time_, [1.0] * 6)
    assert sorted(Counter(ran).values()) == [3, 3], ran


def test_the_estimate_follows_the_recent_renders() -> None:
    turns = InlineTurns()
    turns.record(0.001)
    assert turns.estimate_s == 0.001  # the first sets it
    for _ in range(40):
        turns.record(0.0002)
    assert turns.estimate_s == pytest.approx(0.0002, rel=0.02)


def test_turns_hold_under_uvloop() -> None:
    """Served processes run on uvloop (cli._install_uvloop), whose iterations must give the
    same one-group-per-iteration schedule as asyncio's."""
    import uvloop

    async def scenario() -> list[tuple[str, int]]:
        turns, clock, log = InlineTurns(per_turn=1), IterationClock(), []
        clock.start()
        await asyncio.gather(*(_render(turns, clock, f"r{i}", log) for i in range(5)))
        clock.stop()
        return log

    log = uvloop.run(scenario())
    assert [name for name, _ in log] == [f"r{i}" for i in range(5)]
    assert len({it for _, it in log}) == 5, log
