"""bench/collector.py sends what it says: valid Segment calls, each with an id of its own."""

from __future__ import annotations

import orjson

from bench.collector import SLOT, percentiles, templates
from pipeline.collector.mapping import RequestInfo, envelope
from pipeline.contract.errors import Rejected
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import load_plan
from pipeline.ingest.validation import Validator

RECEIVED = 1_795_420_800_000  # 2026-11-23T08:00:00Z
TIMESTAMP = "2026-11-23T07:59:00.000+00:00"


def test_the_bench_traffic_passes_validation_with_an_id_per_request() -> None:
    """Every call of a template is a valid event once mapped (the bench measures the
    collector on events the worker would store), and a request's number makes its ids
    its own."""
    validator = Validator(load_plan(), PiiHasher("unit-test-secret"))
    info = RequestInfo(RECEIVED, "web")
    bodies = templates(20, 3, "run", TIMESTAMP)
    assert len(set(bodies)) == 3
    ids = set()
    for n, body in enumerate(bodies):
        assert body.count(SLOT) == 20
        doc = orjson.loads(body.replace(SLOT, b"%08d" % n))
        for call in doc["batch"]:
            try:
                validator.validate(envelope(call, call["type"], info), RECEIVED)
            except Rejected as err:  # pragma: no cover - the assertion's message
                raise AssertionError(f"{call}: {err.code} {err.detail}") from None
            ids.add(call["messageId"])
    assert len(ids) == 60
    assert {c["type"] for b in bodies for c in orjson.loads(b)["batch"]} == {"page", "track"}


def test_percentiles_in_milliseconds() -> None:
    got = percentiles([i / 1000 for i in range(1, 1001)])
    assert got["p50"] == 501.0
    assert got["p99"] == 991.0
    assert got["max"] == 1000.0
    assert percentiles([]) == {}
