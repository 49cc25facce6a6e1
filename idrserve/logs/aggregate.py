"""Per-source sums of a log, built request by request in bounded memory.

One `SourceAggregate` per log kind (nginx, idrserve): when both logs of the same traffic are
given, each request appears in both, and the report keeps them apart rather than counting it
twice. nginx sees every client request (its cache answers most of them), idrserve only what
nginx passed on.
"""

from __future__ import annotations

import bisect
import math
from datetime import UTC, datetime
from typing import Any

from idrserve.logs.classify import CACHEABLE, cache_key, client_kind, family, image_id
from idrserve.logs.replay import CacheReplay, Distinct, TopCounter, key_hash

# Latency buckets: 0.1 ms to ~100 s, each 1.1× the one before; a percentile is reported as
# its bucket's geometric middle, so it is within 5 % of the true value.
RATIO = 1.1
LATENCY_BOUNDS = tuple(0.0001 * RATIO**i for i in range(146))
EDGE_HITS = frozenset({"HIT", "STALE", "UPDATING", "REVALIDATED"})
EDGE_LOOKUPS = EDGE_HITS | {"MISS", "EXPIRED", "BYPASS"}
TIER_HITS = frozenset({"memory", "disk", "redis", "coalesced"})
TIER_LOOKUPS = TIER_HITS | {"miss"}
TOP_IMAGES_CAP = 100_000
WARM_URLS_CAP = 50_000
MAX_SECONDS = 3600


def percentiles(counts: list[int], qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict[str, Any]:
    """p50/p95/p99 in milliseconds from latency bucket counts (None when nothing was timed)."""
    total = sum(counts)
    out: dict[str, Any] = {}
    for q in qs:
        name = f"p{round(q * 100)}"
        if not total:
            out[name] = None
            continue
        need, running = math.ceil(q * total), 0
        for i, n in enumerate(counts):
            running += n
            if running >= need:
                bound = LATENCY_BOUNDS[i] if i < len(LATENCY_BOUNDS) else LATENCY_BOUNDS[-1]
                out[name] = round(bound / RATIO**0.5 * 1000, 2)
                break
    return out


def hit_ratio(counts: dict[str, int], hits: frozenset[str], lookups: frozenset[str]) -> Any:
    looked = sum(n for k, n in counts.items() if k in lookups)
    if not looked:
        return None
    return round(sum(n for k, n in counts.items() if k in hits) / looked, 4)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Group:
    __slots__ = ("bytes", "errors", "latency", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.errors = 0
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "bytes": self.bytes,
            "errors": self.errors,
            "latency_ms": percentiles(self.latency),
        }


class SourceAggregate:
    """Everything the report shows about one log kind."""

    def __init__(self, source: str, capacities: list[int], max_keys: int) -> None:
        self.source = source
        self.first = math.inf
        self.last = -math.inf
        self.minutes: dict[int, list[int]] = {}
        # per second too while the log spans few of them (short runs, benchmarks)
        self.seconds: dict[int, list[int]] | None = {}
        self.families: dict[str, _Group] = {}
        self.tiers: dict[str, _Group] = {}
        self.clients: dict[str, list[int]] = {}
        self.status: dict[int, int] = {}
        self.edge: dict[str, dict[str, int]] = {}
        self.tier_counts: dict[str, dict[str, int]] = {}
        self.images = TopCounter(TOP_IMAGES_CAP, width=4)
        self.warm = TopCounter(WARM_URLS_CAP, width=2)
        self.replay = CacheReplay(capacities, max_keys) if capacities else None
        self.hours: dict[int, Distinct] = {}
        self.replayed = 0
        self.requests = 0
        self.bytes = 0

    def add(
        self,
        ts: float,
        source: str,
        method: str,
        target: str,
        status: int,
        size: int,
        duration_s: float,
        edge: str,
        tier: str,
        agent: str,
    ) -> None:
        self.requests += 1
        self.bytes += size
        if ts < self.first:
            self.first = ts
        if ts > self.last:
            self.last = ts
        error = status >= 500
        if self.seconds is not None:
            second = self.seconds.get(int(ts))
            if second is None:
                if len(self.seconds) >= MAX_SECONDS:
                    self.seconds = None  # a long log: minutes are enough
                else:
                    second = self.seconds[int(ts)] = [0, 0, 0]
            if second is not None:
                second[0] += 1
                second[1] += size
                second[2] += error
        minute = self.minutes.get(int(ts // 60))
        if minute is None:
            minute = self.minutes[int(ts // 60)] = [0, 0, 0]
        minute[0] += 1
        minute[1] += size
        minute[2] += error
        self.status[status] = self.status.get(status, 0) + 1
        fam = family(target)
        group = self.families.get(fam) or self.families.setdefault(fam, _Group())
        group.requests += 1
        group.bytes += size
        group.errors += error
        timed = duration_s >= 0
        if timed:
            bucket = bisect.bisect_left(LATENCY_BOUNDS, duration_s)
            group.latency[bucket] += 1
        kind = client_kind(agent) if agent else "other"
        client = self.clients.get(kind) or self.clients.setdefault(kind, [0, 0])
        client[0] += 1
        client[1] += size
        if edge:
            counts = self.edge.get(fam) or self.edge.setdefault(fam, {})
            counts[edge] = counts.get(edge, 0) + 1
        if tier and tier != "-":
            counts = self.tier_counts.get(fam) or self.tier_counts.setdefault(fam, {})
            counts[tier] = counts.get(tier, 0) + 1
        if timed and (edge or (tier and tier != "-")):
            name = f"nginx:{edge}" if edge else f"idrserve:{tier}"
            by_tier = self.tiers.get(name) or self.tiers.setdefault(name, _Group())
            by_tier.requests += 1
            by_tier.bytes += size
            by_tier.latency[bucket] += 1
        if source != "nginx":
            return  # route templates name no image and no URL
        iid = image_id(target)
        cold = tier == "miss" or (not tier and edge in ("MISS", "EXPIRED", "BYPASS"))
        if iid is not None:
            self.images.add(iid, 1, cold, size, kind == "crawler")
        if status != 200 or method != "GET" or fam not in CACHEABLE:
            if status == 200 and fam == "imgdata" and kind != "crawler":
                self.warm.add(cache_key(target), 1, size)
            return
        key = cache_key(target)
        h = key_hash(key)
        self.replayed += 1
        if self.replay is not None:
            self.replay.add(key, h, size)
        hour = self.hours.get(int(ts // 3600))
        if hour is None:
            hour = self.hours[int(ts // 3600)] = Distinct()
        hour.add(h)
        if kind != "crawler":
            self.warm.add(key, 1, size)

    def timeseries(self) -> dict[str, Any]:
        if not self.minutes:
            return {"resolution": None, "points": []}
        span = self.last - self.first
        step, name = (60, "minute") if span <= 6 * 3600 else (3600, "hour")
        if span > 14 * 86400:
            step, name = 86400, "day"
        base, unit = self.minutes, 60
        if span <= 30 * 60 and self.seconds is not None:
            step, name = (1, "second") if span <= 5 * 60 else (10, "10 seconds")
            base, unit = self.seconds, 1
        buckets: dict[int, list[int]] = {}
        for t, (n, size, errors) in base.items():
            b = buckets.setdefault(t * unit // step * step, [0, 0, 0])
            b[0] += n
            b[1] += size
            b[2] += errors
        points = [
            {"t": iso(t), "requests": v[0], "bytes": v[1], "errors": v[2]}
            for t, v in sorted(buckets.items())
        ]
        return {"resolution": name, "step_s": step, "points": points}
