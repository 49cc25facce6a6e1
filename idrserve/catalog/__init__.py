"""Where each image lives: image id → local directory or URL of its OME-Zarr group.

`index.py` is the on-disk index (millions of images, memory-mapped), `build.py` builds it from
CSV/JSON catalogs and directory scans, `locate.py` is the server's `Catalog` (loading, swaps,
scanned and probed roots, the paged listing), `stores.py` the object stores and scans.
"""

from idrserve.catalog.index import CatalogFormatError, CatalogIndex, Location, open_index
from idrserve.catalog.locate import Catalog, CatalogPage, Locator
from idrserve.catalog.stores import is_url, open_object_store, redact, scan_root

__all__ = [
    "Catalog",
    "CatalogFormatError",
    "CatalogIndex",
    "CatalogPage",
    "Location",
    "Locator",
    "is_url",
    "open_index",
    "open_object_store",
    "redact",
    "scan_root",
]
