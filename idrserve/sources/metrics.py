"""Counters of the OMERO side, and the Prometheus collector that exposes them at scrape time.

OMERO is the dependency idrserve exists to protect, so an operator needs to see, per worker,
how many calls reach it, how long they take, how many wait for `omero.max_concurrent_calls`
and how many end in an outage. As in `cache/metrics.py`, the request path only bumps plain
integers; Prometheus reads them when `/metrics` is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from idrserve.histogram import Histogram

# Upper bounds (s) of the call-duration buckets: a cached getTile takes milliseconds, a cold
# one on a busy OMERO tenths of a second, and omero.call_timeout_s (10 s) ends the scale.
CALL_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CALLS = ("meta", "tile")
RESULTS = ("ok", "not_found", "unavailable", "error")


@dataclass(slots=True)
class OmeroStats:
    """What `OmeroSource` counts; `waiting`/`in_flight` are current values."""

    calls: dict[tuple[str, str], int] = field(
        default_factory=lambda: {(c, r): 0 for c in CALLS for r in RESULTS}
    )
    durations: dict[str, Histogram] = field(
        default_factory=lambda: {c: Histogram(CALL_BUCKETS) for c in CALLS}
    )
    waiting: int = 0  # calls queued for a slot under max_concurrent_calls
    in_flight: int = 0  # calls the worker is answering
    tile_hits: int = 0  # raw tiles answered from the source's own tile cache
    coalesced: int = 0  # raw tile reads that joined an identical one in flight

    def total(self, call: str) -> int:
        """Calls of one kind made so far, whatever their result."""
        return sum(self.calls[(call, r)] for r in RESULTS)

    def record(self, call: str, result: str, seconds: float | None) -> None:
        self.calls[(call, result)] += 1
        if seconds is not None:
            self.durations[call].observe(seconds)


@dataclass(frozen=True, slots=True)
class OmeroGauges:
    """Sizes read from the source at scrape time."""

    max_concurrent_calls: int
    tile_cache_bytes: int
    tile_cache_entries: int
    metadata_entries: int


class OmeroCollector(Collector):
    """Exposes `idrserve_omero_*` metrics from an `OmeroSource`'s counters."""

    def __init__(self, stats: OmeroStats, gauges: Callable[[], OmeroGauges]) -> None:
        self._stats = stats
        self._gauges = gauges

    def collect(self) -> Iterable[Metric]:
        s, g = self._stats, self._gauges()
        calls = CounterMetricFamily(
            "idrserve_omero_calls",
            "Calls to OMERO through the reader worker, by call and result "
            "(ok, not_found, unavailable: worker or OMERO down or too slow, error).",
            labels=["call", "result"],
        )
        for (call, result), n in s.calls.items():
            calls.add_metric([call, result], n)
        yield calls
        durations = HistogramMetricFamily(
            "idrserve_omero_call_duration_seconds",
            "Time a call to the reader worker took once it had a slot (queueing excluded).",
            labels=["call"],
        )
        for call, hist in s.durations.items():
            durations.add_metric([call], hist.cumulative(), sum_value=hist.total_s)
        yield durations
        yield GaugeMetricFamily(
            "idrserve_omero_calls_waiting",
            "Calls queued for a slot under omero.max_concurrent_calls.",
            value=s.waiting,
        )
        yield GaugeMetricFamily(
            "idrserve_omero_calls_in_flight", "Calls the reader worker is answering.", s.in_flight
        )
        yield GaugeMetricFamily(
            "idrserve_omero_max_concurrent_calls",
            "The cap on concurrent calls (omero.max_concurrent_calls).",
            value=g.max_concurrent_calls,
        )
        tiles = CounterMetricFamily(
            "idrserve_omero_tile_reads",
            "Raw OMERO tiles wanted by renders, by how they were answered "
            "(call: a getTile; hit: the source's tile cache; coalesced: joined one in flight).",
            labels=["answer"],
        )
        tiles.add_metric(["call"], s.total("tile"))
        tiles.add_metric(["hit"], s.tile_hits)
        tiles.add_metric(["coalesced"], s.coalesced)
        yield tiles
        yield GaugeMetricFamily(
            "idrserve_omero_tile_cache_bytes", "Bytes of raw tiles kept.", g.tile_cache_bytes
        )
        yield GaugeMetricFamily(
            "idrserve_omero_tile_cache_entries", "Raw tiles kept.", g.tile_cache_entries
        )
        yield GaugeMetricFamily(
            "idrserve_omero_metadata_entries",
            "Images whose OMERO metadata is kept.",
            value=g.metadata_entries,
        )
