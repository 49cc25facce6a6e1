"""The event-loop lag sampler sees a blocked loop, and its histogram is on /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from idrserve.http.looplag import LoopLag


def _count_and_sum(registry: CollectorRegistry) -> tuple[float, float]:
    count = registry.get_sample_value("idrserve_event_loop_lag_seconds_count") or 0.0
    total = registry.get_sample_value("idrserve_event_loop_lag_seconds_sum") or 0.0
    return count, total


async def test_a_blocked_loop_shows_as_lag() -> None:
    registry = CollectorRegistry()
    lag = LoopLag(registry, interval_s=0.01)
    ctx = lag.run(None)
    await ctx.__anext__()
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
