"""Disk tier: budget and LRU eviction, damage detection, atomic writes, full and read-only disks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from idrserve.cache import CacheEntry, TieredCache, response_key
from idrserve.cache.files import DiskStore, ScanResult, disk_cost
from tests.cache.conftest import CacheFactory, corrupt_byte

ROOT = Path(__file__).resolve().parents[2]


def entry_for(i: int, size: int = 3000) -> CacheEntry:
    return CacheEntry(i.to_bytes(4, "big") * (size // 4), "image/jpeg")


def files_on_disk(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and len(p.parent.name) == 2]


async def wait_for(predicate: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


async def test_budget_is_respected_and_eviction_is_lru(make_cache: CacheFactory) -> None:
    budget = 100 * 4096
    cache = await make_cache(memory_max_bytes=0, dir=True, dir_max_bytes=budget)
    disk = cache.disk
    assert disk is not None
    await wait_for(lambda: disk.scans >= 1)
    for i in range(60):
        cache.put(response_key(1, 0, str(i)), entry_for(i))
    assert await cache.flush(5)
    # Age the entries by an hour (in key order), then read key 0: a hit refreshes its age.
    old = time.time() - 3600
    for i in range(60):
        os.utime(disk.store.path_for(response_key(1, 0, str(i))), (old + i, old + i))
    assert (await cache.get(response_key(1, 0, "0")))[1] == "disk"
    for i in range(60, 105):  # 105 entries > 100: one eviction down to 90
        cache.put(response_key(1, 0, str(i)), entry_for(i))
    assert await cache.flush(5)
    await wait_for(lambda: disk.evicted > 0 and disk.stats.bytes <= budget)
    assert (await cache.get(response_key(1, 0, "0")))[1] == "disk"  # recently used: kept
    assert (await cache.get(response_key(1, 0, "1")))[1] == "miss"  # oldest: evicted
    assert (await cache.get(response_key(1, 0, "104")))[1] == "disk"  # newest: kept
    # Many more writes: the budget holds throughout.
    for i in range(105, 1000):
        cache.put(response_key(1, 0, str(i)), entry_for(i))
        if i % 50 == 0:
            assert await cache.flush(5)
    assert await cache.flush(5)
    await wait_for(lambda: disk.stats.bytes <= budget)
    # The tracked size never undercounts what is on disk, and a rescan makes it exact.
    on_disk = sum(disk_cost(p.stat().st_size) for p in files_on_disk(disk.store.root))
    assert on_disk <= disk.stats.bytes <= budget
    await disk.scan_and_evict()
    assert disk.stats.bytes == on_disk == disk.stats.entries * 4096
    assert disk.evicted >= 900
    assert (await cache.get(response_key(1, 0, "999")))[1] == "disk"


async def test_existing_files_are_counted_after_a_restart(make_cache: CacheFactory) -> None:
    first = await make_cache(memory_max_bytes=0, dir=True)
    for i in range(10):
        first.put(response_key(1, 0, str(i)), entry_for(i))
    assert await first.flush(5)
    stale = first.disk.store.root / "ab" / "cd"  # type: ignore[union-attr]
    stale.mkdir(parents=True, exist_ok=True)
    tmp = stale / ".abcd.123.tmp"
    tmp.write_bytes(b"half a file")
    os.utime(tmp, (time.time() - 7200, time.time() - 7200))
    await first.aclose()
    second = await make_cache(memory_max_bytes=0, dir=first.settings.dir)
    disk = second.disk
    assert disk is not None
    await wait_for(lambda: disk.scans >= 1)
    assert disk.stats.entries == 10 and disk.stats.bytes == 10 * 4096
    assert not tmp.exists()  # a crashed writer's temporary file is cleaned up


def damage_file(path: str, damage: str) -> None:
    if damage == "flip last byte":
        corrupt_byte(path)
    elif damage == "flip header byte":
        corrupt_byte(path, 5)
    else:
        os.truncate(path, os.path.getsize(path) // 2 if damage == "truncate" else 0)


@pytest.mark.parametrize("damage", ["flip last byte", "flip header byte", "truncate", "empty"])
async def test_damaged_files_are_misses_and_removed(make_cache: CacheFactory, damage: str) -> None:
    cache = await make_cache(memory_max_bytes=0, dir=True)
    key = response_key(3, 0, "tile")
    cache.put(key, entry_for(3))
    assert await cache.flush(5)
    path = cache.disk.store.path_for(key)  # type: ignore[union-attr]
    damage_file(path, damage)
    assert await cache.get(key) == (None, "miss")
    assert not await asyncio.to_thread(os.path.exists, path)
    assert cache.stats()["disk"]["errors"] == 1

    async def render() -> CacheEntry:
        return entry_for(4)

    assert await cache.get_or_render(key, render) == (entry_for(4), "miss")
    assert await cache.flush(5)
    assert await cache.get(key) == (entry_for(4), "disk")


_WRITER = """
import os, sys
from pathlib import Path
from idrserve.cache import CacheEntry
from idrserve.cache.files import DiskStore
store, n = DiskStore(Path(sys.argv[1])), int(sys.argv[2])
entry = CacheEntry(bytes([n]) * 200_000, "image/png")
path = store.path_for("1:0:same")
for _ in range(300):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    store.write("1:0:same", entry)
"""


def test_concurrent_writers_never_tear_a_file(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "c")
    key = "1:0:same"
    stop = threading.Event()
    seen: set[int] = set()
    bad: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            entry, corrupt = store.read(key)
            if corrupt:
                bad.append("corrupt")
            elif entry is not None:
                if len(entry.body) != 200_000 or len(set(entry.body)) != 1:
                    bad.append("mixed")
                seen.add(entry.body[0])

    def thread_writer(n: int) -> None:
        entry = CacheEntry(bytes([n]) * 200_000, "image/png")
        path = store.path_for(key)
        for _ in range(300):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            store.write(key, entry)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(store.root), str(n)], env=env)
        for n in (101, 102, 103)
    ]
    writers = [threading.Thread(target=thread_writer, args=(n,)) for n in (1, 2, 3)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    stop.set()
    for t in readers:
        t.join()
    assert bad == []
    assert len(seen) >= 2  # the readers really saw the writers race
    leftovers = [p.name for p in store.root.rglob(".*")]
    assert leftovers == []  # no temporary files left behind


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs (we run as root): writes hit ENOSPC, then EROFS after remount."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        pytest.fail(f"mounting a tmpfs needs root (CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_full_then_read_only_disk_keeps_serving(
    make_cache: CacheFactory, tmpfs: Path
) -> None:
    cache: TieredCache = await make_cache(memory_max_bytes=0, dir=tmpfs / "cache")
    disk = cache.disk
    assert disk is not None
    # Fill the filesystem: 256 KiB holds a few dozen 5 KB entries, then ENOSPC.
    for i in range(120):
        cache.put(response_key(1, 0, str(i)), entry_for(i, 5000))
        assert await cache.flush(5)
    stats = cache.stats()["disk"]
    assert stats["writes"] > 10
    assert stats["write_errors"] >= 1
    assert stats["writes_paused"] == 1 or stats["dropped_writes"] > 0
    # Writes back off instead of failing every time.
    assert stats["write_errors"] < 20
    # Reads keep working; misses still render.
    assert (await cache.get(response_key(1, 0, "0")))[1] == "disk"

    async def render() -> CacheEntry:
        return entry_for(999)

    assert (await cache.get_or_render(response_key(2, 0, "new"), render))[1] == "miss"

    # Read-only: the same, with EROFS.
    await asyncio.to_thread(subprocess.run, ["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    ro = await make_cache(memory_max_bytes=0, dir=tmpfs / "cache")  # start() does not raise
    assert (await ro.get(response_key(1, 0, "0")))[1] == "disk"
    for i in range(200, 220):
        ro.put(response_key(1, 0, str(i)), entry_for(i))
        assert await ro.flush(5)
    stats = ro.stats()["disk"]
    assert stats["writes"] == 0 and 1 <= stats["write_errors"] <= 3
    assert stats["dropped_writes"] >= 15
    assert (await ro.get(response_key(1, 0, "1")))[1] == "disk"
    with pytest.raises(Exception, match="disk"):
        await ro.purge_image(1)  # the purge cannot reach the read-only dir, and says so


async def test_unwritable_shards_pause_writes(make_cache: CacheFactory, tmp_path: Path) -> None:
    root = tmp_path / "blocked"
    root.mkdir()
    for i in range(256):  # every shard directory is a file: every write fails
        (root / f"{i:02x}").write_bytes(b"")
    cache = await make_cache(memory_max_bytes=0, dir=root)
    for i in range(30):
        cache.put(response_key(1, 0, str(i)), entry_for(i))
        assert await cache.flush(5)
    stats = cache.stats()["disk"]
    assert stats["writes"] == 0
    assert stats["write_errors"] == cache.settings.breaker_failures
    assert stats["dropped_writes"] > 20
    assert await cache.get(response_key(1, 0, "0")) == (None, "miss")
    assert stats["errors"] == 0  # a missing shard is a miss, not an error


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("open_files", [0, 1, 3])
def test_hot_files_stay_open_within_the_bound(tmp_path: Path, open_files: int) -> None:
    """The event-loop read path keeps at most `open_files` descriptors, and reads right."""
    store = DiskStore(tmp_path / "c", open_files)
    entries = {f"1:0:{i}": CacheEntry(bytes([i]) * 5000, "image/png") for i in range(6)}
    for key, entry in entries.items():
        store.write(key, entry)
    before = _open_fds()
    for _ in range(3):
        for key, entry in entries.items():
            assert store.read_if_cached(key) == (entry, False)
    assert _open_fds() - before == open_files
    assert store.read_if_cached("1:0:absent") == (None, False)
    store.close()
    assert _open_fds() == before


def test_a_kept_file_damaged_before_its_first_read_is_still_caught(tmp_path: Path) -> None:
    store = DiskStore(tmp_path / "c", 8)
    good, bad = "1:0:good", "1:0:bad"
    store.write(good, CacheEntry(b"g" * 5000, "image/png"))
    store.write(bad, CacheEntry(b"b" * 5000, "image/png"))
    corrupt_byte(store.path_for(bad))
    assert store.read_if_cached(good) == (CacheEntry(b"g" * 5000, "image/png"), False)
    # Handed to the executor path, which counts and removes it; the descriptor is let go.
    assert store.read_if_cached(bad) is None
    assert store.read(bad) == (None, True)
    assert not os.path.exists(store.path_for(bad))
    assert store.read_if_cached(bad) == (None, False)
    store.close()


async def test_writes_during_a_slow_walk_never_empty_the_directory(
    make_cache: CacheFactory,
) -> None:
    """Writes that finish while the size walk runs are counted on top of it, and the walk may
    see them as well. Eviction must free only what the walk itself found above the low-water
    mark: deciding from the double count once removed every file (seen in CI under load)."""
    budget = 100 * 4096
    cache = await make_cache(memory_max_bytes=0, dir=True, dir_max_bytes=budget)
    disk = cache.disk
    assert disk is not None
    await wait_for(lambda: disk.scans >= 1)
    for i in range(95):
        cache.put(response_key(1, 0, str(i)), entry_for(i))
    assert await cache.flush(5)
    await wait_for(lambda: disk.stats.entries == 95)
    evicted_before = disk.evicted

    # Hold the next size walk at its start, write 60 more entries, then let it go: it sees
    # all 155 files while the 60 writes are also counted on top (215 entries' worth).
    release = threading.Event()
    walking = threading.Event()
    real_scan = disk.store.scan
    held = [False]

    def slow_scan(stop: threading.Event, need: int = 0) -> tuple[ScanResult, list[str]]:
        if not held[0] and need == 0:
            held[0] = True
            walking.set()
            release.wait(10)
        return real_scan(stop, need)

    disk.store.scan = slow_scan  # type: ignore[method-assign]
    task = asyncio.create_task(disk.scan_and_evict())
    await asyncio.to_thread(walking.wait, 5)
    for i in range(95, 155):
        cache.put(response_key(1, 0, str(i)), entry_for(i))
    assert await cache.flush(5)
    release.set()
    await task

    left = files_on_disk(disk.store.root)
    assert disk.evicted - evicted_before == 155 - 90  # down to the low-water mark, no further
    assert len(left) == 90
    assert (await cache.get(response_key(1, 0, "154")))[1] == "disk"  # the newest stays
    await wait_for(lambda: disk.stats.bytes == 90 * 4096)  # a follow-up walk settles the count
