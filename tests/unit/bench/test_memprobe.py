"""bench/memprobe: a process with it on PYTHONPATH logs its allocators' state."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).resolve().parents[3] / "bench" / "memprobe"
LINE = re.compile(
    r"^[\d.]+ rss (\d+) arenas (\d+) alloc ([\d.]+) glibc_arena \d+ inuse \d+ mmap \d+ threads \d+$"
)


def _run(tmp_path: Path, code: str, probe: bool) -> list[re.Match[str]]:
    env = {**os.environ, "PYTHONPATH": str(PROBE), "TRACKFLOW_MEMPROBE_SECONDS": "0.05"}
    if probe:
        env["TRACKFLOW_MEMPROBE_DIR"] = str(tmp_path)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    logs = list(tmp_path.glob("probe-*.log"))
    lines = [line for log in logs for line in log.read_text().splitlines()]
    matches = [LINE.match(line) for line in lines]
    assert all(matches), lines
    return [m for m in matches if m]


def test_the_probe_sees_live_python_objects_come_and_go(tmp_path: Path) -> None:
    code = (
        "import time\n"
        "time.sleep(0.3)\n"
        "junk = [str(i) * 3 for i in range(1_000_000)]\n"  # ~60 MB of small objects
        "time.sleep(0.3)\n"
        "del junk\n"
        "time.sleep(0.3)\n"
    )
    samples = _run(tmp_path, code, probe=True)
    alloc = [float(m.group(3)) for m in samples]
    assert len(alloc) >= 5
    assert max(alloc) - alloc[0] > 40  # the list's objects were counted while alive
    assert alloc[-1] < max(alloc) - 40  # and gone once freed


def test_without_the_variable_it_does_nothing(tmp_path: Path) -> None:
    assert _run(tmp_path, "import time; time.sleep(0.2)", probe=False) == []
