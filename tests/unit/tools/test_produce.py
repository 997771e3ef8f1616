"""pipeline.tools.produce: line reading, the inlined send path and delivery failures.

The fast paths are checked against the straightforward code they replaced (kept here as
references): the same lines, the same (key, value) messages in the same order, the same
counts.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from pipeline.tools import produce
from pipeline.tools.broker import free_port
from pipeline.tools.produce import (
    MAX_MESSAGE_BYTES,
    RawProducer,
    content_key,
    produce_lines,
    read_lines,
    split_line,
)


def reference_read_lines(stream: io.BytesIO) -> Iterator[bytes]:
    for raw in stream:
        line = raw.rstrip(b"\r\n")
        if line.strip():
            yield line


TRICKY_INPUTS = [
    b"",
    b"\n\n\n",
    b'{"a":1}',
    b'{"a":1}\n',
    b'{"a":1}\r\n{"b":2}\r\n',
    b'{"a":1}\r\r\n  \n\t\n\x0c\n{"b":2}',
    b"a\rb\nc\r",
    b"\r\n\r\n x \r\n",
    b"no newline at the end\r",
    b"first\n" + b"x" * 1000 + b"\nlast",
    b"\r" * 7 + b"\n" + b"y\r\r",
]


@pytest.mark.parametrize("data", TRICKY_INPUTS)
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, produce.READ_CHUNK])
def test_read_lines_splits_like_line_iteration(data: bytes, chunk: int) -> None:
    assert list(read_lines(io.BytesIO(data), chunk)) == list(reference_read_lines(io.BytesIO(data)))


def test_read_lines_yields_a_line_from_a_pipe_before_eof() -> None:
    """stdin streams: a complete line goes out without waiting for more input."""
    r, w = os.pipe()
    got: list[bytes] = []
    with os.fdopen(r, "rb") as stream, os.fdopen(w, "wb", buffering=0) as writer:
        writer.write(b'{"anonymous_id": "d1"}\n{"anonym')
        reader = threading.Thread(target=lambda: got.append(next(read_lines(stream))))
        reader.start()
        reader.join(5)
        assert got == [b'{"anonymous_id": "d1"}']
        writer.close()


class FakeKafka:
    """The confluent_kafka.Producer calls RawProducer makes; records what is produced."""

    def __init__(self, full_for: int = 0) -> None:
        self.produced: list[tuple[str, bytes, bytes | None]] = []
        self.polls: list[float] = []
        self.full_for = full_for  # produce() calls that raise BufferError first

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        if self.full_for:
            self.full_for -= 1
            raise BufferError("Local: Queue full")
        self.produced.append((topic, value, key))

    def poll(self, timeout: float) -> int:
        self.polls.append(timeout)
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def fake_producer(full_for: int = 0) -> tuple[RawProducer, FakeKafka]:
    producer = RawProducer("127.0.0.1:1", "t.events.raw")
    fake = FakeKafka(full_for)
    producer._producer = fake  # type: ignore[assignment]
    return producer, fake


def event(i: int, **ids: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "event_name": "page_view", "properties": {"p": i}, **ids}


BIG = b"x" * MAX_MESSAGE_BYTES
LINES = [
    orjson.dumps(event(1, anonymous_id="d1")),
    orjson.dumps(event(2, anonymous_id="d1", user_id="u1")),
    orjson.dumps(event(3, user_id="u1")),
    orjson.dumps(event(4, anonymous_id="", user_id="u2")),
    orjson.dumps(event(5, anonymous_id=7, user_id="u3")),
    orjson.dumps(event(6, anonymous_id=None)),
    orjson.dumps(event(7)),
    orjson.dumps(event(8, user_id="")),
    b'{"event_id": "e9", "anonymous_id": "d\\u00e9"}',
    b"not json at all",
    b'{"event_id": "truncated", "anonymous_id": "d1"',
    b"42",
    b'"a string"',
    b"null",
    b"[]",
    b"{}",
    orjson.dumps([event(10, anonymous_id="d2"), event(11, anonymous_id="d2")]),
    orjson.dumps(
        [
            event(12, anonymous_id="d3"),
            event(13, user_id="u4"),
            event(14),
            event(15, anonymous_id="d3"),
        ]
    ),
    orjson.dumps([event(16), 17, "x"]),
    b'{"anonymous_id": "d4", "pad": "' + BIG + b'"}',
    b"[" + orjson.dumps(event(18, anonymous_id="d5")) + b', "' + BIG + b'"]',
    b"not json and too big " + BIG,
    orjson.dumps(event(19, anonymous_id="d1")),
]


def reference_messages(lines: list[bytes]) -> tuple[list[tuple[bytes, bytes]], int]:
    """What the previous produce_lines sent, and how many messages failed for their size."""
    sent, too_big = [], 0
    for line in lines:
        for key, value in split_line(line):
            if len(value) > MAX_MESSAGE_BYTES:
                too_big += 1
            else:
                sent.append((key, value))
    return sent, too_big


def test_send_lines_sends_what_split_line_makes() -> None:
    producer, fake = fake_producer()
    stats = produce_lines(producer, LINES)
    expected, too_big = reference_messages(LINES)
    assert too_big == 3
    assert [(key, value) for _, value, key in fake.produced] == expected
    assert {topic for topic, _, _ in fake.produced} == {"t.events.raw"}
    assert stats.messages == len(expected)
    assert stats.bytes == sum(len(value) for _, value in expected)
    assert stats.failed == too_big
    assert sum("over the broker limit" in e for e in producer.errors) == too_big


def test_send_lines_keys() -> None:
    producer, fake = fake_producer()
    producer.send_lines(LINES[:9])
    keys = [key for _, _, key in fake.produced]
    assert keys[:5] == [b"d1", b"d1", b"u1", b"u2", b"u3"]
    assert keys[5:8] == [content_key(line) for line in LINES[5:8]]
    assert keys[8] == "dé".encode()


def test_a_full_queue_waits_for_deliveries_and_sends_once() -> None:
    producer, fake = fake_producer(full_for=3)
    producer.send_lines([LINES[0], LINES[2]])
    assert [key for _, _, key in fake.produced] == [b"d1", b"u1"]
    assert fake.polls == [0.05, 0.05, 0.05]
    assert producer.stats.messages == 2


def test_delivery_reports_are_served_while_sending() -> None:
    producer, fake = fake_producer()
    line = LINES[0]
    producer.send_lines([line] * (2 * produce.POLL_EVERY + 1))
    assert fake.polls == [0, 0]
    for _ in range(produce.POLL_EVERY):
        producer.send(b"k", b"v")
    assert fake.polls == [0, 0, 0]


def test_stats_count_what_was_sent_before_an_input_error() -> None:
    producer, fake = fake_producer()

    def lines() -> Iterator[bytes]:
        yield LINES[0]
        yield LINES[1]
        raise OSError("read error")

    with pytest.raises(OSError, match="read error"):
        producer.send_lines(lines())
    assert producer.stats.messages == len(fake.produced) == 2


def test_failed_deliveries_are_counted_and_reported() -> None:
    """Only failures come back as delivery reports; they must still all be counted."""
    producer = RawProducer(f"127.0.0.1:{free_port()}", "t", {"message.timeout.ms": 300})
    producer.send_lines([LINES[0], LINES[2], b"not json"])
    assert producer.flush(10) == 0
    assert producer.stats.messages == 3
    assert producer.stats.failed == 3
    assert len(producer.errors) == 3
    assert all("timed out" in e for e in producer.errors)


def test_split_line_splits_a_batch_per_key_in_first_appearance_order() -> None:
    e12, e13, e14, e15 = (
        event(12, anonymous_id="d3"),
        event(13, user_id="u4"),
        event(14),
        event(15, anonymous_id="d3"),
    )
    assert list(split_line(orjson.dumps([e12, e13, e14, e15]))) == [
        (b"d3", orjson.dumps([e12, e15])),
        (b"u4", orjson.dumps([e13])),
        (content_key(orjson.dumps(e14)), orjson.dumps([e14])),
    ]
    one_key = orjson.dumps([e12, e15])
    assert list(split_line(one_key)) == [(b"d3", one_key)]  # sent as it is


def test_the_producer_is_idempotent_so_its_own_retries_append_no_copies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hour soak found 16 messages appended twice under load: librdkafka retried
    requests whose answers timed out. Idempotence makes the broker drop such copies."""
    seen: list[dict[str, Any]] = []

    class Capture:
        def __init__(self, config: dict[str, Any]) -> None:
            seen.append(config)

    monkeypatch.setattr(produce, "Producer", Capture)
    RawProducer("127.0.0.1:1", "events.raw")
    assert seen[0]["enable.idempotence"] is True
    assert seen[0]["acks"] == "all"


def test_librdkafka_logs_only_warnings_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """`trackflow produce` prints its one-line summary on stderr, where librdkafka logs too;
    a make test run got its info line "Purging 1 unserved events from background queue"
    there at close. (librdkafka's info lines depend on timing, so the config is checked.)"""
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(produce, "Producer", lambda config: seen.append(config))
    RawProducer("127.0.0.1:1", "t")
    RawProducer("127.0.0.1:1", "t", config={"log_level": 7})
    assert seen[0]["log_level"] == 4  # syslog warning: warnings and errors still show
    assert seen[1]["log_level"] == 7  # a caller may still ask for more
