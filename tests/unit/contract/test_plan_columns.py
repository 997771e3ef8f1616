"""The plan's reserved names: no property may be named like one of the lake's columns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.contract.plan import ENVELOPE_COLUMNS, PlanError, default_schemas_dir, load_plan
from pipeline.lake.schema import EVENT_COLUMNS


def test_every_lake_column_of_events_is_reserved() -> None:
    assert {name for name, _ in EVENT_COLUMNS} <= ENVELOPE_COLUMNS
    assert "source" in ENVELOPE_COLUMNS  # the collector's source (DESIGN 13)


@pytest.mark.parametrize("name", ["source", "source_index", "person_id"])
def test_a_property_named_like_a_lake_column_is_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "schemas"
    shutil.copytree(default_schemas_dir(), root)
    path = root / "events" / "signup" / "v1.avsc"
    schema = json.loads(path.read_text())
    field = {"name": name, "type": ["null", "string"], "default": None, "doc": "clashes"}
    schema["fields"].append(field)
    path.write_text(json.dumps(schema))
    with pytest.raises(PlanError, match=f"property '{name}' clashes with a lake column"):
        load_plan(root)
