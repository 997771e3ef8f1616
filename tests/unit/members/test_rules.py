"""Per-row checks against the profile dictionary: types, allowed values, ranges, and the
rules across fields (DESIGN 14)."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline.contract.profiles import load_profile_dictionary
from pipeline.members.rules import RULE_VIOLATION, check

DICT = load_profile_dictionary()
TODAY = date(2026, 11, 30)


def rules_broken(values: dict, required: frozenset[str] = frozenset()) -> set[str]:
    return {v.rule for v in check(DICT, values, TODAY, required)[1]}


def test_a_good_row_is_typed() -> None:
    typed, violations = check(
        DICT,
        {
            "level": "gold",
            "points": "120",
            "registered_at": "2020-01-05",
            "tags": ["a"],
            "marketing_opt_in": "是",
            "birthday": "1990-02-03",
        },
        TODAY,
    )
    assert violations == []
    assert typed == {
        "level": "gold",
        "points": 120,
        "registered_at": "2020-01-05",
        "tags": ["a"],
        "marketing_opt_in": True,
        "birthday": "1990-02-03",
    }


@pytest.mark.parametrize(
    ("values", "rule"),
    [
        ({"registered_at": "1999-12-31"}, "registered_at.min"),
        ({"registered_at": "2026-12-01"}, "registered_at.max"),
        ({"level": "钻石"}, "level.allowed"),
        ({"status": "banned"}, "status.allowed"),
        ({"points": "-1"}, "points.min"),
        ({"points": "12.5"}, "points.type"),
        ({"points": "lots"}, "points.type"),
        ({"registered_at": "05/01/2020"}, "registered_at.type"),
        ({"marketing_opt_in": "maybe"}, "marketing_opt_in.type"),
        ({"tags": [str(i) for i in range(51)]}, "tags.max_items"),
        ({"city": "x" * 65}, "city.max_length"),
        ({"level": ["gold"]}, "level.type"),
    ],
)
def test_each_field_rule(values: dict, rule: str) -> None:
    assert rules_broken(values) == {rule}


def test_registered_today_is_fine_tomorrow_is_the_future() -> None:
    assert rules_broken({"registered_at": "2026-11-30"}) == set()
    (v,) = check(DICT, {"registered_at": "2026-12-01"}, TODAY)[1]
    assert v.detail == "registered_at 2026-12-01 is in the future"


def test_required_field_without_value() -> None:
    (v,) = check(DICT, {"level": None}, TODAY, frozenset({"level"}))[1]
    assert (v.field, v.code, v.rule) == ("level", "missing_required_field", "level.required")
    assert check(DICT, {"level": None}, TODAY)[1] == []  # not required: a null is fine


def test_cross_field_rule_birthday_not_after_registration() -> None:
    (v,) = check(DICT, {"birthday": "2021-01-01", "registered_at": "2020-01-01"}, TODAY)[1]
    assert (v.field, v.code, v.rule) == ("birthday", RULE_VIOLATION, "born_before_registration")
    assert rules_broken({"birthday": "2019-01-01", "registered_at": "2020-01-01"}) == set()
    assert rules_broken({"birthday": "2021-01-01"}) == set()  # the other field unknown


def test_cross_field_rule_cancelled_needs_registration() -> None:
    assert rules_broken({"status": "cancelled"}) == {"cancelled_has_registration"}
    assert rules_broken({"status": "cancelled", "registered_at": "2020-01-01"}) == set()
    assert rules_broken({"status": "active"}) == set()


def test_a_field_already_broken_does_not_also_break_its_cross_rules() -> None:
    assert rules_broken({"birthday": "bad", "registered_at": "2020-01-01"}) == {"birthday.type"}


def test_pii_values_are_never_quoted_in_details() -> None:
    (v,) = check(DICT, {"phone": ["x"]}, TODAY)[1]
    assert "x" not in v.detail.replace("phone", "")


def test_the_latest_dictionary_is_used_and_v1_is_unchanged() -> None:
    import json
    from pathlib import Path

    assert DICT.version == 2
    v1 = json.loads(Path("schemas/profiles/member/v1.json").read_text(encoding="utf-8"))
    assert v1["version"] == 1
    assert "vip" not in v1["fields"]["level"]["allowed"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("level", "vip"),
        ("level", "svip"),
        ("level", "normal"),
        ("level", "super_vip"),
        ("status", "disabled"),
        ("status", "dormant"),
        ("status", "pending"),
        ("gender", "secret"),
    ],
)
def test_common_crm_values_are_allowed(field: str, value: str) -> None:
    assert rules_broken({field: value}) == set()


@pytest.mark.parametrize(("raw", "points"), [("100.0", 100), ("100", 100), ("100.", 100)])
def test_integral_decimal_strings_are_ints(raw: str, points: int) -> None:
    typed, violations = check(DICT, {"points": raw}, TODAY)
    assert violations == []
    assert typed == {"points": points}
