"""Bounded-memory structures of the report: distinct counts, top-N counts, an LRU cache replay.

A day of IDR's logs holds millions of distinct URLs, so nothing here keeps one entry per URL
without a cap:

* `Distinct` counts exactly up to a few thousand keys, then switches to a HyperLogLog sketch
  (about 1.6 % error with 4096 registers).
* `TopTable` keeps sums per key up to a cap, merged a batch of requests at a time; past the
  cap, the least requested keys are dropped (lossy counting, after Manku and Motwani). A key
  that comes back starts again with the largest count dropped so far as its possible
  shortfall, so every kept count is exact or low by at most `error_bound`.
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
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import polars as pl

from idrserve.logs import lru

HASH_SPACE = lru.HASH_SPACE


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
        self._registers: np.ndarray | None = None

    def add(self, h: int) -> None:
        self.add_many(np.array([h], dtype=np.uint32))

    def add_many(self, hashes: np.ndarray) -> None:
        """Many 32-bit key hashes at once (a batch of requests of one hour)."""
        if self._exact is not None:
            self._exact.update(np.unique(hashes).tolist())
            if len(self._exact) <= self.EXACT_LIMIT:
                return
            hashes = np.fromiter(self._exact, dtype=np.uint32, count=len(self._exact))
            self._exact = None
            self._registers = np.zeros(1 << self.P, dtype=np.uint8)
        registers = self._registers
        assert registers is not None
        # A 32-bit crc is mixed once more (multiplicative hashing, modulo 2**64) so that both
        # the register index and the rank come from well-spread bits.
        x = hashes.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        index = (x >> np.uint64(64 - self.P)).astype(np.intp)
        rest = x << np.uint64(self.P)
        # bit lengths of 64-bit words, exactly, from the two 32-bit halves (floats hold those)
        high = np.frexp((rest >> np.uint64(32)).astype(np.float64))[1]
        low = np.frexp((rest & np.uint64(0xFFFFFFFF)).astype(np.float64))[1]
        bits = np.where(high > 0, high + 32, low)
        rank = np.where(rest == 0, 65 - self.P, 65 - bits).astype(np.uint8)
        np.maximum.at(registers, index, rank)

    def count(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        registers = self._registers
        assert registers is not None
        m = len(registers)
        harmonic = float(np.sum(np.exp2(-registers.astype(np.float64))))
        estimate = (0.7213 / (1 + 1.079 / m)) * m * m / harmonic
        zeros = int(np.count_nonzero(registers == 0))
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)
        return round(estimate)


class TopTable:
    """Per-key sums of the given columns (the first is the request count), at most `cap`
    keys; see the module docstring. Fed per batch with one row per key; batches wait until
    they hold 4 × `cap` rows between them, then are merged at once (re-sorting the kept
    keys after every small batch was a third of a report's time)."""

    def __init__(self, cap: int, columns: Sequence[str], key_dtype: Any = pl.String) -> None:
        self.cap = cap
        self.columns = list(columns)
        self._error_bound = 0
        self._kept = pl.DataFrame(
            schema={"key": key_dtype, **dict.fromkeys(self.columns, pl.Int64), "err": pl.Int64}
        )
        self._pending: list[pl.DataFrame] = []
        self._pending_rows = 0

    def add(self, batch: pl.DataFrame) -> None:
        """`batch`: `key` and the columns, summed per key."""
        if batch.is_empty():
            return
        self._pending.append(batch)
        self._pending_rows += batch.height
        if self._pending_rows >= 4 * self.cap:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        fresh = pl.concat(self._pending).select(
            pl.col("key").cast(self._kept.schema["key"]),
            *(pl.col(c).cast(pl.Int64) for c in self.columns),
            err=pl.lit(self._error_bound, pl.Int64),
        )
        self._pending, self._pending_rows = [], 0
        # a key already kept has an `err` no larger than the bound now: min keeps its own
        merged = (
            pl.concat([self._kept, fresh])
            .group_by("key")
            .agg(*(pl.col(c).sum() for c in self.columns), pl.col("err").min())
        )
        if merged.height > self.cap:
            merged = merged.sort([self.columns[0], "key"], descending=[True, False])
            dropped = merged.slice(self.cap)
            worst = dropped.select((pl.col(self.columns[0]) + pl.col("err")).max()).item()
            self._error_bound = max(self._error_bound, int(worst))
            merged = merged.head(self.cap)
        self._kept = merged

    @property
    def frame(self) -> pl.DataFrame:
        """The kept keys: `key`, the columns, `err` (what a key may have had before it was
        dropped and came back)."""
        self._merge()
        return self._kept

    @property
    def error_bound(self) -> int:
        self._merge()
        return self._error_bound

    def rows(self) -> list[tuple[Any, list[int]]]:
        """Every kept key with its sums, then its possible shortfall."""
        return [(row[0], list(row[1:])) for row in self.frame.iter_rows()]

    def top(self, n: int, column: int = 0) -> list[tuple[Any, list[int]]]:
        name = self.columns[column]
        ranked = self.frame.sort(
            [pl.col(name), pl.col("key").cast(pl.String)], descending=[True, False]
        ).head(n)
        return [(row[0], list(row[1:])) for row in ranked.iter_rows()]


class CacheReplay:
    """LRU caches of the given byte capacities, fed the cacheable request stream (the loop
    itself is compiled: idrserve/logs/lru.py)."""

    def __init__(self, capacities: Iterable[int], max_keys: int = 200_000) -> None:
        self.capacities = sorted(set(capacities))
        self.max_keys = max_keys
        self._caps = np.array(self.capacities, dtype=np.float64)
        # threshold (every key sampled until the table is full), live keys, max_keys,
        # insertion counter, refs
        self._meta = np.array([HASH_SPACE, 0, max_keys, 0, 0], dtype=np.int64)
        self._hits = np.zeros(len(self.capacities), dtype=np.int64)
        self.expected = 0  # sum of the sampling threshold over every request (SHARDS-adj)
        # sampled key -> its id in the arrays (count, last size, hash, order; the caches)
        self.keys: dict[str, int] = {}
        self._free: list[int] = []
        self._next = 0
        self._arrays = lru.new_keys(1024)
        self._caches = lru.new_caches(len(self.capacities), 1024)

    @property
    def threshold(self) -> int:
        return int(self._meta[0])

    @property
    def rate(self) -> float:
        return self.threshold / HASH_SPACE

    @property
    def refs(self) -> int:
        return int(self._meta[4])

    @property
    def hits(self) -> list[int]:
        return self._hits.tolist()

    def add(self, key: str, h: int, size: int) -> None:
        self.add_batch([key], np.array([h], dtype=np.uint32), [size])

    def add_batch(self, keys: Sequence[str], hashes: np.ndarray, sizes: Sequence[int]) -> None:
        """Each request in turn, as an LRU cache would see it; only the sampled ones (hash
        under the threshold) are looked at."""
        n = len(keys)
        threshold = self.threshold
        self.expected += threshold * n
        pos = np.flatnonzero(hashes < threshold)
        if not len(pos):
            return
        table, free = self.keys, self._free
        id_list = []
        for i in pos.tolist():
            k = table.get(keys[i])
            if k is None:
                if free:
                    k = free.pop()
                else:
                    k = self._next
                    self._next += 1
                table[keys[i]] = k
            id_list.append(k)
        ids = np.array(id_list, dtype=np.int64)
        if self._next > len(self._arrays[0]):
            self._arrays, self._caches = lru.grown(
                self._arrays, self._caches, max(self._next, 2 * len(self._arrays[0]))
            )
        size_of = np.asarray(sizes, dtype=np.int64)[pos]
        self.expected -= lru.replay(
            pos, ids, hashes[pos].astype(np.int64), size_of, n, self._meta, self._caps,
            self._arrays, self._caches, self._hits,
        )  # fmt: skip
        if self.threshold != threshold or len(table) > self._meta[1]:
            count = self._arrays[0]
            for key in [key for key, k in table.items() if count[k] == 0]:
                free.append(table.pop(key))

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        """Requests and last sizes of the sampled keys, most requested first (ties: the
        first sampled first)."""
        count, last, _, order = self._arrays
        live = np.flatnonzero(count > 0)
        ranked = live[np.lexsort((order[live], -count[live]))]
        return count[ranked], last[ranked]

    def result(self) -> list[dict[str, Any]]:
        """Hit ratio per capacity. A sample holds more or fewer requests than the rate
        promises, mostly because a few very popular keys are in it or not; as in SHARDS-adj
        the difference is counted as hits (popular keys hit) so it does not skew the ratio."""
        expected = self.expected / HASH_SPACE
        adjust = expected - self.refs
        hits = self.hits
        return [
            {
                "capacity_bytes": cap,
                "hit_ratio": round(max(0.0, min(1.0, (hits[i] + adjust) / expected)), 4)
                if self.refs
                else None,
            }
            for i, cap in enumerate(self.capacities)
        ]

    def distinct_bytes(self) -> int:
        """Bytes of every distinct cacheable response (the sample scaled up)."""
        return round(int(self._live()[1].sum()) / self.rate)

    def bytes_for_top(self, shares: Iterable[float]) -> list[dict[str, Any]]:
        """Bytes needed to hold the most requested keys that answer each share of requests."""
        counts, sizes = self._live()
        total = int(counts.sum())
        held = np.concatenate([[0], np.cumsum(counts)])
        size = np.concatenate([[0], np.cumsum(sizes)])
        out = []
        for share in shares:
            # the fewest keys whose requests reach the share
            taken = int(np.searchsorted(held, share * total, side="left"))
            taken = min(taken, len(counts))
            out.append({"share": share, "bytes": round(int(size[taken]) / self.rate)})
        return out
