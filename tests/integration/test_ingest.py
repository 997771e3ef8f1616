"""validate + sink through the real broker, a real worker process and the lake."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from pipeline.contract.plan import load_plan
from pipeline.tools.produce import RawProducer
from tests import traffic
from tests.support import Deployment, wait_for


def expect_exact(dep: Deployment, t: traffic.Traffic) -> None:
    ids = [r["event_id"] for r in dep.query("SELECT event_id FROM events")]
    assert len(ids) == len(set(ids)), "an event is stored twice"
    assert set(ids) == t.valid
    codes = Counter(r["error_code"] for r in dep.query("SELECT error_code FROM dlq"))
    assert codes == Counter(code for code, _ in t.rejected)


def test_mixed_traffic_lands_exactly_once(deployment: Deployment) -> None:
    t = traffic.build(400)
    worker = deployment.start_worker()
    deployment.produce(t.lines)
    total = len(t.valid) + len(t.rejected)
    deployment.wait_settled(lambda: deployment.count("events") + deployment.count("dlq") == total)
    expect_exact(deployment, t)
    m = worker.metrics()
    assert m["trackflow_duplicates_total"] == t.duplicates
    assert m["trackflow_consent_dropped_total"] == t.consent_dropped
    assert m["trackflow_events_stored_total"] == len(t.valid)
    assert m['trackflow_dlq_events_total{error_code="unknown_event"}'] == 1
    assert m['trackflow_lake_files_written_total{table="events"}'] >= 1
    # No clear phone anywhere in the lake, in any spelling.
    blob = deployment.lake_bytes()
    assert traffic.PHONE.encode() not in blob
    assert b"139 1234 5678" not in blob


def test_dlq_rows_carry_failure_payload_source_and_processor(deployment: Deployment) -> None:
    t = traffic.build(20)
    deployment.start_worker()
    deployment.produce(t.lines)
    deployment.wait_settled(lambda: deployment.count("dlq") == len(t.rejected))
    rows = deployment.query(
        "SELECT * FROM dlq ORDER BY source_partition, source_offset, source_index"
    )
    by_id = {r["event_id"]: r for r in rows if r["event_id"]}
    unknown = by_id[f"ev-{700_005}"]
    assert unknown["error_code"] == "unknown_event"
    assert unknown["error_detail"] == "event_name is not in the tracking plan"
    assert unknown["event_name"] == "page_vue"  # a name, so kept in its own column
    assert unknown["payload_truncated"] is False
    assert orjson.loads(unknown["payload"])["event_name"] == "page_vue"
    assert unknown["source_topic"] == "events.raw"
    assert unknown["processor_name"] == "trackflow"
    assert unknown["processor_version"]
    assert unknown["received_at"]
    assert unknown["failed_at"]
    missing = by_id[f"ev-{700_003}"]
    assert "properties.price" in missing["error_detail"]
    truncated = [r for r in rows if r["payload"].startswith('{"event_id": "trunc-')]
    assert len(truncated) == 1
    assert "not valid JSON" in truncated[0]["error_detail"]
    # The same records are on the events.dlq topic for other consumers.
    consumer = Consumer(
        {
            "bootstrap.servers": deployment.env["TRACKFLOW_BROKER"].split("://")[1],
            "group.id": f"{deployment.name}-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([f"{deployment.name}.events.dlq"])
    seen: list[dict] = []
    deadline = time.monotonic() + 30
    while len(seen) < len(t.rejected) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            seen.extend(orjson.loads(msg.value())["records"])
    consumer.close()
    assert Counter(r["error_code"] for r in seen) == Counter(c for c, _ in t.rejected)


def test_avro_single_object_input(deployment: Deployment, broker) -> None:
    plan = load_plan()
    now = int(time.time() * 1000)
    messages = traffic.avro_events(plan, 30, now)
    deployment.start_worker()
    producer = RawProducer(broker.bootstrap, f"{deployment.name}.events.raw")
    for _, value in messages:
        producer.send(b"dev", value)
    producer.send(b"dev", messages[0][1][:-3])  # truncated Avro body
    producer.flush()
    deployment.wait_settled(
        lambda: deployment.count("events") == 30 and deployment.count("dlq") == 1
    )
    rows = deployment.query("SELECT event_id, amount, app_version FROM events ORDER BY event_id")
    assert {r["event_id"] for r in rows} == {eid for eid, _ in messages}
    assert all(r["amount"] == 12.3 and r["app_version"] == "1.2.3" for r in rows)
    assert deployment.query("SELECT error_code FROM dlq")[0]["error_code"] == "malformed_payload"


def test_dedup_survives_worker_restart(deployment: Deployment) -> None:
    t = traffic.build(60)
    worker = deployment.start_worker()
    deployment.produce(t.lines)
    total = len(t.valid) + len(t.rejected)
    deployment.wait_settled(lambda: deployment.count("events") + deployment.count("dlq") == total)
    worker.stop()
    # SDK retries of everything, arriving after the restart: nothing new may be stored.
    second = deployment.start_worker()
    deployment.produce(t.lines)
    wait_for(
        lambda: second.metric("trackflow_events_received_total") >= len(t.lines),
        what="retries consumed",
    )
    deployment.wait_settled(lambda: deployment.count("events") == len(t.valid))
    assert deployment.count("dlq") == len(t.rejected)
    assert second.metric("trackflow_duplicates_total") >= len(t.valid)


@pytest.mark.parametrize("workers", [2])
def test_workers_share_the_work_and_agree_with_one(deployment: Deployment, workers: int) -> None:
    t = traffic.build(600)
    started = [deployment.start_worker() for _ in range(workers)]
    deployment.wait_assigned(started)  # else the first worker may do it all alone
    deployment.produce(t.lines)
    total = len(t.valid) + len(t.rejected)
    try:
        deployment.wait_settled(
            lambda: deployment.count("events") + deployment.count("dlq") == total, timeout=120
        )
    except AssertionError as exc:
        # Seen once under a loaded full run: two partitions never reached the lake and the
        # logs were empty. Say what each worker saw, so the next occurrence can be diagnosed.
        seen = {
            w.web_port: {
                k: v
                for k, v in w.metrics().items()
                if k.startswith(("trackflow_events_received_total", "trackflow_consumer_lag"))
            }
            for w in started
        }
        stacks = "".join(stack_dump(w) for w in started)
        raise AssertionError(
            f"{exc}; stored {deployment.count('events')} events, "
            f"{deployment.count('dlq')} dlq of {total}; workers: {seen}{stacks}"
        ) from None
    expect_exact(deployment, t)
    busy = [w.metric("trackflow_events_received_total") for w in started]
    assert all(n > 0 for n in busy), f"a worker got no partitions: {busy}"


def test_input_produced_while_the_group_forms_is_all_read(deployment: Deployment) -> None:
    """The silent stall of issue 13: records fetched while the group formed were dropped by
    Faust and, with nothing committed, never sought back to. Before the fix 2 runs of 9 of
    this under load left a worker owning unread partitions (docs/decisions.md)."""
    t = traffic.build(600)
    total = len(t.valid) + len(t.rejected)
    started = [deployment.start_worker() for _ in range(2)]
    deployment.produce(t.lines)  # at once: the group is still forming
    try:
        deployment.wait_settled(
            lambda: deployment.count("events") + deployment.count("dlq") == total, timeout=120
        )
    except AssertionError as exc:
        stalls = [
            line for w in started for line in w.log_text().splitlines() if "nothing read" in line
        ]
        raise AssertionError(f"{exc}; stall reports: {stalls[:4]}") from None
    expect_exact(deployment, t)
    stalls = [
        v for w in started for k, v in w.metrics().items() if k.startswith("trackflow_input_stalls")
    ]
    assert sum(stalls) == 0, stalls


def stack_dump(worker: Any) -> str:
    """Where a stuck worker's asyncio tasks wait (SIGUSR1 makes it log them)."""
    import signal
    import time

    before = len(worker.log_text())
    worker.proc.send_signal(signal.SIGUSR1)
    time.sleep(2)
    return f"\n--- tasks of worker {worker.proc.pid} ---\n{worker.log_text()[before:][-30000:]}"
