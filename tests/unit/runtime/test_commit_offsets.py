"""pipeline.runtime.commit_offsets: Faust's commit offset with gap ranges over acked offsets.

The situation of the fourth hour soak, on Faust's own ``Consumer._new_offset``: offsets
re-read after a seek back were acked while the fetcher's gap ranges covered them too.
"""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from pipeline.runtime import commit_offsets

TOPIC = TP("t.events.raw", 3)


def _consumer(acked: list[int], gap: tuple[int, int], committed: int) -> Any:
    c = SimpleNamespace(
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None),
    )
    c._acked[TOPIC] = list(acked)
    c._acked_index[TOPIC] = set(acked)
    c._gap[TOPIC].addi(*gap)
    c._committed_offset[TOPIC] = committed
    return c


def _commits_to_reach(end: int, new_offset: Any) -> int:
    c = _consumer(list(range(100, 200)), (100, 200), 99)
    for n in range(1, 1000):
        offset = new_offset(c, TOPIC)
        if offset is not None:
            c._committed_offset[TOPIC] = offset
        if offset == end:
            return n
    return 1000


def test_faust_alone_crawls_one_offset_a_commit() -> None:
    """Documents the upstream behaviour the patch exists for (fails once Faust fixes it)."""
    original = getattr(Consumer._new_offset, "original", Consumer._new_offset)
    assert _commits_to_reach(200, original) > 50


def test_with_the_patch_the_whole_run_commits_at_once() -> None:
    commit_offsets.install()
    commit_offsets.install()  # idempotent
    assert _commits_to_reach(200, Consumer._new_offset) <= 2


def test_without_duplicates_it_commits_as_faust_does() -> None:
    commit_offsets.install()
    c = _consumer([100, 101, 102, 104, 105], (200, 201), 99)
    assert Consumer._new_offset(c, TOPIC) == 103  # the run up to the hole at 103
    assert c._acked[TOPIC] == [104, 105]
