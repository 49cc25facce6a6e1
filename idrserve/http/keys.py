"""The typed keys of shared state: what the app holds for every handler, and what one request
carries from middleware to handler to access log.

They live here, not in the module that happens to fill them, so that no protocol module owns
app-wide state and every module can import them without importing each other.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from idrserve.admission import Admission, BodyBytes
from idrserve.catalog import Catalog
from idrserve.http.trace import Trace, UrlMemo
from idrserve.service import Deps
from idrserve.settings import Settings
from idrserve.sources.plate_catalog import PlateCatalog

# --- the app ----------------------------------------------------------------------------------
SETTINGS = web.AppKey("settings", Settings)
# Sources, LUTs, pools, cache tiers and admission: opened and closed by `app.lifecycle`.
DEPS = web.AppKey("deps", Deps)
CATALOG = web.AppKey("catalog", Catalog)
# HCS plates and the image ids of their fields (sources/plate_catalog.py).
PLATES = web.AppKey("plates", PlateCatalog)
ADMISSION = web.AppKey("admission", Admission)
# One Prometheus registry per app, so several apps (tests, workers) never share counters.
REGISTRY = web.AppKey("registry", CollectorRegistry)
# {"ready": bool, "draining": bool}: /healthz and /readyz read it, start-up and SIGTERM set it.
STATE = web.AppKey("state", dict)

# --- one request ------------------------------------------------------------------------------
REQUEST_ID = web.RequestKey("request_id", str)
# What the request learnt (cache tier, stage timings): headers and access log are made from it.
TRACE = web.RequestKey("trace", Trace)
# A rendered answer's resolved key, for the fast path's URL index (http/fastpath.py).
MEMO_INFO = web.RequestKey("memo_info", UrlMemo)
# The body bytes charged to the byte budget, and those handed to the transport so far
# (http/bodies.py).
BODY_BYTES = web.RequestKey("body_bytes", BodyBytes)
BODY_SENT = web.RequestKey("body_sent", int)
