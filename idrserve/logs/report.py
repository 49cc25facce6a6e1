"""From the aggregates to `report.json`: the stable document the page and `cache warm` read.

Its keys are documented in docs/operations.md ("Usage reports"); `SCHEMA` changes when one
of them changes meaning or goes away (new keys may be added without a change).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from idrserve import __version__
from idrserve.logs.aggregate import (
    EDGE_HITS,
    EDGE_LOOKUPS,
    TIER_HITS,
    TIER_LOOKUPS,
    SourceAggregate,
    hit_ratio,
    iso,
    percentiles,
)
from idrserve.logs.classify import image_id
from idrserve.logs.parse import ParseStats

SCHEMA = 1
TOP_SHARES = (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)
# IDR's study names (idr0062A) in the paths its catalog gives.
_STUDY = re.compile(r"(idr\d{4}[A-Za-z]?)")


class StudyLookup:
    """Image id -> study, from a catalog (CSV/JSON or a built index), when one is given."""

    def __init__(self, catalog: Path | None) -> None:
        self.index: Any = None
        if catalog is None:
            return
        from idrserve.catalog.build import build_index
        from idrserve.catalog.index import is_index_file, open_index

        if is_index_file(catalog):
            self.index = open_index(catalog)
        else:
            self.index, _ = build_index([catalog])

    def __call__(self, iid: int) -> str | None:
        if self.index is None:
            return None
        where = self.index.locate(iid)
        if where is None:
            return None
        m = _STUDY.search(str(where))
        if m:
            return m.group(1)
        parent = str(where).rstrip("/").rsplit("/", 2)
        return parent[-2] if len(parent) >= 2 else None


def _tiers(agg: SourceAggregate) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, per_family, hits, lookups in (
        ("nginx", agg.edge, EDGE_HITS, EDGE_LOOKUPS),
        ("idrserve", agg.tier_counts, TIER_HITS, TIER_LOOKUPS),
    ):
        if not per_family:
            continue
        total: dict[str, int] = {}
        by_family = {}
        for fam, counts in sorted(per_family.items()):
            for k, n in counts.items():
                total[k] = total.get(k, 0) + n
            by_family[fam] = {"counts": counts, "hit_ratio": hit_ratio(counts, hits, lookups)}
        out[name] = {
            "counts": total,
            "hit_ratio": hit_ratio(total, hits, lookups),
            "by_family": by_family,
        }
    return out


def _images(agg: SourceAggregate, top: int, study: StudyLookup) -> dict[str, Any]:
    def rows(column: int) -> list[dict[str, Any]]:
        return [
            {
                "image": iid,
                "requests": v[0],
                "cold": v[1],
                "bytes": v[2],
                "crawler_requests": v[3],
                "study": study(iid),
            }
            for iid, v in agg.images.top(top, column)
            if v[column]
        ]

    studies: dict[str, list[int]] = {}
    if study.index is not None:
        for iid, v in agg.images.rows():
            name = study(iid)
            if name is not None:
                s = studies.setdefault(name, [0, 0, 0])
                for i in range(3):
                    s[i] += v[i]
    ranked = sorted(studies.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top]
    return {
        "by_requests": rows(0),
        "by_cold": rows(1),
        "error_bound": agg.images.error_bound,
        "studies": [
            {"study": name, "requests": v[0], "cold": v[1], "bytes": v[2]} for name, v in ranked
        ]
        if study.index is not None
        else None,
    }


def _warm(agg: SourceAggregate, top_urls: int) -> dict[str, Any]:
    urls = [
        {"url": key, "image": image_id(key), "requests": v[0], "bytes": v[1] // max(v[0], 1)}
        for key, v in agg.warm.top(top_urls)
        if v[0] >= 2
    ]
    return {"urls": urls, "error_bound": agg.warm.error_bound}


def source_report(agg: SourceAggregate, top: int, study: StudyLookup) -> dict[str, Any]:
    errors = sum(n for code, n in agg.status.items() if code >= 500)
    unavailable = agg.status.get(503, 0) + agg.status.get(504, 0)
    out: dict[str, Any] = {
        "requests": agg.requests,
        "bytes": agg.bytes,
        "errors": errors,
        "first": iso(agg.first) if agg.requests else None,
        "last": iso(agg.last) if agg.requests else None,
        "span_s": round(agg.last - agg.first, 3) if agg.requests else 0,
        "timeseries": agg.timeseries(),
        "families": {f: g.summary() for f, g in sorted(agg.families.items())},
        "clients": {k: {"requests": v[0], "bytes": v[1]} for k, v in sorted(agg.clients.items())},
        "status": {str(code): n for code, n in sorted(agg.status.items())},
        "unavailable": {
            "503": agg.status.get(503, 0),
            "504": agg.status.get(504, 0),
            "share": round(unavailable / agg.requests, 6) if agg.requests else 0.0,
        },
        "tiers": _tiers(agg),
        "latency_by_tier": {
            name: {"requests": g.requests} | percentiles(g.latency)
            for name, g in sorted(agg.tiers.items())
        },
    }
    if agg.source != "nginx":
        return out
    out["top_images"] = _images(agg, top, study)
    replay = agg.replay
    observed = out["tiers"].get("nginx", {}).get("hit_ratio")
    out["cache_replay"] = {
        "requests": agg.replayed,
        "sampling_rate": replay.rate if replay else None,
        "observed_hit_ratio": observed,
        "sizes": replay.result() if replay else [],
    }
    out["working_set"] = {
        "distinct_per_hour": [
            {"hour": iso(h * 3600), "distinct": d.count()} for h, d in sorted(agg.hours.items())
        ],
        "distinct_bytes": replay.distinct_bytes() if replay else None,
        "bytes_for_top": replay.bytes_for_top(TOP_SHARES) if replay else [],
    }
    out["warm"] = _warm(agg, max(1000, 50 * top))
    return out


def build_report(
    aggregates: dict[str, SourceAggregate],
    stats: ParseStats,
    *,
    top: int = 20,
    catalog: Path | None = None,
) -> dict[str, Any]:
    """The whole `report.json` document."""
    study = StudyLookup(catalog)
    sources = {name: source_report(a, top, study) for name, a in aggregates.items() if a.requests}
    primary = "nginx" if "nginx" in sources else ("idrserve" if sources else None)
    return {
        "schema": SCHEMA,
        "generated": iso(time.time()),
        "idrserve_version": __version__,
        "empty": not sources,
        "primary": primary,
        "input": {
            "files": stats.files,
            "lines": stats.lines,
            "requests": stats.requests,
            "json_lines": stats.json_lines,
            "nginx_lines": stats.nginx_lines,
            "skipped": dict(sorted(stats.skipped.items())),
            "unknown_fields": sorted(stats.unknown_fields),
            "warnings": stats.warnings,
        },
        "sources": sources,
    }
