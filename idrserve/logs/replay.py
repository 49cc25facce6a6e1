"""Bounded-memory structures of the report: distinct counts, top-N counts, an LRU cache replay.

A day of IDR's logs holds millions of distinct URLs, so nothing here keeps one entry per URL
without a cap:

* `Distinct` counts exactly up to a few thousand keys, then switches to a HyperLogLog sketch
  (about 1.6 % error with 4096 registers).
* `TopCounter` keeps counts per key up to a cap; past it, the less requested half is dropped
  (lossy counting, after Manku and Motwani). A key that comes back starts again with the
  largest count dropped so far as its possible shortfall, so every kept count is exact or
  low by at most `error_bound`.
* `CacheReplay` replays the cacheable request stream through LRU caches of several byte
  capacities. Keys are sampled by hash (spatial sampling, as in Waldspurger et al.'s SHARDS):
  a key is simulated when its hash is below a threshold and the capacities shrink by the same
  rate, which keeps hit ratios unbiased while the memory stays under `max_keys`. The
  threshold halves whenever the sample outgrows that bound. The same sample gives the bytes
  needed to hold the most requested keys.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

HASH_SPACE = 1 << 32


def key_hash(key: str) -> int:
    """A stable 32-bit hash: the same sample, hence the same report, on every run."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


class Distinct:
    """How many distinct keys were seen: exact while small, a HyperLogLog after."""

    EXACT_LIMIT = 4096
    P = 12  # 4096 registers

    __slots__ = ("_exact", "_registers")

    def __init__(self) -> None:
        self._exact: set[int] | None = set()
        self._registers: bytearray | None = None

    def add(self, h: int) -> None:
        if self._exact is not None:
            self._exact.add(h)
            if len(self._exact) > self.EXACT_LIMIT:
                exact, self._exact = self._exact, None
                self._registers = bytearray(1 << self.P)
                for old in exact:
                    self._add_hll(old)
            return
        self._add_hll(h)

    def _add_hll(self, h: int) -> None:
        # A 32-bit crc is mixed once more (multiplicative hashing) so that both the register
        # index and the rank come from well-spread bits.
        x = (h * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        index = x >> (64 - self.P)
        rest = (x << self.P) & 0xFFFFFFFFFFFFFFFF
        rank = 65 - self.P if rest == 0 else 65 - rest.bit_length()
        registers = self._registers
        assert registers is not None
        if rank > registers[index]:
            registers[index] = rank

    def count(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        registers = self._registers
        assert registers is not None
        m = len(registers)
        estimate = (0.7213 / (1 + 1.079 / m)) * m * m / sum(2.0**-r for r in registers)
        zeros = registers.count(0)
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)
        return round(estimate)


class TopCounter:
    """Per-key sums (`[requests, *extra]`), at most `cap` keys; see the module docstring."""

    __slots__ = ("cap", "entries", "error_bound", "width")

    def __init__(self, cap: int, width: int = 1) -> None:
        self.cap = cap
        self.width = width
        self.entries: dict[Any, list[int]] = {}
        self.error_bound = 0

    def add(self, key: Any, *values: int) -> None:
        entry = self.entries.get(key)
        if entry is None:
            if len(self.entries) >= self.cap:
                self._prune()
            # the sums, then what this key may have had before it was dropped
            entry = self.entries[key] = [0] * self.width + [self.error_bound]
        for i, value in enumerate(values):
            entry[i] += value

    def _prune(self) -> None:
        ranked = sorted(self.entries.items(), key=lambda kv: kv[1][0], reverse=True)
        keep = self.cap // 2
        for _, dropped in ranked[keep:]:
            self.error_bound = max(self.error_bound, dropped[0] + dropped[-1])
        self.entries = dict(ranked[:keep])

    def top(self, n: int, column: int = 0) -> list[tuple[Any, list[int]]]:
        return sorted(self.entries.items(), key=lambda kv: (-kv[1][column], str(kv[0])))[:n]


class CacheReplay:
    """LRU caches of the given byte capacities, fed the cacheable request stream."""

    def __init__(self, capacities: Iterable[int], max_keys: int = 200_000) -> None:
        self.capacities = sorted(set(capacities))
        self.max_keys = max_keys
        self.threshold = HASH_SPACE  # every key sampled until the table is full
        self.caches: list[OrderedDict[str, int]] = [OrderedDict() for _ in self.capacities]
        self.used = [0] * len(self.capacities)
        self.hits = [0] * len(self.capacities)
        self.refs = 0
        self.expected = 0  # sum of the sampling threshold over every request (SHARDS-adj)
        # key -> [hash, requests, bytes of the last response]
        self.keys: dict[str, list[int]] = {}

    @property
    def rate(self) -> float:
        return self.threshold / HASH_SPACE

    def add(self, key: str, h: int, size: int) -> None:
        self.expected += self.threshold
        if h >= self.threshold:
            return
        entry = self.keys.get(key)
        if entry is None:
            self.keys[key] = [h, 1, size]
            if len(self.keys) > self.max_keys:
                self._halve()
                if h >= self.threshold:
                    return
        else:
            entry[1] += 1
            entry[2] = size
        self.refs += 1
        rate = self.rate
        for i, cache in enumerate(self.caches):
            if key in cache:
                self.hits[i] += 1
                cache.move_to_end(key)
                continue
            limit = self.capacities[i] * rate
            if size > limit:
                continue
            cache[key] = size
            self.used[i] += size
            while self.used[i] > limit:
                _, dropped = cache.popitem(last=False)
                self.used[i] -= dropped

    def _halve(self) -> None:
        self.threshold //= 2
        t = self.threshold
        self.keys = {k: v for k, v in self.keys.items() if v[0] < t}
        rate = self.rate
        for i, cache in enumerate(self.caches):
            for k in [k for k in cache if key_hash(k) >= t]:
                self.used[i] -= cache.pop(k)
            while self.used[i] > self.capacities[i] * rate:
                _, dropped = cache.popitem(last=False)
                self.used[i] -= dropped

    def result(self) -> list[dict[str, Any]]:
        """Hit ratio per capacity. A sample holds more or fewer requests than the rate
        promises, mostly because a few very popular keys are in it or not; as in SHARDS-adj
        the difference is counted as hits (popular keys hit) so it does not skew the ratio."""
        expected = self.expected / HASH_SPACE
        adjust = expected - self.refs
        return [
            {
                "capacity_bytes": cap,
                "hit_ratio": round(max(0.0, min(1.0, (self.hits[i] + adjust) / expected)), 4)
                if self.refs
                else None,
            }
            for i, cap in enumerate(self.capacities)
        ]

    def distinct_bytes(self) -> int:
        """Bytes of every distinct cacheable response (the sample scaled up)."""
        return round(sum(v[2] for v in self.keys.values()) / self.rate)

    def bytes_for_top(self, shares: Iterable[float]) -> list[dict[str, Any]]:
        """Bytes needed to hold the most requested keys that answer each share of requests."""
        ranked = sorted(self.keys.values(), key=lambda v: -v[1])
        total = sum(v[1] for v in ranked)
        out = []
        for share in shares:
            need, held, size = share * total, 0, 0
            for v in ranked:
                if held >= need:
                    break
                held += v[1]
                size += v[2]
            out.append({"share": share, "bytes": round(size / self.rate)})
        return out
