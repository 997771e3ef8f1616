"""``trackflow report retention|lifecycle|rfm`` as processes over a hand-built lake: the four
formats, and bad input refused with one line and exit code 2 (no traceback, no output)."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.unit.analytics.lake import ev, write_events

BIN = Path(sys.executable).parent / "trackflow"
RETENTION = ["report", "retention", "--cohort-event", "signup", "--return-event", "page_view"]
RANGE = ["--from", "2026-03-02", "--to", "2026-03-04"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lake")
    write_events(
        root,
        [
            ev("signup", "2026-03-02T10:00:00+08:00", anon="a", method="phone"),
            ev("page_view", "2026-03-03T23:30:00+08:00", anon="a"),
            ev("signup", "2026-03-03T10:00:00+08:00", anon="b", method="phone"),
            ev(
                "pay_success",
                "2026-03-03T10:00:00+08:00",
                anon="a",
                order_id="o1",
                amount=12.5,
                pay_method="alipay",
            ),
        ],
    )
    return root


def trackflow(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "TRACKFLOW_TIMEZONE"}
    full = {**base, "TRACKFLOW_DATA_DIR": str(data_dir), **env}
    return subprocess.run([str(BIN), *args], env=full, capture_output=True, text=True, timeout=60)


def test_retention_json_rows(data_dir: Path) -> None:
    out = trackflow(data_dir, *RETENTION, *RANGE, "--periods", "2", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert orjson.loads(out.stdout) == [
        {"cohort": "2026-03-02", "size": 1, "k": 0, "retained": 0, "complete": True},
        {"cohort": "2026-03-02", "size": 1, "k": 1, "retained": 1, "complete": True},
        {"cohort": "2026-03-03", "size": 1, "k": 0, "retained": 0, "complete": True},
        {"cohort": "2026-03-03", "size": 1, "k": 1, "retained": 0, "complete": True},
        {"cohort": "2026-03-04", "size": 0, "k": 0, "retained": 0, "complete": True},
        {"cohort": "2026-03-04", "size": 0, "k": 1, "retained": 0, "complete": True},
    ]


def test_lifecycle_csv_and_rfm_json(data_dir: Path) -> None:
    out = trackflow(data_dir, "report", "lifecycle", *RANGE, "--format", "csv")
    assert out.returncode == 0, out.stderr
    assert list(csv.reader(io.StringIO(out.stdout))) == [
        ["period", "new", "returning", "resurrecting", "dormant"],
        ["2026-03-02", "1", "0", "0", "0"],
        ["2026-03-03", "1", "1", "0", "0"],
        ["2026-03-04", "0", "0", "0", "2"],
    ]
    out = trackflow(data_dir, "report", "rfm", "--as-of", "2026-03-04", "--format", "json")
    assert orjson.loads(out.stdout) == [
        {
            "person_id": "p_a",
            "recency_days": 1,
            "frequency": 1,
            "monetary": 12.5,
            "r": 1,
            "f": 1,
            "m": 1,
            "segment": "lost",
        }
    ]


@pytest.mark.parametrize(
    ("args", "chart"),
    [
        ([*RETENTION, *RANGE], "Retention"),
        (["report", "lifecycle", *RANGE, "--period", "week"], "Lifecycle"),
        (["report", "rfm", "--as-of", "2026-03-04"], "RFM segments"),
    ],
)
def test_html_is_one_self_contained_page(data_dir: Path, args: list[str], chart: str) -> None:
    out = trackflow(data_dir, *args, "--format", "html")
    assert out.returncode == 0, out.stderr
    page = out.stdout
    assert page.startswith("<!DOCTYPE html>")
    assert f"<h1>{chart}</h1>" in page
    assert "<svg" in page
    assert "<rect" in page
    # offline: nothing fetched (the only URL is the SVG namespace, which is not fetched)
    for fetches in ("src=", "<link", "@import", "<script"):
        assert fetches not in page
    assert page.replace("http://www.w3.org/2000/svg", "").count("http") == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            [
                "report",
                "retention",
                "--cohort-event",
                "sign_up",
                "--return-event",
                "page_view",
                *RANGE,
            ],
            {},
            "trackflow report retention: --cohort-event: unknown event 'sign_up' (not in the "
            "tracking plan)",
        ),
        (
            ["report", "lifecycle", "--from", "2026-03-05", "--to", "2026-03-04"],
            {},
            "trackflow report lifecycle: --from 2026-03-05 is after --to 2026-03-04",
        ),
        (
            ["report", "rfm", "--as-of", "2026-03-04"],
            {"TRACKFLOW_TIMEZONE": "Asia/Atlantis"},
            "trackflow: TRACKFLOW_TIMEZONE: unknown time zone 'Asia/Atlantis' (an IANA name, "
            "e.g. Asia/Shanghai)",
        ),
        (
            [*RETENTION, *RANGE, "--timezone", "Europe/Nowhere"],
            {},
            "trackflow: TRACKFLOW_TIMEZONE: unknown time zone 'Europe/Nowhere' (an IANA name, "
            "e.g. Asia/Shanghai)",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    data_dir: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    out = trackflow(data_dir, *args, **env)
    assert out.returncode == 2
    assert out.stderr == message + "\n"
    assert out.stdout == ""


def test_segments_build_writes_person_tags(data_dir: Path) -> None:
    out = trackflow(data_dir, "segments", "build", "--as-of", "2026-03-04", "--period", "day")
    assert out.returncode == 0, out.stderr
    rows = trackflow(
        data_dir,
        "query",
        "SELECT person_id, lifecycle_stage, rfm_segment, orders, repurchase FROM person_tags "
        "ORDER BY person_id",
        "--format",
        "json",
    )
    assert orjson.loads(rows.stdout) == [
        {
            "person_id": "p_a",
            "lifecycle_stage": "dormant",
            "rfm_segment": "lost",
            "orders": 1,
            "repurchase": False,
        },
        {
            "person_id": "p_b",
            "lifecycle_stage": "dormant",
            "rfm_segment": None,
            "orders": 0,
            "repurchase": False,
        },
    ]
    bad = trackflow(data_dir, "segments", "build", "--as-of", "yesterday")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert (
        bad.stderr
        == "trackflow segments build: --as-of must be a date YYYY-MM-DD, not 'yesterday'\n"
    )
