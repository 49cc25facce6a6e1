"""In-process LRU of encoded responses, bounded in bytes."""

from __future__ import annotations

from idrserve.cache.entry import CacheEntry
from idrserve.cache.metrics import TierStats
from idrserve.lru import BoundedLRU

# Bytes charged per entry beyond body, key and media type: the dict slot, the key and bytes
# object headers and the CacheEntry itself (about 200 B on CPython 3.11, 64-bit).
ENTRY_OVERHEAD = 200


def memory_cost(key: str, entry: CacheEntry) -> int:
    """What one entry counts against `memory_max_bytes`."""
    return len(entry.body) + len(key) + len(entry.media_type) + ENTRY_OVERHEAD


class MemoryTier:
    """O(1) get and put (a `BoundedLRU` by `memory_cost`); evicts least recently used first."""

    def __init__(self, max_bytes: int, max_item_bytes: int, stats: TierStats) -> None:
        self.max_item_bytes = max_item_bytes
        self.stats = stats
        self._items: BoundedLRU[str, CacheEntry] = BoundedLRU(max_bytes=max_bytes, cost=memory_cost)

    @property
    def max_bytes(self) -> int:
        return self._items.max_bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> CacheEntry | None:
        # `peek` + `touch` rather than `get`: two C calls, no Python frame (the memory-hit path).
        entry = self._items.peek(key)
        if entry is None:
            self.stats.misses += 1
            return None
        self._items.touch(key)
        self.stats.hits += 1
        return entry

    def put(self, key: str, entry: CacheEntry) -> bool:
        """Keep `entry` unless it is over the per-item limit; evicts to stay in budget."""
        if len(entry.body) > self.max_item_bytes or not self._items.put(key, entry):
            self.stats.skipped_writes += 1
            return False
        self.stats.writes += 1
        self._sync()
        return True

    def drop_image(self, image_id: int) -> int:
        """Forget every entry of one image (keys start with the image id); O(entries), rare."""
        prefix = f"{image_id}:"
        doomed = [k for k in self._items if k.startswith(prefix)]
        for key in doomed:
            self._items.pop(key)
        self._sync()
        return len(doomed)

    def clear(self) -> None:
        self._items.clear()
        self._sync()

    def _sync(self) -> None:
        self.stats.bytes = self._items.bytes
        self.stats.entries = len(self._items)
