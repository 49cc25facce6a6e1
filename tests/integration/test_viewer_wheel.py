"""`pip install .` ships the viewer's vendored npm assets: build the wheel for real and look.

The build hook (hatch_build.py) fetches the pinned tarballs unless this tree already holds them
(as after `pip install -e .`); either way the git-ignored vendor folder must be in the wheel.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from idrserve import vendor
from idrserve.http import viewer

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_wheel_carries_the_vendored_assets(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
         "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    [wheel] = tmp_path.glob("idrserve-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for pkg in vendor.PACKAGES:
            base = f"idrserve/static/vendor/{pkg.name}/"
            stamp = json.loads(zf.read(base + vendor.STAMP))
            assert stamp == pkg.stamp()
            for f in pkg.files:
                if f.endswith("/"):
                    assert any(n.startswith(base + f) for n in names), base + f
                else:
                    assert base + f in names, base + f
        pages = ("viewer.html", "viewer.css", "index.html", "index.js", "notfound.html")
        for page in (*pages, *viewer.VIEWER_SCRIPTS, "docs.html", "docs.js"):
            assert f"idrserve/static/{page}" in names, page
        osd = zf.read(
            "idrserve/static/vendor/openseadragon/build/openseadragon/openseadragon.min.js"
        )
        assert b"OpenSeadragon" in osd[:4000]
