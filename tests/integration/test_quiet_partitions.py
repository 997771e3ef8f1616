"""Partitions without traffic stop holding windows open, with two workers; a partition that
wakes up with events of a closed window has them counted late (and stored)."""

from __future__ import annotations

import time

import orjson
from confluent_kafka import Producer

from tests import traffic
from tests.support import Deployment, wait_for

MIN = 60_000


def late_total(deployment: Deployment) -> float:
    return sum(
        v
        for w in deployment.workers
        if w.proc.poll() is None
        for k, v in w.metrics().items()
        if k.startswith("trackflow_late_events_total{") and 'stage="combine"' in k
    )


def test_quiet_partitions_stop_holding_windows_open_with_two_workers(
    deployment: Deployment, broker
) -> None:
    deployment.env["TRACKFLOW_PARTITION_IDLE_SECONDS"] = "4"
    deployment.env["TRACKFLOW_IDLE_CLOSE_SECONDS"] = "900"  # only quietness may close
    workers = [deployment.start_worker() for _ in range(2)]
    deployment.wait_assigned(workers)
    now = int(time.time() * 1000)
    minute = now - now % MIN - 10 * MIN
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    topic = f"{deployment.name}.events.raw"

    def send(partition: int, i: int, t: int) -> None:
        event = traffic.base(i, now, "page_view", event_time=t, anonymous_id=f"d{partition}")
        producer.produce(topic, orjson.dumps(event), partition=partition)

    # Partitions 0 and 1 only: three minutes of page views, so their watermarks pass the
    # first minute's end plus the 60 s lateness; partitions 2 and 3 never get anything.
    # Sent over about 12 s, as live traffic flows: partitions are quiet after 4 s of it.
    i = 0
    for t in range(minute, minute + 3 * MIN, 2_000):
        for p in (0, 1):
            send(p, i, t)
            i += 1
        if t % 12_000 == 0:
            producer.flush()
            time.sleep(0.8)
    producer.flush()

    def first_minute() -> list[dict[str, object]]:
        return deployment.query(
            "SELECT value FROM rollups WHERE metric = 'pv' AND \"window\" = '1m' "
            f"AND epoch_ms(window_start) = {minute}"
        )

    rows = wait_for(first_minute, timeout=120, what="the first minute closed")
    assert rows == [{"value": 60.0}]  # 30 events a partition in that minute

    # Partition 3 wakes up with an event of the closed minute: stored, counted late.
    before = late_total(deployment)
    send(3, i, minute + 30_000)
    producer.flush()
    wait_for(lambda: deployment.count("events") == i + 1, timeout=60, what="the late event")
    wait_for(lambda: late_total(deployment) > before, timeout=60, what="counted late")
    assert first_minute() == [{"value": 60.0}]
