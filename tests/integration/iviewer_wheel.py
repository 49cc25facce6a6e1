"""The OMERO.iviewer release the iviewer session test runs: PyPI's wheel, pinned by SHA-256.

The wheel is fetched with pip (`pip download`, hash-checking mode), so pip's own index settings
apply (`PIP_INDEX_URL`, `PIP_FIND_LINKS` for a local copy, proxies) and nothing but PyPI or the
mirror pip is told about is contacted. It is kept in `$XDG_CACHE_HOME/idrserve/iviewer/`
(`~/.cache/...`) and its hash is checked again on every use, so a changed or corrupt copy is
fetched anew and a wheel that does not match the pin is never extracted.

`python -m tests.integration.iviewer_wheel` fetches it ahead of a test run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PROJECT = "omero-iviewer"
VERSION = "0.19.1"
WHEEL = f"omero_iviewer-{VERSION}-py3-none-any.whl"
# The hash PyPI lists for WHEEL (the `#sha256=` of its simple index).
SHA256 = "c3001f035426b5b5073b023ab5dfc805ed5189e6732153f8c063034be7b81921"
# What the session needs from it: the bundle and its styles, the page template (the stub page
# loads the files it names, in its order) and the view that renders it (the stub writes the
# configuration keys it sets).
STATIC = "omero_iviewer/static/omero_iviewer/"
TEMPLATE = "omero_iviewer/templates/omero_iviewer/index.html"
VIEWS = "omero_iviewer/views.py"


class WheelError(RuntimeError):
    """The pinned wheel could not be fetched, or what was fetched does not match the pin."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "idrserve" / "iviewer"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str = SHA256) -> None:
    """Raise WheelError unless `path` hashes to `expected`."""
    actual = sha256_of(path)
    if actual != expected:
        raise WheelError(f"{path.name}: sha256 {actual}, expected the pinned {expected}")


def fetch_wheel(directory: Path | None = None, expected: str = SHA256) -> Path:
    """The pinned wheel in `directory` (default the cache), downloaded with pip if absent."""
    directory = directory or cache_dir()
    target = directory / WHEEL
    if target.exists():
        try:
            check_sha256(target, expected)
            return target
        except WheelError:
            target.unlink()  # a stale or corrupt copy: fetch it again
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(f"{PROJECT}=={VERSION} --hash=sha256:{expected}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        cmd += ["--only-binary=:all:", "--require-hashes", "-r", str(requirements), "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        got = Path(tmp) / WHEEL
        if done.returncode != 0 or not got.exists():
            detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise WheelError(
                f"pip download {PROJECT}=={VERSION} --hash=sha256:{expected} failed: "
                f"{' / '.join(detail)}. It needs PyPI (or a mirror in PIP_INDEX_URL), or "
                f"the wheel in a directory named by PIP_FIND_LINKS"
            )
        check_sha256(got, expected)  # pip checked it too; this is the pin that counts
        shutil.move(got, target)
    return target


def extract(wheel: Path, dest: Path) -> Path:
    """The wheel's static files, template and views under `dest`; returns `dest`."""
    check_sha256(wheel)
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if (name.startswith(STATIC) or name in (TEMPLATE, VIEWS)) and not name.endswith("/"):
                zf.extract(name, dest)
    return dest


if __name__ == "__main__":
    try:
        print(fetch_wheel())
    except WheelError as exc:
        print(f"iviewer_wheel: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
