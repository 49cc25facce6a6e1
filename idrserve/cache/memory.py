"""In-process LRU of encoded responses, bounded in bytes."""

from __future__ import annotations

from collections import OrderedDict

from idrserve.cache.entry import CacheEntry
from idrserve.cache.metrics import TierStats

# Bytes charged per entry beyond body, key and media type: the dict slot, the key and bytes
# object headers and the CacheEntry itself (about 200 B on CPython 3.11, 64-bit).
ENTRY_OVERHEAD = 200


def memory_cost(key: str, entry: CacheEntry) -> int:
    """What one entry counts against `memory_max_bytes`."""
    return len(entry.body) + len(key) + len(entry.media_type) + ENTRY_OVERHEAD


class MemoryTier:
    """O(1) get and put (an OrderedDict in recency order); evicts least recently used first."""

    def __init__(self, max_bytes: int, max_item_bytes: int, stats: TierStats) -> None:
        self.max_bytes = max_bytes
        self.max_item_bytes = max_item_bytes
        self.stats = stats
        self._items: OrderedDict[str, CacheEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> CacheEntry | None:
        entry = self._items.get(key)
        if entry is None:
            self.stats.misses += 1
            return None
        self._items.move_to_end(key)
        self.stats.hits += 1
        return entry

    def put(self, key: str, entry: CacheEntry) -> bool:
        """Keep `entry` unless it is over the per-item limit; evicts to stay in budget."""
        cost = memory_cost(key, entry)
        if len(entry.body) > self.max_item_bytes or cost > self.max_bytes:
            self.stats.skipped_writes += 1
            return False
        old = self._items.pop(key, None)
        if old is not None:
            self._forget(key, old)
        self._items[key] = entry
        self.stats.bytes += cost
        self.stats.entries += 1
        self.stats.writes += 1
        while self.stats.bytes > self.max_bytes:
            self._forget(*self._items.popitem(last=False))
        return True

    def drop_image(self, image_id: int) -> int:
        """Forget every entry of one image (keys start with the image id); O(entries), rare."""
        prefix = f"{image_id}:"
        doomed = [k for k in self._items if k.startswith(prefix)]
        for key in doomed:
            self._forget(key, self._items.pop(key))
        return len(doomed)

    def clear(self) -> None:
        self._items.clear()
        self.stats.bytes = 0
        self.stats.entries = 0

    def _forget(self, key: str, entry: CacheEntry) -> None:
        self.stats.bytes -= memory_cost(key, entry)
        self.stats.entries -= 1
