"""Which malloc a worker runs on, and where jemalloc is when the machine has it.

The image preloads jemalloc (docs/decisions.md, "jemalloc: the image's malloc"). It must be
chosen before the process starts (``LD_PRELOAD``), so a worker only reports which malloc it
has, for on-call and for the soak's record, and trims glibc's heap only on glibc.
"""

from __future__ import annotations

import glob
from pathlib import Path

# Debian/Ubuntu (any architecture), then the usual other places of libjemalloc2.
JEMALLOC_GLOBS = (
    "/usr/lib/*-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


def find_jemalloc() -> Path | None:
    """The first libjemalloc.so.2 on this machine, or None."""
    for pattern in JEMALLOC_GLOBS:
        for path in sorted(glob.glob(pattern)):
            return Path(path)
    return None


def in_use(maps: str | None = None) -> str:
    """``jemalloc`` when the library is mapped into this process, else ``system``;
    ``unknown`` without /proc. ``maps`` is /proc/self/maps text (for tests)."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return "unknown"
    return "jemalloc" if "libjemalloc" in maps else "system"
