"""Data quality of member sources: null rate per field over the rows read (required
fields too: their missing values reject rows), enum distributions, drift between runs."""

from __future__ import annotations

from pathlib import Path

from pipeline.contract.profiles import load_profile_dictionary
from pipeline.members.quality import distance, latest_metrics, quality_report
from tests.unit.members.test_apply import MAPPING, Lake, row

DICT = load_profile_dictionary()


def test_distance() -> None:
    assert distance({"a": 2}, {"a": 5}) == 0.0
    assert distance({"a": 1}, {"b": 1}) == 1.0
    assert distance({"a": 1, "b": 1}, {"a": 1}) == 0.5
    assert distance(None, {"a": 1}) is None


def test_null_rates_values_violations_and_drift(tmp_path: Path) -> None:
    required = {
        **MAPPING,
        "fields": {**MAPPING["fields"], "level": {"from": "level", "required": True}},
    }
    lake = Lake(tmp_path, required)
    lake.load(
        [
            row("M1", "2024-05-01 10:00", level="gold", points="1"),
            row("M2", "2024-05-01 10:01", level="gold"),
            row("M3", "2024-05-01 10:02", level="silver", points="x"),
            row("M4", "2024-05-01 10:03"),
        ]
    )
    lake.load(
        [
            row("M5", "2024-05-02 10:00", level="silver", points="2"),
            row("M6", "2024-05-02 10:01", level="silver", points="3"),
        ]
    )
    (crm,) = quality_report(lake.con(), DICT, None)["sources"]
    fields = {f["field"]: f for f in crm["fields"]}
    assert crm["latest"]["rows_read"] == 2
    assert crm["previous"]["rows_rejected"] == 2  # M3 (points) and M4 (no level)
    assert fields["level"]["required"] is True
    assert fields["level"]["null_rate"] == 0.0
    assert fields["level"]["null_rate_previous"] == 0.25  # M4: counted though rejected
    assert fields["points"]["null_rate_drift"] == -0.5
    assert fields["level"]["values"] == {"silver": 2}
    assert fields["level"]["values_drift"] == 1.0  # gold only -> silver only
    assert fields["phone"]["null_rate"] == 1.0
    previous = quality_report(lake.con(), DICT, "crm")["sources"][0]
    assert previous["source"] == "crm"
    assert quality_report(lake.con(), DICT, "other") == {"sources": []}


def test_latest_metrics_in_a_data_directory_with_a_quote_in_its_name(tmp_path: Path) -> None:
    """The workers' member metrics read the import and quality files by path in SQL."""
    lake = Lake(tmp_path / "o'brien")
    lake.load([row("M1", "2024-05-01 10:00", level="gold"), row("M2", "bad time")])
    (crm,) = latest_metrics(lake.root / "lake", 3600.0)
    assert crm.source == "crm"
    assert crm.rows == {"read": 2, "accepted": 1, "rejected": 1, "unchanged": 0, "skipped": 0}
    assert crm.fields[0] == ("level", False, 0.5, 0)  # from the member_quality file
