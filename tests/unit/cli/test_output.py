"""The one output switch of the CLI: table, csv and json from the same rows."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from decimal import Decimal

import orjson
import pytest

from pipeline.cli.output import emit

COLUMNS = ["name", "day", "at", "amount", "note"]
ROWS = [
    ("plain", date(2024, 1, 2), datetime(2024, 1, 2, 3, 4, 5, 500000), Decimal("1.50"), None),
    ('a, "quoted"\nline', None, datetime(2024, 1, 2, tzinfo=UTC), Decimal("0.1"), "x"),
]


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")


def test_csv_quotes_what_needs_quoting_and_renders_lake_values_plainly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    emit(COLUMNS, ROWS, "csv")
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == [
        "name,day,at,amount,note",
        "plain,2024-01-02,2024-01-02T03:04:05.500000,1.5,",
    ]
    assert '"a, ""quoted""\nline",,2024-01-02T00:00:00+00:00,0.1,x\n' in out
    assert list(csv.reader(io.StringIO(out)))[2][0] == 'a, "quoted"\nline'


def test_csv_of_no_rows_is_the_header(capsys: pytest.CaptureFixture[str]) -> None:
    emit(COLUMNS, [], "csv")
    assert capsys.readouterr().out == "name,day,at,amount,note\n"


def test_json_is_one_array_of_objects_with_iso_times_and_plain_decimals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exact, inexact = Decimal("2.25"), Decimal("12345678901234567890.12")
    emit(["a", "b"], [(exact, inexact)], "json")
    out = capsys.readouterr().out
    assert out == '[{"a":2.25,"b":"12345678901234567890.12"}]\n'

    emit(COLUMNS, ROWS, "json")
    records = orjson.loads(capsys.readouterr().out)
    assert records == [
        {
            "name": "plain",
            "day": "2024-01-02",
            "at": "2024-01-02T03:04:05.500000",
            "amount": 1.5,
            "note": None,
        },
        {
            "name": 'a, "quoted"\nline',
            "day": None,
            "at": "2024-01-02T00:00:00+00:00",
            "amount": 0.1,
            "note": "x",
        },
    ]


def test_json_of_tuple_rows_leaves_values_nested_in_a_cell_to_orjson(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # As `trackflow query` has always printed a DuckDB STRUCT holding a decimal.
    emit(["s", "l"], [({"k": Decimal("2.50")}, [1, 2])], "json")
    assert capsys.readouterr().out == '[{"s":{"k":"2.50"},"l":[1,2]}]\n'


def test_json_of_no_rows_is_an_empty_array(capsys: pytest.CaptureFixture[str]) -> None:
    emit(COLUMNS, [], "json")
    assert capsys.readouterr().out == "[]\n"


def test_records_show_their_columns_in_table_and_csv_but_whole_in_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = [
        {"extra": "only in json", "b": date(2024, 5, 6), "a": 1, "n": {"d": Decimal("2.50")}},
    ]
    emit(["a", "b"], records, "csv")
    assert capsys.readouterr().out == "a,b\n1,2024-05-06\n"
    emit(["a", "b"], records, "json")
    assert orjson.loads(capsys.readouterr().out) == [
        {"extra": "only in json", "b": "2024-05-06", "a": 1, "n": {"d": 2.5}}
    ]
    emit(["a", "b"], records, "table")
    table = capsys.readouterr().out
    assert "2024-05-06" in table
    assert "extra" not in table


@pytest.mark.parametrize("fmt", ["table", "anything else"])
def test_table_shows_every_column_and_cell_with_none_blank(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    emit(COLUMNS, ROWS[:1], fmt)
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if "name" in line)
    assert [c.strip() for c in header.strip("┃").split("┃")] == COLUMNS
    body = next(line for line in lines if "plain" in line)
    cells = [c.strip() for c in body.strip("│").split("│")]
    # A table shows str() of each value: Decimal keeps its scale, None is blank.
    assert cells == ["plain", "2024-01-02", "2024-01-02 03:04:05.500000", "1.50", ""]
    assert "," not in out
