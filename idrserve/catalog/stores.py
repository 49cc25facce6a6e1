"""Object stores for remote images, and finding `<id>.zarr` (or `<id>.ome.tif`, `.svs`, …)
below a root.

Remote stores answer within short timeouts and few retries (a viewer would rather get a fast
503 than wait minutes). Scans walk a local tree for `<id>.zarr` / `<id>.ome.zarr` at any
depth up to `scan_max_depth` (IDR's layout `v0.4/idr0062A/6001240.zarr`), never descending
into a `.zarr`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from obstore.exceptions import PermissionDeniedError
from obstore.store import HTTPStore, S3Store

from idrserve.catalog.index import Location
from idrserve.settings import SourceSettings

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

log = logging.getLogger(__name__)

ObjectStoreLike = HTTPStore | S3Store

_ZARR_DIR = re.compile(r"^(\d{1,18})(?:\.ome)?\.zarr$")
# TIFF-family files a scan serves directly (sources/tiff.py).
_TIFF_FILE = re.compile(
    r"^(\d{1,18})\.(?:ome\.tiff?|ome\.btf|tiff?|btf|svs|ndpi|scn|bif|qptiff)$", re.I
)


# Remote stores answer within these or count as unavailable (errors.SourceUnavailable).
def _client_options() -> ClientConfig:
    return {"timeout": "30s", "connect_timeout": "5s", "allow_http": True}


def _retry_config() -> RetryConfig:
    # obstore's default retries for up to 3 minutes; a viewer would rather get a fast 503.
    return {"max_retries": 2, "retry_timeout": timedelta(seconds=10)}


def is_url(location: str) -> bool:
    return urlsplit(location).scheme in ("http", "https", "s3")


def open_object_store(url: str, settings: SourceSettings) -> ObjectStoreLike:
    """An obstore store rooted at `url` (http(s):// or s3://bucket/prefix)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return HTTPStore.from_url(
            url.rstrip("/"), client_options=_client_options(), retry_config=_retry_config()
        )
    if parts.scheme == "s3" and parts.netloc:
        options: dict[str, Any] = {"region": settings.s3_region}
        if settings.s3_endpoint:
            options["endpoint"] = settings.s3_endpoint
            options["virtual_hosted_style_request"] = False
        if settings.s3_anonymous:
            options["skip_signature"] = True
        return S3Store(
            parts.netloc,
            prefix=parts.path.strip("/") or None,
            client_options=_client_options(),
            retry_config=_retry_config(),
            **options,
        )
    raise ValueError(f"not an http(s):// or s3://bucket URL: {url!r}")


async def exists_any(store: ObjectStoreLike, keys: Iterable[str]) -> bool:
    """True if any key exists; a store error counts as not found (and is logged)."""
    for key in keys:
        try:
            await store.head_async(key)
            return True
        except (FileNotFoundError, PermissionDeniedError):
            continue  # S3 answers 403 for a missing key when listing is not allowed
        except Exception as exc:  # obstore raises its own family for network errors
            log.warning("probing %s failed: %r", key, exc)
            return False
    return False


def parse_root(root: str | None) -> Location | None:
    if not root:
        return None
    if root.startswith("file://"):
        return Path(urlsplit(root).path)
    if is_url(root):
        return root
    return Path(root)


def scan_iter(root: Path, max_depth: int) -> Iterator[tuple[int, Path]]:
    """`(id, path)` of every `<id>.zarr` directory below `root`, in name order, streaming."""

    def walk(directory: Path, depth: int) -> Iterator[tuple[int, Path]]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot scan %s: %s", directory, exc.strerror)
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                tiff = _TIFF_FILE.match(entry.name)
                if tiff and entry.is_file():
                    yield int(tiff.group(1)), Path(entry.path)
                continue
            match = _ZARR_DIR.match(entry.name)
            if match:
                yield int(match.group(1)), Path(entry.path)
            elif not entry.name.endswith(".zarr") and depth < max_depth:
                yield from walk(Path(entry.path), depth + 1)

    yield from walk(root, 1)


def scan_root(root: Path, max_depth: int) -> dict[int, Path]:
    """Every `<id>.zarr` below `root`; the first found (in name order) wins for an id."""
    found: dict[int, Path] = {}
    for image_id, path in scan_iter(root, max_depth):
        if image_id in found:
            log.warning("duplicate image %d: %s ignored", image_id, path)
        else:
            found[image_id] = path
    return found


def redact(location: str) -> str:
    """A location safe to log or show: a URL's user name and password removed."""
    scheme, sep, rest = location.partition("://")
    if not sep:
        return location
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"
