"""Finding jemalloc on the machine and telling which malloc serves this process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.runtime import allocator

_JEMALLOC_MAPS = (
    "7f0000000000-7f0000001000 r--p 00000000 08:01 1234 "
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n"
    "7f0000002000-7f0000003000 r-xp 00000000 08:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
)


def test_a_mapped_jemalloc_is_reported() -> None:
    assert allocator.in_use(_JEMALLOC_MAPS) == "jemalloc"


def test_without_jemalloc_mapped_the_system_malloc_is_reported() -> None:
    assert allocator.in_use(_JEMALLOC_MAPS.splitlines()[1]) == "system"


def test_find_jemalloc_takes_the_first_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = tmp_path / "aarch64-linux-gnu" / "libjemalloc.so.2"
    lib.parent.mkdir()
    lib.write_bytes(b"")
    monkeypatch.setattr(
        allocator,
        "JEMALLOC_GLOBS",
        (str(tmp_path / "none.so"), str(tmp_path / "*/libjemalloc.so.2")),
    )
    assert allocator.find_jemalloc() == lib


def test_find_jemalloc_is_none_when_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "JEMALLOC_GLOBS", (str(tmp_path / "*.so.2"),))
    assert allocator.find_jemalloc() is None


@pytest.mark.skipif(allocator.find_jemalloc() is None, reason="libjemalloc2 not installed")
def test_a_process_started_with_jemalloc_preloaded_reports_it() -> None:
    code = "from pipeline.runtime.allocator import in_use; print(in_use())"
    env = {"LD_PRELOAD": str(allocator.find_jemalloc()), "PATH": "/usr/bin:/bin"}
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == "jemalloc"
    plain = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert plain == "system"
