"""Floors under a cold tile: a bare uvloop responder, aiohttp's least, and the bare one + kernel.

bench/bench_http.py runs all three as more servers (`--floor`), pinned to the server's core,
with the same wrk load and keep-alive; the first two answer every request with a constant
17 KB body (about a 256² tile's JPEG):

- `python bench/_floor.py PORT`: an asyncio protocol on uvloop that finds the end of each
  request head and writes the response; no parsing beyond that, no routing, no headers beyond
  Content-Type and Content-Length. Its time a request is a floor under any Python server's on
  this machine (the syscalls, the event loop's turn, the client's wake-ups).
- `python bench/_floor.py PORT --aiohttp`: an aiohttp application with one catch-all route
  returning a `web.Response`, on uvloop, access log off: what aiohttp's parser, request object,
  handler task and response cost before any work of the application's own.
- `python bench/_floor.py PORT --kernel ZARR_ROOT URL_FILE`: the bare responder, answering each
  URL of the file with the tile bench/_kernel.py makes for it (planned once before serving, then
  read, decoded, rendered and encoded per request by `service._read_render_encode`, as the
  kernel alone does). Nothing a server could leave out is left: its rate against the kernel
  alone is the most any Python server on this event loop can reach with this kernel, the bare
  request handling and the kernel's memory traffic taking turns on one core. `GET /metrics`
  answers the seconds each stage took and the tiles made, under the names idrserve's own
  /metrics gives them, so bench_http.py splits its tile as it splits the server's.
  bench/bench_iiif.py runs it too (`--floor`), against iipsrv.
- `python bench/_floor.py PORT --kernel ZARR_ROOT URL_FILE --turns`: the same, its renders
  taking turns by idrserve's own queue (`idrserve.turns.InlineTurns` at the server's default
  count and time budget; a tile over `service.ONE_TURN_PIXELS` in two turns, as idrserve
  renders it), so that its loop lags no more than idrserve's: the ceiling under issue 19's
  target 3 (a loop-lag p99 of 2 ms), where the plain `--kernel` renders every ready request
  in one iteration.

Both kernel floors sample their loop's lag with idrserve's own sampler (`LoopLag`, a timerfd
the loop watches) and answer it on /metrics under idrserve's name, so bench_http.py reads
their lag as it reads the server's.

Set beside what issue 19's target 1 leaves for request handling (a tenth of the kernel's time
a tile) they say how much of idrserve's request path is the framework and how much its own.
Not servers for anything else: the constant floors answer every URL with the same invalid
JPEG, the kernel's anything but its tiles and /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, cast

import uvloop

BODY = b"\xff\xd8" + b"\0" * 17_000  # the size bench/_request_path.py answers with
TILE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
HEAD = TILE_HEAD % len(BODY)
TEXT_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
# `--kernel`: seconds by stage over the tiles made, and how many (`/metrics`).
SPENT: dict[str, float] = {}
MADE = [0]
# `--kernel`: idrserve's loop-lag sampler's registry (`/metrics`); set by `serve`.
LAG_METRICS: list[Callable[[], bytes]] = []
# `--turns`: idrserve's render queue, at the server's defaults; None renders at once.
TURNS: Any = None
# A tile's make, or (with `--turns`) its read and the call that renders and encodes the rest.
Make = Callable[[], bytes]


def stage_metrics() -> str:
    """SPENT and MADE as the counters bench_http.render_stages reads from idrserve, and the
    loop's lag histogram."""
    lines = [piece().decode().rstrip("\n") for piece in LAG_METRICS]
    lines.append("# TYPE idrserve_http_render_stage_seconds counter")
    lines += [
        f'idrserve_http_render_stage_seconds_total{{family="floor",stage="{stage}"}} {seconds}'
        for stage, seconds in SPENT.items()
    ]
    lines.append(f'idrserve_http_cache_answers_total{{family="floor",tier="miss"}} {MADE[0]}')
    if TURNS is not None:  # how many answers waited for a later iteration's turn
        lines.append(f"floor_turn_waits_total {TURNS.queued}")
    return "\n".join(lines) + "\n"


class Responder(asyncio.Protocol):
    # The kernel's tiles by request target (`--kernel`); empty: the constant body.
    tiles: ClassVar[dict[bytes, Callable[[], bytes]]] = {}

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending = b""
        self.waiting = 0  # `--turns`: this connection's answers still in the queue

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        buf = self.pending + data if self.pending else data
        start = 0
        while (end := buf.find(b"\r\n\r\n", start)) >= 0:
            assert self.transport is not None
            if self.tiles:  # `--kernel`; the constant floors read nothing of the head
                line = buf[start : buf.find(b"\r\n", start)]
                if TURNS is None or not self.take_turn(line):
                    self.answer_in_order(line)
            else:
                self.transport.writelines((HEAD, BODY))
            start = end + 4
        self.pending = buf[start:]

    def answer_in_order(self, request_line: bytes) -> None:
        """Anything but a tile answered at once, or, with `--turns`, after the tiles this
        connection still waits for (a pipelined request's answer never overtakes them)."""
        transport = self.transport
        assert transport is not None
        if not self.waiting:
            transport.writelines(self.answer(request_line))
            return
        self.waiting += 1

        def later() -> bool:
            self.waiting -= 1
            if not transport.is_closing():
                transport.writelines(self.answer(request_line))
            return False  # no render: it takes no turn

        TURNS.defer(later)

    def take_turn(self, request_line: bytes) -> bool:
        """`--turns`: render the line's tile when idrserve's queue gives it its turn, and
        write it then; False for anything but a tile (answered at once)."""
        target = request_line.split(b" ", 2)[1]
        tile = self.turned.get(target)
        if tile is None:
            return False
        split, read = tile
        transport = self.transport
        assert transport is not None

        def write(body: bytes) -> None:
            self.waiting -= 1
            if not transport.is_closing():
                transport.writelines((TILE_HEAD % len(body), body))

        # Each part records its time in the queue's estimate, as `service.render_now` does.
        def whole() -> bool:
            write(read()())
            return True

        def two_turns() -> bool:
            rest = read()  # read and decode in this turn

            def second() -> bool:
                write(rest())
                return True

            TURNS.defer(second, first=True)
            return True

        job = two_turns if split else whole
        self.waiting += 1
        if self.waiting == 1 and TURNS.take_now():
            job()
        else:
            TURNS.defer(job)
        return True

    # `--turns`: each target's tile, whether it takes two turns (`service.ONE_TURN_PIXELS`),
    # and its read (returning the rest of its render).
    turned: ClassVar[dict[bytes, tuple[bool, Callable[[], Make]]]] = {}

    def answer(self, request_line: bytes) -> tuple[bytes, bytes]:
        """`--kernel`: the head and body for a request line: its tile, the stage counters
        (/metrics) or, for anything else (e.g. bench_http's /healthz), the constant."""
        target = request_line.split(b" ", 2)[1]
        tile = self.tiles.get(target)
        if tile is not None:
            body = tile()
            return TILE_HEAD % len(body), body
        if target == b"/metrics":
            text = stage_metrics().encode()
            return TEXT_HEAD % len(text), text
        return HEAD, BODY


def count(timings: dict[str, float]) -> None:
    for stage, seconds in timings.items():
        SPENT[stage] = SPENT.get(stage, 0.0) + seconds
    MADE[0] += 1


def kernel_tiles(root: Path, url_file: Path) -> dict[bytes, Callable[[], bytes]]:
    """Each URL's tile as bench/_kernel.py makes it: planned here, made per call. With
    `--turns`, `Responder.turned` gets each tile's two parts as idrserve's turns split it."""
    from _kernel import _plan  # bench/ is this script's directory, first on sys.path

    from idrserve.render import kernels
    from idrserve.service import ONE_TURN_PIXELS, _read_first, _read_render_encode

    urls = url_file.read_text().split()
    deps, jobs = asyncio.run(_plan(root, urls))
    kernels.warm()
    if TURNS is not None:
        deps.inline_turns = TURNS  # what `_read_first` records its first part's time in

    def tile(req: Any, meta: Any, read: Any, key: str) -> Callable[[], bytes]:
        def make() -> bytes:
            rendered = _read_render_encode(req, meta, deps, read, key)
            count(rendered.timings)
            if TURNS is not None:
                TURNS.record(sum(rendered.timings.values()))
            return rendered.body

        return make

    def parts(req: Any, meta: Any, read: Any, key: str) -> tuple[bool, Callable[[], Make]]:
        def first() -> Make:
            rest = _read_first(req, meta, deps, read, key)

            def second() -> bytes:
                rendered = rest()
                count(rendered.timings)
                return rendered.body

            return second

        made = tile(req, meta, read, key)

        def whole() -> Make:
            return made

        pixels = len(req.render.active_indices()) * req.box.w * req.box.h
        split = pixels > ONE_TURN_PIXELS
        return split, (first if split else whole)

    if TURNS is not None:
        Responder.turned = {url.encode(): parts(*job) for url, job in zip(urls, jobs, strict=True)}
    return {url.encode(): tile(*job) for url, job in zip(urls, jobs, strict=True)}


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, "127.0.0.1", port, backlog=1024)
    async with contextlib.AsyncExitStack() as stack:
        if Responder.tiles:  # the kernel floors: their loop's lag, as idrserve samples it
            from prometheus_client import CollectorRegistry, generate_latest

            from idrserve.http.looplag import LoopLag

            registry = CollectorRegistry()
            await stack.enter_async_context(
                contextlib.asynccontextmanager(LoopLag(registry).run)(None)
            )
            LAG_METRICS.append(lambda: generate_latest(registry))
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
        if "--kernel" in sys.argv[2:3]:
            if "--turns" in sys.argv[5:]:
                from idrserve.settings import ServerSettings
                from idrserve.turns import InlineTurns

                defaults = ServerSettings()
                TURNS = InlineTurns(
                    defaults.inline_renders_per_turn, defaults.inline_turn_budget_ms / 1000
                )
            Responder.tiles = kernel_tiles(Path(sys.argv[3]), Path(sys.argv[4]))
        uvloop.run(serve(int(sys.argv[1])))
