"""Inline renders take one event-loop iteration each, in arrival order (idrserve/turns.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

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
