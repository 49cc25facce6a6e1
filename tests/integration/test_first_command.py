"""The README's first command, `pip install . && idrserve demo`, in a virtualenv of its own.

Every other test runs in the environment `scripts/test.sh` made, with the test extras
installed, so a runtime import that only a test dependency satisfies goes unseen there:
Pillow was one until 2026-12-07, and the first command stopped with ModuleNotFoundError
(tests/unit/test_runtime_deps.py checks the imports statically). Here nothing of the test
environment is visible: a fresh venv without system site-packages, `pip install` of this
checkout from the package index (pip's cache makes it about 20 s after the test extras were
installed), then the demo as a first-time user starts it, asked for a tile and the viewer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_cli import fetch, free_port
from tests.integration.test_nginx import stop

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_pip_install_then_idrserve_demo_in_a_clean_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDRSERVE_", "PYTHON"))}
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    port = free_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        # pip keeps the user's configuration and cache; the demo starts with an empty home
        # (its data set and numba's cache written anew, as on a first run)
        proc = subprocess.Popen(
            [str(venv / "bin" / "idrserve"), "demo", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env | {"HOME": str(tmp_path / "home")},
            cwd=tmp_path,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if fetch(base + "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        status, kind, body = fetch(
            base + "/webgateway/render_image_region/1001/0/0/?tile=0,0,0,256,256"
        )
        assert (status, kind) == (200, "image/jpeg") and body[:2] == b"\xff\xd8", body[:300]
        status, kind, body = fetch(base + "/viewer/")
        assert status == 200 and kind.startswith("text/html"), body[:300]
    finally:
        stop(proc)  # SIGTERM, as systemd or a container runtime ends it
    assert proc.returncode == 0, log.read_text()[-3000:]
    # the banner a first-time user reads: the URLs to open
    assert f"http://localhost:{port}/viewer/" in log.read_text()
