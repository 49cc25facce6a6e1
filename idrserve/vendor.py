"""Third-party browser assets (OpenSeadragon, Swagger UI), fetched from the npm registry.

The viewer page and the API docs page must work without any CDN at run time, so the JavaScript
they need is copied into `idrserve/static/vendor/<package>/` when the package is built or
installed (`hatch_build.py` calls `ensure_vendored`; `python -m idrserve.vendor` does the same
for a source checkout). Tarballs are fetched with a plain HTTPS GET — no `node` or `npm`
binary is needed — and each is checked against the `dist.integrity` SHA-512 pinned below
before anything is extracted, so a compromised mirror cannot change what is served.

This module must import nothing outside the standard library: the build hook loads it by file
path inside pip's isolated build environment, before idrserve's dependencies exist.

Environment:
* ``IDRSERVE_NPM_REGISTRY``: registry base URL (default https://registry.npmjs.org); any URL
  laid out like the registry (``<base>/<name>/-/<name>-<version>.tgz``), including
  ``file:///path/to/mirror``, works, since the pinned hashes decide what is accepted.
* ``IDRSERVE_SKIP_VENDOR=1``: build without the assets; the viewer and docs pages then answer
  503 with instructions instead of a page.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

DEFAULT_REGISTRY = "https://registry.npmjs.org"
REGISTRY_ENV = "IDRSERVE_NPM_REGISTRY"
SKIP_ENV = "IDRSERVE_SKIP_VENDOR"
STAMP = ".vendored.json"
VENDOR_DIR = Path(__file__).resolve().parent / "static" / "vendor"
# The largest tarball accepted (swagger-ui-dist is ~3.4 MB): a bound on a misbehaving mirror.
MAX_TARBALL_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm package and the files of it that idrserve serves.

    `files` are paths inside the tarball's `package/` folder; a path ending in `/` takes the
    whole folder. They land under `vendor/<name>/` with the same relative paths.
    """

    name: str
    version: str
    integrity: str
    files: tuple[str, ...]

    def tarball_url(self, registry: str) -> str:
        base = self.name.rsplit("/", 1)[-1]
        return f"{registry.rstrip('/')}/{self.name}/-/{base}-{self.version}.tgz"

    def stamp(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "integrity": self.integrity}


PACKAGES: tuple[NpmPackage, ...] = (
    NpmPackage(
        "openseadragon",
        "5.0.1",
        "sha512-a/hjouW9i3UfWxRADVYN2MyRhXMGnE7x9VVL7/4jXCcDLFyO4UM5o4RStYtqa5BfaHw/wMNAaD2WbxQF8f1pJg==",
        (
            "build/openseadragon/openseadragon.min.js",
            "build/openseadragon/images/",
            "LICENSE.txt",
        ),
    ),
    NpmPackage(
        "swagger-ui-dist",
        "5.35.0",
        "sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ==",
        ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"),
    ),
)


class VendorError(RuntimeError):
    """A package could not be fetched, verified or extracted."""


def registry_url() -> str:
    return os.environ.get(REGISTRY_ENV, "").strip() or DEFAULT_REGISTRY


def check_integrity(data: bytes, integrity: str) -> None:
    """Raise unless `data` matches an npm SRI string (``sha512-<base64>``)."""
    algo, _, expected = integrity.partition("-")
    if algo != "sha512":
        raise VendorError(f"unsupported integrity algorithm {algo!r}; expected sha512")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise VendorError(f"integrity mismatch: expected sha512-{expected}, got sha512-{actual}")


def _download(url: str, timeout_s: float = 60, attempts: int = 3) -> bytes:
    last: Exception | None = None
    if url.startswith("file:"):
        attempts = 1  # a local mirror either has the file or not
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                data: bytes = resp.read(MAX_TARBALL_BYTES + 1)
            if len(data) > MAX_TARBALL_BYTES:
                raise VendorError(f"{url}: larger than {MAX_TARBALL_BYTES} bytes")
            return data
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise VendorError(f"{url}: HTTP {exc.code}") from exc
            last = exc
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        if attempt + 1 < attempts:
            time.sleep(1 + attempt)
    raise VendorError(f"{url}: {last}")


def _wanted(pkg: NpmPackage, member: str) -> str | None:
    """The path under `vendor/<name>/` a tarball member goes to, or None to leave it out."""
    parts = PurePosixPath(member).parts
    if len(parts) < 2 or parts[0] != "package" or any(p in ("..", "") for p in parts):
        return None
    rel = "/".join(parts[1:])
    for f in pkg.files:
        if rel == f or (f.endswith("/") and rel.startswith(f)):
            return rel
    return None


def extract(pkg: NpmPackage, data: bytes, dest: Path) -> list[str]:
    """Write the wanted regular files of a verified tarball into `dest` (replaced whole)."""
    dest.parent.mkdir(parents=True, exist_ok=True)  # `<root>/@scope/` for a scoped package
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    written: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                rel = _wanted(pkg, member.name)
                if rel is None or not member.isfile():
                    continue
                src = tar.extractfile(member)
                if src is None:
                    continue
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(src.read())
                written.append(rel)
        for f in pkg.files:
            if not f.endswith("/") and f not in written:
                raise VendorError(f"{pkg.name}@{pkg.version}: {f} not in the tarball")
        (tmp / STAMP).write_text(json.dumps(pkg.stamp(), indent=1) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return sorted(written)


def is_vendored(pkg: NpmPackage, root: Path = VENDOR_DIR) -> bool:
    """True if `root/<name>` holds this exact pinned version with all its listed files."""
    dest = root / pkg.name
    try:
        stamp = json.loads((dest / STAMP).read_text())
    except (OSError, ValueError):
        return False
    if stamp != pkg.stamp():
        return False
    return all((dest / f).exists() for f in pkg.files)


def missing(root: Path = VENDOR_DIR, names: tuple[str, ...] | None = None) -> list[str]:
    """`name@version` of each package (of `names`, default all) not vendored under `root`."""
    wanted = [p for p in PACKAGES if names is None or p.name in names]
    return [f"{p.name}@{p.version}" for p in wanted if not is_vendored(p, root)]


def ensure_vendored(
    root: Path = VENDOR_DIR,
    registry: str | None = None,
    packages: tuple[NpmPackage, ...] = PACKAGES,
    log: bool = True,
) -> list[Path]:
    """Fetch, verify and extract every package not already vendored; returns their folders."""
    registry = registry or registry_url()
    root.mkdir(parents=True, exist_ok=True)
    done = []
    for pkg in packages:
        dest = root / pkg.name
        if not is_vendored(pkg, root):
            url = pkg.tarball_url(registry)
            if log:
                print(f"idrserve: vendoring {pkg.name}@{pkg.version} from {url}", file=sys.stderr)
            data = _download(url)
            check_integrity(data, pkg.integrity)
            extract(pkg, data, dest)
        done.append(dest)
    return done


def main(argv: list[str] | None = None) -> int:
    """`python -m idrserve.vendor [--check]`: vendor the assets into this source tree."""
    args = sys.argv[1:] if argv is None else argv
    if "--check" in args:
        gone = missing()
        for name in gone:
            print(f"missing: {name}")
        return 1 if gone else 0
    try:
        for path in ensure_vendored():
            print(path)
    except VendorError as exc:
        print(f"idrserve.vendor: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
