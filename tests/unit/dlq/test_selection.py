"""Which dead letters the dlq commands see: filters, order, stats, old lake files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pipeline.dlq.ledger import SENDING, SENT, Entry, Ledger
from pipeline.dlq.selection import BadFilter, dead_letters, make_filters, stats
from pipeline.lake.views import connect
from tests.unit.dlq.lake import NOW, dead_letter, write_dlq

T0 = datetime.fromtimestamp(NOW / 1000, UTC)


def test_filters_refuse_unknown_codes_and_name_the_known_ones() -> None:
    with pytest.raises(BadFilter, match=r"'bogus' is not an error code.*invalid_value"):
        make_filters(code="bogus")
    assert make_filters(code="invalid_value").code == "invalid_value"


@pytest.mark.parametrize(
    ("since", "until"),
    [("2026-11-24T00:00:00+00:00", "2026-11-23T00:00:00+00:00"), ("2026-11-23", "2026-11-23")],
)
def test_filters_refuse_a_range_that_ends_before_it_starts(since: str, until: str) -> None:
    with pytest.raises(BadFilter, match=r"--from .* must be before --to"):
        make_filters(since=since, until=until)


def test_filters_refuse_times_that_are_not_iso_8601() -> None:
    with pytest.raises(BadFilter, match="--to 'yesterday' is not an ISO 8601 time"):
        make_filters(until="yesterday")
    with pytest.raises(BadFilter, match="--event must not be empty"):
        make_filters(event=" ")


def test_times_without_an_offset_are_utc_and_offsets_are_kept() -> None:
    f = make_filters(since="2026-11-23T08:00:00", until="2026-11-23T18:00:00+08:00")
    assert f.since == datetime(2026, 11, 23, 8, tzinfo=UTC)
    assert f.until == datetime(2026, 11, 23, 18, tzinfo=timezone(timedelta(hours=8)))


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    write_dlq(
        tmp_path,
        [dead_letter(3), dead_letter(1, partition=2), dead_letter(2, error_code="unknown_event")],
        "a",
        old=True,
    )
    write_dlq(
        tmp_path,
        [
            dead_letter(10, event_name="login", event_id=None),
            dead_letter(11, replay_of="events.raw:0:3:0"),
            dead_letter(12, payload_truncated=True),
        ],
        "b",
    )
    return tmp_path


def test_dead_letters_are_streamed_oldest_first_with_their_keys(lake: Path) -> None:
    con = connect(lake)
    got = list(dead_letters(con, make_filters()))
    assert [d.key for d in got] == [
        "events.raw:2:1:0",
        "events.raw:0:2:0",
        "events.raw:0:3:0",
        "events.raw:0:10:0",
        "events.raw:0:11:0",
        "events.raw:0:12:0",
    ]
    # Files written before replay_of existed read it as null.
    assert [d.replay_of for d in got] == [None] * 4 + ["events.raw:0:3:0", None]
    assert got[-1].truncated
    assert not got[0].truncated
    assert got[0].received_at == NOW + 1000
    assert got[0].payload.startswith(b'{"event_id":"e1"')


def test_each_filter_narrows_the_selection(lake: Path) -> None:
    con = connect(lake)

    def offsets(**kw: str) -> list[int]:
        return [int(d.key.split(":")[2]) for d in dead_letters(con, make_filters(**kw))]

    assert offsets(code="unknown_event") == [2]
    assert offsets(event="login") == [10]
    since = (T0 + timedelta(seconds=3)).isoformat()
    until = (T0 + timedelta(seconds=11)).isoformat()
    assert offsets(since=since, until=until) == [3, 10]  # from inclusive, to exclusive
    assert offsets(code="invalid_value", event="page_view", since=since) == [3, 11, 12]


def test_stats_count_by_code_event_and_source_with_replays(lake: Path) -> None:
    ledger = Ledger(lake / "lake")
    ledger.write([Entry("events.raw:0:3:0", SENDING, "r1"), Entry("events.raw:2:1:0", SENT, "r1")])
    ledger.write([Entry("events.raw:0:3:0", SENT, "r1")])  # the latest state counts
    # The collector's source name, as in events; null for payloads produced to Kafka.
    write_dlq(lake, [dead_letter(20, error_code="unknown_event", source="web")], "c")
    rows = stats(connect(lake), make_filters())
    web = [r for r in rows if r["source"] == "web"]
    rows = [r for r in rows if r["source"] != "web"]
    assert web == [
        {
            "error_code": "unknown_event",
            "event_name": "page_view",
            "source": "web",
            "count": 1,
            "truncated": 0,
            "replayed": 0,
            "failed_again": 0,
        }
    ]
    assert rows == [
        {
            "error_code": "invalid_value",
            "event_name": "page_view",
            "source": None,
            "count": 4,
            "truncated": 1,
            "replayed": 2,
            "failed_again": 1,
        },
        {
            "error_code": "invalid_value",
            "event_name": "login",
            "source": None,
            "count": 1,
            "truncated": 0,
            "replayed": 0,
            "failed_again": 0,
        },
        {
            "error_code": "unknown_event",
            "event_name": "page_view",
            "source": None,
            "count": 1,
            "truncated": 0,
            "replayed": 0,
            "failed_again": 0,
        },
    ]
    until = (T0 + timedelta(seconds=3)).isoformat()
    assert [r["count"] for r in stats(connect(lake), make_filters(until=until))] == [1, 1]


def test_an_empty_lake_has_no_dead_letters_and_no_stats(tmp_path: Path) -> None:
    con = connect(tmp_path)
    assert list(dead_letters(con, make_filters())) == []
    assert stats(con, make_filters()) == []
