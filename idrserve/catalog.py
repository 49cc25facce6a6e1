"""Where each image lives: image id (int) → local directory or URL of its OME-Zarr group.

Two inputs, both from `SourceSettings`:

- `catalog`: a `.csv` (header `id,path` or `image_id,uri`) or `.json` file (`{"123": "path"}` or
  a list of `{"id": 123, "path": "..."}` objects); relative paths resolve against the file's
  directory, URLs (`https://`, `s3://`) are kept as they are. Entries are trusted operator input.
- `zarr_root`: a local directory scanned (in a thread, lazily, at most every
  `rescan_interval_s` when an unknown id is asked for) for `<id>.zarr` / `<id>.ome.zarr` at any
  depth up to `scan_max_depth` (IDR layout `v0.4/idr0062A/6001240.zarr`); or an `http(s)://` /
  `s3://` root under which `<root>/<id>.zarr` is probed (one HEAD of its metadata) on first use.

Catalog file entries win over the root. Ids are ints, so a request can never name a path.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from obstore.exceptions import PermissionDeniedError
from obstore.store import HTTPStore, S3Store

from idrserve.settings import SourceSettings

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

log = logging.getLogger(__name__)

Location = Path | str  # a local directory, or an http(s):// or s3:// URL
ObjectStoreLike = HTTPStore | S3Store

_ZARR_DIR = re.compile(r"^(\d{1,18})(?:\.ome)?\.zarr$")
_ID_KEYS = ("id", "image_id", "imageid")
_PATH_KEYS = ("path", "uri", "url", "location")


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


class Catalog:
    """Maps image ids to locations; `locate` is cheap after the first call."""

    def __init__(self, settings: SourceSettings) -> None:
        self._settings = settings
        self._file_entries: dict[int, Location] | None = None
        self._root: Location | None = _parse_root(settings.zarr_root)
        self._scan: dict[int, Path] = {}
        self._scanned_at: float | None = None
        self._probed: dict[int, tuple[bool, float]] = {}
        self._lock = asyncio.Lock()
        self._remote: ObjectStoreLike | None = None

    async def locate(self, image_id: int) -> Location | None:
        """The location of `image_id`, or None if it is not known (after a rescan if due)."""
        entries = await self._entries()
        if image_id in entries:
            return entries[image_id]
        if isinstance(self._root, Path):
            return await self._locate_local(image_id)
        if isinstance(self._root, str):
            return await self._locate_remote(self._root, image_id)
        return None

    async def ids(self) -> list[int]:
        """Every id known without probing: catalog entries, scanned and probed images."""
        known = set(await self._entries())
        if isinstance(self._root, Path):
            if self._scanned_at is None:
                await self._rescan()
            known.update(self._scan)
        known.update(i for i, (found, _) in self._probed.items() if found)
        return sorted(known)

    async def _entries(self) -> dict[int, Location]:
        if self._file_entries is None:
            path = self._settings.catalog
            entries: dict[int, Location] = {}
            if path is not None:
                try:
                    entries = await asyncio.to_thread(read_catalog, path)
                except (OSError, ValueError) as exc:
                    # Logged once; images under zarr_root are still served.
                    log.error("catalog %s unusable, ignored: %r", path, exc)
            self._file_entries = entries
        return self._file_entries

    async def _locate_local(self, image_id: int) -> Location | None:
        if image_id in self._scan:
            return self._scan[image_id]
        due = self._scanned_at is None or (
            time.monotonic() - self._scanned_at >= self._settings.rescan_interval_s
        )
        if due:
            await self._rescan()
        return self._scan.get(image_id)

    async def _rescan(self) -> None:
        started = time.monotonic()
        async with self._lock:
            if self._scanned_at is not None and self._scanned_at >= started:
                return  # another task scanned while we waited
            assert isinstance(self._root, Path)
            found = await asyncio.to_thread(scan_root, self._root, self._settings.scan_max_depth)
            self._scan = found
            self._scanned_at = time.monotonic()
            log.info("scanned %s: %d images", self._root, len(found))

    async def _locate_remote(self, root: str, image_id: int) -> Location | None:
        url = f"{root.rstrip('/')}/{image_id}.zarr"
        seen = self._probed.get(image_id)
        now = time.monotonic()
        if seen is not None and (seen[0] or now - seen[1] < self._settings.rescan_interval_s):
            return url if seen[0] else None
        if self._remote is None:
            self._remote = open_object_store(root, self._settings)
        found = await _exists_any(
            self._remote, (f"{image_id}.zarr/zarr.json", f"{image_id}.zarr/.zattrs")
        )
        self._probed[image_id] = (found, now)
        return url if found else None


async def _exists_any(store: ObjectStoreLike, keys: Iterable[str]) -> bool:
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


def _parse_root(root: str | None) -> Location | None:
    if not root:
        return None
    if root.startswith("file://"):
        return Path(urlsplit(root).path)
    if is_url(root):
        return root
    return Path(root)


def scan_root(root: Path, max_depth: int) -> dict[int, Path]:
    """Find `<id>.zarr` directories below `root` (not descending into any `.zarr`)."""
    found: dict[int, Path] = {}

    def walk(directory: Path, depth: int) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            log.warning("cannot scan %s: %r", directory, exc)
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            match = _ZARR_DIR.match(entry.name)
            if match:
                image_id = int(match.group(1))
                if image_id in found:
                    log.warning("duplicate image %d: %s ignored", image_id, entry.path)
                else:
                    found[image_id] = Path(entry.path)
            elif not entry.name.endswith(".zarr") and depth < max_depth:
                walk(Path(entry.path), depth + 1)

    walk(root, 1)
    return found


def read_catalog(path: Path) -> dict[int, Location]:
    """Parse a CSV or JSON catalog file; malformed rows are skipped with a warning."""
    text = path.read_text(encoding="utf-8")
    rows: Iterable[tuple[Any, Any]]
    if path.suffix.lower() == ".json":
        doc = json.loads(text)
        if isinstance(doc, Mapping):
            rows = doc.items()
        elif isinstance(doc, list):
            rows = (_pick(row) for row in doc)
        else:
            raise ValueError(f"{path}: expected an object or a list")
    else:
        rows = (_pick(row) for row in csv.DictReader(text.splitlines()))
    out: dict[int, Location] = {}
    for raw_id, raw_path in rows:
        try:
            image_id = int(str(raw_id).strip())
        except ValueError:
            log.warning("%s: skipping entry with id %r", path, raw_id)
            continue
        if not isinstance(raw_path, str) or not raw_path.strip():
            log.warning("%s: skipping id %d without a path", path, image_id)
            continue
        location = raw_path.strip()
        if is_url(location):
            out[image_id] = location
        else:
            local = _parse_root(location)
            assert isinstance(local, Path)
            out[image_id] = local if local.is_absolute() else (path.parent / local).resolve()
    return out


def _pick(row: Any) -> tuple[Any, Any]:
    if not isinstance(row, Mapping):
        return None, None
    lower = {str(k).strip().lower(): v for k, v in row.items()}
    image_id = next((lower[k] for k in _ID_KEYS if k in lower), None)
    location = next((lower[k] for k in _PATH_KEYS if k in lower), None)
    return image_id, location
