"""A stage's seek back to a hole must survive Faust's fetcher: pinned read offsets.

Found by the sixth hour soak (docs/decisions.md): sink_events gave up on 8 offsets of
events.stitched[2] that aggregate had processed; the group's commit stayed behind them to
the end. Faust's fetcher drops every record at or below its *read offset* of the partition
(``Consumer._drain_messages``), and ``Consumer.seek`` lowers that offset only after the
seek's round trip to the consumer thread. Meanwhile the fetcher goes on handing out the
batch it holds and raises the read offset after each record, or takes the re-read itself
while the read offset is still the old one. Either way the re-read of the hole is dropped
as "already read" (``tests/integration/test_seek_back.py``: every one of 17 seeks in a row
came back without the offset).

So the read offset is a dict that honours *pins*: ``OrderedInput`` pins a partition at the
hole before it seeks, and until the stage releases the pin (the hole filled, given up on,
or the partition revoked) no record can raise the read offset above it. Records past the
pin are still handed out: the stages' guards hold them, or ack copies they processed.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from faust.transport.consumer import Consumer

_PATCHED = "_trackflow_pinned_read_offsets"


class ReadOffsets(dict[Any, int | None]):
    """Faust's ``Consumer._read_offset`` (a ``defaultdict(lambda: None)``) with pins."""

    def __init__(self) -> None:
        super().__init__()
        self.pins: dict[Any, dict[Hashable, int]] = {}  # tp -> stage -> offset

    def __missing__(self, tp: Any) -> None:
        return None

    def ceiling(self, tp: Any) -> int | None:
        pins = self.pins.get(tp)
        return min(pins.values()) if pins else None

    def __setitem__(self, tp: Any, offset: int | None) -> None:
        ceiling = self.ceiling(tp)
        if ceiling is not None and offset is not None and offset > ceiling:
            offset = ceiling
        super().__setitem__(tp, offset)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for tp, offset in dict(*args, **kwargs).items():
            self[tp] = offset

    def pop(self, tp: Any, *default: Any) -> Any:
        self.pins.pop(tp, None)  # revoked: the pins of an old assignment are void
        return super().pop(tp, *default)

    def pin(self, stage: Hashable, tp: Any, offset: int) -> None:
        self.pins.setdefault(tp, {})[stage] = offset
        current = self[tp]
        self[tp] = offset if current is None else min(current, offset)

    def release(self, stage: Hashable, tp: Any) -> None:
        pins = self.pins.get(tp)
        if pins is not None:
            pins.pop(stage, None)
            if not pins:
                del self.pins[tp]


def _offsets(consumer: Any) -> ReadOffsets | None:
    offsets = getattr(consumer, "_read_offset", None)
    return offsets if isinstance(offsets, ReadOffsets) else None


def pin(consumer: Any, stage: Hashable, tp: Any, offset: int) -> None:
    """Before a seek back to ``offset``: no record may raise the read offset past it."""
    offsets = _offsets(consumer)
    if offsets is not None:
        offsets.pin(stage, tp, offset)


def release(consumer: Any, stage: Hashable, tp: Any) -> None:
    offsets = _offsets(consumer)
    if offsets is not None:
        offsets.release(stage, tp)


async def skip(consumer: Any, tp: Any, first: int, last: int) -> None:
    """Offsets a stage gave up on count as done for the commit, as Faust counts offsets it
    never received: otherwise a copy another stage took keeps the commit behind them for
    good, and with it the group's lag and the idle close of windows."""
    add_gap = getattr(consumer, "_add_gap", None)
    if add_gap is not None:
        await add_gap(tp, first, last)


def install() -> None:
    """Give every Faust consumer pinned read offsets (idempotent, once per process)."""
    original = Consumer.__init__
    if getattr(original, _PATCHED, False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._read_offset = ReadOffsets()

    setattr(__init__, _PATCHED, True)
    Consumer.__init__ = __init__  # type: ignore[method-assign]
