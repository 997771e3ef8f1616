"""Member imports on the worker's /metrics: read from the lake, one series per source."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from pipeline.runtime.member_metrics import MemberGauges
from tests.unit.members.test_apply import MAPPING, Lake, row


def scrape(registry: CollectorRegistry) -> dict[str, float]:
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_latest_import_of_each_source(tmp_path: Path) -> None:
    required = {
        **MAPPING,
        "sla_hours": 6,
        "fields": {**MAPPING["fields"], "level": {"from": "level", "required": True}},
    }
    lake = Lake(tmp_path, required)
    lake.load(
        [
            row("M1", "2024-05-01 10:00", level="gold"),
            row("M2", "2024-05-01 11:00"),
            row("M3", "2024-05-01 12:00", level="silver", points="9"),
        ]
    )
    lake.load([])  # an incremental run with nothing new: counts as a success, not as data
    registry = CollectorRegistry()
    gauges = MemberGauges(registry)
    asyncio.run(gauges.refresh(tmp_path / "lake", 86400))
    m = scrape(registry)
    assert m['trackflow_member_import_rows{outcome="read",source="crm"}'] == 3
    assert m['trackflow_member_import_rows{outcome="rejected",source="crm"}'] == 1
    assert m['trackflow_member_import_rejected_ratio{source="crm"}'] == 1 / 3
    assert m['trackflow_member_field_null_ratio{field="level",required="true",source="crm"}'] == (
        1 / 3
    )
    assert m['trackflow_member_field_null_ratio{field="points",required="false",source="crm"}'] == (
        2 / 3
    )
    assert m['trackflow_member_field_violations{field="level",source="crm"}'] == 1
    assert m['trackflow_member_field_value_ratio{field="level",source="crm",value="gold"}'] == 0.5
    assert m['trackflow_member_import_sla_seconds{source="crm"}'] == 6 * 3600
    last = m['trackflow_member_import_last_success_timestamp_seconds{source="crm"}']
    assert last > 1.7e9


def test_no_imports_no_series_and_a_broken_file_keeps_the_timer(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    gauges = MemberGauges(registry)
    asyncio.run(gauges.refresh(tmp_path / "lake", 86400))
    assert not any(k.startswith("trackflow_member") for k in scrape(registry))
    broken = tmp_path / "lake" / "member_imports"
    broken.mkdir(parents=True)
    (broken / "x.parquet").write_bytes(b"not parquet")
    asyncio.run(gauges.refresh(tmp_path / "lake", 86400))  # logged, not raised
