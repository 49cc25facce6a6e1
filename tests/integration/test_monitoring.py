"""deploy/prometheus/alerts.yml and deploy/grafana/idrserve.json against a real promtool and a
real server's /metrics.

promtool comes from Debian's `prometheus` package (scripts/test.sh installs it); without it
these tests fail rather than skip.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from idrserve import demo
from idrserve.app import create_app
from idrserve.settings import load_settings
from idrserve.sources.metrics import OmeroCollector, OmeroGauges, OmeroStats

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "idrserve.json"
METRIC = re.compile(r"\b(idrserve_[a-z_]*[a-z])\b")
# The grafana variables in the dashboard's queries, as promtool must see them.
GRAFANA_VARS = {"$__rate_interval": "5m", '"$instance"': '".*"'}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool not found: `bash scripts/test.sh` installs Debian's prometheus package "
            "(apt-get install --no-install-recommends prometheus)"
        )
    return found


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False
    )


def test_promtool_checks_the_alert_rules() -> None:
    result = run("check", "rules", "alerts.yml", cwd=DEPLOY / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_each_alert_fires_when_it_should_and_only_then() -> None:
    result = run("test", "rules", "alerts_test.yml", cwd=DEPLOY / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = set(re.findall(r"- alert: (\w+)", (DEPLOY / "prometheus/alerts.yml").read_text()))
    tests = (DEPLOY / "prometheus/alerts_test.yml").read_text()
    tested = set(re.findall(r"alertname: (\w+)", tests))
    assert alerts == tested


def dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def test_dashboard_structure() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "idrserve" and doc["title"]
    variables = {v["name"] for v in doc["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in doc["panels"]:
        assert panel["type"] == "timeseries" and panel["title"], panel
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
    # Each subject the issue names has a panel.
    titles = " ".join(p["title"].lower() for p in doc["panels"])
    for subject in ("requests", "latency", "hit ratio", "renders", "admission", "omero", "redis"):
        assert subject in titles, subject


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every query, written as a recording rule."""
    rules = []
    for i, expr in enumerate(dashboard_queries()):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    (tmp_path / "queries.yml").write_text(
        json.dumps({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    result = run("check", "rules", "queries.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def exposed_names(text: str) -> set[str]:
    """Every sample name a family of this exposition can have, samples or not yet."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
    }
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(s.name for s in family.samples)
    return names


async def test_every_metric_the_dashboard_and_alerts_use_is_exposed(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    image_id, _name, write = demo._IMAGES[1]
    write(tmp_path / f"{image_id}.zarr")
    settings = load_settings(
        {"source": {"zarr_root": str(tmp_path)}, "cache": {"dir": str(tmp_path / "cache")}}
    )
    client: TestClient = await aiohttp_client(create_app(settings))
    assert (await client.get(f"/webgateway/render_thumbnail/{image_id}/")).status == 200
    assert (await client.get("/readyz")).status == 200
    text = await (await client.get("/metrics")).text()
    names = exposed_names(text)
    # The OMERO source's metrics appear only with OMERO configured: take them from its
    # collector itself.
    omero = OmeroCollector(OmeroStats(), lambda: OmeroGauges(8, 0, 0, 0))
    registry = CollectorRegistry()
    registry.register(omero)
    names |= exposed_names(generate_latest(registry).decode())
    used = set(METRIC.findall(" ".join(dashboard_queries())))
    used |= set(METRIC.findall((DEPLOY / "prometheus" / "alerts.yml").read_text()))
    assert used - names == set(), sorted(names)
    assert {"idrserve_http_requests_total", "idrserve_readyz_total"} <= used
