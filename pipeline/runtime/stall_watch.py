"""Finds input partitions this worker owns, with messages waiting, that it stopped reading.

A worker that owns partitions and reads nothing is silent: no error, an idle event loop,
only a lag that does not move. Every ``interval`` the watch compares the read offset of
each assigned partition an agent reads with its log end; a partition with unread messages
whose read offset has not moved for ``stall_seconds`` (outside rebalances) is reported once
per episode: counted (``trackflow_input_stalls_total``) and logged at WARNING with the consumer
state Faust keeps for it, which says why it is not fetched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.runtime.streams import agent_input_topics

log = logging.getLogger(__name__)

STALL_SECONDS = 30.0


@dataclass
class _Seen:
    read: int | None
    since: float
    reported: bool = False


@dataclass(frozen=True)
class Stall:
    tp: Any
    read: int | None
    end: int
    seconds: float
    state: dict[str, Any]


class StallWatch:
    def __init__(
        self, stall_seconds: float = STALL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stall_seconds = stall_seconds
        self.clock = clock
        self._seen: dict[Any, _Seen] = {}

    def check(self, app: Any) -> list[Stall]:
        """New stalls since the last check (each reported once until it reads again)."""
        now = self.clock()
        if app.rebalancing:
            self._seen.clear()  # a rebalance moves partitions: start over afterwards
            return []
        consumer = app.consumer
        try:
            assignment = set(consumer.assignment())
        except Exception:  # not assigned yet
            return []
        read_offsets = getattr(consumer, "_read_offset", {})
        inputs = agent_input_topics(app)
        found = []
        for tp in assignment:
            if tp.topic not in inputs:
                continue  # changelogs (read by recovery), the assignor's topic
            end = consumer.highwater(tp)
            read = read_offsets.get(tp)
            seen = self._seen.get(tp)
            if seen is None or seen.read != read:
                self._seen[tp] = _Seen(read, now)
                continue
            waiting = end is not None and end - 1 > (read if read is not None else -1)
            if not waiting:
                seen.since = now
                continue
            if not seen.reported and now - seen.since >= self.stall_seconds:
                seen.reported = True
                found.append(Stall(tp, read, end, now - seen.since, consumer_state(app, tp)))
        for tp in set(self._seen) - assignment:
            del self._seen[tp]
        return found


def consumer_state(app: Any, tp: Any) -> dict[str, Any]:
    """What Faust holds about ``tp``: which of its sets keep it from being fetched."""
    consumer = app.consumer

    def has(name: str) -> bool | None:
        value = getattr(consumer, name, None)
        return None if value is None else tp in value

    state: dict[str, Any] = {
        "active": has("_active_partitions"),
        "paused": has("_paused_partitions"),
        "buffer_full": has("_buffered_partitions"),
        "committed": getattr(consumer, "_committed_offset", {}).get(tp),
        "flow_active": _call(getattr(app, "flow_control", None), "is_active"),
        "in_recovery": getattr(app, "in_recovery", None),
        "recovery_completed": _call(
            getattr(getattr(getattr(app, "tables", None), "recovery", None), "completed", None),
            "is_set",
        ),
    }
    try:
        kafka = consumer._thread._ensure_consumer()
        state["kafka_paused"] = tp in {(p.topic, p.partition) for p in kafka.paused()}
        state["kafka_position"] = kafka._subscription.subscription.assignment.state_value(
            tp
        ).position
    except Exception as exc:  # the client's internals moved: say so, keep the rest
        state["kafka"] = f"unavailable: {type(exc).__name__}"
    return state


def _call(obj: Any, method: str) -> Any:
    try:
        return getattr(obj, method)()
    except Exception:
        return None


def report(stalls: list[Stall], metrics: Any) -> None:
    for s in stalls:
        metrics.input_stalls.labels(s.tp.topic).inc()
        log.warning(
            "%s[%s]: %s messages waiting and nothing read for %.0f s (read offset %s, end %s);"
            " consumer state: %s",
            s.tp.topic,
            s.tp.partition,
            s.end - 1 - (s.read if s.read is not None else -1),
            s.seconds,
            s.read,
            s.end,
            s.state,
        )
