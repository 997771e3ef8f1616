"""The ordering rule and idempotence of imports, against a real lake directory and the
DuckDB views (no broker: the One ID links stay in the outbox)."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pipeline.contract.pii import PiiHasher
from pipeline.contract.profiles import load_profile_dictionary
from pipeline.identity.rules import load_identity_rules, node
from pipeline.lake import views
from pipeline.lake.journals import NO_JOURNAL, journal_dir
from pipeline.lake.profiles import MEMBER_IMPORT_SCHEMA, MEMBER_QUALITY_SCHEMA, installer
from pipeline.members import apply
from pipeline.members import run as runs
from pipeline.members.importer import Judge, Staging
from pipeline.members.mapping import parse_mapping
from pipeline.members.outbox import Outbox
from pipeline.members.privacy import Withhold, suppressed_persons
from pipeline.runtime import wire

DICT = load_profile_dictionary()
HASHER = PiiHasher("unit-test-secret")
RULES = load_identity_rules()
ZONE = ZoneInfo("Asia/Shanghai")
MAPPING = {
    "source": "crm",
    "key": "id",
    "incremental": "updated_at",
    "fields": {
        "level": {"from": "level"},
        "points": {"from": "points"},
        "phone": {"from": "phone"},
    },
}


class Lake:
    def __init__(self, root: Path, mapping: dict[str, Any] = MAPPING) -> None:
        self.root = root
        self.mapping = parse_mapping(mapping, DICT, HASHER)
        self.sent: list[bytes] = []
        self.requests: list[Any] = []  # privacy requests in force (pipeline.privacy)
        self.before_commit: Any = None  # called between deciding and installing

    def con(self) -> Any:
        return views.connect(self.root)

    def load(self, rows: list[dict[str, Any]], dry_run: bool = False) -> runs.Report:
        started = int(time.time() * 1000)
        time.sleep(0.002)  # each run arrives after the previous one
        run_id = runs.new_run_id(started)
        scratch = self.root / "scratch" / run_id
        scratch.mkdir(parents=True)
        con = self.con()
        source = self.mapping.source
        wm = runs.previous_watermark(con, source) if self.mapping.incremental else None
        judge = Judge(self.mapping, DICT, HASHER, ZONE, date(2026, 11, 30), started, wm)
        staging = Staging(scratch, lambda u: RULES.person_id(node("user_id", u)), HASHER.mask_text)
        report = runs.Report(run_id, source, dry_run, "2026-11-30T00:00:00Z")

        class Rows:
            name, columns = "rows", None

            def records(self) -> Any:
                yield from enumerate(rows, start=1)

        runs.read_rows(Rows(), judge, staging, report)  # type: ignore[arg-type]
        withhold = Withhold(self.root / "lake", suppressed_persons(con, self.requests))
        report.rows_withheld = withhold.staged(con, staging.updates_path, staging.rejects_path)
        if judge.seen_max is not None:
            report.watermark = runs.iso(max(judge.seen_max, wm or 0))
        outcome = apply.decide(
            con, staging.updates_path, report.rows_accepted, self.mapping.incremental is not None
        )
        report.rows_unchanged, report.fields_changed = (
            outcome.rows_unchanged,
            outcome.fields_changed,
        )
        report.members_new = outcome.members_new
        if dry_run:
            return report
        outbox = Outbox(self.root / "outbox")
        links = runs.stage_links(con, DICT.identity_fields(), wire.encode_links)
        paths = runs.Paths(self.root / "lake", scratch, outbox)
        if self.before_commit is not None:
            self.before_commit()
        runs.commit(
            con,
            report,
            self.mapping,
            paths,
            started,
            {"sla_seconds": 3600 * self.mapping.sla_hours if self.mapping.sla_hours else None},
            installer(paths.lake),
            links,
            lambda: False,
            (MEMBER_IMPORT_SCHEMA, MEMBER_QUALITY_SCHEMA),
            judge.stats.rows_of(
                run_id, source, [f.field for f in self.mapping.fields], self.mapping.required
            ),
            withhold,
        )
        return report

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con().execute(sql).fetchall()


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(tmp_path)


def row(id_: str, t: str, **kw: Any) -> dict[str, Any]:
    return {"id": id_, "updated_at": t, "level": None, "points": None, "phone": None, **kw}


def test_an_older_update_arriving_later_never_wins(lake: Lake) -> None:
    lake.load([row("M1", "2024-05-02 10:00", level="gold", points="5")])
    # Another source (its own watermark) sends an older update of the same member:
    report = Lake(lake.root, MAPPING | {"source": "shop"}).load(
        [row("M1", "2024-05-01 10:00", level="silver", points="7")]
    )
    assert report.rows_accepted == 1
    assert report.rows_unchanged == 1
    assert report.fields_changed == 0
    assert lake.rows("SELECT level, points FROM profiles") == [("gold", 5)]
    assert lake.rows("SELECT count(*) FROM profile_changes WHERE new IN ('silver', '7')") == [(0,)]


def test_a_newer_update_wins_and_history_keeps_the_old_value(lake: Lake) -> None:
    lake.load([row("M1", "2024-05-01 10:00", level="gold", points="5")])
    report = lake.load([row("M1", "2024-05-02 10:00", level="silver", points="5")])
    assert (report.rows_read, report.rows_unchanged, report.fields_changed) == (1, 0, 1)
    assert lake.rows("SELECT user_id, level FROM profiles") == [("M1", "silver")]
    assert lake.rows(
        "SELECT field, old, new, source FROM profile_changes WHERE field = 'level' ORDER BY \"at\""
    ) == [("level", None, "gold", "crm"), ("level", "gold", "silver", "crm")]


def test_a_null_removes_the_field(lake: Lake) -> None:
    lake.load([row("M1", "2024-05-01 10:00", level="gold", points="5")])
    lake.load([row("M1", "2024-05-02 10:00", level="gold", points="")])
    assert lake.rows("SELECT level, points FROM profiles") == [("gold", None)]
    assert lake.rows(
        "SELECT old, new FROM profile_changes WHERE field = 'points' ORDER BY \"at\""
    ) == [(None, "5"), ("5", None)]


def test_reimporting_the_same_rows_changes_nothing(lake: Lake) -> None:
    rows = [
        row("M1", "2024-05-01 10:00", level="gold", points="5", phone="13800138000"),
        row("M2", "2024-05-01 11:00", level="silver"),
    ]
    first = lake.load(rows)
    assert (first.members_new, first.fields_changed) == (2, 4)
    before = lake.rows("SELECT * FROM profile_updates ORDER BY ALL")
    profiles = lake.rows("SELECT * FROM profiles ORDER BY ALL")
    # The same file again, past the watermark (a mapping without an incremental column):
    second = Lake(lake.root, MAPPING | {"incremental": None}).load(rows)
    assert (second.rows_accepted, second.rows_unchanged, second.fields_changed) == (2, 2, 0)
    assert second.members_new == 0
    assert lake.rows("SELECT * FROM profile_updates ORDER BY ALL") == before
    assert lake.rows("SELECT * FROM profiles ORDER BY ALL") == profiles


def test_the_watermark_skips_rows_already_read(lake: Lake) -> None:
    lake.load([row("M1", "2024-05-01 10:00", level="gold"), row("M2", "2024-05-01 12:00")])
    report = lake.load(
        [
            row("M1", "2024-05-01 10:00", level="gold"),
            row("M2", "2024-05-01 12:00"),
            row("M3", "2024-05-01 12:00:01", level="basic"),
        ]
    )
    assert (report.rows_skipped, report.rows_read, report.members_new) == (2, 1, 1)
    assert lake.rows("SELECT max(watermark) FROM member_imports")[0][0].isoformat() == (
        "2024-05-01T04:00:01+00:00"
    )


def test_within_a_file_the_newest_row_of_a_member_wins(lake: Lake) -> None:
    lake.load(
        [
            row("M1", "2024-05-03 10:00", level="gold"),
            row("M1", "2024-05-02 10:00", level="silver"),  # older, later in the file
            row("M2", "2024-05-01 10:00", level="silver"),
            row("M2", "2024-05-01 10:00", level="gold"),  # same time, later row wins
        ]
    )
    assert lake.rows("SELECT user_id, level FROM profiles ORDER BY 1") == [
        ("M1", "gold"),
        ("M2", "gold"),
    ]


def test_an_import_marks_its_tables_so_views_read_rewrite_journals(lake: Lake) -> None:
    """Workers write journaled files into these tables too (identify calls, their rejects);
    views opened after an import and before such a file's rewrite must read the journals
    (pipeline/lake/journals.py)."""
    lake.load([row("M1", "2024-05-01 10:00", level="gold"), row("M2", "bad time")])
    for table in ("profile_changes", "member_rejects"):
        assert next((lake.root / "lake" / table).rglob("*.parquet"), None), table
        assert (journal_dir(lake.root / "lake", table) / NO_JOURNAL).exists(), table


def test_dry_run_writes_nothing(lake: Lake) -> None:
    report = lake.load([row("M1", "2024-05-01 10:00", level="gold")], dry_run=True)
    assert report.fields_changed == 1
    assert report.members_new == 1
    assert not (lake.root / "lake").exists()
    assert lake.rows("SELECT count(*) FROM profiles") == [(0,)]


def test_rejects_are_whole_rows_with_masked_pii(lake: Lake) -> None:
    report = lake.load(
        [
            row("M1", "2024-05-01 10:00", level="gold", phone="138-0013-800x"),
            row("M2", "2024-05-01 10:00", level="platinum", phone="13800138000"),
            row("M3", "not a time", level="gold"),
        ]
    )
    assert (report.rows_accepted, report.rows_rejected) == (1, 2)
    rejects = lake.rows(
        'SELECT source, "row", field, error_code, rule, original FROM member_rejects ORDER BY 2'
    )
    assert [(r[1], r[2], r[4]) for r in rejects] == [
        (1, "phone", "transform.phone"),
        (3, "updated_at", "incremental"),
    ]
    assert "0013-800" not in rejects[0][5]  # the phone, not even cut
    assert lake.rows("SELECT user_id FROM profiles") == [("M2",)]


def test_links_of_changed_identifiers_wait_in_the_outbox(lake: Lake) -> None:
    report = lake.load([row("M1", "2024-05-01 10:00", phone="13800138000")])
    assert report.links == 2  # links, not messages: the sighting and the phone
    (pending,) = Outbox(lake.root / "outbox").pending()
    links = [wire.decode_links(m) for m in Outbox.messages(pending)]
    flat = {(a, b) for chunk in links for a, b, _ in chunk}
    phone = HASHER.digest("phone", "+8613800138000")
    assert flat == {("user_id:M1", "user_id:M1"), ("user_id:M1", f"phone:{phone}")}
    lake.load([row("M1", "2024-05-02 10:00", phone="13800138000", level="gold")])
    assert len(Outbox(lake.root / "outbox").pending()) == 1  # nothing new to link


def test_existing_members_decided_in_buckets(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large re-import is decided a bucket of persons at a time: same outcome."""
    members = [f"M{i}" for i in range(7)]
    lake.load(
        [row(m, "2024-05-01 10:00", level="gold", points=str(i)) for i, m in enumerate(members)]
    )
    monkeypatch.setattr(apply, "BUCKET_PERSONS", 2)  # 4 buckets
    report = lake.load(
        [
            row(m, "2024-05-02 10:00", level="silver" if i % 2 else "gold", points=str(i))
            for i, m in enumerate(members)
        ]
        + [row("M0", "2024-05-02 11:00", level="basic", points="0")]  # a second row of M0
    )
    assert (report.rows_accepted, report.fields_changed, report.members_new) == (8, 4, 0)
    assert report.rows_unchanged == 4  # M2, M4, M6 and M0's first row of today
    assert lake.rows("SELECT user_id, level FROM profiles ORDER BY 1") == [
        ("M0", "basic"),
        ("M1", "silver"),
        ("M2", "gold"),
        ("M3", "silver"),
        ("M4", "gold"),
        ("M5", "silver"),
        ("M6", "gold"),
    ]
