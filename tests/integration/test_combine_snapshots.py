"""A takeover reads the combine changelog from the newest snapshot, on the real broker.

Without snapshots it read every delta of the changelog's seven days: 75 s for one
partition after an hour of the soak, growing with the deployment's age.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import orjson
from confluent_kafka import Producer

from pipeline.runtime.kafka_admin import ensure_topic
from pipeline.runtime.kafka_security import KafkaCluster
from pipeline.settings import Settings
from pipeline.tools.broker import EmbeddedBroker
from tables.snapshots import TAIL_RECORDS, newest_snapshots
from tests.integration.test_metrics import expect_exact_rollups, shop_traffic
from tests.support import Deployment, wait_for


def _group(snap_at: int, records: int, reset: bool = False) -> list[dict[str, object]]:
    """A group of ``records`` combine records; the last carries the progress."""
    group: list[dict[str, object]] = [{"part": [i, records]} for i in range(records)]
    if reset:
        group[0]["reset"] = True
    group[-1].update(applied={"0": 1}, snap_at=snap_at)
    return group


def test_the_newest_snapshot_is_found_behind_a_long_torn_group(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic = "snapshots-found-combine_windows-changelog"
    ensure_topic(broker.bootstrap, topic, 3)
    log: dict[int, list[dict[str, object]]] = {
        # p0: deltas, a snapshot at 3, deltas naming it, a later snapshot at 9 named by
        # the last complete group, then a group cut short, longer than the first look back.
        0: [
            *_group(-1, 1),
            *_group(-1, 2),
            *_group(-1, 3, reset=True),
            *_group(3, 1),
            *_group(3, 2),
            *_group(3, 4, reset=True),
            *_group(9, 1),
            *[{"part": [i, 500]} for i in range(2 * TAIL_RECORDS)],
        ],
        1: [*_group(-1, 2), *_group(-1, 1)],  # no snapshot yet: read from the start
        # p2: empty
    }
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for partition, records in log.items():
        for record in records:
            producer.produce(topic, value=orjson.dumps(record), partition=partition)
    assert producer.flush(10) == 0
    kafka = KafkaCluster.from_settings(Settings(data_dir=tmp_path, broker=broker.url, dev=True))
    assert log[0][9].get("reset")
    assert asyncio.run(newest_snapshots(kafka, topic, [0, 1, 2])) == {0: 9}


def test_a_replacement_recovers_from_snapshots_and_the_rollups_stay_exact(
    deployment: Deployment,
) -> None:
    deployment.env["TRACKFLOW_IDLE_CLOSE_SECONDS"] = "6"
    deployment.env["TRACKFLOW_COMBINE_SNAPSHOT_BYTES"] = "1"  # as often as the rule allows
    deployment.env["TRACKFLOW_LOG_LEVEL"] = "info"  # to see where the recovery starts
    now = int(time.time() * 1000)
    start = now - now % 3_600_000 - 3_600_000 + 40 * 60_000
    events = shop_traffic(2000, start, minutes=30, seed=8)
    chunks = [events[i : i + 200] for i in range(0, len(events), 200)]
    first = deployment.start_worker()
    sent = 0
    for chunk in chunks[:7]:  # one take after another: deltas, then snapshots among them
        deployment.produce([orjson.dumps(chunk[i : i + 10]) for i in range(0, len(chunk), 10)])
        sent += len(chunk)
        wait_for(lambda n=sent: deployment.count("events") == n, timeout=60, what="stored")
    first.kill()
    second = deployment.start_worker()
    for chunk in chunks[7:]:
        deployment.produce([orjson.dumps(chunk[i : i + 10]) for i in range(0, len(chunk), 10)])
    wait_for(lambda: deployment.count("events") == len(events), timeout=180, what="all stored")
    expect_exact_rollups(deployment, start, now)
    found = re.findall(r"recovery starts at the newest snapshots (\{.*\})", second.log_text())
    assert found, "the replacement read the combine changelog from its start"
    starts = {int(k): int(v) for k, v in re.findall(r"(\d+): (\d+)", found[0])}
    assert starts
    assert min(starts.values()) > 0
