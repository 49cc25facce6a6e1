"""A real `idrserve serve` in a subprocess over the demo images, for independent HTTP clients.

The server runs in its own process (as in test_nginx.py, whose helpers it reuses): zarr-python's
zarrs pipeline holds the GIL while it reads, which would starve a server in the test process,
and clients such as fsspec run their own event loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from idrserve.demo import DemoImage, write_demo
from tests.integration.test_nginx import free_port, stop, wait_until


def demo_images(factory: pytest.TempPathFactory) -> tuple[Path, list[DemoImage]]:
    """The six demo images, written once per test session (idempotent across modules)."""
    root = factory.getbasetemp() / "zarr-demo"
    return root, write_demo(root)


@contextmanager
def idrserve(data: Path | str, log: Path, env_extra: dict[str, str] | None = None) -> Iterator[str]:
    """Serve `data` (a directory or URL root) on a free port; yields the base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDRSERVE_")}
    env.update(env_extra or {})
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "idrserve",
                "serve",
                "--zarr-root",
                str(data),
                "--port",
                f"{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            wait_until(port, "/healthz", proc, "idrserve")
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)
            print(f"--- idrserve log\n{log.read_text(errors='replace')[-3000:]}")
