"""The validate stage's guard against holes in the input offsets."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.runtime.offset_guard import OffsetGuard


@dataclass
class Msg:
    offset: int


def msgs(*offsets: int) -> list[Msg]:
    return [Msg(o) for o in offsets]


def test_contiguous_input_is_processed() -> None:
    g = OffsetGuard()
    a = g.admit(0, msgs(5, 6, 7))
    assert (a.process, a.hold, a.seek_to) == ([0, 1, 2], [], None)
    assert g.admit(0, msgs(8)).process == [0]


def test_a_hole_holds_what_follows_and_asks_for_a_seek_back() -> None:
    g = OffsetGuard()
    g.admit(3, msgs(98, 99))
    a = g.admit(3, msgs(101, 102))  # 100 never arrived
    assert (a.process, a.hold, a.seek_to) == ([], [0, 1], 100)
    # After the seek the hole is filled; copies of 101.. still queued come again.
    a = g.admit(3, msgs(100, 101, 102))
    assert (a.process, a.hold, a.seek_to) == ([0, 1, 2], [], None)
    a = g.admit(3, msgs(101, 102, 103))
    assert (a.already, a.process) == ([0, 1], [2])


def test_a_hole_that_never_fills_is_accepted_after_patience_and_counted() -> None:
    now = [0.0]
    g = OffsetGuard(patience=10.0, clock=lambda: now[0])
    g.admit(1, msgs(9))
    for t in (0.0, 4.0, 9.9):
        now[0] = t
        assert g.admit(1, msgs(12, 13)).seek_to == 10
    now[0] = 10.0
    a = g.admit(1, msgs(12, 13))
    assert (a.process, a.accepted_gap, a.seek_to) == ([0, 1], 2, None)


def test_a_hole_is_not_accepted_on_time_alone_while_re_reads_are_slow() -> None:
    """On a loaded machine a seek's re-read can take longer than the patience: the hole
    is accepted only once several reads came back without it."""
    now = [0.0]
    g = OffsetGuard(patience=10.0, clock=lambda: now[0], reads=4)
    g.admit(1, msgs(9))
    assert g.admit(1, msgs(12, 13)).seek_to == 10  # the first read past the hole
    for t in (60.0, 120.0):  # each re-read after the seek came back a minute later
        now[0] = t
        a = g.admit(1, msgs(12, 13))
        assert (a.process, a.accepted_gap, a.seek_to) == ([], 0, 10)
    now[0] = 180.0
    assert g.admit(1, msgs(12, 13)).accepted_gap == 2  # the fourth read without it


def test_a_filled_hole_leaves_nothing_behind() -> None:
    g = OffsetGuard()
    g.admit(0, msgs(1))
    g.admit(0, msgs(3))
    g.admit(0, msgs(2, 3))
    assert g.holes == {}


def test_partitions_are_independent_and_forget_resets() -> None:
    g = OffsetGuard()
    g.admit(0, msgs(1))
    assert g.admit(1, msgs(50)).process == [0]  # first sight of a partition sets its start
    g.forget()
    assert g.admit(0, msgs(40)).process == [0]  # after a rebalance: committed offsets


def test_the_rest_of_a_read_after_a_seek_is_held_without_another_seek() -> None:
    """The fetcher's batch in flight and the stage's queue go on rising after a seek: one
    seek, no reads counted, however many records (the sixth soak: a seek per record)."""
    now = [0.0]
    g = OffsetGuard(patience=10.0, clock=lambda: now[0], reads=2)
    g.admit(0, msgs(699))
    assert g.admit(0, msgs(701)).seek_to == 700
    for offset in range(702, 3000):  # one record at a time, as the sink admits
        a = g.admit(0, msgs(offset))
        assert (a.hold, a.seek_to, a.accepted_gap) == ([0], None, 0)
    now[0] = 9.0
    assert {h: r.reads for h, r in g.holes.items()} == {(0, 700): 1}
    a = g.admit(0, msgs(700))  # the re-read
    assert (a.process, g.holes) == ([0], {})


def test_a_new_read_without_the_hole_counts_and_seeks_again() -> None:
    now = [0.0]
    g = OffsetGuard(patience=10.0, clock=lambda: now[0], reads=4)
    g.admit(0, msgs(9))
    assert g.admit(0, msgs(11)).seek_to == 10
    assert g.admit(0, msgs(12)).seek_to is None  # the same read
    for t in (3.0, 11.0):
        now[0] = t
        assert g.admit(0, msgs(11)).seek_to == 10  # offsets went back: a re-read
        assert g.admit(0, msgs(12)).seek_to is None
    assert {h: r.reads for h, r in g.holes.items()} == {(0, 10): 3}
    now[0] = 12.0
    a = g.admit(0, msgs(11, 12))  # the fourth read, past the patience
    assert (a.process, a.accepted) == ([0, 1], [(10, 10)])


def test_a_seek_that_brought_nothing_back_is_asked_again_after_patience() -> None:
    now = [0.0]
    g = OffsetGuard(patience=10.0, clock=lambda: now[0], reads=2)
    g.admit(0, msgs(9))
    assert g.admit(0, msgs(11)).seek_to == 10
    now[0] = 10.5
    a = g.admit(0, msgs(12))  # still rising: the re-read never started
    assert (a.seek_to, a.accepted_gap, g.holes[(0, 10)].reads) == (10, 0, 1)
