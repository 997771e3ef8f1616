"""`trackflow produce` on the shared broker: the messages it sends, its report, its exit codes."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson
from confluent_kafka import Consumer, TopicPartition

from pipeline.tools.produce import MAX_MESSAGE_BYTES, content_key, split_line
from tests.support import Deployment


def read_topic(deployment: Deployment, topic: str, expected: int) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of every message of ``topic``, in offset order per partition."""
    consumer = Consumer(
        {
            "bootstrap.servers": deployment.env["TRACKFLOW_BROKER"].split("://")[1],
            "group.id": f"{deployment.name}-reader",
            "enable.auto.commit": False,
        }
    )
    out: list[tuple[int, bytes, bytes]] = []
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        empty_polls = 0
        while len(out) < expected or empty_polls < 2:  # and nothing more after that
            batch = consumer.consume(1000, 1.0)
            empty_polls = 0 if batch else empty_polls + 1
            if empty_polls > 10:
                break
            for msg in batch:
                assert msg.error() is None, msg.error()
                partition, key, value = msg.partition(), msg.key(), msg.value()
                assert partition is not None
                assert key is not None
                assert value is not None
                out.append((partition, key, value))
    finally:
        consumer.close()
    return out


def event(i: int, **ids: str) -> dict[str, object]:
    return {"event_id": f"p{i}", "event_name": "page_view", "platform": "web", **ids}


LINES = [
    orjson.dumps(event(1, anonymous_id="d1")),
    orjson.dumps(event(2, user_id="u1")),
    orjson.dumps(event(3)),
    b"not json",
    orjson.dumps([event(4, anonymous_id="d2"), event(5, anonymous_id="d2")]),
    orjson.dumps(
        [event(6, anonymous_id="d1"), event(7, user_id="u1"), event(8, anonymous_id="d1")]
    ),
    *(orjson.dumps(event(i, anonymous_id=f"d{i % 7}")) for i in range(10, 400)),
]


def expected_by_key(lines: list[bytes]) -> dict[bytes, list[bytes]]:
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for line in lines:
        for key, value in split_line(line):
            by_key[key].append(value)
    return by_key


def check_topic(deployment: Deployment, topic: str, lines: list[bytes]) -> None:
    expected = expected_by_key(lines)
    got = read_topic(deployment, topic, sum(len(v) for v in expected.values()))
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for partition, key, value in got:
        by_key[key].append(value)
        partition_of[key].add(partition)
    assert by_key == expected  # the same messages, each key's in the order of the file
    assert all(len(p) == 1 for p in partition_of.values()), "a key on two partitions"


def test_produce_file_sends_each_line_keyed_and_split(
    tmp_path: Path, deployment: Deployment
) -> None:
    # CRLF line ends, blank and whitespace-only lines, no newline at the end.
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\r\n".join(LINES[:3]) + b"\r\n\r\n  \n" + b"\n".join(LINES[3:]))
    proc = deployment.run("produce", str(path))
    topic = f"{deployment.name}.events.raw"
    messages = sum(len(v) for v in expected_by_key(LINES).values())
    size = sum(len(value) for line in LINES for _, value in split_line(line))
    assert proc.stderr.decode().strip() == f"sent {messages} messages ({size} bytes) to {topic}"
    check_topic(deployment, topic, LINES)
    keys = expected_by_key(LINES)
    assert {b"d1", b"u1", content_key(b"not json"), content_key(LINES[2])} <= set(keys)


def test_produce_stdin_to_another_topic(deployment: Deployment) -> None:
    proc = deployment.run("produce", "-", "--topic", "replay", input=b"\n".join(LINES) + b"\n")
    assert proc.returncode == 0
    check_topic(deployment, f"{deployment.name}.replay", LINES)


def test_produce_reports_messages_over_the_limit_and_exits_1(
    tmp_path: Path, deployment: Deployment
) -> None:
    big = orjson.dumps(event(0, anonymous_id="d1") | {"pad": "x" * MAX_MESSAGE_BYTES})
    lines = [LINES[0], big, LINES[1]]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    proc = deployment.run("produce", str(path), check=False)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "sent 2 messages" in err
    assert f"error: message of {len(big)} bytes is over the broker limit" in err
    assert "1 messages failed" in err
    check_topic(deployment, f"{deployment.name}.events.raw", [LINES[0], LINES[1]])
