"""``trackflow members import`` as a user runs it, without a broker (DESIGN 14): files,
stdin, JSON lines, SQLite, dry runs, and bad input that must stop before anything is
written. One ID with a real broker and worker: tests/integration/test_members.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.lake import views
from pipeline.tools.broker import free_port
from tests.support import BIN

HEADER = "member_id,mobile,mail,grade,province,reg_date,updated_at,tags\n"
ROWS = (
    "M001,+86 138-0013-8000, Alice@Example.COM ,金卡,广东省,2020-01-05,"
    '2024-05-01 10:00:00,"vip,new"\n'
    "M002,13800138001,bob@example.com,G,北京,2021/03/04,2024-05-01 11:00:00,\n"
    "M003,0086 13800138002,carol@example.com,银卡,上海,2019-07-08,2024-05-01 12:00:00,a\n"
    "M004,139-abc-0000,dave@example.com,gold,广东,2031-01-01,2024-05-01 13:00:00,\n"
)
MAPPING = {
    "source": "crm",
    "key": "member_id",
    "incremental": "updated_at",
    "fields": {
        "phone": {"from": "mobile", "transform": ["trim", "phone"]},
        "email": {"from": "mail", "transform": ["trim", "email"]},
        "level": {
            "from": "grade",
            "transform": ["trim", {"map": {"金卡": "gold", "G": "gold", "银卡": "silver"}}],
            "required": True,
        },
        "region": {
            "from": "province",
            "transform": [
                {
                    "map": {
                        "广东省": "guangdong",
                        "广东": "guangdong",
                        "北京": "beijing",
                        "上海": "shanghai",
                    }
                }
            ],
        },
        "registered_at": {"from": "reg_date", "transform": [{"date": ["%Y-%m-%d", "%Y/%m/%d"]}]},
        "tags": {"from": "tags", "transform": ["split"]},
    },
}


class Cli:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.mapping = tmp / "mapping.json"
        self.mapping.write_text(json.dumps(MAPPING, ensure_ascii=False))
        self.env = {
            **os.environ,
            "TRACKFLOW_DATA_DIR": str(self.data),
            "TRACKFLOW_BROKER": f"127.0.0.1:{free_port()}",  # nobody listens
            "TRACKFLOW_MEMBERS_LINK_TIMEOUT": "1",
            "TRACKFLOW_PII_SECRET": "members-cli-secret",
        }

    def run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(BIN), *args], env=self.env, input=input, capture_output=True, timeout=120
        )

    def import_(self, source: str, *args: str, input: bytes | None = None) -> Any:
        proc = self.run(
            "members", "import", source, "--mapping", str(self.mapping), *args, input=input
        )
        assert proc.returncode == 0, proc.stderr.decode()
        return orjson.loads(proc.stdout)

    def query(self, sql: str) -> list[dict[str, Any]]:
        """The lake as ``trackflow query --format json`` shows it, read in this process
        (each CLI start costs seconds on a loaded machine; the CLI's query is tested
        elsewhere)."""
        con = views.connect(self.data)
        try:
            columns, rows = views.run(con, sql)
        finally:
            con.close()
        out: list[dict[str, Any]] = orjson.loads(views.to_json(columns, rows))
        return out

    def written(self) -> list[Path]:
        lake = self.data / "lake"
        return sorted(lake.rglob("*.parquet")) if lake.exists() else []


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_import_then_reimport_then_incremental(cli: Cli) -> None:
    members = cli.tmp / "members.csv"
    members.write_text(HEADER + ROWS, encoding="utf-8")
    first = cli.import_(str(members))
    assert (first["rows_read"], first["rows_accepted"], first["rows_rejected"]) == (4, 3, 1)
    assert first["links_pending"] is True
    profiles = cli.query(
        "SELECT user_id, level, region, registered_at, tags, phone, email, "
        "source FROM profiles ORDER BY user_id"
    )
    assert [(p["user_id"], p["level"], p["region"]) for p in profiles] == [
        ("M001", "gold", "guangdong"),
        ("M002", "gold", "beijing"),
        ("M003", "silver", "shanghai"),
    ]
    assert profiles[0]["tags"] == ["vip", "new"]
    assert profiles[1]["registered_at"] == "2021-03-04"
    assert all(len(p["phone"]) == 64 and len(p["email"]) == 64 for p in profiles)
    rejects = cli.query(
        'SELECT source, "row", field, error_code, detail, original '
        "FROM member_rejects ORDER BY field"
    )
    assert [(r["source"], r["row"], r["field"]) for r in rejects] == [
        ("crm", 4, "phone"),
        ("crm", 4, "registered_at"),
    ]
    text = json.dumps(rejects, ensure_ascii=False)
    assert "139-abc" not in text  # nothing of the PII in clear
    assert "dave@" not in text
    assert "in the future" in rejects[1]["detail"]

    again = cli.import_(str(members))
    assert (again["rows_read"], again["rows_skipped"], again["fields_changed"]) == (0, 4, 0)
    members.write_text(
        HEADER + ROWS + "M002,13800138001,bob@example.com,银卡,北京,"
        "2021/03/04,2024-06-01 09:00:00,\n",
        encoding="utf-8",
    )
    third = cli.import_(str(members))
    assert (third["rows_read"], third["rows_skipped"], third["changes_by_field"]) == (
        1,
        4,
        {"level": 1},
    )
    assert cli.query(
        "SELECT old, new FROM profile_changes WHERE user_id = 'M002' AND "
        "field = 'level' ORDER BY \"at\""
    ) == [{"old": None, "new": "gold"}, {"old": "gold", "new": "silver"}]
    runs = cli.query(
        "SELECT source, rows_read, rows_accepted, rows_rejected, rows_unchanged, "
        "watermark FROM member_imports ORDER BY finished"
    )
    assert [r["rows_read"] for r in runs] == [4, 0, 1]
    assert runs[-1]["watermark"].startswith("2024-06-01T01:00:00")
    assert len(cli.query("SELECT * FROM member_rejects")) == 2  # not read twice

    report = cli.run("members", "report", "--source", "crm", "--format", "json")
    assert report.returncode == 0, report.stderr.decode()
    (crm,) = orjson.loads(report.stdout)["sources"]
    fields = {f["field"]: f for f in crm["fields"]}
    assert crm["latest"]["rows_read"] == 1  # the run with rows, not the empty re-run
    assert fields["level"]["values"] == {"silver": 1}
    assert fields["level"]["values_drift"] == 0.666667  # {gold: 2, silver: 1} -> {silver: 1}
    assert fields["tags"]["null_rate_previous"] == 0.5
    table = cli.run("members", "report")
    assert table.returncode == 0
    assert b"null_rate" in table.stdout
    assert "tags" in table.stdout.decode()
    none = cli.run("members", "report", "--source", "nope")
    assert none.returncode == 1
    assert b"no member import found" in none.stderr


def test_dry_run_reports_and_writes_nothing(cli: Cli) -> None:
    members = cli.tmp / "members.csv"
    members.write_text(HEADER + ROWS, encoding="utf-8")
    report = cli.import_(str(members), "--dry-run")
    assert report["dry_run"] is True
    assert (report["members_new"], report["changes_by_field"]["level"]) == (3, 3)
    assert report["rejects_by_rule"] == {"registered_at.max": 1, "transform.phone": 1}
    assert cli.written() == []


def test_stdin_and_json_lines(cli: Cli) -> None:
    lines = [
        {
            "member_id": "J1",
            "mobile": "13800138009",
            "mail": None,
            "grade": "G",
            "province": "粤",
            "reg_date": "2020-02-02",
            "updated_at": "2024-05-01T10:00:00+08:00",
            "tags": "x",
        },
        [1, 2],
    ]
    data = b"\n".join(orjson.dumps(x) for x in lines) + b"\n"
    report = cli.import_("-", input=data)
    assert (report["rows_accepted"], report["rows_rejected"]) == (1, 1)
    (reject,) = cli.query('SELECT error_code, "row" FROM member_rejects')
    assert reject == {"error_code": "malformed_row", "row": 2}
    (profile,) = cli.query("SELECT user_id, level, region FROM profiles")
    assert profile == {"user_id": "J1", "level": "gold", "region": "粤"}


def test_sqlite_source_with_query(cli: Cli) -> None:
    db = cli.tmp / "crm.db"
    con = sqlite3.connect(db)
    con.execute(
        "CREATE TABLE m (member_id TEXT, mobile TEXT, mail TEXT, grade TEXT, "
        "province TEXT, reg_date TEXT, updated_at TEXT, tags TEXT)"
    )
    con.executemany(
        "INSERT INTO m VALUES (?,?,?,?,?,?,?,?)",
        [
            (
                "S1",
                "13800138000",
                "s1@example.com",
                "金卡",
                "北京",
                "2020-01-01",
                "2024-05-01 10:00:00",
                None,
            ),
            ("S2", None, None, "G", None, None, "2024-05-02 10:00:00", "a,b"),
        ],
    )
    con.commit()
    con.close()
    report = cli.import_(f"sqlite:///{db}", "--query", "SELECT * FROM m ORDER BY member_id")
    assert report["rows_accepted"] == 2
    rows = cli.query("SELECT user_id, level, tags FROM profiles ORDER BY 1")
    assert rows == [
        {"user_id": "S1", "level": "gold", "tags": None},
        {"user_id": "S2", "level": "gold", "tags": ["a", "b"]},
    ]


def fails(cli: Cli, proc: subprocess.CompletedProcess[bytes], needle: str) -> None:
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert needle in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert cli.written() == []


def test_a_file_that_is_not_csv(cli: Cli) -> None:
    png = cli.tmp / "members.csv"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    fails(
        cli,
        cli.run("members", "import", str(png), "--mapping", str(cli.mapping)),
        "not a CSV or JSON-lines file",
    )
    prose = cli.tmp / "notes.csv"
    prose.write_text("This is a letter, not a table.\nRegards\n")
    fails(
        cli,
        cli.run("members", "import", str(prose), "--mapping", str(cli.mapping)),
        "the mapping reads column 'member_id'",
    )


def test_a_mapping_that_names_a_missing_column(cli: Cli) -> None:
    members = cli.tmp / "members.csv"
    members.write_text(HEADER.replace("mobile", "cellphone") + ROWS)
    fails(
        cli,
        cli.run("members", "import", str(members), "--mapping", str(cli.mapping)),
        "reads column 'mobile', which",
    )


def test_a_profile_field_not_in_the_dictionary(cli: Cli) -> None:
    members = cli.tmp / "members.csv"
    members.write_text(HEADER + ROWS)
    broken = {**MAPPING, "fields": {**MAPPING["fields"], "vip_tier": {"from": "grade"}}}
    cli.mapping.write_text(json.dumps(broken))
    fails(
        cli,
        cli.run("members", "import", str(members), "--mapping", str(cli.mapping)),
        "field 'vip_tier' is not in the profile dictionary",
    )


def test_an_unknown_transform_and_a_missing_file(cli: Cli) -> None:
    members = cli.tmp / "members.csv"
    members.write_text(HEADER + ROWS)
    broken = {**MAPPING, "fields": {"level": {"from": "grade", "transform": ["upcase"]}}}
    cli.mapping.write_text(json.dumps(broken))
    fails(
        cli,
        cli.run("members", "import", str(members), "--mapping", str(cli.mapping)),
        "unknown step 'upcase'",
    )
    cli.mapping.write_text(json.dumps(MAPPING))
    fails(
        cli,
        cli.run("members", "import", str(cli.tmp / "nope.csv"), "--mapping", str(cli.mapping)),
        "no such file",
    )


def test_an_import_into_a_data_directory_with_a_quote_in_its_name(tmp_path: Path) -> None:
    """Paths go into DuckDB's SQL as literals (spill directory, staged files, installs)."""
    root = tmp_path / "o'brien"
    root.mkdir()
    cli = Cli(root)
    members = root / "members.csv"
    members.write_text(HEADER + ROWS, encoding="utf-8")
    report = cli.import_(str(members))
    assert (report["rows_read"], report["rows_accepted"], report["rows_rejected"]) == (4, 3, 1)
    rows = cli.query("SELECT user_id FROM profiles ORDER BY user_id")
    assert [r["user_id"] for r in rows] == ["M001", "M002", "M003"]
