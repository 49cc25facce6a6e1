"""Two floors under a cold tile's request path: a bare uvloop responder, and aiohttp's least.

bench/bench_http.py runs both as more servers (`--floor`), pinned to the server's core, with
the same wrk load, each answering every request with a constant 17 KB body (about a 256²
tile's JPEG) and keep-alive:

- `python bench/_floor.py PORT`: an asyncio protocol on uvloop that finds the end of each
  request head and writes the response; no parsing beyond that, no routing, no headers beyond
  Content-Type and Content-Length. Its time a request is a floor under any Python server's on
  this machine (the syscalls, the event loop's turn, the client's wake-ups).
- `python bench/_floor.py PORT --aiohttp`: an aiohttp application with one catch-all route
  returning a `web.Response`, on uvloop, access log off: what aiohttp's parser, request object,
  handler task and response cost before any work of the application's own.

Set beside what issue 19's target 1 leaves for request handling (a tenth of the kernel's time
a tile) they say how much of idrserve's request path is the framework and how much its own.
Not servers for anything else: every URL answers the same invalid JPEG.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop

BODY = b"\xff\xd8" + b"\0" * 17_000  # the size bench/_request_path.py answers with
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(BODY)


class Responder(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buf = self.pending + data if self.pending else data
        start = 0
        while (end := buf.find(b"\r\n\r\n", start)) >= 0:
            start = end + 4
            assert self.transport is not None
            self.transport.writelines((HEAD, BODY))
        self.pending = buf[start:]


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def constant(_request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{tail:.*}", constant)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    if "--aiohttp" in sys.argv[2:]:
        serve_aiohttp(int(sys.argv[1]))
    else:
        uvloop.run(serve(int(sys.argv[1])))
