"""The HTTP collector's source travels with each event: Kafka header -> stored row and DLQ."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import load_plan
from pipeline.ingest.codecs import source_from_headers
from pipeline.ingest.dedup import SeenIds
from pipeline.ingest.ingestor import Ingestor, RawMessage
from pipeline.ingest.validation import Validator
from pipeline.names import HEADER_SOURCE

NOW = 1_795_420_800_000


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(HEADER_SOURCE, b"web-shop")], "web-shop"),
        ([("other", b"x"), (HEADER_SOURCE, b"app_1.ios")], "app_1.ios"),
        ({HEADER_SOURCE: b"mini"}, "mini"),  # Faust may hand a mapping
        ([(HEADER_SOURCE.encode(), b"web")], "web"),
        (None, None),
        ([], None),
        ([("other", b"web")], None),
        ([(HEADER_SOURCE, None)], None),
        ([(HEADER_SOURCE, b"")], None),
        ([(HEADER_SOURCE, b"has space")], None),  # not a source name: never stored
        ([(HEADER_SOURCE, b"\xff\xfe")], None),
        ([(HEADER_SOURCE, b"x" * 65)], None),
    ],
)
def test_source_header(headers: Any, expected: str | None) -> None:
    assert source_from_headers(headers) == expected


def event(i: int, **over: Any) -> dict[str, Any]:
    obj = {
        "event_id": f"e{i}",
        "event_name": "page_view",
        "event_time": NOW - 60_000,
        "anonymous_id": "a1",
        "platform": "web",
        "properties": {"page": "home"},
    }
    obj.update(over)
    return obj


def test_source_reaches_stored_rows_and_dead_letters() -> None:
    plan = load_plan()
    hasher = PiiHasher("k")
    ingestor = Ingestor(plan, Validator(plan, hasher), hasher, SeenIds(3_600_000), "events.raw")
    batch = [event(1), event(2, properties={"page": "nowhere"}), event(3)]
    messages = [
        RawMessage(0, orjson.dumps(batch), None, None, "web"),
        RawMessage(1, orjson.dumps(event(4)), None, None, None),  # a Kafka producer's
        RawMessage(2, orjson.dumps(event(5, platform="tv")), None, None, None),
    ]
    result = ingestor.process(0, messages, NOW)
    assert [(r["event_id"], r["source"]) for r in result.valid] == [
        ("e1", "web"),
        ("e3", "web"),
        ("e4", None),
    ]
    assert [(d["event_id"], d["error_code"], d["source"]) for d in result.dlq] == [
        ("e2", "invalid_value", "web"),
        ("e5", "invalid_value", None),
    ]
