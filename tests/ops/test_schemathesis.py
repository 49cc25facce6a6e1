"""schemathesis against `/openapi.json` of a real server process: every documented operation,
positive and negative (schema-violating) cases, ≥ 2 000 requests in all.

Pass criteria for every response: status < 500, and every 4xx carries a JSON body (IIIF's
error form is JSON too). Half of the generated image ids are replaced by the demo images'
ids so that cases reach the renderers, not only the 404 of an unknown image.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.ops.conftest import Server

MIN_CASES = 2000
DEMO_IDS = ["1001", "1002", "1003", "1004", "1005", "1006"]


def _check(case: Any, response: requests.Response, failures: list[str]) -> None:
    where = f"{case.method} {response.request.url}"
    if response.status_code >= 500:
        failures.append(f"{where} -> {response.status_code}: {response.text[:300]}")
    elif 400 <= response.status_code < 500 and case.method != "HEAD":
        try:
            body = json.loads(response.content)
        except ValueError:
            failures.append(f"{where} -> {response.status_code} without a JSON body")
            return
        if not isinstance(body, dict) or not body:
            failures.append(f"{where} -> {response.status_code}: JSON body is not an object")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_all_routes(make_server: Any, demo_data: Path) -> None:
    server: Server = make_server(
        demo_data,
        IDRSERVE_LIMITS__MAX_REGION_PIXELS=str(1024 * 1024),  # big planes: a quick 413
        IDRSERVE_LIMITS__REQUEST_TIMEOUT_S="20",
        IDRSERVE_LOG__ACCESS_LOG="false",
    )
    schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 60, "the document lost operations"
    plans = [
        (op, mode)
        for op in operations
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        # nothing to violate in an operation without parameters
        if mode is GenerationMode.POSITIVE or any(True for _ in op.iter_parameters())
    ]
    # Parameterless operations run out of distinct cases early; aim 15 % above the minimum.
    per_operation = math.ceil(1.15 * MIN_CASES / len(plans))
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    session = requests.Session()

    for operation, mode in plans:
        strategy = operation.as_strategy(generation_mode=mode)

        @settings(
            max_examples=per_operation,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=strategy, demo=st.sampled_from([None, *DEMO_IDS]))
        def run(case: Any, demo: str | None) -> None:
            if demo is not None and "iid" in (case.path_parameters or {}):
                case.path_parameters["iid"] = demo
            response = case.call(base_url=server.base, session=session, timeout=30)
            statuses[response.status_code] += 1
            _check(case, response, failures)

        run()

    total = sum(statuses.values())
    print(f"schemathesis: {total} cases over {len(operations)} operations; statuses {statuses}")
    assert not failures, f"{len(failures)} bad responses:\n" + "\n".join(failures[:30])
    assert total >= MIN_CASES
    assert server.proc is not None and server.proc.poll() is None  # it never fell over
