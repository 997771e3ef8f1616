"""What every benchmark ends with: its JSON on stdout and, when asked, in a file."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import orjson


def emit(result: Any, out: Path | None) -> None:
    """Print ``result`` as indented JSON and write the same text to ``out`` (its folder
    made if missing) unless ``out`` is None."""
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def machine() -> dict[str, Any]:
    """The machine a run was measured on: cores, memory, Python, load when it started."""
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def proc_status_mb(pid: int | str, field_name: str = "VmRSS:") -> float | None:
    """A memory field of ``/proc/PID/status`` (``VmRSS:``, ``VmHWM:``) in MiB; None when
    the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None
