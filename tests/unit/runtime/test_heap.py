"""The heap trim gives freed glibc heap pages back to the OS (the RSS a worker kept after a
takeover's changelog replay, see docs/performance.md)."""

from __future__ import annotations

import asyncio
import ctypes.util
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.runtime import heap

glibc = pytest.mark.skipif(
    not (ctypes.util.find_library("c") or "").startswith("libc.so"), reason="needs glibc"
)

# 80 MB of 4 KiB chunks from the heap (below the mmap threshold), touched, then freed with
# one chunk allocated after them still live: it pins the heap's top, so free() cannot
# shrink the heap and the freed pages stay resident, as after a changelog replay.
_CHILD = """
import ctypes, os, sys
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

chunks = [libc.malloc(4096) for _ in range(20_000)]
for p in chunks:
    libc.memset(p, 1, 4096)
pin = libc.malloc(4096)
libc.memset(pin, 1, 4096)
for p in chunks:
    libc.free(p)
before = rss_mb()
if sys.argv[1] == "trim":
    from pipeline.runtime.heap import trim
    assert trim()
print(before, rss_mb())
"""


def _rss_before_after(mode: str) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True
    ).stdout
    before, after = (float(x) for x in out.split())
    return before, after


@glibc
def test_freed_heap_stays_resident_without_trim() -> None:
    before, after = _rss_before_after("none")
    assert after > before - 10  # the condition the trim exists for


@glibc
def test_trim_unmaps_freed_heap_pages() -> None:
    before, after = _rss_before_after("trim")
    assert before - after > 60, (before, after)  # of the 80 MB freed


class _App:
    """The two decorators of a Faust app that ``register`` uses."""

    def __init__(self) -> None:
        self.timers: list[tuple[float, Callable[[], Any]]] = []
        self.tasks: list[Callable[[], Any]] = []

    def timer(self, interval: float) -> Callable[[Callable[[], Any]], Any]:
        def add(fn: Callable[[], Any]) -> Any:
            self.timers.append((interval, fn))
            return fn

        return add

    def task(self, fn: Callable[[], Any]) -> Any:
        self.tasks.append(fn)
        return fn


def test_register_adds_a_timer_that_trims(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []

    def fake_trim() -> bool:
        calls.append(True)
        return True

    monkeypatch.setattr(heap, "trim", fake_trim)
    app = _App()
    heap.register(app, malloc="system")
    [(interval, fn)] = app.timers
    assert interval == heap.TRIM_SECONDS
    asyncio.run(fn())
    assert calls == [True]


def test_under_jemalloc_no_trim_runs_and_the_start_log_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = _App()
    heap.register(app, malloc="jemalloc")
    assert app.timers == []  # glibc's heap is not where the memory is
    [report] = app.tasks
    with caplog.at_level("INFO", logger="pipeline.runtime.heap"):
        asyncio.run(report())
    assert "malloc: jemalloc" in caplog.text
