"""Pixel sources. The catalog locates images; `SOURCES` names the backends by `name`."""

from __future__ import annotations

from idrserve.catalog import Catalog
from idrserve.settings import SourceSettings
from idrserve.sources.zarr import ZarrSource

SOURCES: dict[str, type[ZarrSource]] = {"zarr": ZarrSource}


def open_source(settings: SourceSettings) -> ZarrSource:
    """A Zarr source over a catalog built from the same settings (closed with it)."""
    return ZarrSource(settings, Catalog(settings), owns_catalog=True)
