"""The OMERO metrics' own arithmetic: histogram buckets and what the collector exposes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from idrserve.sources.metrics import CALL_BUCKETS, OmeroCollector, OmeroGauges, OmeroStats


def exposed(stats: OmeroStats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(OmeroCollector(stats, lambda: OmeroGauges(4, 1000, 3, 2)))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_buckets_are_cumulative_with_inclusive_bounds() -> None:
    stats = OmeroStats()
    # on a bound (le is inclusive), between bounds, past the last bound
    for seconds in (0.005, 0.0051, 0.3, 10.0, 42.0):
        stats.record("tile", "ok", seconds)
    stats.record("tile", "unavailable", None)  # refused before it had a slot: no duration
    m = exposed(stats)

    def bucket(le: str) -> float:
        return m[("idrserve_omero_call_duration_seconds_bucket", (("call", "tile"), ("le", le)))]

    assert bucket("0.005") == 1
    assert bucket("0.01") == 2
    assert bucket("0.25") == 2 and bucket("0.5") == 3
    assert bucket("10.0") == 4 and bucket("+Inf") == 5
    assert [bucket(repr(b)) for b in CALL_BUCKETS] == sorted(bucket(repr(b)) for b in CALL_BUCKETS)
    assert m[("idrserve_omero_call_duration_seconds_count", (("call", "tile"),))] == 5
    assert (
        abs(m[("idrserve_omero_call_duration_seconds_sum", (("call", "tile"),))] - 52.3101) < 1e-9
    )
    calls = "idrserve_omero_calls_total"
    assert m[(calls, (("call", "tile"), ("result", "ok")))] == 5
    assert m[(calls, (("call", "tile"), ("result", "unavailable")))] == 1
    assert m[(calls, (("call", "meta"), ("result", "ok")))] == 0
    assert m[("idrserve_omero_tile_reads_total", (("answer", "call"),))] == 6
    assert stats.total("tile") == 6 and stats.total("meta") == 0


def test_gauges_come_from_the_source_at_scrape_time() -> None:
    stats = OmeroStats(waiting=2, in_flight=4, tile_hits=7, coalesced=1)
    m = exposed(stats)
    assert m[("idrserve_omero_calls_waiting", ())] == 2
    assert m[("idrserve_omero_calls_in_flight", ())] == 4
    assert m[("idrserve_omero_max_concurrent_calls", ())] == 4
    assert m[("idrserve_omero_tile_cache_bytes", ())] == 1000
    assert m[("idrserve_omero_tile_cache_entries", ())] == 3
    assert m[("idrserve_omero_metadata_entries", ())] == 2
    assert m[("idrserve_omero_tile_reads_total", (("answer", "hit"),))] == 7
    assert m[("idrserve_omero_tile_reads_total", (("answer", "coalesced"),))] == 1
