"""A directory served over HTTP with injectable faults: `storage_server.py ROOT PORT`.

`POST /_control` with JSON `{"delay_s": 0.5, "fail": [1003], "data_only": true}` changes the
behaviour of later requests: every file request waits `delay_s`, and requests under
`<id>.zarr/` for a failing id answer 500 (only chunk data when `data_only`, so metadata still
loads and the failure shows up as a read error of that image). Range requests are honoured
(aiohttp's file response), as object stores do.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from aiohttp import web

STATE: dict[str, object] = {"delay_s": 0.0, "fail": [], "data_only": True, "requests": 0}
META = re.compile(r"(^|/)(\.zattrs|\.zgroup|\.zarray|zarr\.json)$")


async def control(request: web.Request) -> web.Response:
    STATE.update(await request.json())
    return web.json_response(STATE)


async def serve(request: web.Request) -> web.StreamResponse:
    root: Path = request.app["root"]
    rel = request.match_info["path"]
    STATE["requests"] = int(STATE["requests"]) + 1  # type: ignore[call-overload]
    delay = float(STATE["delay_s"])  # type: ignore[arg-type]
    if delay > 0:
        await asyncio.sleep(delay)
    image = rel.split(".zarr", 1)[0].rsplit("/", 1)[-1]
    failing = {str(i) for i in STATE["fail"]}  # type: ignore[attr-defined]
    if image in failing and not (STATE["data_only"] and META.search(rel)):
        return web.Response(status=500, text="injected storage failure")
    path = (root / rel).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path)


def main() -> None:
    app = web.Application()
    app["root"] = Path(sys.argv[1]).resolve()
    app.router.add_post("/_control", control)
    app.router.add_get("/{path:.+}", serve)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)


if __name__ == "__main__":
    main()
