"""Requests per route family on /metrics, summed over every worker of `serve --workers N`.

* `idrserve_http_requests_total{family,code}`, `idrserve_http_response_bytes_total{family}`
  and the histogram `idrserve_http_request_duration_seconds{family}`: one observation per
  request, taken where the access-log line is made (so the two always agree), with the
  families of `idrserve logs report` (logs/classify.py).
* `idrserve_http_cache_answers_total{family,tier}`: which cache tier answered (X-Cache), a
  render being `miss`.
* `idrserve_http_render_stage_seconds_total{family,stage}`: the time spent in each stage of
  the requests that rendered (`source`: reading pixels, `render`, `encode`) or were answered by
  a lower cache tier or a render another request made (`cache`); divided by the renders
  (`idrserve_http_cache_answers_total{tier="miss"}`) it is the time a stage takes a tile, so
  slow storage shows as `source` growing while `render` and `encode` hold
  (docs/operations.md#request-metrics; bench/bench_http.py splits a cold tile's time with it).
* `idrserve_readyz_total{status}`: `/readyz` answers by status, for the flapping alert.
* `idrserve_thread_cpu_seconds_total{thread,pid}`: each worker's event-loop and CPU-pool time
  (idrserve/threadcpu.py), one series per worker: a loop is full one worker at a time.

The request path only bumps plain integers (prometheus-client's own metrics take a lock per
call: 6 µs a request in its multiprocess mode, a tenth of a memory hit). With several
workers each one writes its counts to `<dir>/<pid>.json` every `SNAPSHOT_S` and whenever it
answers a scrape, and the scraped worker sums every file: whichever worker the kernel hands
the scrape to, the counters cover all of them (the other workers' part at most `SNAPSHOT_S`
old). The other metrics on /metrics stay those of the answering process.
"""

from __future__ import annotations

import asyncio
import json
import os
import weakref
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from idrserve.histogram import Histogram
from idrserve.logs.classify import family
from idrserve.threadcpu import ThreadCpu

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SNAPSHOT_S = 1.0


def route_resource(request: Any) -> Any:
    """The aiohttp resource of the route a request matched (shared by all its URLs), or None;
    requests are counted and logged by it (ops.AccessLog too)."""
    match_info = getattr(request, "match_info", None)
    return None if match_info is None else match_info.route.resource


class RequestMetrics:
    """One app's counts; `shared_dir` is set in workers of a multi-process server."""

    def __init__(self, shared_dir: Path | None = None, thread_cpu: ThreadCpu | None = None) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.bytes: dict[str, int] = {}
        self.durations: dict[str, Histogram] = {}
        self.readyz: dict[str, int] = {}
        self.tiers: dict[tuple[str, str], int] = {}
        self.stages: dict[tuple[str, str], float] = {}
        self.shared_dir = shared_dir
        self.thread_cpu = thread_cpu
        self._families: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()

    def observe(
        self,
        request: Any,
        status: int,
        size: int | None,
        seconds: float,
        tier: str,
        timings: dict[str, float] | None = None,
    ) -> None:
        self.observe_resource(route_resource(request), status, size, seconds, tier, timings)

    def observe_resource(
        self,
        resource: Any,
        status: int,
        size: int | None,
        seconds: float,
        tier: str,
        timings: dict[str, float] | None = None,
    ) -> None:
        """`observe` for a request known by its route alone (http/fastpath.py's direct hits)."""
        if resource is None:
            fam = "other"
        else:
            fam = self._families.get(resource)  # type: ignore[assignment]
            if fam is None:
                fam = self._families[resource] = family(str(resource.canonical))
        key = (fam, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        self.bytes[fam] = self.bytes.get(fam, 0) + (size or 0)
        hist = self.durations.get(fam)
        if hist is None:
            hist = self.durations[fam] = Histogram(BUCKETS)
        hist.observe(seconds)
        if tier != "-":
            answer = (fam, tier)
            self.tiers[answer] = self.tiers.get(answer, 0) + 1
        if timings:
            stages = self.stages
            for stage, spent in timings.items():
                slot = (fam, stage)
                stages[slot] = stages.get(slot, 0.0) + spent

    def note_readyz(self, status: str) -> None:
        self.readyz[status] = self.readyz.get(status, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": [[f, c, n] for (f, c), n in self.requests.items()],
            "bytes": self.bytes,
            "durations": {f: [h.counts, h.total_s] for f, h in self.durations.items()},
            "readyz": self.readyz,
            "tiers": [[f, t, n] for (f, t), n in self.tiers.items()],
            "stages": [[f, st, sec] for (f, st), sec in self.stages.items()],
            "threads": self._threads(),
        }

    def _threads(self) -> list[list[Any]]:
        """This worker's CPU seconds by thread role, each with the worker's pid."""
        if self.thread_cpu is None:
            return []
        pid = os.getpid()
        return [[pid, role, sec] for role, sec in self.thread_cpu.seconds().items()]

    def write_snapshot(self) -> None:
        if self.shared_dir is None:
            return
        path = self.shared_dir / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        tmp.replace(path)

    def totals(self) -> tuple[dict[str, Any], int]:
        """The counts of every worker (this one's fresh), and how many workers they cover."""
        if self.shared_dir is None:
            return self.snapshot(), 1
        self.write_snapshot()
        docs = []
        for path in self.shared_dir.glob("*.json"):
            try:
                docs.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # a worker replacing its file right now
                continue
        return merge(docs), len(docs)


def merge(docs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    requests: dict[tuple[str, int], int] = {}
    size: dict[str, int] = {}
    durations: dict[str, list[Any]] = {}
    readyz: dict[str, int] = {}
    tiers: dict[tuple[str, str], int] = {}
    stages: dict[tuple[str, str], float] = {}
    threads: list[list[Any]] = []
    for doc in docs:
        for f, c, n in doc["requests"]:
            requests[(f, c)] = requests.get((f, c), 0) + n
        for f, n in doc["bytes"].items():
            size[f] = size.get(f, 0) + n
        for f, (counts, total) in doc["durations"].items():
            have = durations.setdefault(f, [[0] * len(counts), 0.0])
            have[0] = [a + b for a, b in zip(have[0], counts, strict=True)]
            have[1] += total
        for s, n in doc["readyz"].items():
            readyz[s] = readyz.get(s, 0) + n
        for f, t, n in doc["tiers"]:
            tiers[(f, t)] = tiers.get((f, t), 0) + n
        # .get: a worker of an older release, mid rolling restart, writes no stages
        for f, st, sec in doc.get("stages", ()):
            stages[(f, st)] = stages.get((f, st), 0.0) + sec
        threads.extend(doc.get("threads", ()))  # per worker, not summed
    return {
        "requests": [[f, c, n] for (f, c), n in requests.items()],
        "bytes": size,
        "durations": durations,
        "readyz": readyz,
        "tiers": [[f, t, n] for (f, t), n in tiers.items()],
        "stages": [[f, st, sec] for (f, st), sec in stages.items()],
        "threads": threads,
    }


REQUEST_METRICS = web.AppKey("request_metrics", RequestMetrics)
# Set in each worker of `serve --workers N` (cli.py) before its app is made.
_shared_dir: Path | None = None


class RequestCollector(Collector):
    def __init__(self, metrics: RequestMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        doc, workers = self.metrics.totals()
        requests = CounterMetricFamily(
            "idrserve_http_requests",
            "Requests answered, by route family and status (every worker of this server)",
            labels=["family", "code"],
        )
        for f, c, n in sorted(doc["requests"]):
            requests.add_metric([f, str(c)], n)
        yield requests
        size = CounterMetricFamily(
            "idrserve_http_response_bytes",
            "Response body bytes sent, by route family (every worker)",
            labels=["family"],
        )
        for f, n in sorted(doc["bytes"].items()):
            size.add_metric([f], n)
        yield size
        durations = HistogramMetricFamily(
            "idrserve_http_request_duration_seconds",
            "Time from request start to response end, by route family (every worker)",
            labels=["family"],
        )
        for f, (counts, total) in sorted(doc["durations"].items()):
            hist = Histogram(BUCKETS, list(counts), total)
            durations.add_metric([f], hist.cumulative(), sum_value=total)
        yield durations
        answers = CounterMetricFamily(
            "idrserve_http_cache_answers",
            "Image requests by the cache tier that answered (X-Cache: memory, disk, redis, "
            "coalesced; miss is a render), by route family (every worker)",
            labels=["family", "tier"],
        )
        for f, t, n in sorted(doc["tiers"]):
            answers.add_metric([f, t], n)
        yield answers
        stage_seconds = CounterMetricFamily(
            "idrserve_http_render_stage_seconds",
            "Seconds spent per stage of image requests: source (pixel reads), render and "
            "encode for renders, cache for answers from a lower tier or another request's "
            "render; by route family (every worker)",
            labels=["family", "stage"],
        )
        for f, st, sec in sorted(doc.get("stages", ())):
            stage_seconds.add_metric([f, st], sec)
        yield stage_seconds
        readyz = CounterMetricFamily(
            "idrserve_readyz", "/readyz answers by status (every worker)", labels=["status"]
        )
        for s in ("ok", "degraded", "starting", "loading", "draining", "down"):
            readyz.add_metric([s], doc["readyz"].get(s, 0))
        yield readyz
        cpu = CounterMetricFamily(
            "idrserve_thread_cpu_seconds",
            "CPU time of each worker's event-loop thread and of its CPU pool's threads",
            labels=["thread", "pid"],
        )
        for pid, role, sec in sorted(doc["threads"]):
            cpu.add_metric([role, str(pid)], sec)
        yield cpu
        yield GaugeMetricFamily(
            "idrserve_http_workers_reporting",
            "Worker processes whose request counts the idrserve_http_* metrics sum",
            value=workers,
        )


def share_across_workers(directory: Path) -> None:
    """Called in each worker of a multi-process server, before its app is made."""
    global _shared_dir
    _shared_dir = directory


def observe(
    request: Any,
    status: int,
    size: int | None,
    seconds: float,
    tier: str,
    timings: dict[str, float] | None = None,
) -> None:
    """One finished request (called by the access logger, whether it writes lines or not)."""
    metrics = request.app.get(REQUEST_METRICS) if hasattr(request, "app") else None
    if metrics is not None:
        metrics.observe(request, status, size, seconds, tier, timings)


def note_readyz(app: web.Application, status: str) -> None:
    metrics = app.get(REQUEST_METRICS)
    if metrics is not None:
        metrics.note_readyz(status)


def install(app: web.Application, registry: Any) -> None:
    """Count the app's requests on its registry; with workers, keep the snapshot fresh."""
    metrics = app[REQUEST_METRICS] = RequestMetrics(_shared_dir)
    registry.register(RequestCollector(metrics))

    async def snapshots(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(SNAPSHOT_S)
                metrics.write_snapshot()

        task = None
        if metrics.shared_dir is not None:
            metrics.write_snapshot()  # counted as a worker from its start
            task = asyncio.create_task(loop())
        yield
        if task is not None:
            task.cancel()
            metrics.write_snapshot()

    app.cleanup_ctx.append(snapshots)
