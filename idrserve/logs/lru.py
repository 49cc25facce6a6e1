"""The sampled LRU replay's inner loop, compiled with numba.

The replay (`replay.CacheReplay`) runs every sampled request through LRU caches of several
sizes; as Python over `OrderedDict`s that was 16 µs a request and more than half of a
report's time. Here keys are small integers (`CacheReplay` maps URLs to them) and each cache
is a doubly linked list in arrays, one row per capacity; the steps are those of the Python
version it replaced, step for step, so the figures are the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

HASH_SPACE = 1 << 32
_NONE = -1


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
def replay(
    pos: Any,
    ids: Any,
    hashes: Any,
    sizes: Any,
    n: int,
    meta: Any,
    caps: Any,
    keys: Any,
    s: Any,
    hits: Any,
) -> int:
    """Feed the sampled requests (at `pos` of a batch of `n`) through the caches; returns
    how much the batch's `expected` sum must drop for the thresholds halved in it.

    meta: [threshold, live keys, max_keys, insertion counter, refs];
    keys: (count, last size, hash, insertion order) per id, count 0 = not sampled;
    s: (used, csize, incache, prev, nxt, head, tail) of the caches."""
    count, last, khash, order = keys
    used, csize, incache, prev, nxt, head, tail = s
    ncap = caps.shape[0]
    correction = 0
    for j in range(pos.shape[0]):
        h = hashes[j]
        if h >= meta[0]:
            continue  # the threshold halved since the batch began
        k = ids[j]
        size = sizes[j]
        if count[k] == 0:
            count[k] = 1
            last[k] = size
            khash[k] = h
            order[k] = meta[3]
            meta[3] += 1
            meta[1] += 1
            if meta[1] > meta[2]:
                before = meta[0]
                meta[0] = before // 2
                t = meta[0]
                rate = t / HASH_SPACE
                for q in range(count.shape[0]):
                    if count[q] > 0 and khash[q] >= t:
                        count[q] = 0
                        meta[1] -= 1
                        for c in range(ncap):
                            if incache[c, q]:
                                _unlink(c, q, prev, nxt, head, tail)
                                incache[c, q] = False
                                used[c] -= csize[c, q]
                for c in range(ncap):
                    _evict(c, caps[c] * rate, s)
                correction += (before - t) * (n - pos[j] - 1)
                if h >= t:
                    continue
        else:
            count[k] += 1
            last[k] = size
        meta[4] += 1
        rate = meta[0] / HASH_SPACE
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


def new_keys(n: int) -> tuple[np.ndarray, ...]:
    return (
        np.zeros(n, np.int64),  # requests
        np.zeros(n, np.int64),  # bytes of the last response
        np.zeros(n, np.int64),  # hash
        np.zeros(n, np.int64),  # insertion order
    )


def new_caches(ncap: int, n: int) -> tuple[np.ndarray, ...]:
    return (
        np.zeros(ncap, np.int64),  # used
        np.zeros((ncap, n), np.int64),  # size as cached
        np.zeros((ncap, n), np.bool_),  # in the cache
        np.full((ncap, n), _NONE, np.int64),  # prev (older)
        np.full((ncap, n), _NONE, np.int64),  # next (newer)
        np.full(ncap, _NONE, np.int64),  # head (oldest)
        np.full(ncap, _NONE, np.int64),  # tail (newest)
    )


def grown(keys: tuple[np.ndarray, ...], s: tuple[np.ndarray, ...], n: int) -> tuple[Any, Any]:
    """The same state in arrays for `n` ids."""
    old = keys[0].shape[0]
    keys2 = new_keys(n)
    for a, b in zip(keys, keys2, strict=True):
        b[:old] = a
    ncap = s[0].shape[0]
    s2 = new_caches(ncap, n)
    s2[0][:] = s[0]
    for a, b in zip(s[1:5], s2[1:5], strict=True):
        b[:, :old] = a
    s2[5][:] = s[5]
    s2[6][:] = s[6]
    return keys2, s2
