"""The event-loop lag sampler sees a blocked loop, and its histogram is on /metrics; so is
the CPU time of the loop's thread apart from the pool's (idrserve/threadcpu.py).

Both samplers are exercised: the timerfd the loop watches (Linux, the default) and the
thread that is the fallback elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from idrserve.http.looplag import LoopLag, TimerFd
from tests.http.conftest import P


def _count_and_sum(registry: CollectorRegistry) -> tuple[float, float]:
    count = registry.get_sample_value("idrserve_event_loop_lag_seconds_count") or 0.0
    total = registry.get_sample_value("idrserve_event_loop_lag_seconds_sum") or 0.0
    return count, total


@pytest.mark.parametrize("timerfd", [True, False], ids=["timerfd", "thread"])
async def test_a_blocked_loop_shows_as_lag(timerfd: bool) -> None:
    registry = CollectorRegistry()
    lag = LoopLag(registry, interval_s=0.01, timerfd=timerfd)
    ctx = lag.run(None)
    await ctx.__anext__()
    assert lag.source == ("timerfd" if timerfd else "thread")
    try:
        await asyncio.sleep(0.1)  # idle: samples come back at once
        idle_count, idle_sum = _count_and_sum(registry)
        assert idle_count >= 3
        assert idle_sum / idle_count < 0.01
        time.sleep(0.3)  # noqa: ASYNC251 (the point: the loop is blocked, as by a long render)
        await asyncio.sleep(0.05)
        count, total = _count_and_sum(registry)
        assert count > idle_count
        # The sample sent while the loop was blocked waited for most of the block.
        assert total - idle_sum > 0.2
        assert (
            registry.get_sample_value("idrserve_event_loop_lag_seconds_bucket", {"le": "0.25"})
            < count
        )
    finally:
        await ctx.aclose()


async def test_lag_histogram_is_served(make_client: Callable[..., Any]) -> None:
    client = await make_client()
    await asyncio.sleep(0.2)
    text = await (await client.get("/metrics")).text()
    assert 'idrserve_event_loop_lag_seconds_bucket{le="0.002"}' in text
    count = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("idrserve_event_loop_lag_seconds_count")
    ]
    assert count and count[0] >= 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
def test_the_timer_goes_off_at_its_time_and_not_before() -> None:
    timer = TimerFd.open()
    assert timer is not None  # glibc's timerfd through ctypes before 3.13, os's after
    try:
        assert not timer.expired()  # never armed
        at = time.monotonic() + 0.05
        timer.arm(at)
        time.sleep(0.02)
        assert not timer.expired()
        time.sleep(max(0.0, at - time.monotonic()) + 0.005)
        assert timer.expired()
        assert not timer.expired()  # one shot, cleared by the read
    finally:
        timer.close()


def test_uvloop_samples_from_the_timerfd() -> None:
    """Served processes run on uvloop (cli._install_uvloop): its add_reader takes the timer."""
    import uvloop

    async def scenario() -> tuple[str, float, float]:
        registry = CollectorRegistry()
        lag = LoopLag(registry, interval_s=0.01)
        ctx = lag.run(None)
        await ctx.__anext__()
        try:
            await asyncio.sleep(0.1)
            idle_count, _ = _count_and_sum(registry)
            time.sleep(0.2)  # noqa: ASYNC251 (blocks the loop on purpose)
            await asyncio.sleep(0.05)
            count, total = _count_and_sum(registry)
            return lag.source, count - idle_count, total
        finally:
            await ctx.aclose()

    source, new_samples, total = uvloop.run(scenario())
    assert source == ("timerfd" if sys.platform.startswith("linux") else "thread")
    assert new_samples >= 1
    assert total > 0.15


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
async def test_a_timer_that_cannot_be_rearmed_stops_sampling_not_the_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    lag = LoopLag(registry, interval_s=0.01)
    armed: list[float] = []
    real_arm = TimerFd.arm

    def arm_once(self: TimerFd, at: float) -> None:
        if armed:
            raise OSError(22, "Invalid argument")
        armed.append(at)
        real_arm(self, at)

    monkeypatch.setattr(TimerFd, "arm", arm_once)
    ctx = lag.run(None)
    await ctx.__anext__()
    try:
        await asyncio.sleep(0.1)
        count, _ = _count_and_sum(registry)
        assert count == 1  # the first tick was sampled, then re-arming failed
        assert "lag sampling stopped" in caplog.text
        await asyncio.sleep(0.05)  # the loop runs on, no more samples, no busy reader
        assert _count_and_sum(registry)[0] == 1
    finally:
        await ctx.aclose()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
async def test_a_timer_refused_at_start_falls_back_to_the_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(self: TimerFd, at: float) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(TimerFd, "arm", refuse)
    registry = CollectorRegistry()
    lag = LoopLag(registry, interval_s=0.01)
    ctx = lag.run(None)
    await ctx.__anext__()
    try:
        assert lag.source == "thread"
        await asyncio.sleep(0.1)
        assert _count_and_sum(registry)[0] >= 3
    finally:
        await ctx.aclose()


async def test_thread_cpu_is_served_for_the_loop_and_the_pool(
    make_client: Callable[..., Any],
) -> None:
    # Renders in the pool (none inline), so both roles have run something.
    client = await make_client(server__cpu_threads=1, server__inline_render_pixels=0)

    async def seconds() -> dict[str, float]:
        text = await (await client.get("/metrics")).text()
        found = {}
        for family in text_string_to_metric_families(text):
            if family.name == "idrserve_thread_cpu_seconds":
                for sample in family.samples:
                    assert sample.labels["pid"] == str(os.getpid())  # this process's own
                    found[sample.labels["thread"]] = sample.value
        return found

    before = await seconds()
    if sys.platform != "linux":
        assert before == {}  # read from /proc: no samples elsewhere
        return
    assert set(before) == {"loop", "cpu_pool"}
    for x in range(4):
        resp = await client.get(f"/webgateway/render_image_region/{P}/0/0/?tile=0,{x},1,256,256")
        assert resp.status == 200
    after = await seconds()
    assert after["cpu_pool"] > before["cpu_pool"]  # the renders ran there
    assert after["loop"] > before["loop"]
