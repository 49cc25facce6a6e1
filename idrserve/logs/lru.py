"""The sampled LRU replay's inner loop, compiled with numba.

The replay (`replay.CacheReplay`) runs every sampled request through LRU caches of several
sizes; as Python over `OrderedDict`s keyed by URL that was 16 µs a request, more than half of
a report's time, and its 200 000 URL strings a fifth of its memory. Here a URL is known by a
64-bit hash of it (polars' column hash: two URLs of a day's log share one with odds of about
one in ten million) that an open-addressing table maps to a small integer id; each cache is
a doubly linked list in arrays, one row per capacity. The steps are those of the Python
version it replaced, step for step, so the figures are the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

HASH_SPACE = 1 << 32
_NONE = -1
# meta: the sampling threshold, live keys, max_keys, insertion counter, refs, next new id
THRESHOLD, LIVE, MAX_KEYS, ORDER, REFS, NEXT = range(6)


@njit(cache=True, nogil=True, boundscheck=False)
def _unlink(c: int, k: int, prev: Any, nxt: Any, head: Any, tail: Any) -> None:
    p, n = prev[c, k], nxt[c, k]
    if p == _NONE:
        head[c] = n
    else:
        nxt[c, p] = n
    if n == _NONE:
        tail[c] = p
    else:
        prev[c, n] = p


@njit(cache=True, nogil=True, boundscheck=False)
def _append(c: int, k: int, prev: Any, nxt: Any, head: Any, tail: Any) -> None:
    t = tail[c]
    prev[c, k] = t
    nxt[c, k] = _NONE
    if t == _NONE:
        head[c] = k
    else:
        nxt[c, t] = k
    tail[c] = k


@njit(cache=True, nogil=True, boundscheck=False)
def _evict(c: int, limit: float, s: Any) -> None:
    used, csize, incache, prev, nxt, head, tail = s
    while used[c] > limit:
        k = head[c]
        _unlink(c, k, prev, nxt, head, tail)
        incache[c, k] = False
        used[c] -= csize[c, k]


@njit(cache=True, nogil=True, boundscheck=False)
def rebuild(table: Any, count: Any, ident: Any) -> None:
    """The identity table anew, holding the live ids only."""
    table[:] = _NONE
    mask = table.shape[0] - 1
    for k in range(count.shape[0]):
        if count[k] > 0:
            slot = ident[k] & mask
            while table[slot] != _NONE:
                slot = (slot + 1) & mask
            table[slot] = k


@njit(cache=True, nogil=True, boundscheck=False)
def replay(
    pos: Any,
    idents: Any,
    hashes: Any,
    sizes: Any,
    n: int,
    meta: Any,
    caps: Any,
    keys: Any,
    s: Any,
    hits: Any,
    table: Any,
    free: Any,
) -> int:
    """Feed the sampled requests (at `pos` of a batch of `n`) through the caches; returns
    how much the batch's `expected` sum must drop for the thresholds halved in it.

    keys: (count, last size, hash, insertion order, identity) per id, count 0 = free;
    s: (used, csize, incache, prev, nxt, head, tail) of the caches; free: [size, ids…]."""
    count, last, khash, order, ident = keys
    used, csize, incache, prev, nxt, head, tail = s
    ncap = caps.shape[0]
    mask = table.shape[0] - 1
    correction = 0
    for j in range(pos.shape[0]):
        h = hashes[j]
        if h >= meta[THRESHOLD]:
            continue  # the threshold halved since the batch began
        size = sizes[j]
        slot = idents[j] & mask
        k = _NONE
        while table[slot] != _NONE:
            if ident[table[slot]] == idents[j]:
                k = table[slot]
                break
            slot = (slot + 1) & mask
        if k == _NONE:
            if free[0] > 0:
                k = free[free[0]]
                free[0] -= 1
            else:
                k = meta[NEXT]
                meta[NEXT] += 1
            table[slot] = k
            count[k] = 1
            last[k] = size
            khash[k] = h
            order[k] = meta[ORDER]
            ident[k] = idents[j]
            meta[ORDER] += 1
            meta[LIVE] += 1
            if meta[LIVE] > meta[MAX_KEYS]:
                before = meta[THRESHOLD]
                meta[THRESHOLD] = before // 2
                t = meta[THRESHOLD]
                rate = t / HASH_SPACE
                for q in range(count.shape[0]):
                    if count[q] > 0 and khash[q] >= t:
                        count[q] = 0
                        meta[LIVE] -= 1
                        free[0] += 1
                        free[free[0]] = q
                        for c in range(ncap):
                            if incache[c, q]:
                                _unlink(c, q, prev, nxt, head, tail)
                                incache[c, q] = False
                                used[c] -= csize[c, q]
                for c in range(ncap):
                    _evict(c, caps[c] * rate, s)
                rebuild(table, count, ident)
                correction += (before - t) * (n - pos[j] - 1)
                if h >= t:
                    continue
        else:
            count[k] += 1
            last[k] = size
        meta[REFS] += 1
        rate = meta[THRESHOLD] / HASH_SPACE
        for c in range(ncap):
            if incache[c, k]:
                hits[c] += 1
                _unlink(c, k, prev, nxt, head, tail)
                _append(c, k, prev, nxt, head, tail)
                continue
            limit = caps[c] * rate
            if size > limit:
                continue
            incache[c, k] = True
            csize[c, k] = size
            _append(c, k, prev, nxt, head, tail)
            used[c] += size
            _evict(c, limit, s)
    return correction


class State:
    """The arrays `replay` works on, for up to `ids` keys (grown on demand)."""

    def __init__(self, ncap: int, ids: int) -> None:
        self.keys: tuple[np.ndarray, ...] = (
            np.zeros(ids, np.int64),  # requests (0: a free id)
            np.zeros(ids, np.int64),  # bytes of the last response
            np.zeros(ids, np.int64),  # sampling hash
            np.zeros(ids, np.int64),  # insertion order
            np.zeros(ids, np.uint64),  # identity (the key's 64-bit hash)
        )
        self.caches: tuple[np.ndarray, ...] = (
            np.zeros(ncap, np.int64),  # used
            np.zeros((ncap, ids), np.int64),  # size as cached
            np.zeros((ncap, ids), np.bool_),  # in the cache
            np.full((ncap, ids), _NONE, np.int32),  # prev (older)
            np.full((ncap, ids), _NONE, np.int32),  # next (newer)
            np.full(ncap, _NONE, np.int64),  # head (oldest)
            np.full(ncap, _NONE, np.int64),  # tail (newest)
        )
        self.table = np.full(1 << max(4, (2 * ids - 1).bit_length()), _NONE, np.int64)
        self.free = np.zeros(ids + 1, np.int64)

    @property
    def ids(self) -> int:
        return int(self.keys[0].shape[0])

    def grown(self, ids: int) -> State:
        """The same state with room for `ids` keys."""
        new = State(self.caches[0].shape[0], ids)
        old = self.ids
        for a, b in zip(self.keys, new.keys, strict=True):
            b[:old] = a
        new.caches[0][:] = self.caches[0]
        for a, b in zip(self.caches[1:5], new.caches[1:5], strict=True):
            b[:, :old] = a
        new.caches[5][:] = self.caches[5]
        new.caches[6][:] = self.caches[6]
        new.free[: len(self.free)] = self.free
        rebuild(new.table, new.keys[0], new.keys[4])
        return new
