"""`BoundedLRU`: the one least-recently-used map of the process, bounded in entries and bytes.

Every in-process cache (encoded responses, open files, image records, routes, probes, views,
purge generations, the URL index) is one of these, so bounds, accounting and eviction are
written and tested once (`tests/unit/test_lru.py`). It is an `OrderedDict` in recency order
(oldest first): `get`, `peek`, `put` and `pop` are O(1), and the C implementation keeps a hit
to a dict lookup and a `move_to_end` (docs/benchmarks.md#cache-hits).

Synchronous and not thread-safe: event-loop code only. The OMERO reader worker keeps its own
(it is threaded, runs on Python 3.10 and imports nothing from idrserve).
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable, ItemsView, Iterator, KeysView, ValuesView
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_UNBOUNDED = sys.maxsize


class BoundedLRU(Generic[K, V]):
    """Keys to values, evicting the least recently used past `max_entries` or `max_bytes`.

    - `cost(key, value)` is what an entry counts against `max_bytes` (0 without it); it is
      computed again at eviction, so it must depend on the key and value only.
    - `ttl_s`: an entry older than this (by `clock`, from its last `put`) reads as absent and
      is dropped when next looked up; the bounds keep counting it until then.
    - `on_evict(key, value)` is called once for each entry the map drops by itself (a bound,
      expiry, `clear`); never for one handed back by `pop` or replaced by `put`.
    - `keep_newest`: the entry just put always stays, even alone over a bound (a cache whose
      misses are expensive); otherwise `put` refuses an entry that cannot fit at all.

    `None` is not a value: lookups return None for "absent".

    `peek(key)` is the value without refreshing its recency (None when absent or expired) and
    `touch(key)` makes a present key the most recently used. Both are bound at construction
    to the dict's own C methods where the options allow, so a cache on the memory-hit path
    pays no Python call for them: `peek` then `touch` is `get` at a dict look-up's cost
    (bench/bench_hitpath.py).
    """

    __slots__ = (
        "_clock",
        "_cost",
        "_data",
        "_deadlines",
        "_keep_newest",
        "_on_evict",
        "_ttl_s",
        "bytes",
        "evicted",
        "max_bytes",
        "max_entries",
        "peek",
        "touch",
    )

    peek: Callable[[K], V | None]
    touch: Callable[[K], None]

    def __init__(
        self,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        *,
        cost: Callable[[K, V], int] | None = None,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[K, V], None] | None = None,
        keep_newest: bool = False,
    ) -> None:
        if max_bytes is not None and cost is None:
            raise ValueError("a byte bound needs a cost function")
        self.max_entries = _UNBOUNDED if max_entries is None else max_entries
        self.max_bytes = _UNBOUNDED if max_bytes is None else max_bytes
        self.bytes = 0  # the sum of the entries' costs
        self.evicted = 0  # entries dropped by a bound or expiry
        self._data: OrderedDict[K, V] = OrderedDict()
        self._cost = cost
        self._ttl_s = ttl_s
        self._clock = clock
        self._deadlines: dict[K, float] | None = None if ttl_s is None else {}
        self._on_evict = on_evict
        self._keep_newest = keep_newest
        self.peek = self._data.get if ttl_s is None else self._peek_expiring
        self.touch = self._data.move_to_end

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: K) -> bool:
        if self._deadlines is None:
            return key in self._data
        return self.peek(key) is not None

    def __getitem__(self, key: K) -> V:
        """The value without refreshing its recency; KeyError when absent or expired."""
        value = self.peek(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: K) -> V | None:
        """The value, now the most recently used; None when absent or expired."""
        value = self._data.get(key)
        if value is not None:
            if self._deadlines is not None and self._deadlines[key] <= self._clock():
                self._expire(key)
                return None
            self._data.move_to_end(key)
        return value

    def get_or_make(self, key: K, make: Callable[..., V], *args: object) -> V:
        """`get(key)`, or `make(*args)` put under `key` when absent: a memo of parses and
        derived settings. Nothing is put when `make` raises (a refused request is refused
        again next time, never remembered)."""
        value = self.get(key)
        if value is None:
            value = make(*args)
            self.put(key, value)
        return value

    def _peek_expiring(self, key: K) -> V | None:
        value = self._data.get(key)
        deadlines = self._deadlines
        if value is not None and deadlines is not None and deadlines[key] <= self._clock():
            self._expire(key)
            return None
        return value

    def put(self, key: K, value: V) -> bool:
        """Store `value` as the most recently used and evict to the bounds; False (nothing
        changed) when it could never fit and `keep_newest` is off."""
        cost = 0 if self._cost is None else self._cost(key, value)
        if not self._keep_newest and (cost > self.max_bytes or self.max_entries <= 0):
            return False
        data = self._data
        old = data.pop(key, None)
        if old is not None and self._cost is not None:
            self.bytes -= self._cost(key, old)
        data[key] = value
        self.bytes += cost
        if self._deadlines is not None:
            assert self._ttl_s is not None
            self._deadlines[key] = self._clock() + self._ttl_s
        while len(data) > self.max_entries or self.bytes > self.max_bytes:
            if len(data) == 1 and self._keep_newest:
                break
            self.evicted += 1
            self._drop(*data.popitem(last=False))
        return True

    def pop(self, key: K) -> V | None:
        """Remove and return the value (expired or not), or None; `on_evict` is not called."""
        value = self._data.pop(key, None)
        if value is not None:
            if self._cost is not None:
                self.bytes -= self._cost(key, value)
            if self._deadlines is not None:
                del self._deadlines[key]
        return value

    def clear(self) -> None:
        """Drop every entry, oldest first, through `on_evict`."""
        data = self._data
        while data:
            self._drop(*data.popitem(last=False))
        self.bytes = 0

    def keys(self) -> KeysView[K]:
        """The keys, least recently used first (expired ones included)."""
        return self._data.keys()

    def values(self) -> ValuesView[V]:
        return self._data.values()

    def items(self) -> ItemsView[K, V]:
        return self._data.items()

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def _expire(self, key: K) -> None:
        self.evicted += 1
        self._drop(key, self._data.pop(key))

    def _drop(self, key: K, value: V) -> None:
        if self._cost is not None:
            self.bytes -= self._cost(key, value)
        if self._deadlines is not None:
            del self._deadlines[key]
        if self._on_evict is not None:
            self._on_evict(key, value)
