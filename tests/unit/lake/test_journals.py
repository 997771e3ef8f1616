"""The journal marker: made once, complete, and safe when processes make it together."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import orjson

from pipeline.lake.journals import NO_JOURNAL, journal_dir, prepare

ROUNDS = 40


def _race(lake: str, barrier: mp.synchronize.Barrier, errors: mp.Queue) -> None:
    for i in range(ROUNDS):
        barrier.wait(timeout=30)
        try:
            prepare(Path(lake), f"t{i}")
        except Exception as exc:  # reported to the test, which fails on any
            errors.put(repr(exc))


def test_two_processes_marking_the_same_fresh_tables_at_once(tmp_path: Path) -> None:
    """Two workers starting on a fresh lake claim the same tables at the same moment."""
    ctx = mp.get_context("fork")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, errors)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert [p.exitcode for p in procs] == [0, 0]
    for i in range(ROUNDS):
        directory = journal_dir(tmp_path, f"t{i}")
        assert orjson.loads((directory / NO_JOURNAL).read_bytes())["state"] == "none"
        assert [p.name for p in directory.iterdir()] == [NO_JOURNAL]  # no staged leftovers


def test_prepare_keeps_an_existing_marker(tmp_path: Path) -> None:
    directory = prepare(tmp_path, "t")
    before = (directory / NO_JOURNAL).stat()
    assert prepare(tmp_path, "t") == directory
    after = (directory / NO_JOURNAL).stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
