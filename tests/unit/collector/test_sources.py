"""The sources file, write-key lookup and per-source token buckets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.collector.sources import (
    SourcesError,
    TokenBucket,
    load_sources,
    parse_sources,
    retry_after,
)
from pipeline.names import HEADER_SOURCE

PLATFORMS = frozenset({"web", "ios", "miniprogram"})
SECRET = "wk-super-secret-123"


def test_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "sources.json"
    path.write_bytes(
        orjson.dumps(
            [
                {"name": "web", "write_key": SECRET, "platform": "web"},
                {"name": "app", "write_key": "k2", "events_per_second": 50, "enabled": True},
                {"name": "old", "write_key": "k3", "enabled": False},
            ]
        )
    )
    sources = load_sources(path, PLATFORMS)
    assert len(sources) == 3
    web = sources.lookup(SECRET)
    assert web is not None
    assert (web.name, web.platform, web.enabled, web.bucket) == ("web", "web", True, None)
    assert web.headers == [(HEADER_SOURCE, b"web")]
    app = sources.lookup("k2")
    assert app is not None
    assert app.bucket is not None
    assert app.bucket.rate == 50
    old = sources.lookup("k3")
    assert old is not None
    assert not old.enabled
    assert sources.lookup("nope") is None
    assert sources.lookup(SECRET.upper()) is None
    assert SECRET not in repr(sources.all)  # keys are not even kept


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"name": "web"}, "JSON array"),
        (["web"], "entry 0 must be an object"),
        ([{"write_key": SECRET}], "name must be"),
        ([{"name": "a b", "write_key": SECRET}], "name must be"),
        ([{"name": "web"}], "write_key must be a non-empty string"),
        ([{"name": "web", "write_key": "  "}], "write_key must be a non-empty string"),
        ([{"name": "web", "write_key": SECRET, "enabled": "yes"}], "enabled must be"),
        ([{"name": "web", "write_key": SECRET, "platform": "tv"}], "platform must be one of"),
        ([{"name": "web", "write_key": SECRET, "events_per_second": 0}], "above 0"),
        ([{"name": "web", "write_key": SECRET, "events_per_second": True}], "above 0"),
        ([{"name": "web", "write_key": SECRET, "enabeld": False}], "unknown field(s) 'enabeld'"),
        (
            [{"name": "web", "write_key": SECRET}, {"name": "web", "write_key": "k2"}],
            "used twice",
        ),
        (
            [{"name": "web", "write_key": SECRET}, {"name": "app", "write_key": SECRET}],
            "another source's too",
        ),
    ],
)
def test_bad_files_are_refused_without_showing_a_key(data: Any, says: str) -> None:
    with pytest.raises(SourcesError) as err:
        parse_sources(data, PLATFORMS)
    assert says in str(err.value)
    assert SECRET not in str(err.value)


def test_unreadable_or_not_json(tmp_path: Path) -> None:
    with pytest.raises(SourcesError, match="cannot read"):
        load_sources(tmp_path / "missing.json", PLATFORMS)
    bad = tmp_path / "bad.json"
    bad.write_text(f'[{{"name": "web", "write_key": "{SECRET}"')
    with pytest.raises(SourcesError, match="not JSON") as err:
        load_sources(bad, PLATFORMS)
    assert SECRET not in str(err.value)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket() -> None:
    clock = Clock()
    bucket = TokenBucket(10, clock)
    assert bucket.take(10) == 0.0  # a second's worth at once
    assert bucket.take(1) == pytest.approx(0.1)
    clock.now += 0.5
    assert bucket.take(5) == 0.0
    assert bucket.take(5) == pytest.approx(0.5)
    clock.now += 1.0
    # Larger than the bucket: admitted when it is full, leaving it in debt.
    assert bucket.take(100) == 0.0
    assert bucket.take(1) == pytest.approx(9.1)
    clock.now += 9.2
    assert bucket.take(1) == 0.0


def test_slow_sources_still_admit_one_event_a_second() -> None:
    clock = Clock()
    bucket = TokenBucket(0.5, clock)
    assert bucket.capacity == 1.0
    assert bucket.take(1) == 0.0
    assert bucket.take(1) == pytest.approx(2.0)


def test_retry_after_is_whole_seconds() -> None:
    assert retry_after(0.01) == "1"
    assert retry_after(1.0) == "1"
    assert retry_after(2.2) == "3"
