"""`RoutingSource`: one `PixelSource` over Zarr, TIFF and OMERO; the catalog decides per image.

An image the catalog finds is read from what it finds: a TIFF-family file (by its name, or a
local regular file of any other name, which the TIFF source sniffs and refuses with a 415 when
it is a JPEG, a CZI, …) from the TIFF source, anything else (a `.zarr` directory or URL) from
Zarr; no OMERO load at all. Any other image is read from OMERO when OMERO is configured, else
it is unknown (404).

With `omero.ngff_direct` (default), an OMERO image that OMERO itself links to an OME-Zarr
(ExternalInfo of omero-zarr-pixel-buffer, docs/omero.md) is read from that Zarr directly,
after one metadata call to OMERO; its rendering defaults then come from the Zarr's `omero` block.

The decision is remembered per image for `source.rescan_interval_s`, the catalog's own trust
period, so an image converted to OME-Zarr later moves to Zarr after the next rescan. The
synchronous capabilities (`sync_reader`, `fresh_data_version`) answer from that memory only and
say None ("take the normal path") for an image not routed yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from idrserve.catalog import Location, Locator, is_url
from idrserve.lru import BoundedLRU
from idrserve.model import ImageMeta, Selection
from idrserve.settings import Settings
from idrserve.sources.base import PixelSource
from idrserve.sources.tiff import TiffSource, is_tiff_name
from idrserve.sources.zarr import ZarrSource

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

_MAX_ROUTES = 100_000


class NgffCatalog:
    """Locations OMERO recorded for NGFF-backed images (ExternalInfo), learnt while routing.

    Bounded like the routes: an image forgotten here is asked of OMERO again.
    """

    def __init__(self) -> None:
        self.known: BoundedLRU[int, Location] = BoundedLRU(_MAX_ROUTES)

    def learn(self, image_id: int, location: Location) -> None:
        self.known.put(image_id, location)

    async def locate(self, image_id: int) -> Location | None:
        return self.known.peek(image_id)


class RoutingSource:
    """Routes each image to the Zarr source or the OMERO source (see the module docstring)."""

    name: ClassVar[str] = "routing"

    def __init__(
        self,
        catalog: Locator,
        zarr: PixelSource,
        omero: PixelSource | None,
        *,
        trust_s: float = 60.0,
        ngff: tuple[PixelSource, NgffCatalog] | None = None,
        tiff: PixelSource | None = None,
    ) -> None:
        self._catalog = catalog
        self.zarr = zarr
        self.omero = omero
        self.tiff = tiff
        # Each decision is trusted for `trust_s` after it was made, then made again.
        self._routes: BoundedLRU[int, PixelSource] = BoundedLRU(_MAX_ROUTES, ttl_s=trust_s)
        # Optional: a Zarr source over the OME-Zarr that OMERO links NGFF-backed images to.
        self._ngff = ngff

    def collectors(self) -> list[Collector]:
        """The OMERO side's metrics (the Zarr side has none of its own)."""
        get = getattr(self.omero, "collectors", None)
        return list(get()) if get is not None else []

    async def health(self) -> dict[str, Any]:
        """The OMERO side's health for /readyz (the Zarr side is reported as data roots)."""
        check = getattr(self.omero, "health", None)
        if check is None:
            return {"status": "unconfigured"}
        result: dict[str, Any] = await check()
        return result

    async def source_for(self, image_id: int) -> PixelSource:
        """TIFF or Zarr when the catalog locates the image, else OMERO (if configured), else
        Zarr (which answers 404)."""
        if self.omero is None and self.tiff is None:
            return self.zarr
        route = self._routes.peek(image_id)
        if route is not None:
            return route
        location = await self._catalog.locate(image_id)
        chosen: PixelSource = self.zarr
        if location is not None:
            if self.tiff is not None and await _is_file_image(location):
                chosen = self.tiff
        elif self.omero is not None:
            chosen = self.omero
            if self._ngff is not None:
                chosen = await self._ngff_or_omero(image_id, self.omero)
        self._routes.put(image_id, chosen)
        return chosen

    async def _ngff_or_omero(self, image_id: int, omero: PixelSource) -> PixelSource:
        """The NGFF source when OMERO links the image to an OME-Zarr (one metadata call)."""
        assert self._ngff is not None
        find = getattr(omero, "ngff_location", None)
        found: str | None = await find(image_id) if find is not None else None
        if not found:
            return omero
        source, catalog = self._ngff
        catalog.learn(image_id, _location(found))
        return source

    async def meta(self, image_id: int) -> ImageMeta:
        return await (await self.source_for(image_id)).meta(image_id)

    async def read(self, image_id: int, sel: Selection) -> np.ndarray:
        return await (await self.source_for(image_id)).read(image_id, sel)

    def _known(self, image_id: int) -> PixelSource | None:
        if self.omero is None and self.tiff is None:
            return self.zarr
        return self._routes.peek(image_id)

    def sync_reader(self, image_id: int, sel: Selection) -> Callable[[], np.ndarray] | None:
        source = self._known(image_id)
        return None if source is None else source.sync_reader(image_id, sel)

    def fresh_data_version(self, image_id: int) -> str | None:
        source = self._known(image_id)
        return None if source is None else source.fresh_data_version(image_id)

    def fresh_meta(self, image_id: int) -> ImageMeta | None:
        source = self._known(image_id)
        return None if source is None else source.fresh_meta(image_id)

    async def aclose(self) -> None:
        try:
            await self.zarr.aclose()
            if self.tiff is not None:
                await self.tiff.aclose()
            if self._ngff is not None:
                await self._ngff[0].aclose()
        finally:
            if self.omero is not None:
                await self.omero.aclose()


def _location(found: str) -> Location:
    if is_url(found):
        return found
    return Path(found[len("file://") :] if found.startswith("file://") else found)


async def _is_file_image(location: Location) -> bool:
    """True for a TIFF-family name, or a local regular file (not a `.zarr` directory)."""
    if is_tiff_name(location):
        return True
    if not isinstance(location, Path) or location.name.lower().endswith(".zarr"):
        return False
    return await asyncio.to_thread(location.is_file)


def build_source(settings: Settings, catalog: Locator) -> PixelSource:
    """The server's source: Zarr and TIFF files behind a router, and OMERO when configured."""
    zarr = ZarrSource(settings.source, catalog)
    tiff = TiffSource(settings.source, catalog)
    trust_s = settings.source.rescan_interval_s
    if not settings.omero.enabled:
        return RoutingSource(catalog, zarr, None, trust_s=trust_s, tiff=tiff)
    from idrserve.sources.omero import OmeroSource

    omero = OmeroSource(settings.omero)
    ngff = None
    if settings.omero.ngff_direct:
        ngff_catalog = NgffCatalog()
        ngff = (ZarrSource(settings.source, ngff_catalog), ngff_catalog)
    return RoutingSource(catalog, zarr, omero, trust_s=trust_s, ngff=ngff, tiff=tiff)
