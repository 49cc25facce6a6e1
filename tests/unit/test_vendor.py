"""idrserve.vendor: pinned npm tarballs, verified before extraction, from any registry mirror.

The mirror here is a real directory laid out like the registry and read through `file://`
URLs, the form documented for offline operators; the tarballs are built with tarfile.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from idrserve import vendor


def make_tgz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def mirror(tmp_path: Path, name: str, version: str, data: bytes) -> str:
    """A registry-shaped directory holding one tarball; returns its file:// base URL."""
    folder = tmp_path / "mirror" / name / "-"
    folder.mkdir(parents=True)
    (folder / f"{name}-{version}.tgz").write_bytes(data)
    return (tmp_path / "mirror").as_uri()


FILES = {
    "package/package.json": b'{"name": "fake"}',
    "package/dist/fake.min.js": b"window.Fake = 1;",
    "package/dist/img/a.png": b"\x89PNG a",
    "package/dist/img/b.png": b"\x89PNG b",
    "package/src/ignored.js": b"not wanted",
    "package/../escape.js": b"outside",
}


def fake_package(data: bytes) -> vendor.NpmPackage:
    return vendor.NpmPackage("fake", "1.2.3", sri(data), ("dist/fake.min.js", "dist/img/"))


def test_pins_are_sha512_and_cover_both_packages() -> None:
    names = {p.name: p for p in vendor.PACKAGES}
    assert set(names) >= {"openseadragon", "swagger-ui-dist"}
    for pkg in vendor.PACKAGES:
        assert pkg.integrity.startswith("sha512-")
        assert len(base64.b64decode(pkg.integrity.removeprefix("sha512-"))) == 64
    assert names["openseadragon"].version.split(".")[0] in {"4", "5"}
    url = names["openseadragon"].tarball_url("https://registry.example/")
    assert (
        url
        == f"https://registry.example/openseadragon/-/openseadragon-{names['openseadragon'].version}.tgz"
    )


def test_vendors_from_a_file_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_tgz(FILES)
    pkg = fake_package(data)
    monkeypatch.setenv(vendor.REGISTRY_ENV, mirror(tmp_path, "fake", "1.2.3", data))
    root = tmp_path / "vendor"
    assert not vendor.is_vendored(pkg, root)
    [dest] = vendor.ensure_vendored(root, packages=(pkg,), log=False)
    got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert got == [vendor.STAMP, "dist/fake.min.js", "dist/img/a.png", "dist/img/b.png"]
    assert (dest / "dist/fake.min.js").read_bytes() == b"window.Fake = 1;"
    assert not (tmp_path / "escape.js").exists()
    assert json.loads((dest / vendor.STAMP).read_text())["integrity"] == pkg.integrity
    assert vendor.is_vendored(pkg, root)
    # A second run finds it done and does not touch the registry (now gone).
    monkeypatch.setenv(vendor.REGISTRY_ENV, (tmp_path / "nowhere").as_uri())
    (dest / "dist/fake.min.js").write_bytes(b"kept")
    vendor.ensure_vendored(root, packages=(pkg,), log=False)
    assert (dest / "dist/fake.min.js").read_bytes() == b"kept"


def test_scoped_packages(tmp_path: Path) -> None:
    """`@scope/name`: the registry's tarball path, and a folder per scope (test-time packages
    such as @zarrita/storage, tests/integration/test_browser_zarr.py)."""
    data = make_tgz(FILES)
    pkg = vendor.NpmPackage("@scope/fake", "1.2.3", sri(data), ("dist/fake.min.js",))
    assert pkg.tarball_url("https://r.example") == "https://r.example/@scope/fake/-/fake-1.2.3.tgz"
    folder = tmp_path / "mirror" / "@scope" / "fake" / "-"
    folder.mkdir(parents=True)
    (folder / "fake-1.2.3.tgz").write_bytes(data)
    registry = (tmp_path / "mirror").as_uri()
    root = tmp_path / "vendor"
    [dest] = vendor.ensure_vendored(root, registry=registry, packages=(pkg,), log=False)
    assert dest == root / "@scope" / "fake"
    assert (dest / "dist/fake.min.js").read_bytes() == b"window.Fake = 1;"
    assert vendor.is_vendored(pkg, root)


def test_tampered_tarball_is_refused_and_nothing_written(tmp_path: Path) -> None:
    data = make_tgz(FILES)
    pkg = fake_package(data)
    evil = make_tgz(FILES | {"package/dist/fake.min.js": b"steal()"})
    registry = mirror(tmp_path, "fake", "1.2.3", evil)
    root = tmp_path / "vendor"
    with pytest.raises(vendor.VendorError, match="integrity mismatch"):
        vendor.ensure_vendored(root, registry=registry, packages=(pkg,), log=False)
    assert not (root / "fake").exists()


def test_a_listed_file_missing_from_the_tarball_fails(tmp_path: Path) -> None:
    data = make_tgz({"package/dist/img/a.png": b"a"})
    pkg = fake_package(data)
    registry = mirror(tmp_path, "fake", "1.2.3", data)
    with pytest.raises(vendor.VendorError, match=r"dist/fake\.min\.js not in the tarball"):
        vendor.ensure_vendored(tmp_path / "v", registry=registry, packages=(pkg,), log=False)
    assert not (tmp_path / "v" / "fake").exists()


def test_unreachable_registry_is_a_clear_error(tmp_path: Path) -> None:
    pkg = fake_package(b"x")
    with pytest.raises(vendor.VendorError, match=r"fake-1\.2\.3\.tgz"):
        vendor.ensure_vendored(
            tmp_path / "v", registry=(tmp_path / "none").as_uri(), packages=(pkg,), log=False
        )


def test_check_integrity_rejects_other_algorithms() -> None:
    with pytest.raises(vendor.VendorError, match="sha512"):
        vendor.check_integrity(
            b"x", "sha1-" + base64.b64encode(hashlib.sha1(b"x").digest()).decode()
        )
    vendor.check_integrity(b"x", sri(b"x"))
