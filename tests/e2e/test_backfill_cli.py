"""``trackflow backfill`` then ``trackflow report`` as processes: a generated month of history
(members on two devices who log in, visitors, purchases around local midnight), loaded
twice (the second run stores nothing), and every retention and lifecycle cell and every
person's RFM values and scores equal to an independent computation (tests/history.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import orjson
import pytest

from pipeline.identity.rules import load_identity_rules
from tests import history

BIN = Path(sys.executable).parent / "trackflow"
TZ = "Asia/Shanghai"
START, DAYS = date(2026, 1, 5), 21
LO, HI = date(2026, 1, 5), date(2026, 1, 25)


def trackflow(data_dir: Path, *args: str, stdin: bytes | None = None) -> bytes:
    env = {**os.environ, "TRACKFLOW_DATA_DIR": str(data_dir), "TRACKFLOW_TIMEZONE": TZ}
    env["TRACKFLOW_PII_SECRET"] = "backfill-test-secret"
    proc = subprocess.run([str(BIN), *args], env=env, input=stdin, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, history.History]:
    tmp = tmp_path_factory.mktemp("backfill")
    h = history.build(START, DAYS, members=60, visitors=25, tz=TZ, seed=5)
    source = tmp / "history.jsonl"
    source.write_bytes(h.lines(seed=3) + b'{"not": "an event"}\n')
    data = tmp / "data"
    first = orjson.loads(trackflow(data, "backfill", str(source)))
    assert first["stored"] == len(h.events)
    assert first["dead_lettered"] == 1
    second = orjson.loads(trackflow(data, "backfill", "-", stdin=source.read_bytes()))
    assert second["stored"] == 0
    assert second["dead_lettered"] == 0
    assert second["identities"] == 0
    return data, h


def test_the_second_backfill_stored_nothing(loaded: tuple[Path, history.History]) -> None:
    data, h = loaded
    out = trackflow(data, "query", "SELECT count(*) AS n FROM events", "--format", "json")
    assert orjson.loads(out) == [{"n": len(h.events)}]
    out = trackflow(data, "query", "SELECT error_code FROM dlq", "--format", "json")
    assert orjson.loads(out) == [{"error_code": "missing_required_field"}]


def test_lifecycle_matches(loaded: tuple[Path, history.History]) -> None:
    data, h = loaded
    out = trackflow(
        data, "report", "lifecycle", "--from", str(LO), "--to", str(HI), "--format", "json"
    )
    assert orjson.loads(out) == history.lifecycle(h, LO, HI)


def test_retention_matches(loaded: tuple[Path, history.History]) -> None:
    data, h = loaded
    args = ["--cohort-event", "signup", "--return-event", "page_view", "--periods", "7"]
    out = trackflow(
        data, "report", "retention", *args, "--from", str(LO), "--to", str(HI), "--format", "json"
    )
    expected = history.retention(h, "signup", "page_view", LO, HI, 7, date.today())
    assert orjson.loads(out) == expected
    assert sum(r["retained"] for r in expected) > 20  # the example is not trivially empty


def test_rfm_matches(loaded: tuple[Path, history.History]) -> None:
    data, h = loaded
    out = trackflow(data, "report", "rfm", "--as-of", str(HI), "--days", "14", "--format", "json")
    rules = load_identity_rules()
    got = {
        r["person_id"]: (r["recency_days"], r["frequency"], r["monetary"], r["r"], r["f"], r["m"])
        for r in orjson.loads(out)
    }
    expected = {rules.person_id(f"user_id:{who}"): v for who, v in history.rfm(h, HI, 14).items()}
    assert got == expected
    assert len(expected) > 10
