"""pipeline.runtime.partition_age: Faust's livelock check on a partition assigned late.

The eighth soak's survivor, on Faust's own ``AIOKafkaConsumerThread.verify_event_path``:
up 10.6 minutes, handed partitions at a takeover, each with a backlog and no event yet.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from pipeline.runtime import partition_age

TAKEN = TP("t.events.raw", 3)
TIMEOUT = 300.0  # Faust's stream_processing_timeout


def _thread(worker_started: float, inbound: dict[TP, float] | None = None) -> Any:
    """The parts of a consumer thread Faust's check reads; records what it logs."""
    logged: list[str] = []
    state = SimpleNamespace(highwater=5_000, position=1_200)  # a backlog waiting
    assignment = SimpleNamespace(state_value=lambda tp: state)
    fetcher = SimpleNamespace(
        _subscriptions=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
    )
    app = SimpleNamespace(
        monitor=SimpleNamespace(stream_inbound_time=inbound or {}),
        topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
    )
    thread = SimpleNamespace(
        time_started=worker_started,
        tp_stream_timeout_secs=TIMEOUT,
        tp_commit_timeout_secs=TIMEOUT,
        consumer=SimpleNamespace(app=app),
        logged=logged,
        _verify_aiokafka_event_path=lambda now, tp: False,  # fetching is fine
        _ensure_consumer=lambda: SimpleNamespace(_fetcher=fetcher),
        _log_slow_processing_stream=lambda msg, *args: logged.append(msg % args),
        _log_slow_processing_commit=lambda msg, *args: logged.append(msg % args),
    )
    return thread


def _verify(thread: Any, now: float, tp: TP = TAKEN) -> list[str]:
    partition_age.install()
    AIOKafkaConsumerThread.verify_event_path(thread, now, tp)
    return list(thread.logged)


def test_faust_alone_reports_a_partition_taken_over_moments_ago() -> None:
    """Documents the upstream behaviour the patch exists for (fails once Faust fixes it)."""
    partition_age.install()
    original = AIOKafkaConsumerThread.verify_event_path.original  # type: ignore[attr-defined]
    thread = _thread(worker_started=0.0)
    partition_age.note_assigned(thread, [TAKEN], 630.0)
    original(thread, 636.0, TAKEN)
    assert thread.logged
    assert "has not started processing" in thread.logged[0]


def test_a_partition_taken_over_moments_ago_is_not_reported() -> None:
    thread = _thread(worker_started=0.0)
    partition_age.note_assigned(thread, [TAKEN], 630.0)
    assert _verify(thread, 636.0) == []
    assert thread.time_started == 0.0  # the worker's own start is left as it was


def test_a_partition_that_reads_nothing_is_still_reported_after_the_timeout() -> None:
    thread = _thread(worker_started=0.0)
    partition_age.note_assigned(thread, [TAKEN], 630.0)
    logged = _verify(thread, 630.0 + TIMEOUT + 1)
    assert len(logged) == 1
    assert "has not started processing" in logged[0]
    assert "(started 5.02 minutes ago)" in logged[0]  # counted from the assignment, not the start


def test_a_partition_held_since_start_is_checked_as_before() -> None:
    thread = _thread(worker_started=0.0)
    logged = _verify(thread, TIMEOUT + 1)
    assert len(logged) == 1
    assert "has not started processing" in logged[0]


def test_a_stream_that_stopped_is_reported_whatever_the_assignment() -> None:
    thread = _thread(worker_started=0.0, inbound={TAKEN: 100.0})
    partition_age.note_assigned(thread, [TAKEN], 630.0)
    logged = _verify(thread, 640.0)
    assert len(logged) == 1
    assert "stopped processing" in logged[0]


def test_assignment_is_noted_before_faust_handles_it() -> None:
    partition_age.install()
    handled: list[Any] = []

    async def threadsafe_partitions_assigned(loop: Any, assigned: Any, generation: int) -> None:
        handled.append((set(assigned), generation, dict(partition_age.assigned_at(thread))))

    consumer = SimpleNamespace(threadsafe_partitions_assigned=threadsafe_partitions_assigned)
    thread = SimpleNamespace(consumer=consumer, thread_loop=None)
    asyncio.run(AIOKafkaConsumerThread.on_partitions_assigned(thread, {TAKEN}, 7))
    assert handled
    assert handled[0][:2] == ({TAKEN}, 7)
    assert TAKEN in handled[0][2]


def test_a_partition_taken_over_and_processing_is_not_reported_for_no_commit_yet() -> None:
    thread = _thread(worker_started=0.0, inbound={TAKEN: 635.0})
    partition_age.note_assigned(thread, [TAKEN], 630.0)
    thread.tp_last_committed_at = {}
    assert _verify(thread, 636.0) == []
    thread.logged.clear()
    logged = _verify(thread, 630.0 + TIMEOUT + 1)  # processing, but nothing committed since
    assert len(logged) == 1
    assert "Has not committed" in logged[0]


def _recovering_thread(worker_started: float) -> Any:
    """A consumer thread in recovery: a changelog partition assigned, no fetch sent yet."""
    logged: list[str] = []
    assignment = SimpleNamespace(
        active=True, state_value=lambda tp: SimpleNamespace(timestamp=None)
    )
    fetcher = SimpleNamespace(
        _subscriptions=SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
    )
    thread = SimpleNamespace(
        time_started=worker_started,
        tp_fetch_request_timeout_secs=TIMEOUT,
        log=SimpleNamespace(error=lambda msg, *args: logged.append(msg % args)),
        logged=logged,
        _ensure_consumer=lambda: SimpleNamespace(_fetcher=fetcher),
    )
    thread._verify_aiokafka_event_path = lambda now, tp: (
        AIOKafkaConsumerThread._verify_aiokafka_event_path(thread, now, tp)
    )
    return thread


def test_a_changelog_partition_assigned_moments_ago_is_not_reported_in_recovery() -> None:
    partition_age.install()
    changelog = TP("t-identity_map-changelog", 0)
    original = AIOKafkaConsumerThread.verify_recovery_event_path.original  # type: ignore[attr-defined]
    alone = _recovering_thread(worker_started=0.0)
    original(alone, 612.0, changelog)
    assert len(alone.logged) == 1
    assert "has not sent fetch request" in alone.logged[0]

    thread = _recovering_thread(worker_started=0.0)
    partition_age.note_assigned(thread, [changelog], 610.0)
    AIOKafkaConsumerThread.verify_recovery_event_path(thread, 612.0, changelog)
    assert thread.logged == []
    AIOKafkaConsumerThread.verify_recovery_event_path(thread, 610.0 + TIMEOUT + 1, changelog)
    assert len(thread.logged) == 1
