"""Request counts summed over workers (http/reqmetrics.py): the stage seconds' part."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from idrserve.http.reqmetrics import RequestCollector, RequestMetrics, merge


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
