"""Response cache: in-process memory, local disk and shared Redis tiers (see `tiered`)."""

from idrserve.cache.entry import CacheEntry, response_key
from idrserve.cache.tiered import CachePurgeError, TieredCache

__all__ = ["CacheEntry", "CachePurgeError", "TieredCache", "response_key"]
