"""Per-tier counters, and the Prometheus collector that exposes them at scrape time.

The request path only increments plain integers; Prometheus reads them when `/metrics` is
scraped, so a cache hit pays no metric-library locking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(slots=True)
class TierStats:
    """Counters of one tier; `bytes` and `entries` are current sizes where the tier knows them."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    skipped: int = 0  # lookups not tried because the tier's breaker was open
    bytes: int = 0
    entries: int = 0
    writes: int = 0
    write_errors: int = 0
    dropped_writes: int = 0
    skipped_writes: int = 0  # too large for the tier, or already stored

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class CacheGauges:
    """Values read from the cache at scrape time, beside the per-tier counters."""

    coalesced: int
    pending_writes: int
    breaker_open: Mapping[str, bool]
    sized_tiers: tuple[str, ...]  # tiers whose `bytes` / `entries` are known
    # Renders this process ran for the cache (misses everywhere, lock taken or not).
    renders: int = 0


class CacheCollector(Collector):
    """Exposes `idrserve_cache_*` metrics from a cache's counters."""

    def __init__(self, tiers: Mapping[str, TierStats], gauges: Callable[[], CacheGauges]) -> None:
        self._tiers = tiers
        self._gauges = gauges

    def collect(self) -> Iterable[Metric]:
        g = self._gauges()
        requests = CounterMetricFamily(
            "idrserve_cache_requests",
            "Cache lookups per tier and result (hit, miss, error, skipped).",
            labels=["tier", "result"],
        )
        writes = CounterMetricFamily(
            "idrserve_cache_writes",
            "Cache writes per tier and result (ok, error, dropped, skipped).",
            labels=["tier", "result"],
        )
        size = GaugeMetricFamily(
            "idrserve_cache_bytes", "Bytes held by a cache tier.", labels=["tier"]
        )
        entries = GaugeMetricFamily(
            "idrserve_cache_entries", "Entries held by a cache tier.", labels=["tier"]
        )
        breaker = GaugeMetricFamily(
            "idrserve_cache_breaker_open",
            "1 while a tier is skipped after repeated failures.",
            labels=["tier"],
        )
        for tier, s in self._tiers.items():
            requests.add_metric([tier, "hit"], s.hits)
            requests.add_metric([tier, "miss"], s.misses)
            requests.add_metric([tier, "error"], s.errors)
            requests.add_metric([tier, "skipped"], s.skipped)
            writes.add_metric([tier, "ok"], s.writes)
            writes.add_metric([tier, "error"], s.write_errors)
            writes.add_metric([tier, "dropped"], s.dropped_writes)
            writes.add_metric([tier, "skipped"], s.skipped_writes)
            if tier in g.sized_tiers:
                size.add_metric([tier], s.bytes)
                entries.add_metric([tier], s.entries)
        for tier, is_open in g.breaker_open.items():
            breaker.add_metric([tier], 1.0 if is_open else 0.0)
        coalesced = CounterMetricFamily(
            "idrserve_cache_renders_coalesced",
            "Requests answered by a render another request started (in this or another process).",
            value=g.coalesced,
        )
        # Summed over hosts, this is what a cluster-wide single flight keeps at one per key.
        renders = CounterMetricFamily(
            "idrserve_cache_renders",
            "Responses rendered by this process after a miss in every cache tier.",
            value=g.renders,
        )
        pending = GaugeMetricFamily(
            "idrserve_cache_pending_writes",
            "Background cache writes queued or running.",
            value=g.pending_writes,
        )
        return [requests, writes, size, entries, breaker, coalesced, renders, pending]
