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
    they hold 2 × `cap` rows between them, then are merged at once (re-sorting the kept
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
        if self._pending_rows >= 2 * self.cap:
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
        self._meta = np.zeros(6, dtype=np.int64)
        self._meta[lru.THRESHOLD] = HASH_SPACE  # every key sampled until the table is full
        self._meta[lru.MAX_KEYS] = max_keys
        self._hits = np.zeros(len(self.capacities), dtype=np.int64)
        self.expected = 0  # sum of the sampling threshold over every request (SHARDS-adj)
        self._state = lru.State(len(self.capacities), min(max_keys + 1, 1 << 12))

    @property
    def threshold(self) -> int:
        return int(self._meta[lru.THRESHOLD])

    @property
    def rate(self) -> float:
        return self.threshold / HASH_SPACE

    @property
    def refs(self) -> int:
        return int(self._meta[lru.REFS])

    @property
    def hits(self) -> list[int]:
        return self._hits.tolist()

    @property
    def sampled_keys(self) -> int:
        """Distinct keys in the sample now (at most `max_keys`)."""
        return int(self._meta[lru.LIVE])

    def add(self, key: str, h: int, size: int) -> None:
        self.add_batch(pl.Series([key]), np.array([h], dtype=np.uint32), np.array([size]))

    def add_batch(self, keys: pl.Series, hashes: np.ndarray, sizes: np.ndarray) -> None:
        """Each request in turn, as an LRU cache would see it; only the sampled ones (hash
        under the threshold) are looked at."""
        n = len(keys)
        threshold = self.threshold
        self.expected += threshold * n
        pos = np.flatnonzero(hashes < threshold)
        if not len(pos):
            return
        need = min(self.max_keys + 1, self.sampled_keys + len(pos))
        if need > self._state.ids:
            self._state = self._state.grown(min(self.max_keys + 1, max(need, 2 * self._state.ids)))
        idents = keys.gather(pos).hash(seed=20).to_numpy()
        state = self._state
        self.expected -= lru.replay(
            pos, idents, hashes[pos].astype(np.int64), np.asarray(sizes, dtype=np.int64)[pos],
            n, self._meta, self._caps, state.keys, state.caches, self._hits, state.table,
            state.free,
        )  # fmt: skip

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        """Requests and last sizes of the sampled keys, most requested first (ties: the
        first sampled first)."""
        count, last, _, order, _ = self._state.keys
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
