"""What `idrserve serve` says at start: what it can see, what is wrong, URLs to try.

A corrupt catalog index stops the start (exit 2) with the reason; a missing or empty data
root is a warning (the server still starts, and /readyz reports it). Nothing here scans a
tree or reads a large catalog: a start must stay fast at IDR's scale.
"""

from __future__ import annotations

import os
from pathlib import Path

from idrserve.catalog.index import CatalogFormatError, is_index_file, open_index
from idrserve.catalog.locate import INLINE_BUILD_BYTES
from idrserve.catalog.stores import parse_root, redact
from idrserve.settings import Settings


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _empty(directory: Path) -> bool:
    with os.scandir(directory) as entries:
        return next(entries, None) is None


def describe_sources(settings: Settings) -> tuple[list[str], int]:
    """Lines to print (`{base}` stands for the server's URL) and an exit status (0: go on)."""
    lines: list[str] = []
    example: int | None = None
    source = settings.source
    if source.catalog is not None:
        path = source.catalog
        if not path.is_file() or not os.access(path, os.R_OK):
            return [f"idrserve serve: the catalog {path} is missing or unreadable"], 2
        if is_index_file(path):
            try:
                index = open_index(path)
            except CatalogFormatError as exc:
                return [f"idrserve serve: catalog index {path}: {exc}"], 2
            report = index.meta.get("report", {})
            lines.append(
                f"catalog: {path}: {len(index):,} images, {report.get('ranges', 0)} id ranges, "
                f"{len(index.studies)} study prefixes"
            )
            if report.get("skipped"):
                lines.append(
                    f"warning: {report['skipped']:,} catalog rows were skipped when it was built "
                    "(`idrserve catalog index` printed why)"
                )
            if len(index):
                example = int(index.ids[0])
            index.close()
        else:
            size = path.stat().st_size
            how = "in the server" if size <= INLINE_BUILD_BYTES else "by a child process"
            lines.append(
                f"catalog: {path} ({_size(size)}): loading… (indexed {how}; /readyz shows "
                "progress, images answer 503 until it is ready; skipped rows are logged)"
            )
    root = parse_root(source.zarr_root)
    if isinstance(root, Path):
        if not root.is_dir():
            lines.append(
                f"warning: the zarr root {root} is not a directory: nothing is served from it"
            )
        elif not any(True for _ in zip(range(1), os.scandir(root), strict=False)):
            lines.append(f"warning: the zarr root {root} is empty")
        else:
            lines.append(f"zarr root: {root} (scanned for <id>.zarr on first use)")
    elif isinstance(root, str):
        lines.append(f"zarr root: {redact(root)} (<id>.zarr probed on first use)")
    if settings.omero.enabled:
        lines.append(f"OMERO: {settings.omero.host}:{settings.omero.port} for images not in Zarr")
    lines.append("try:")
    lines.append("  {base}/  (the images, 100 a page: ?offset=&limit=)")
    if example is not None:
        lines.append(f"  {{base}}/webgateway/imgData/{example}/")
        lines.append(f"  {{base}}/webgateway/render_thumbnail/{example}/")
        lines.append(f"  {{base}}/iiif/3/{example}/info.json")
        lines.append(f"  {{base}}/viewer/{example}")
    else:
        lines.append("  {base}/webgateway/imgData/<image id>/")
        lines.append("  {base}/viewer/<image id>")
    lines.append("  {base}/readyz  (what the server can reach)")
    return lines, 0
