"""Per-thread CPU time: each role counts its own threads' time, and never goes down."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from idrserve.threadcpu import ThreadCpu, thread_cpu_seconds

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="read from /proc (Linux)")


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_threads_time_is_its_own() -> None:
    me = threading.get_native_id()
    before = thread_cpu_seconds(me)
    assert before is not None
    other = threading.Thread(target=_burn, args=(0.2,))
    other.start()
    other.join()
    # The other thread's 0.2 s are not ours.
    after = thread_cpu_seconds(me)
    assert after is not None and after - before < 0.1
    _burn(0.05)
    mine = thread_cpu_seconds(me)
    assert mine is not None and mine - after >= 0.04
    assert thread_cpu_seconds(2**31 - 1) is None  # no such thread in this process


def test_roles_count_their_own_threads_and_keep_time_after_they_exit() -> None:
    cpu = ThreadCpu()
    cpu.add_current("loop")
    alive, done = threading.Event(), threading.Event()

    def pool_thread() -> None:
        cpu.add_current("cpu_pool")
        _burn(0.1)
        alive.set()
        done.wait(5)

    t = threading.Thread(target=pool_thread)
    t.start()
    assert alive.wait(5)
    seen = cpu.seconds()
    mine = thread_cpu_seconds(threading.get_native_id())
    assert seen["cpu_pool"] >= 0.09
    assert mine is not None and abs(seen["loop"] - mine) < 0.02  # this thread only
    done.set()
    t.join()
    assert cpu.seconds()["cpu_pool"] >= seen["cpu_pool"]  # gone, and still counted
    _burn(0.05)
    after = cpu.seconds()
    assert after["loop"] - seen["loop"] >= 0.04
    assert after["cpu_pool"] - seen["cpu_pool"] < 0.02


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown thread role"):
        ThreadCpu().add_current("gc")
