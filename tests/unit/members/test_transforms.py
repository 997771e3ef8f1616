"""Every transform step of a mapping (DESIGN 14), including the messy spellings of real
member files: Chinese region and level names, phone numbers in several formats, two date
formats."""

from __future__ import annotations

import pytest

from pipeline.contract.errors import ErrorCode
from pipeline.contract.pii import PiiHasher
from pipeline.members.transforms import (
    FieldError,
    MappingError,
    apply_steps,
    compile_steps,
)

HASHER = PiiHasher("unit-test-secret")


def run(steps: list, value: object, field: str = "f") -> object:
    return apply_steps(compile_steps(field, steps, HASHER), value)


def test_trim_strips_ascii_and_ideographic_spaces_and_empties_become_none() -> None:
    assert run(["trim"], "  张三\u3000") == "张三"
    assert run(["trim"], "\u3000 \t") is None
    assert run(["trim"], None) is None


def test_lower() -> None:
    assert run(["lower"], "GoLD") == "gold"
    assert run(["trim", "lower"], " VIP ") == "vip"


@pytest.mark.parametrize(
    "raw",
    [
        "+86 138-0013-8000",
        "13800138000",
        "0086 13800138000",
        "138 0013 8000",
        "+8613800138000",
        "(+86) 138.0013.8000",
        "86 13800138000",
        "１３８００１３８０００",
    ],
)
def test_phone_spellings_of_one_mobile_number_hash_the_same(raw: str) -> None:
    assert run(["phone"], raw) == HASHER.digest("phone", "+8613800138000")


def test_phone_that_is_not_a_number_is_rejected_without_the_value() -> None:
    with pytest.raises(FieldError) as err:
        run(["phone"], "call me 555-abc", field="phone")
    assert err.value.code == ErrorCode.INVALID_VALUE
    assert err.value.rule == "transform.phone"
    assert "555" not in err.value.detail


def test_email_is_trimmed_lowercased_then_hashed() -> None:
    expected = HASHER.digest("email", "alice@example.com")
    assert run(["email"], " Alice@Example.COM ") == expected
    with pytest.raises(FieldError) as err:
        run(["email"], "alice(at)example.com", field="email")
    assert "alice" not in err.value.detail


@pytest.mark.parametrize(
    ("raw", "iso"),
    [("2020-01-05", "2020-01-05"), ("2020/1/5", "2020-01-05"), ("2020年01月05日", "2020-01-05")],
)
def test_date_tries_each_format(raw: str, iso: str) -> None:
    assert run([{"date": ["%Y-%m-%d", "%Y/%m/%d", "%Y年%m月%d日"]}], raw) == iso


def test_date_matching_no_format_is_rejected() -> None:
    with pytest.raises(FieldError) as err:
        run([{"date": ["%Y-%m-%d"]}], "05.01.2020", field="birthday")
    assert err.value.rule == "transform.date"
    assert "birthday" in err.value.detail


LEVELS = {"金卡": "gold", "黄金会员": "gold", "G": "gold", "Gold": "gold", "银卡": "silver"}
REGIONS = {"广东": "guangdong", "广东省": "guangdong", "粤": "guangdong", "北京市": "beijing"}


@pytest.mark.parametrize("raw", ["金卡", "黄金会员", "G", "Gold", " 金卡 "])
def test_map_gives_the_standard_level(raw: str) -> None:
    assert run(["trim", {"map": LEVELS}], raw) == "gold"


@pytest.mark.parametrize(
    ("raw", "std"), [("广东省", "guangdong"), ("粤", "guangdong"), ("北京市", "beijing")]
)
def test_map_gives_the_standard_region(raw: str, std: str) -> None:
    assert run([{"map": REGIONS}], raw) == std


def test_map_passes_unknown_spellings_for_the_dictionary_to_judge() -> None:
    assert run([{"map": LEVELS}], "钻石") == "钻石"


def test_default_fills_only_missing_values() -> None:
    assert run(["trim", {"default": "active"}], "  ") == "active"
    assert run([{"default": "active"}], None) == "active"
    assert run([{"default": "active"}], "frozen") == "frozen"


def test_split_reads_ascii_and_chinese_commas() -> None:
    assert run(["split"], "vip, new，老客户、 ") == ["vip", "new", "老客户"]
    assert run(["split"], " , ") is None


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["upper"], "unknown step 'upper'"),
        ([{"date": []}], '"date" takes a list'),
        ([{"map": ["a"]}], '"map" takes an object'),
        ([{"regex": "x"}], "unknown step 'regex'"),
        ("trim", "must be a list"),
        ([{"map": {}, "date": []}], "one key"),
    ],
)
def test_bad_steps_are_mapping_errors(steps: object, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        compile_steps("level", steps, HASHER)
