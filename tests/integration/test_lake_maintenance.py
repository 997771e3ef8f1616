"""The worker's scheduled lake maintenance, then a crash and a replay of the sink's input.

Compaction merges the sink's files while it keeps writing. Then the worker is killed and
all of events.stitched is read again through the sink's decoder and lake writer (what a
restarted sink does with the messages after its last offset commit; here every message,
now stored in merged files). Nothing may be stored twice.

(The embedded broker keeps a SIGKILLed member in the group for ever, so the group's
offsets cannot be moved back for a restarted worker to do the re-reading itself.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import orjson
from confluent_kafka import Consumer, TopicPartition

from pipeline.contract.plan import load_plan
from pipeline.lake.maintain import read_state
from pipeline.names import LAKE_EVENTS, TOPIC_RAW, TOPIC_STITCHED
from pipeline.runtime import wire
from pipeline.runtime.context import lake_writers
from tests import traffic
from tests.support import Deployment, wait_for
from tests.unit.lake.lakes import Lake, days_ago

T = TypeVar("T")
PARTITIONS = 4
FOREIGN = 9  # a source partition the deployment does not have: the hand-written old rows


def replay_sink_input(deployment: Deployment) -> int:
    """Feed every message of events.stitched, from offset 0, through the events sink's
    decoding and lake writer, as a sink restarted after a crash does with what it had not
    committed (here: everything). Returns how many rows the writer took as new."""
    topic = deployment.env["TRACKFLOW_TOPIC_PREFIX"] + TOPIC_STITCHED
    consumer = Consumer(
        {
            "bootstrap.servers": deployment.env["TRACKFLOW_BROKER"].split("://")[1],
            "group.id": f"{deployment.name}-replay",
            "enable.auto.commit": False,
        }
    )
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p))[1] for p in range(4)}
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    writer = lake_writers(deployment.data_dir / "lake", load_plan())[LAKE_EVENTS]
    taken, read = 0, dict.fromkeys(range(PARTITIONS), 0)

    def drained() -> bool:
        nonlocal taken
        for m in consumer.consume(500, timeout=1):
            if m.error() is None:
                taken += writer.add(TOPIC_RAW, m.partition(), wire.decode_events(m.value()))
                read[m.partition()] = m.offset() + 1
        return all(read[p] >= ends[p] for p in range(PARTITIONS))

    try:
        wait_for(drained, timeout=60, interval=0, what=f"{topic} read again")
    finally:
        consumer.close()
    for p in range(PARTITIONS):
        writer.flush(TOPIC_RAW, p)
    assert sum(ends.values()) > 0
    return taken


def read(what: Callable[[], T]) -> T:
    """``what()``, retried when a query failed on a file a compaction deleted just after
    DuckDB listed it (maintenance runs every 2 s here; a rerun reads the merged file)."""
    return wait_for(lambda: (what(),), timeout=30, what="a query")[0]


def exact(deployment: Deployment, valid: set[str]) -> None:
    wait_for(lambda: read(lambda: deployment.count("events")) == len(valid), timeout=180)
    time.sleep(4)
    assert read(lambda: deployment.count("events")) == len(valid)
    rows = read(lambda: deployment.query("SELECT event_id FROM events"))
    ids = [r["event_id"] for r in rows]
    assert len(ids) == len(set(ids)), "an event is stored twice"
    assert set(ids) == valid


def test_scheduled_compaction_then_a_crash_replay_stores_nothing_twice(
    deployment: Deployment,
) -> None:
    env = deployment.env
    env["TRACKFLOW_LAKE_MAINTAIN_SECONDS"] = "2"
    env["TRACKFLOW_LAKE_STATS_SECONDS"] = "1"
    env["TRACKFLOW_SINK_FLUSH_SECONDS"] = "0.2"  # many small files
    # Rows already past retention, written as the sink would (another source partition).
    old = Lake(deployment.data_dir)
    old.events(5, day=days_ago(120), partition=FOREIGN)
    old.dead_letters(2, day=days_ago(40), partition=FOREIGN)

    first = traffic.build(300)
    worker = deployment.start_worker()
    for k in range(4):  # one flush each, so several files per partition directory
        stored = read(lambda: deployment.count("events"))
        deployment.produce(first.lines[k::4])
        wait_for(lambda n=stored: read(lambda: deployment.count("events")) > n)
    exact(deployment, first.valid)  # the old rows went too: dropped by retention

    def compacted() -> float:
        return worker.metric('trackflow_lake_compacted_files_total{table="events"}')

    wait_for(compacted, timeout=60, what="the worker's scheduled compaction")
    metrics = worker.metrics()
    assert metrics['trackflow_lake_maintenance_runs_total{outcome="ok"}'] >= 1
    assert metrics['trackflow_lake_maintenance_runs_total{outcome="failed"}'] == 0
    assert metrics['trackflow_lake_retention_deleted_rows_total{table="events"}'] == 5
    assert metrics['trackflow_lake_retention_deleted_rows_total{table="dlq"}'] == 2
    assert read_state(deployment.data_dir / "lake")["last_success"] > 0
    assert read(lambda: deployment.count("dlq", "source_partition = 9")) == 0

    worker.kill()
    assert replay_sink_input(deployment) == 0  # every row is at or below a checkpoint
    exact(deployment, first.valid)
    stats = orjson.loads(deployment.run("lake", "stats", "--format", "json").stdout)
    events = next(s for s in stats if s["table"] == "events")
    assert events["rows"] == len(first.valid)
