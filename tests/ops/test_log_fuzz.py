"""Hypothesis: hostile request ids and header values never break an access-log line.

The JSON line is formatted by hand for speed and writes the request id unescaped, relying on
`middleware.request_id` to admit only `[A-Za-z0-9-]{1,64}`; these properties pin that down.
"""

from __future__ import annotations

import json
import logging
import re

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from idrserve.http.keys import TRACE
from idrserve.http.middleware import request_id
from idrserve.http.ops import AccessLog
from idrserve.http.trace import Trace

SAFE_ID = re.compile(r"[A-Za-z0-9-]{1,64}")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(record.getMessage().split("\n"))


@settings(max_examples=500, deadline=None)
@given(header=st.text(max_size=200))
def test_request_ids_are_always_safe(header: str) -> None:
    req = make_mocked_request("GET", "/x", headers=CIMultiDict({"X-Request-ID": header}))
    rid = request_id(req)
    assert SAFE_ID.fullmatch(rid), rid
    if SAFE_ID.fullmatch(header) and header.strip("-"):
        assert rid == header  # a well-formed incoming id is kept (and echoed)


@settings(max_examples=300, deadline=None)
@given(
    header=st.text(max_size=100),
    tier=st.text(max_size=30),
    timings=st.dictionaries(
        st.sampled_from(["source", "render", "encode", "cache"]),
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
    ),
    fmt=st.sampled_from(["json", "text"]),
)
def test_access_log_line_is_one_valid_record(
    header: str, tier: str, timings: dict[str, float], fmt: str
) -> None:
    logger = logging.getLogger("test.idrserve.access.fuzz")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    sink = _Lines()
    logger.addHandler(sink)
    try:
        req = make_mocked_request("GET", "/x", headers=CIMultiDict({"X-Request-ID": header}))
        request_id(req)
        req[TRACE] = Trace(tier, timings)
        resp = web.Response(body=b"abc")
        access = AccessLog(logger, fmt)
        access.log(req, resp, 0.001)
        access.flush()
    finally:
        logger.removeHandler(sink)
    assert len(sink.lines) == 1  # never split into two lines
    line = sink.lines[0]
    if fmt == "json":
        record = json.loads(line)
        assert record["cache"] == tier and record["status"] == 200 and record["bytes"] == 3
        for name, sec in timings.items():
            assert record[f"{name}_ms"] == round(sec * 1000, 3)
        assert SAFE_ID.fullmatch(record["request_id"])
    else:
        assert "\n" not in line
