"""Request counts summed over workers (http/reqmetrics.py): the stage seconds' part, and each
worker's thread CPU beside them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from idrserve.http.reqmetrics import RequestCollector, RequestMetrics, merge
from idrserve.threadcpu import ThreadCpu


def test_stage_seconds_add_up_per_family_and_stage() -> None:
    metrics = RequestMetrics()
    metrics.observe_resource(None, 200, 10, 0.01, "miss", {"source": 0.002, "encode": 0.001})
    metrics.observe_resource(None, 200, 10, 0.01, "miss", {"source": 0.003})
    metrics.observe_resource(None, 200, 10, 0.01, "memory")  # a hit: no stages
    assert metrics.stages == {
        ("other", "source"): pytest.approx(0.005),
        ("other", "encode"): pytest.approx(0.001),
    }


def test_workers_stage_seconds_are_summed_and_an_older_worker_counts_none(
    tmp_path: Path,
) -> None:
    one, two = RequestMetrics(tmp_path), RequestMetrics(tmp_path)
    one.observe_resource(None, 200, 10, 0.01, "miss", {"render": 0.25})
    two.observe_resource(None, 200, 10, 0.01, "miss", {"render": 0.5})
    old = two.snapshot()
    del old["stages"]  # a worker of a release without stage seconds, mid rolling restart
    merged = merge([one.snapshot(), two.snapshot(), old])
    assert merged["stages"] == [["other", "render", 0.75]]
    assert merged["requests"] == [["other", 200, 3]]

    # What another worker process wrote (files are named by pid: this one's is made on scrape).
    (tmp_path / "other-worker.json").write_text(json.dumps(two.snapshot()))
    registry = CollectorRegistry()
    registry.register(RequestCollector(one))
    text = generate_latest(registry).decode()
    assert 'idrserve_http_render_stage_seconds_total{family="other",stage="render"} 0.75' in text


def test_each_workers_thread_cpu_is_its_own_series(tmp_path: Path) -> None:
    # Not summed: a full event loop is one worker's, so every worker keeps its series (by
    # pid), and every scrape shows all of them from the workers' snapshots.
    cpu = ThreadCpu()
    cpu.add_current("loop")
    one = RequestMetrics(tmp_path, cpu)
    other = {**RequestMetrics().snapshot(), "threads": [[99999, "loop", 1.5]]}
    (tmp_path / "99999.json").write_text(json.dumps(other))
    older = RequestMetrics().snapshot()
    del older["threads"]  # a worker of a release without them, mid rolling restart
    (tmp_path / "99998.json").write_text(json.dumps(older))
    registry = CollectorRegistry()
    registry.register(RequestCollector(one))
    text = generate_latest(registry).decode()
    other_loop = {"thread": "loop", "pid": "99999"}
    assert registry.get_sample_value("idrserve_thread_cpu_seconds_total", other_loop) == 1.5
    mine = registry.get_sample_value(
        "idrserve_thread_cpu_seconds_total", {"thread": "loop", "pid": str(os.getpid())}
    )
    if sys.platform == "linux":
        assert mine is not None and mine > 0
    else:
        assert mine is None  # read from /proc: none elsewhere
    assert 'pid="99998"' not in text
