"""A memory probe for any trackflow process: put this directory on ``PYTHONPATH`` and set
``TRACKFLOW_MEMPROBE_DIR``; every ``TRACKFLOW_MEMPROBE_SECONDS`` (0.25) a daemon thread
appends one line to ``<dir>/probe-<pid>.log``::

    383.6 rss 236 arenas 65 alloc 63.7 glibc_arena 41 inuse 32 mmap 2 threads 8

seconds since start, VmRSS MB, pymalloc arenas (1 MiB each) and the MB in allocated
blocks (``sys._debugmallocstats``), glibc's ``mallinfo2`` arena/in-use/mmap MB and the
thread count. RSS alone cannot tell live objects from freed memory an allocator keeps;
arenas against allocated bytes can (docs/performance.md, "The takeover step"). Workers
inherit ``PYTHONPATH``, so ``PYTHONPATH=bench/memprobe python -m bench.takeover`` probes
every worker it starts. Not imported by trackflow itself.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _pymalloc() -> tuple[int, float]:
    """(arenas, MB in allocated blocks); the stats go to fd 2, so it is sent to a pipe."""
    r, w = os.pipe()
    saved = os.dup(2)
    os.dup2(w, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(w)
        os.close(saved)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    arenas, alloc = 0, 0.0
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        if "arenas allocated current" in line:
            arenas = int(line.split("=")[1].replace(",", ""))
        elif "bytes in allocated blocks" in line:
            alloc = int(line.split("=")[1].replace(",", "")) / 2**20
    return arenas, alloc


def _rss_mb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def _run(out_dir: str, every: float) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    start = time.monotonic()
    with open(os.path.join(out_dir, f"probe-{os.getpid()}.log"), "a", buffering=1) as out:
        while True:
            arenas, alloc = _pymalloc()
            mi = libc.mallinfo2()
            out.write(
                f"{time.monotonic() - start:.1f} rss {_rss_mb()} arenas {arenas} "
                f"alloc {alloc:.1f} glibc_arena {mi.arena >> 20} inuse {mi.uordblks >> 20} "
                f"mmap {mi.hblkhd >> 20} threads {threading.active_count()}\n"
            )
            time.sleep(every)


def _start() -> None:
    out_dir = os.environ.get("TRACKFLOW_MEMPROBE_DIR")
    if out_dir:
        every = float(os.environ.get("TRACKFLOW_MEMPROBE_SECONDS", "0.25"))
        threading.Thread(target=_run, args=(out_dir, every), daemon=True, name="memprobe").start()


_start()
