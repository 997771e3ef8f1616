"""Metric definitions as data, their lineage, and the tracking-plan change check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.contract.plan import default_schemas_dir, load_plan
from pipeline.metrics.definitions import MetricError, lineage, load_metrics, seconds
from pipeline.tools.schema_check import check, check_against

PLAN = load_plan()
DEFS = load_metrics(PLAN)


def test_every_design_metric_ships_with_its_formula() -> None:
    assert set(DEFS) == {
        "events",
        "pv",
        "uv",
        "pay_requests",
        "pay_successes",
        "payment_success_rate",
        "orders",
        "gmv",
        "aov",
        "purchase_funnel",
    }
    assert DEFS["pv"].events == ("page_view",)
    assert DEFS["pv"].dimensions == ("page",)
    assert DEFS["uv"].prop == "person_id"
    assert not DEFS["uv"].exact
    assert DEFS["uv"].resolve_persons
    assert DEFS["uv"].version == 2
    assert DEFS["orders"].exact
    assert (DEFS["payment_success_rate"].numerator, DEFS["payment_success_rate"].denominator) == (
        "pay_successes",
        "pay_requests",
    )
    assert (DEFS["aov"].numerator, DEFS["aov"].denominator) == ("gmv", "orders")
    funnel = DEFS["purchase_funnel"].funnel
    assert funnel is not None
    assert [s.event for s in funnel.steps] == [
        "page_view",
        "page_view",
        "add_to_cart",
        "checkout",
        "pay_success",
    ]
    assert DEFS["purchase_funnel"].windows == ("1h",)
    for d in DEFS.values():
        assert d.description
        assert d.owner


def test_lineage_follows_ratios() -> None:
    events, fields = lineage(DEFS, "aov")
    assert events == ["pay_success"]
    assert fields == [("pay_success", "amount"), ("pay_success", "order_id")]


def test_durations() -> None:
    assert seconds("1m") == 60
    assert seconds("1h") == 3600
    with pytest.raises(MetricError):
        seconds("1 hour")


def copy_schemas(tmp: Path) -> Path:
    dst = tmp / "schemas"
    shutil.copytree(default_schemas_dir(), dst)
    return dst


def edit(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_adding_a_metric_is_adding_a_file(tmp_path: Path) -> None:
    root = copy_schemas(tmp_path)
    (root / "metrics" / "carts").mkdir()
    (root / "metrics" / "carts" / "v1.json").write_text(
        json.dumps(
            {
                "name": "carts",
                "version": 1,
                "description": "Add-to-cart events.",
                "owner": "trade",
                "type": "count",
                "events": ["add_to_cart"],
                "windows": ["1m"],
            }
        )
    )
    assert "carts" in load_metrics(load_plan(root), root)


def test_a_metric_reading_a_missing_field_does_not_load(tmp_path: Path) -> None:
    root = copy_schemas(tmp_path)
    edit(root / "metrics" / "gmv" / "v1.json", lambda d: d.update(property="amnt"))
    with pytest.raises(MetricError, match="amnt"):
        load_metrics(load_plan(root), root)


def test_unbounded_dimension_is_refused(tmp_path: Path) -> None:
    root = copy_schemas(tmp_path)
    edit(root / "metrics" / "gmv" / "v1.json", lambda d: d.update(dimensions=["order_id"]))
    with pytest.raises(MetricError, match="bounded"):
        load_metrics(load_plan(root), root)


def new_version(root: Path, event: str, change) -> None:  # type: ignore[no-untyped-def]
    src = root / "events" / event / "v1.avsc"
    data = json.loads(src.read_text())
    data["trackflow"]["version"] = 2
    change(data)
    (root / "events" / event / "v2.avsc").write_text(json.dumps(data))


def problems(tmp_path: Path, change) -> list[str]:  # type: ignore[no-untyped-def]
    root = copy_schemas(tmp_path)
    change(root)
    new = load_plan(root)
    return check(PLAN, new, DEFS).problems


def test_unchanged_plan_passes(tmp_path: Path) -> None:
    assert problems(tmp_path, lambda root: None) == []


def test_renamed_field_names_the_metrics_and_owners(tmp_path: Path) -> None:
    def rename(data: dict) -> None:  # type: ignore[type-arg]
        for f in data["fields"]:
            if f["name"] == "amount":
                f["name"] = "pay_amount"

    found = problems(tmp_path, lambda root: new_version(root, "pay_success", rename))
    [msg] = [p for p in found if "pay_success.amount" in p]
    assert "removed or renamed" in msg
    assert "gmv (owner trade)" in msg
    assert "aov (owner trade)" in msg


def test_retyped_field_fails(tmp_path: Path) -> None:
    def retype(data: dict) -> None:  # type: ignore[type-arg]
        for f in data["fields"]:
            if f["name"] == "order_id":
                f["type"] = "long"

    def retype_everywhere(root: Path) -> None:
        for path in (root / "events").glob("*/v1.avsc"):
            if '"order_id"' in path.read_text():
                edit(path, retype)

    found = problems(tmp_path, retype_everywhere)
    assert any(
        "pay_success.order_id changed type string -> long" in p and "orders (owner trade)" in p
        for p in found
    )
    assert any(p.startswith("Avro: pay_success v1 -> v1, field order_id") for p in found)


def test_new_field_without_default_breaks_avro_readers(tmp_path: Path) -> None:
    def add(data: dict) -> None:  # type: ignore[type-arg]
        data["fields"].append({"name": "coupon_code", "type": "string", "doc": "Coupon."})

    found = problems(tmp_path, lambda root: new_version(root, "checkout", add))
    assert found == ["Avro: checkout v1 -> v2, field coupon_code is new and has no default"]


def test_editing_a_published_version_fails(tmp_path: Path) -> None:
    def edit_v1(root: Path) -> None:
        edit(root / "events" / "login" / "v1.avsc", lambda d: d.update(doc="changed"))

    found = problems(tmp_path, edit_v1)
    assert any("login v1 was edited" in p for p in found)


def test_removed_event_fails(tmp_path: Path) -> None:
    found = problems(tmp_path, lambda root: shutil.rmtree(root / "events" / "pay_request"))
    assert any(
        "event pay_request removed" in p and "payment_success_rate (owner payments)" in p
        for p in found
    )


def test_check_against_a_directory_and_a_missing_revision(tmp_path: Path) -> None:
    root = copy_schemas(tmp_path)
    report, what = check_against(default_schemas_dir(), str(root))
    assert report is not None
    assert report.ok
    assert str(root) in what
    report, what = check_against(default_schemas_dir(), "no-such-revision-xyz")
    assert report is None
    assert "no git revision" in what
