"""`BoundedLRU`: entry and byte bounds, TTL, the eviction hook, recency."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idrserve.lru import BoundedLRU


def by_length(key: str, value: bytes) -> int:
    return len(value)


def test_entry_bound_evicts_least_recently_used_first() -> None:
    lru: BoundedLRU[str, int] = BoundedLRU(max_entries=3)
    for i, key in enumerate("abc"):
        assert lru.put(key, i)
    lru.put("d", 3)
    assert list(lru) == ["b", "c", "d"] and len(lru) == 3
    assert "a" not in lru and lru.get("a") is None
    assert lru.evicted == 1


def test_get_refreshes_recency_and_peek_does_not() -> None:
    lru: BoundedLRU[str, int] = BoundedLRU(max_entries=3)
    for i, key in enumerate("abc"):
        lru.put(key, i)
    assert lru.get("a") == 0  # a is now the most recently used
    assert lru.peek("b") == 1 and lru["b"] == 1  # b stays the least recently used
    lru.put("d", 3)
    assert list(lru) == ["c", "a", "d"]
    with pytest.raises(KeyError):
        lru["b"]


def test_touch_after_peek_is_a_get() -> None:
    lru: BoundedLRU[str, int] = BoundedLRU(max_entries=2)
    lru.put("a", 0)
    lru.put("b", 1)
    assert lru.peek("a") == 0
    lru.touch("a")
    lru.put("c", 2)
    assert list(lru) == ["a", "c"]
    with pytest.raises(KeyError):
        lru.touch("b")


def test_byte_bound_evicts_until_the_costs_fit() -> None:
    lru: BoundedLRU[str, bytes] = BoundedLRU(max_bytes=100, cost=by_length)
    lru.put("a", b"x" * 40)
    lru.put("b", b"x" * 40)
    assert lru.bytes == 80
    lru.put("c", b"x" * 50)  # a must go: 130 > 100
    assert list(lru) == ["b", "c"] and lru.bytes == 90
    lru.put("d", b"x" * 100)  # everything else goes
    assert list(lru) == ["d"] and lru.bytes == 100


def test_an_entry_that_can_never_fit_is_refused_without_evicting() -> None:
    lru: BoundedLRU[str, bytes] = BoundedLRU(max_bytes=100, cost=by_length)
    lru.put("a", b"x" * 60)
    assert not lru.put("big", b"x" * 101)
    assert list(lru) == ["a"] and lru.bytes == 60
    assert not BoundedLRU[str, int](max_entries=0).put("a", 1)


def test_keep_newest_keeps_an_oversized_entry_alone() -> None:
    lru: BoundedLRU[str, bytes] = BoundedLRU(max_bytes=100, cost=by_length, keep_newest=True)
    lru.put("a", b"x" * 60)
    assert lru.put("big", b"x" * 500)
    assert list(lru) == ["big"] and lru.bytes == 500
    lru.put("b", b"x" * 10)
    assert list(lru) == ["b"] and lru.bytes == 10


def test_updating_a_key_adjusts_bytes_and_recency() -> None:
    lru: BoundedLRU[str, bytes] = BoundedLRU(max_bytes=100, cost=by_length)
    lru.put("a", b"x" * 10)
    lru.put("b", b"x" * 10)
    lru.put("a", b"x" * 30)
    assert len(lru) == 2 and lru.bytes == 40
    assert list(lru) == ["b", "a"]
    lru.put("a", b"x" * 5)
    assert lru.bytes == 15


def test_a_byte_bound_needs_a_cost() -> None:
    with pytest.raises(ValueError, match="cost"):
        BoundedLRU[str, int](max_bytes=10)


def test_ttl_expires_by_the_injected_clock() -> None:
    now = [100.0]
    evicted: list[tuple[str, int]] = []
    lru: BoundedLRU[str, int] = BoundedLRU(
        10, ttl_s=5.0, clock=lambda: now[0], on_evict=lambda k, v: evicted.append((k, v))
    )
    lru.put("a", 1)
    now[0] = 103.0
    lru.put("b", 2)
    assert lru.get("a") == 1  # a get does not extend the lifetime
    now[0] = 105.0
    assert lru.get("a") is None and "a" not in lru
    assert lru.peek("b") == 2 and "b" in lru
    lru.put("b", 3)  # a put does
    now[0] = 109.0
    assert lru["b"] == 3
    now[0] = 110.0
    assert lru.peek("b") is None
    assert evicted == [("a", 1), ("b", 3)] and len(lru) == 0 and lru.evicted == 2


def test_eviction_hook_is_called_once_per_dropped_entry() -> None:
    evicted: list[str] = []
    lru: BoundedLRU[str, bytes] = BoundedLRU(
        max_entries=3, max_bytes=100, cost=by_length, on_evict=lambda k, v: evicted.append(k)
    )
    for key in "abcd":
        lru.put(key, b"x" * 10)  # a goes by the entry bound
    lru.put("e", b"x" * 95)  # b, c, d go by the byte bound
    assert evicted == ["a", "b", "c", "d"]
    lru.put("f", b"x")
    assert lru.pop("f") == b"x"  # handed back: not evicted
    lru.put("e", b"y" * 85)  # replaced by the caller: not evicted
    assert evicted == ["a", "b", "c", "d"]
    lru.clear()
    assert evicted == ["a", "b", "c", "d", "e"] and lru.bytes == 0 and len(lru) == 0


def test_pop_returns_the_value_and_frees_its_bytes() -> None:
    lru: BoundedLRU[str, bytes] = BoundedLRU(max_bytes=100, cost=by_length, ttl_s=1.0)
    lru.put("a", b"x" * 30)
    assert lru.pop("a") == b"x" * 30 and lru.bytes == 0
    assert lru.pop("a") is None


@given(
    st.lists(
        st.tuples(st.sampled_from(["get", "put", "pop"]), st.integers(0, 20), st.integers(1, 40))
    ),
    st.integers(1, 8),
    st.integers(40, 120),
)
def test_model(ops: list[tuple[str, int, int]], max_entries: int, max_bytes: int) -> None:
    """Against a list in recency order: same contents and order, bounds always held."""
    lru: BoundedLRU[int, bytes] = BoundedLRU(max_entries, max_bytes, cost=lambda k, v: len(v))
    model: list[tuple[int, bytes]] = []
    for op, key, size in ops:
        found = next((i for i, (k, _) in enumerate(model) if k == key), None)
        if op == "get":
            assert lru.get(key) == (None if found is None else model[found][1])
            if found is not None:
                model.append(model.pop(found))
        elif op == "pop":
            assert lru.pop(key) == (None if found is None else model.pop(found)[1])
        else:
            stored = lru.put(key, bytes(size))
            assert stored
            if found is not None:
                model.pop(found)
            model.append((key, bytes(size)))
            while len(model) > max_entries or sum(len(v) for _, v in model) > max_bytes:
                model.pop(0)
        assert list(lru.items()) == model
        assert lru.bytes == sum(len(v) for _, v in model) <= max_bytes
        assert len(lru) <= max_entries


def test_get_or_make_makes_once_and_keeps_nothing_when_making_fails() -> None:
    lru: BoundedLRU[str, int] = BoundedLRU(2)
    made: list[str] = []

    def make(text: str) -> int:
        made.append(text)
        if not text.isdigit():
            raise ValueError(text)
        return int(text)

    assert lru.get_or_make("7", make, "7") == 7
    assert lru.get_or_make("7", make, "7") == 7
    assert made == ["7"]
    for _ in range(2):
        with pytest.raises(ValueError, match="x"):
            lru.get_or_make("x", make, "x")
    assert made == ["7", "x", "x"] and "x" not in lru
    lru.get_or_make("8", make, "8")
    lru.get_or_make("9", make, "9")
    assert len(lru) == 2 and "7" not in lru  # bounded, least recently used out first
