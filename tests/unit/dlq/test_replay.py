"""Replay decisions and the at-most-once protocol, against a fake broker log."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.contract.replay import ReplayMarker
from pipeline.dlq.kafka import Outgoing, ScanResult
from pipeline.dlq.ledger import NOT_SENT, SENDING, SENT, Ledger
from pipeline.dlq.replay import Replay, ReplayReport
from pipeline.dlq.selection import make_filters
from pipeline.dlq.suppression import NoSuppressions
from pipeline.lake.views import connect
from tests.unit.dlq.lake import NOW, dead_letter, write_dlq

TOPIC = "x.events.raw"
HASH = "ab" * 32


class Crash(Exception):
    """The replay command dies here."""


class FakeBroker:
    """A log per partition of (offset, marker, value, key); knobs for failures."""

    def __init__(self, partitions: int = 4) -> None:
        self.n = partitions
        self.log: dict[int, list[tuple[int, ReplayMarker, bytes, bytes | None]]] = {
            p: [] for p in range(partitions)
        }
        self.low = dict.fromkeys(range(partitions), 0)  # first offset still held
        self.crash_after_send = False
        self.unacked: set[str] = set()  # written, but the ack is lost
        self.refused: set[str] = set()  # never written
        self.late: set[str] = set()  # given up on by the producer, written a moment later
        self.landing: list[Outgoing] = []
        self.scans = 0

    def partitions(self, topic: str) -> int:
        assert topic == TOPIC
        return self.n

    def end_offsets(self, topic: str, partitions: set[int]) -> dict[int, int]:
        return {p: len(self.log[p]) for p in partitions}

    def send(self, topic: str, messages: list[Outgoing]) -> dict[str, int | str]:
        out: dict[str, int | str] = {}
        for m in messages:
            if m.dead_letter in self.refused:
                out[m.dead_letter] = "refused"
                continue
            if m.dead_letter in self.late:
                self.landing.append(m)
                out[m.dead_letter] = "not acknowledged in time"
                continue
            log = self.log[m.partition]
            log.append((len(log), m.marker, m.value, m.key))
            out[m.dead_letter] = "timed out" if m.dead_letter in self.unacked else len(log) - 1
        if self.crash_after_send:
            raise Crash
        return out

    def scan(self, topic: str, partition: int, start: int, keys: set[str]) -> ScanResult:
        self.scans += 1
        found = {
            marker.of: offset
            for offset, marker, _, _ in self.log[partition][max(start, self.low[partition]) :]
            if marker.of in keys
        }
        return ScanResult(found, complete=self.low[partition] <= start)

    def close(self) -> None:
        pass

    def land(self) -> None:
        for m in self.landing:
            log = self.log[m.partition]
            log.append((len(log), m.marker, m.value, m.key))
        self.landing = []

    def sent(self) -> list[str]:
        return [m.of for p in sorted(self.log) for _, m, _, _ in self.log[p]]


def run(
    data_dir: Path, broker: FakeBroker | None, dry_run: bool = False, **kw: str
) -> ReplayReport:
    con = connect(data_dir)
    job = Replay(
        con, Ledger(data_dir / "lake"), broker, TOPIC, NoSuppressions(), chunk=2, settle_grace=0
    )
    return job.run(make_filters(**kw), dry_run)


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    write_dlq(
        tmp_path,
        [
            dead_letter(1),
            dead_letter(2, partition=3),
            dead_letter(3, error_code="unknown_event"),
            dead_letter(4, payload_truncated=True),
            dead_letter(5, replay_of="events.raw:0:99:0"),
        ],
        "a",
    )
    return tmp_path


def test_matching_dead_letters_are_sent_once_to_their_partition_with_the_marker(
    lake: Path,
) -> None:
    broker = FakeBroker()
    report = run(lake, broker)
    assert (report.matched, report.replayed, report.truncated, report.failed_again) == (5, 3, 1, 1)
    assert broker.sent() == ["events.raw:0:1:0", "events.raw:0:3:0", "events.raw:3:2:0"]
    _, marker, value, key = broker.log[3][0]
    assert marker == ReplayMarker("events.raw:3:2:0", NOW + 2000, True)
    assert orjson.loads(value)["event_id"] == "e2"
    assert key == b"anon-2"
    states = Ledger(lake / "lake").states()
    assert {k: (e.state, e.sent_offset) for k, e in states.items()} == {
        "events.raw:0:1:0": (SENT, 0),
        "events.raw:0:3:0": (SENT, 1),
        "events.raw:3:2:0": (SENT, 0),
    }

    again = run(lake, broker)
    assert (again.replayed, again.already_replayed) == (0, 3)
    assert len(broker.sent()) == 3  # nothing more


def test_filters_choose_what_is_replayed(lake: Path) -> None:
    broker = FakeBroker()
    assert run(lake, broker, code="unknown_event").replayed == 1
    assert broker.sent() == ["events.raw:0:3:0"]
    report = run(lake, broker)
    assert (report.replayed, report.already_replayed) == (2, 1)


def test_a_dry_run_needs_no_broker_and_changes_nothing(lake: Path) -> None:
    report = run(lake, None, dry_run=True)
    assert report.dry_run
    assert (report.matched, report.replayed, report.truncated) == (5, 3, 1)
    assert not (lake / "lake" / "dlq_replays").exists()


def test_masked_text_and_other_topics_are_not_sent_but_hashed_pii_keys_are(
    tmp_path: Path,
) -> None:
    hashed = orjson.dumps({"event_id": "e1", "identities": {"phone": HASH}})
    masked = orjson.dumps({"event_id": "e2", "user_id": f"[phone:{HASH}]"})
    write_dlq(
        tmp_path,
        [
            dead_letter(1, payload=hashed),
            dead_letter(2, payload=masked),
            dead_letter(3, source_topic="elsewhere"),
            dead_letter(4, partition=7),  # the topic has 4 partitions
            dead_letter(5, payload=hashed, error_detail="identities.phone is not a phone number"),
        ],
        "a",
    )
    broker = FakeBroker()
    report = run(tmp_path, broker)
    assert (report.replayed, report.masked, report.unreplayable) == (2, 1, 2)
    markers = {m.of: m for _, m, _, _ in broker.log[0]}
    assert markers["events.raw:0:1:0"].hashed_pii
    # The original failed on its phone: its hash must fail again, not pass as a hash.
    assert not markers["events.raw:0:5:0"].hashed_pii


def test_suppressed_persons_are_not_sent(lake: Path) -> None:
    class Suppressed:
        def suppressed(self, identifiers: dict[str, str]) -> bool:
            return identifiers.get("anonymous_id") == "anon-1"

    broker = FakeBroker()
    con = connect(lake)
    job = Replay(con, Ledger(lake / "lake"), broker, TOPIC, Suppressed())
    report = job.run(make_filters(), dry_run=False)
    assert (report.replayed, report.suppressed) == (2, 1)
    assert "events.raw:0:1:0" not in broker.sent()


def test_a_crash_after_sending_is_settled_from_the_log_and_nothing_is_sent_twice(
    lake: Path,
) -> None:
    broker = FakeBroker()
    broker.crash_after_send = True
    with pytest.raises(Crash):
        run(lake, broker)
    # The first chunk (two dead letters) was recorded as sending, then sent; no "sent".
    states = Ledger(lake / "lake").states()
    assert {e.state for e in states.values()} == {SENDING}
    assert len(states) == 2
    assert len(broker.sent()) == 2

    broker.crash_after_send = False
    report = run(lake, broker)
    assert report.settled == 2
    assert (report.replayed, report.already_replayed) == (1, 2)
    assert sorted(broker.sent()) == ["events.raw:0:1:0", "events.raw:0:3:0", "events.raw:3:2:0"]


def test_a_crash_before_sending_lets_the_next_run_send(lake: Path) -> None:
    broker = FakeBroker()
    broker.refused = {"events.raw:0:1:0", "events.raw:3:2:0"}  # the first chunk: never sent
    broker.crash_after_send = True
    with pytest.raises(Crash):
        run(lake, broker)
    assert broker.sent() == []
    broker.refused, broker.crash_after_send = set(), False
    report = run(lake, broker)
    assert (report.settled, report.replayed) == (2, 3)
    assert Ledger(lake / "lake").states()["events.raw:0:1:0"].state == SENT


def test_an_unacknowledged_send_is_looked_up_before_it_counts_as_failed(lake: Path) -> None:
    broker = FakeBroker()
    broker.unacked = {"events.raw:0:1:0"}  # in the log, ack lost
    broker.refused = {"events.raw:0:3:0"}  # not in the log
    report = run(lake, broker)
    assert (report.replayed, report.failed, report.in_doubt) == (2, 1, 0)
    states = Ledger(lake / "lake").states()
    assert states["events.raw:0:1:0"].state == SENT
    assert states["events.raw:0:3:0"].state == NOT_SENT
    broker.refused = set()
    again = run(lake, broker)
    assert (again.replayed, again.already_replayed) == (1, 2)
    assert broker.sent().count("events.raw:0:1:0") == 1


def test_the_log_is_read_for_a_send_given_up_on_only_after_a_grace(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer gave up on a send that the broker appends a moment later: read at
    once, the log would call it not sent and the next run would send it twice."""
    broker = FakeBroker()
    broker.late = {"events.raw:0:1:0"}
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        broker.land()

    monkeypatch.setattr("pipeline.dlq.replay.time.sleep", sleep)
    job = Replay(connect(lake), Ledger(lake / "lake"), broker, TOPIC, NoSuppressions())
    report = job.run(make_filters(), dry_run=False)
    assert waits == [3.0]
    assert (report.replayed, report.failed, report.in_doubt) == (3, 0, 0)
    assert Ledger(lake / "lake").states()["events.raw:0:1:0"].state == SENT
    broker.late = set()
    monkeypatch.undo()
    assert run(lake, broker).already_replayed == 3
    assert broker.sent().count("events.raw:0:1:0") == 1


def test_a_send_the_log_cannot_settle_stays_in_doubt_and_is_never_resent(lake: Path) -> None:
    broker = FakeBroker()
    broker.unacked = {"events.raw:0:1:0"}
    broker.low[0] = 10**6  # the broker no longer holds the range: cannot tell
    con = connect(lake)
    job = Replay(con, Ledger(lake / "lake"), broker, TOPIC, NoSuppressions(), settle_grace=0)
    report = job.run(make_filters(), dry_run=False)
    assert report.in_doubt == 1
    assert job.unsettled == 1
    again = run(lake, broker)
    assert (again.in_doubt, again.replayed) == (1, 0)
    assert broker.sent().count("events.raw:0:1:0") == 1


def test_a_collector_event_is_replayed_with_its_source(tmp_path: Path) -> None:
    """The collector's source travels as a header; a replay without it would store the
    event (or its new dead letter) with no source."""
    from pipeline.dlq.kafka import _headers
    from pipeline.dlq.replay import outgoing
    from pipeline.dlq.selection import dead_letters
    from pipeline.names import HEADER_SOURCE

    write_dlq(tmp_path, [dead_letter(1, source="web"), dead_letter(2)], "a")
    with connect(tmp_path) as con:
        letters = list(dead_letters(con, make_filters()))
    by_offset = {dl.key: dl for dl in letters}
    web, kafka = outgoing(by_offset["events.raw:0:1:0"]), outgoing(by_offset["events.raw:0:2:0"])
    assert (HEADER_SOURCE, b"web") in _headers(web)
    assert [name for name, _ in _headers(kafka)] == ["trackflow-replay"]
