"""The CPU pool's threads run below the loop's priority, and only they do."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from idrserve.cpupool import cpu_pool

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice is Linux's")


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_pool_threads_are_niced_and_the_caller_is_not() -> None:
    before = _own_nice()
    pool = cpu_pool(2, nice=7)
    try:
        seen = {pool.submit(_own_nice).result() for _ in range(8)}
    finally:
        pool.shutdown()
    assert seen == {min(19, before + 7)}
    assert _own_nice() == before
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the process's main thread too


def test_nice_zero_leaves_the_priority_alone() -> None:
    before = _own_nice()
    pool = cpu_pool(1, nice=0)
    try:
        assert pool.submit(_own_nice).result() == before
    finally:
        pool.shutdown()


def test_a_refused_nice_warns_and_the_pool_still_works(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A seccomp filter that refuses setpriority cannot be installed from a test; the refusal
    # it would cause (EPERM) is raised in its place.
    def refuse(*_args: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    pool = cpu_pool(1, nice=5)
    try:
        with caplog.at_level("WARNING", logger="idrserve.cpupool"):
            assert pool.submit(lambda: 42).result() == 42
    finally:
        pool.shutdown()
    assert "could not lower the CPU pool's priority" in caplog.text
