"""SIGUSR1 makes a worker log where every asyncio task is waiting.

A worker that owns partitions and makes no progress shows nothing in a thread dump (the
event loop is idle); its tasks' stacks say which await it is stuck on. On call:
``kill -USR1 <pid>`` and read the worker log.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal

log = logging.getLogger(__name__)


def install(loop: asyncio.AbstractEventLoop) -> None:
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)


def dump_tasks() -> str:
    out = io.StringIO()
    tasks = sorted(asyncio.all_tasks(), key=lambda t: t.get_name())
    for task in tasks:
        out.write(f"--- {task.get_name()}: {task.get_coro()!r}\n")
        task.print_stack(limit=12, file=out)
    text = out.getvalue()
    log.warning("asyncio tasks (%s):\n%s", len(tasks), text)
    return text
