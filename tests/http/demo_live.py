"""Helpers for the raw-pixel API and store-view tests: demo data, stored arrays, a live server."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zarr
from aiohttp import web

from idrserve.app import create_app
from idrserve.settings import load_settings

# Stored axes of the demo images (idrserve/demo.py).
DEMO_AXES = {1001: "cyx", 1002: "czyx", 1003: "yx", 1004: "cyx", 1005: "cyx", 1006: "tczyx"}


def stored(root: Path, iid: int, level: int) -> np.ndarray:
    """One stored level, read straight from disk with zarr."""
    return np.asarray(zarr.open_array(str(root / f"{iid}.zarr" / str(level)), mode="r")[...])


def as_tczyx(data: np.ndarray, axes: str) -> np.ndarray:
    """A stored array with its missing axes added as singletons, in t, c, z, y, x order."""
    for role in "tczyx":
        if role not in axes:
            data = data[np.newaxis]
            axes = role + axes
    return np.transpose(data, [axes.index(r) for r in "tczyx"])


@contextmanager
def serve_in_thread(root: Path, **groups: dict[str, object]) -> Iterator[tuple[str, int]]:
    """The app on a real loopback socket in a background thread (for raw http.client fuzzing)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    loop = asyncio.new_event_loop()
    settings = {"source": {"zarr_root": str(root)}, "server": {"port": port}, **groups}
    runner = web.AppRunner(create_app(load_settings(settings)), handler_cancellation=True)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield "127.0.0.1", port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def raw_get(addr: tuple[str, int], path: str) -> tuple[int, str, bytes]:
    """GET `path` exactly as given (no client-side normalisation of `..` or escapes)."""
    conn = http.client.HTTPConnection(*addr, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read()
    finally:
        conn.close()
