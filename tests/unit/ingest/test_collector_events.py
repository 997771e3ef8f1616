"""The events the HTTP collector adds to the plan: identify, alias, group (schemas/events)."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.contract.errors import Rejected
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import load_plan
from pipeline.ingest.validation import Validator

NOW = 1_795_420_800_000


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(load_plan(), PiiHasher("k"))


def event(name: str, **over: Any) -> dict[str, Any]:
    obj = {
        "event_id": "e1",
        "event_name": name,
        "event_time": NOW,
        "anonymous_id": "a1",
        "platform": "web",
    }
    obj.update(over)
    return obj


def test_identify_traits_are_free_form_properties_not_drift(validator: Validator) -> None:
    traits = {
        "name": "Ada",
        "plan": "gold",
        "address": {"city": "Hangzhou"},
        "mobile": "13812345678",
    }
    record = validator.validate(event("identify", user_id="m-1", properties=traits), NOW)
    assert isinstance(record, dict)
    assert "unknown_properties" not in record  # free_form: expected, not drift
    props = record["properties"]
    assert props["name"] == "Ada"
    assert props["address"] == {"city": "Hangzhou"}
    assert props["mobile"] != "13812345678"
    assert len(props["mobile"]) == 64


def test_a_non_free_form_event_still_reports_drift(validator: Validator) -> None:
    record = validator.validate(event("page_view", properties={"page": "home", "x": 1}), NOW)
    assert isinstance(record, dict)
    assert record["unknown_properties"] == ["x"]


def test_alias_needs_both_identifiers(validator: Validator) -> None:
    record = validator.validate(event("alias", user_id="m-1"), NOW)
    assert isinstance(record, dict)
    assert record["anonymous_id"] == "a1"
    with pytest.raises(Rejected) as err:
        validator.validate(event("alias"), NOW)
    assert err.value.code == "missing_required_field"
    assert "user_id" in err.value.detail
    with pytest.raises(Rejected) as err:
        validator.validate(event("alias", anonymous_id=None, user_id="m-1"), NOW)
    assert "anonymous_id" in err.value.detail


def test_group_needs_a_group_id_and_keeps_its_traits(validator: Validator) -> None:
    record = validator.validate(
        event("group", properties={"group_id": "g-9", "industry": "retail"}), NOW
    )
    assert isinstance(record, dict)
    assert record["properties"] == {"group_id": "g-9", "industry": "retail"}
    assert "unknown_properties" not in record
    with pytest.raises(Rejected) as err:
        validator.validate(event("group", properties={"industry": "retail"}), NOW)
    assert err.value.code == "missing_required_field"
    assert "group_id" in err.value.detail
