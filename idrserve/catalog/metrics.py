"""The catalog on /metrics: its size and state, reloads, and how long lookups take.

A lookup is a binary search over the index (about a microsecond) unless it falls through to
a root (a directory scan or a remote probe). The duration histogram's fine buckets show that a
lookup stays in microseconds under any load; `bench/bench_catalog.py` reads it for its p99.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from idrserve.histogram import Histogram

if TYPE_CHECKING:
    from idrserve.catalog.locate import Catalog

LOOKUP_BUCKETS: tuple[float, ...] = (
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 1e-2, 0.1, 1.0,
)  # fmt: skip
LOOKUP_RESULTS = ("index", "root", "unknown")
STATES = ("idle", "loading", "ready", "failed")


@dataclass(slots=True)
class CatalogStats:
    """Plain counters bumped by `Catalog`; read at scrape time."""

    lookups: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LOOKUP_RESULTS, 0))
    durations: Histogram = field(default_factory=lambda: Histogram(LOOKUP_BUCKETS))
    reloads: int = 0
    reload_failures: int = 0

    def record(self, result: str, seconds: float) -> None:
        self.lookups[result] += 1
        self.durations.observe(seconds)


class CatalogCollector(Collector):
    """`idrserve_catalog_*` from a `Catalog`."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def collect(self) -> Iterable[Metric]:
        catalog, stats = self._catalog, self._catalog.stats
        yield GaugeMetricFamily(
            "idrserve_catalog_images", "Images in the loaded catalog index.", len(catalog.index)
        )
        state = GaugeMetricFamily(
            "idrserve_catalog_state", "1 for the catalog's current state.", labels=["state"]
        )
        for name in STATES:
            state.add_metric([name], 1.0 if catalog.state == name else 0.0)
        yield state
        lookups = CounterMetricFamily(
            "idrserve_catalog_lookups",
            "Image lookups, by where the image was found (index, a root) or not (unknown).",
            labels=["result"],
        )
        for result, n in stats.lookups.items():
            lookups.add_metric([result], n)
        yield lookups
        durations = HistogramMetricFamily(
            "idrserve_catalog_lookup_duration_seconds",
            "Time to locate an image (index search, then roots: scans or probes).",
        )
        durations.add_metric([], stats.durations.cumulative(), sum_value=stats.durations.total_s)
        yield durations
        yield CounterMetricFamily(
            "idrserve_catalog_reloads", "Catalog files re-read after a change or SIGHUP.",
            value=stats.reloads,
        )  # fmt: skip
        yield CounterMetricFamily(
            "idrserve_catalog_reload_failures",
            "Re-reads that failed (the previous catalog kept serving).",
            value=stats.reload_failures,
        )
