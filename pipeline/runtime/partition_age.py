"""Faust's "has not started processing" must count from the partition's assignment.

Found by the eighth hour soak: right after a takeover's recovery the surviving worker
logged eight ERRORs, one per partition it had just been given ("Stream has not started
processing TP(topic='soak.events.raw', partition=3) (started 10.63 minutes ago)"), each
with Faust's page of possible causes. Faust's livelock check
(``AIOKafkaConsumerThread.verify_event_path``) asks whether a partition with messages
waiting has had an event since *the worker* started, so any partition assigned later than
``stream_processing_timeout`` after start is reported the moment it has a backlog. These
were false alarms: every partition was read within seconds. The check now counts from when
the partition was last assigned to this worker; a partition that really reads nothing is
still reported once that long has passed, and ``stall_watch`` reports it sooner. The same
soak showed the other checks of that family firing for the same reason on a replacement
("Has not committed ... at all since worker start", and "Aiokafka has not sent fetch
request for ... since start" from the recovery's check of a changelog partition): both
read the same start time, so both count from the assignment too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

_PATCHED = "_trackflow_counts_from_assignment"
_ASSIGNED = "_trackflow_assigned_at"


def assigned_at(thread: Any) -> dict[Any, float]:
    """Monotonic time each partition was last assigned to this consumer thread."""
    found: dict[Any, float] | None = thread.__dict__.get(_ASSIGNED)
    if found is None:
        found = thread.__dict__[_ASSIGNED] = {}
    return found


def note_assigned(thread: Any, tps: Iterable[Any], now: float) -> None:
    times = assigned_at(thread)
    for tp in tps:
        times[tp] = now


def _from_assignment(check: Callable[[Any, float, Any], None]) -> Callable[..., None]:
    """``check`` run with the thread's start moved to the partition's assignment."""

    def counted_from_assignment(self: Any, now: float, tp: Any) -> None:
        started = self.time_started
        self.time_started = max(started, assigned_at(self).get(tp, started))
        try:
            check(self, now, tp)
        finally:
            self.time_started = started

    setattr(counted_from_assignment, _PATCHED, True)
    counted_from_assignment.original = check  # type: ignore[attr-defined]
    return counted_from_assignment


def install() -> None:
    """Patch the consumer thread once per process (idempotent)."""
    if getattr(AIOKafkaConsumerThread.verify_event_path, _PATCHED, False):
        return
    on_assigned = AIOKafkaConsumerThread.on_partitions_assigned

    async def on_partitions_assigned(self: Any, assigned: Any, generation: int) -> None:
        note_assigned(self, assigned, time.monotonic())
        await on_assigned(self, assigned, generation)

    setattr(on_partitions_assigned, _PATCHED, True)
    on_partitions_assigned.original = on_assigned  # type: ignore[attr-defined]
    thread = AIOKafkaConsumerThread
    thread.on_partitions_assigned = on_partitions_assigned  # type: ignore[assignment,method-assign]
    thread.verify_event_path = _from_assignment(thread.verify_event_path)  # type: ignore[method-assign]
    thread.verify_recovery_event_path = _from_assignment(  # type: ignore[method-assign]
        thread.verify_recovery_event_path
    )
