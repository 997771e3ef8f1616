"""Hand the free part of the worker's glibc heap back to the OS once a minute.

Measured (docs/performance.md, "Memory growth after a takeover"): taking partitions over
replays their changelogs, and the heap glibc grows for that stays mapped once the replay's
buffers are freed (100-175 MB free against 27 MB in use after a takeover of a 2-minute-old
deployment). ``release_free_memory`` after recovery unmaps those pages once, but glibc
hands out the free chunks again all over the heap, so the worker's RSS crept back towards
the heap's size although nothing it holds grew. ``malloc_trim(0)`` each minute unmaps the
pages no allocation uses: usually a few ms, up to 270 ms seen on a loaded machine, so it
runs in a thread (ctypes releases the GIL). Not glibc, or glibc's malloc replaced by
jemalloc (``pipeline.runtime.allocator``): nothing to do, jemalloc returns its own free
pages after a few seconds.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from typing import Any

from pipeline.runtime import allocator

log = logging.getLogger(__name__)

TRIM_SECONDS = 60.0


def trim() -> bool:
    """Unmap the free pages of every glibc arena; False when there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def register(app: Any, interval: float = TRIM_SECONDS, malloc: str | None = None) -> None:
    """Trim each ``interval`` unless jemalloc serves malloc; log which one does at start."""
    malloc = malloc or allocator.in_use()

    @app.task
    async def report_malloc() -> None:
        log.info("malloc: %s", malloc)

    if malloc == "jemalloc":
        return

    @app.timer(interval=interval)
    async def trim_heap() -> None:
        await asyncio.to_thread(trim)
