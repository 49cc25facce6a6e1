"""Real servers on real sockets for the tests of the paths that bypass aiohttp's request
machinery (direct hits, cold tiles): started with `start_server` as `idrserve serve` starts
them, spoken to over raw kept-alive HTTP/1.1 connections so that pipelining, header order and
connection state are visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from idrserve.app import create_app
from idrserve.http.coldpath import COLD_RENDERS, ColdRenders
from idrserve.http.fastpath import DIRECT_HITS, DirectHits
from idrserve.http.ops import AccessLog
from idrserve.http.server import HttpServer, start_server
from idrserve.settings import load_settings

Headers = list[tuple[str, str]]


class Served:
    """A running server, the DirectHits it was given (counting what it answered), its
    ColdRenders (counting what it planned), and the access-log lines it wrote."""

    def __init__(
        self,
        server: HttpServer,
        direct: DirectHits | None,
        lines: list[str],
        cold: ColdRenders | None = None,
        app: web.Application | None = None,
    ) -> None:
        self.server = server
        self.app = app
        self.port = server.port
        self.answered = 0
        self.lines = lines
        self.direct = direct
        self.cold = cold
        self.cold_taken = 0  # requests planned as cold tiles (http/coldpath.py)
        if cold is not None:
            cold.plan = self._counting(cold.plan, "cold_taken")  # type: ignore[method-assign]
        if direct is not None:
            direct.answer = self._counting(direct.answer, "answered")  # type: ignore[method-assign]

    def _counting(self, method: Callable[[Any], Any], counter: str) -> Callable[[Any], Any]:
        """`method`, counting in `self.<counter>` the messages it took (a non-None result)."""

        def counted(message: Any) -> Any:
            result = method(message)
            setattr(self, counter, getattr(self, counter) + (result is not None))
            return result

        return counted

    def log_records(self) -> list[dict[str, Any]]:
        AccessLog.flush_all()
        return [json.loads(line) for text in self.lines for line in text.splitlines()]


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.asynccontextmanager
async def serving(zarr_root: Path) -> AsyncIterator[Callable[..., Any]]:
    """`factory(**settings)` starts one more server (`group__name=value` settings); all of
    them stop on exit. conftest.py's `serve` fixture."""
    started: list[HttpServer] = []
    logger = logging.getLogger("idrserve.access.test-direct")
    logger.propagate = False
    logger.setLevel(logging.INFO)

    async def factory(**overrides: Any) -> Served:
        groups: dict[str, Any] = {"source": {"zarr_root": str(zarr_root)}}
        for key, value in overrides.items():
            group, _, name = key.partition("__")
            groups.setdefault(group, {})[name] = value
        settings = load_settings(groups)
        app = create_app(settings)
        lines: list[str] = []
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.addHandler(_Lines(lines))
        server = await start_server(
            app,
            "127.0.0.1",
            0,
            cors_origin=settings.server.cors_origin,
            header_timeout_s=settings.limits.header_timeout_s,
            keepalive_timeout=settings.limits.keepalive_timeout_s,
            access_log=logger,
            access_log_class=AccessLog,
            access_log_format="json",
        )
        started.append(server)
        return Served(server, app.get(DIRECT_HITS), lines, app.get(COLD_RENDERS), app)

    try:
        yield factory
    finally:
        for server in started:
            await server.close()


class Conn:
    """One kept-alive HTTP/1.1 connection, read response by response (Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def response(self) -> tuple[int, Headers, bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")[:-2]
        headers = [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
        length = int(dict(headers).get("Content-Length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), 10)
        return int(lines[0].split()[1]), headers, body

    async def get(self, path: str, extra: str = "", version: str = "1.1") -> Any:
        await self.send(f"GET {path} HTTP/{version}\r\nHost: t\r\n{extra}\r\n".encode())
        return await self.response()

    async def closed(self, within: float) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), within) == b""
        except TimeoutError:
            return False

    def close(self) -> None:
        self.writer.close()


def value(headers: Headers, name: str) -> str | None:
    return next((v for n, v in headers if n.lower() == name.lower()), None)


def without(headers: Headers, names: set[str]) -> Headers:
    return [(n, v) for n, v in headers if n not in names]
