"""Input in log order without holes, per partition: the pure rule behind ``OrderedInput``.

Faust acks offsets it never received as a "gap" (meant for compacted topics and
transaction markers). The embedded broker has been seen to hand a worker restarted after a
SIGKILL the records after an offset before the offset itself (``offsets 100..100 of
partition 3 never arrived``, then that event missing from the lake). Everything
downstream relies on positions arriving in order (the sink skips positions below its
high water), so a skipped offset would be lost for good. The guard holds back what
follows a hole and asks for a seek back to it; only a hole still open after ``patience``
seconds AND ``reads`` reads that came back without it is accepted as real, counted and
logged. Time alone is not evidence: on a loaded machine a seek's re-read can take longer
than the patience, and a hole accepted too early is an event lost.

A read counts only when it is one: a new read starts where a partition's offsets go back
(or repeat). Records that go on rising after a seek are the rest of the old read (the
fetcher's batch in flight, the stage's queue), held without another seek; a new read
that comes back without the hole is sought back once more. Seeking again on every held
record, as the first version did, restarted the fetch thousands of times while a full
queue drained and counted each record as a read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class HasOffset(Protocol):
    offset: int


@dataclass
class Admission:
    process: list[int] = field(default_factory=list)  # indexes to process now, in order
    already: list[int] = field(default_factory=list)  # seen before: ack, do not process
    hold: list[int] = field(default_factory=list)  # after a hole: neither process nor ack
    seek_to: int | None = None  # re-read the partition from here
    accepted: list[tuple[int, int]] = field(default_factory=list)  # (first, last) given up on

    @property
    def accepted_gap(self) -> int:
        return sum(last - first + 1 for first, last in self.accepted)


@dataclass
class Hole:
    """An open hole: when it was first seen, reads that came back without it, last seek."""

    since: float
    reads: int = 1
    sought_in: int = -1  # the read it was last sought back in
    sought_at: float = 0.0


class OffsetGuard:
    """Per key (a partition): the next offset expected, and holes waiting to be filled."""

    def __init__(
        self,
        patience: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        reads: int = 4,
    ) -> None:
        self.patience = patience
        self.clock = clock
        self.reads = reads  # reads past a hole, each after a seek back, before accepting it
        self.expected: dict[Hashable, int] = {}
        self.holes: dict[tuple[Hashable, int], Hole] = {}  # (key, offset) -> its record
        self.last: dict[Hashable, int] = {}  # the offset of the last record seen
        self.read: dict[Hashable, int] = {}  # reads started: offsets went back or repeated

    def forget(self, keys: Iterable[Hashable] | None = None) -> None:
        """After a rebalance the stream restarts from committed offsets."""
        if keys is None:
            for state in (self.expected, self.holes, self.last, self.read):
                state.clear()
            return
        for key in keys:
            self.expected.pop(key, None)
            self.last.pop(key, None)
            self.read.pop(key, None)
        for hole in [h for h in self.holes if h[0] not in self.expected]:
            del self.holes[hole]

    def waiting(self, key: Hashable) -> bool:
        """Whether a hole of ``key`` is open (its read offset pinned)."""
        return any(hole[0] == key for hole in self.holes)

    def knows(self, key: Hashable) -> bool:
        return key in self.expected

    def start(self, key: Hashable, offset: int) -> None:
        """The first offset to expect after an assignment: the committed one. Without it a
        hole right at the committed offset would pass unseen (Faust commits past it)."""
        self.expected[key] = offset

    def admit(self, key: Hashable, messages: Sequence[HasOffset]) -> Admission:
        """``messages`` sorted by offset, each once."""
        out = Admission()
        exp = self.expected.get(key)
        for i, m in enumerate(messages):
            self._count_read(key, m.offset)
            if exp is not None and m.offset < exp:
                out.already.append(i)
                continue
            if exp is not None and m.offset > exp:
                hole = (key, exp)
                if self._hold(hole, out):
                    out.hold = list(range(i, len(messages)))
                    self.last[key] = messages[-1].offset
                    break
                del self.holes[hole]
                out.accepted.append((exp, m.offset - 1))
            elif exp is not None:  # the hole, if one was open here, is filled
                self.holes.pop((key, exp), None)
            out.process.append(i)
            exp = m.offset + 1
        if exp is not None:
            self.expected[key] = exp
        return out

    def _count_read(self, key: Hashable, offset: int) -> None:
        last = self.last.get(key)
        if last is not None and offset <= last:
            self.read[key] = self.read.get(key, 0) + 1
        self.last[key] = offset

    def _hold(self, hole: tuple[Hashable, int], out: Admission) -> bool:
        """A record past ``hole``: hold it (True), asking for a seek when one is due, or
        give the hole up (False) after ``reads`` reads and ``patience`` seconds."""
        now, read = self.clock(), self.read.get(hole[0], 0)
        h = self.holes.get(hole)
        if h is None:  # the first read past it
            h = self.holes[hole] = Hole(since=now)
        elif read != h.sought_in:  # a new read, back without the hole
            h.reads += 1
        elif now - h.sought_at < self.patience:
            return True  # the rest of the read sought back: the seek is under way
        if now - h.since >= self.patience and h.reads >= self.reads:
            return False
        h.sought_in, h.sought_at = read, now
        out.seek_to = hole[1]
        return True
