"""Per-source sums of a log, built a block of requests at a time in bounded memory.

One `SourceAggregate` per log kind (nginx, idrserve): when both logs of the same traffic are
given, each request appears in both, and the report keeps them apart rather than counting it
twice. nginx sees every client request (its cache answers most of them), idrserve only what
nginx passed on. Each block (a polars frame, idrserve/logs/columnar.py) is summed by group-bys
whose small results are added into the dicts below; only the sampled cache replay visits
requests one by one.
"""

from __future__ import annotations

import math
import zlib
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from idrserve.logs.classify import (
    CACHEABLE,
    FAMILY_PREFIX,
    IMAGE_PREFIX,
    cache_key,
    client_kind,
    family,
    image_id,
)
from idrserve.logs.replay import CacheReplay, Distinct, TopTable

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


def families_of(targets: pl.Series) -> pl.Series:
    """`family()` of every path or route template: a column regex takes the prefix that
    decides, and `family` runs once per distinct prefix."""
    prefixes = targets.str.extract(FAMILY_PREFIX, 0).fill_null("")
    names = {p: family(p) if p else "other" for p in prefixes.unique().to_list()}
    return prefixes.replace_strict(names, return_dtype=pl.String)


def image_ids(targets: pl.Series) -> pl.Series:
    """`image_id()` of every raw path (null when the URL names no image)."""
    matched = targets.str.extract(IMAGE_PREFIX, 0)
    digits = matched.str.strip_chars_end("/._azr").str.split("/").list.last()
    ids = digits.cast(pl.UInt64, strict=False)
    odd = (matched.is_not_null() & ids.is_null()).to_numpy()
    if odd.any():  # digits other than ASCII ones: Python's int() reads them
        at = np.flatnonzero(odd)
        ids = ids.scatter(at, [image_id(t) for t in targets.gather(at).to_list()])
    return ids


def cache_keys(targets: pl.Series) -> pl.Series:
    """`cache_key()` of every target; only those with a cache buster go through Python."""
    busted = (
        targets.str.contains("_=", literal=True) | targets.str.contains("rev=", literal=True)
    ).to_numpy()
    if not busted.any():
        return targets
    at = np.flatnonzero(busted)
    return targets.scatter(at, [cache_key(t) for t in targets.gather(at).to_list()])


def key_hashes(keys: list[str]) -> np.ndarray:
    """`replay.key_hash` of many keys."""
    crc = zlib.crc32
    return np.fromiter(
        (crc(k.encode("utf-8", "surrogatepass")) for k in keys), dtype=np.uint32, count=len(keys)
    )


_BOUNDS = np.array(LATENCY_BOUNDS)
_COLD_EDGE = ("MISS", "EXPIRED", "BYPASS")


def _add_sums(into: dict[Any, list[int]], rows: pl.DataFrame, width: int) -> None:
    for key, *values in rows.iter_rows():
        sums = into.get(key)
        if sums is None:
            sums = into[key] = [0] * width
        for i, v in enumerate(values):
            sums[i] += v


def _add_counts(into: dict[Any, dict[Any, int]], rows: pl.DataFrame) -> None:
    for outer, inner, n in rows.iter_rows():
        counts = into.setdefault(outer, {})
        counts[inner] = counts.get(inner, 0) + n


class Derive:
    """The columns the sums group by, added to a block of requests: route family, client
    kind, latency bucket, error, second and minute; for nginx also the image, a cold flag,
    the cache key and its sampling hash for the replayed requests. Run in the parse thread
    (idrserve/logs/cli.py), so that the summing thread only sums."""

    def __init__(self) -> None:
        self._kinds: dict[str, str] = {"": "other"}

    def __call__(self, frame: pl.DataFrame, source: str) -> pl.DataFrame:
        for agent in frame["agent"].unique().to_list():
            if agent not in self._kinds:
                self._kinds[agent] = client_kind(agent)
        duration = frame["duration"].to_numpy()
        bucket = np.where(duration >= 0, np.searchsorted(_BOUNDS, duration, side="left"), -1)
        frame = frame.with_columns(
            family=families_of(frame["target"]),
            kind=frame["agent"].replace_strict(self._kinds, return_dtype=pl.String),
            bucket=pl.Series(bucket),
            error=(pl.col("status") >= 500).cast(pl.Int64),
            second=pl.col("ts").cast(pl.Int64),  # int(): towards zero, as the seconds were
            minute=pl.col("ts").floor().cast(pl.Int64) // 60,
        )
        if source != "nginx":
            return frame  # route templates name no image and no URL
        ok = (pl.col("status") == 200) & (pl.col("method") == "GET")
        frame = frame.with_columns(
            image=image_ids(frame["target"]),
            cold=(
                (pl.col("tier") == "miss")
                | ((pl.col("tier") == "") & pl.col("edge").is_in(_COLD_EDGE))
            ).cast(pl.Int64),
            replay=ok & pl.col("family").is_in(CACHEABLE),
            key=cache_keys(frame["target"]),
        )
        replayed = frame["replay"].to_numpy()
        crc = np.zeros(frame.height, dtype=np.uint32)
        crc[replayed] = key_hashes(frame["key"].filter(frame["replay"]).to_list())
        return frame.with_columns(crc=pl.Series(crc))


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
        self.images = TopTable(
            TOP_IMAGES_CAP, ("requests", "cold", "bytes", "crawler"), key_dtype=pl.UInt64
        )
        self.warm = TopTable(WARM_URLS_CAP, ("requests", "bytes"))
        self.replay = CacheReplay(capacities, max_keys) if capacities else None
        self.hours: dict[int, Distinct] = {}
        self.replayed = 0
        self.requests = 0
        self.bytes = 0

    def add_frame(self, frame: pl.DataFrame) -> None:
        """A block of requests in log order, as `Derive` returns it."""
        if frame.is_empty():
            return
        self.requests += frame.height
        self.bytes += int(frame["size"].sum())
        self.first = min(self.first, float(frame["ts"].min()))  # type: ignore[arg-type]
        self.last = max(self.last, float(frame["ts"].max()))  # type: ignore[arg-type]
        lazy = frame.lazy()
        sums = (pl.len(), pl.col("size").sum(), pl.col("error").sum())
        edge = pl.col("edge") != ""
        tier = (pl.col("tier") != "") & (pl.col("tier") != "-")
        by_tier = lazy.filter((pl.col("bucket") >= 0) & (edge | tier)).with_columns(
            name=pl.when(edge)
            .then(pl.lit("nginx:") + pl.col("edge"))
            .otherwise(pl.lit("idrserve:") + pl.col("tier"))
        )
        queries = [
            lazy.group_by("minute").agg(*sums),
            lazy.group_by("status").agg(pl.len()),
            lazy.group_by("family", "bucket").agg(*sums),
            lazy.group_by("kind").agg(pl.len(), pl.col("size").sum()),
            lazy.filter(edge).group_by("family", "edge").agg(pl.len()),
            lazy.filter(tier).group_by("family", "tier").agg(pl.len()),
            by_tier.group_by("name", "bucket").agg(pl.len(), pl.col("size").sum()),
        ]
        if self.seconds is not None:
            queries.append(lazy.group_by("second").agg(*sums))
        minutes, status, fam, kinds, edges, tiers, tier_latency, *seconds = pl.collect_all(queries)
        _add_sums(self.minutes, minutes, 3)
        if self.seconds is not None:
            _add_sums(self.seconds, seconds[0], 3)
            if len(self.seconds) > MAX_SECONDS:
                self.seconds = None  # a long log: minutes are enough
        for code, n in status.iter_rows():
            self.status[code] = self.status.get(code, 0) + n
        for name, b, n, size, errors in fam.iter_rows():
            group = self.families.get(name) or self.families.setdefault(name, _Group())
            group.requests += n
            group.bytes += size
            group.errors += errors
            if b >= 0:
                group.latency[b] += n
        _add_sums(self.clients, kinds, 2)
        _add_counts(self.edge, edges)
        _add_counts(self.tier_counts, tiers)
        for name, b, n, size in tier_latency.iter_rows():
            group = self.tiers.get(name) or self.tiers.setdefault(name, _Group())
            group.requests += n
            group.bytes += size
            group.latency[b] += n
        if self.source == "nginx":
            self._nginx(frame)  # route templates name no image and no URL

    def _nginx(self, frame: pl.DataFrame) -> None:
        crawler = pl.col("kind") == "crawler"
        images = (
            frame.filter(pl.col("image").is_not_null())
            .group_by("image")
            .agg(
                requests=pl.len(),
                cold=pl.col("cold").sum(),
                bytes=pl.col("size").sum(),
                crawler=crawler.sum(),
            )
            .rename({"image": "key"})
        )
        self.images.add(images)
        replayed = frame.filter(pl.col("replay"))
        hashes = replayed["crc"].to_numpy()
        self.replayed += replayed.height
        if self.replay is not None:
            self.replay.add_batch(replayed["key"], hashes, replayed["size"].to_numpy())
        hour = (replayed["minute"] // 60).to_numpy()
        for h in np.unique(hour).tolist():
            distinct = self.hours.get(h)
            if distinct is None:
                distinct = self.hours[h] = Distinct()
            distinct.add_many(hashes[hour == h])
        # imgData is not cached by nginx, but warming asks for what viewers open first
        warm = frame.filter(
            (pl.col("replay") | ((pl.col("status") == 200) & (pl.col("family") == "imgdata")))
            & ~crawler
        )
        self.warm.add(warm.group_by("key").agg(requests=pl.len(), bytes=pl.col("size").sum()))

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
