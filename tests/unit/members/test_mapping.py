"""Loading a mapping file: every mistake is one clear line before anything is read."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.contract.pii import PiiHasher
from pipeline.contract.profiles import DictionaryError, load_profile_dictionary
from pipeline.members.mapping import MappingError, load_mapping, parse_mapping
from pipeline.members.transforms import apply_steps

DICT = load_profile_dictionary()
HASHER = PiiHasher("unit-test-secret")
GOOD = {
    "source": "crm",
    "key": "member_id",
    "incremental": "updated_at",
    "fields": {
        "level": {"from": "grade", "transform": ["trim"], "required": True},
        "phone": {"from": "mobile"},
        "city": "city_name",
    },
}


def test_a_good_mapping() -> None:
    m = parse_mapping(GOOD, DICT, HASHER)
    assert m.source == "crm"
    assert m.key == "member_id"
    assert m.incremental == "updated_at"
    assert m.columns == ["member_id", "updated_at", "grade", "mobile", "city_name"]
    assert m.required == frozenset({"level"})


def test_a_phone_field_without_the_phone_step_is_still_hashed() -> None:
    (phone,) = [f for f in parse_mapping(GOOD, DICT, HASHER).fields if f.field == "phone"]
    assert apply_steps(list(phone.steps), "13800138000") == HASHER.digest("phone", "+8613800138000")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"fields": {"vip_level": {"from": "grade"}}},
            "'vip_level' is not in the profile dictionary",
        ),
        ({"source": "bad name!"}, "'source' must be a name"),
        ({"source": "identify"}, "kept for the collector"),
        ({"key": ""}, "'key' must name the column"),
        ({"fields": {}}, "'fields' must be an object"),
        ({"fields": {"level": {"from": "g", "transform": ["shout"]}}}, "unknown step 'shout'"),
        ({"fields": {"level": {"from": "g", "required": "yes"}}}, "'required' must be true"),
    ],
)
def test_broken_mappings(change: dict, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        parse_mapping({**GOOD, **change}, DICT, HASHER)


def test_missing_column_is_named(tmp_path: Path) -> None:
    m = parse_mapping(GOOD, DICT, HASHER)
    with pytest.raises(MappingError, match=r"reads column 'mobile', which members\.csv does not"):
        m.check_columns(["member_id", "updated_at", "grade", "city_name"], "members.csv")
    m.check_columns(["member_id", "updated_at", "grade", "mobile", "city_name", "x"], "f")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text("{not json")
    with pytest.raises(MappingError, match="is not JSON"):
        load_mapping(path, DICT, HASHER)
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "missing.json", DICT, HASHER)
    path.write_bytes(orjson.dumps(GOOD))
    assert load_mapping(path, DICT, HASHER).path == path


def test_dictionary_errors_name_the_field(tmp_path: Path) -> None:
    d = tmp_path / "v1.json"
    d.write_text('{"fields": {"level": {"type": "enum", "description": "x", "owner": "y"}}}')
    with pytest.raises(DictionaryError, match="field 'level': type must be one of"):
        load_profile_dictionary(d)
    d.write_text('{"fields": {"level": {"type": "string", "owner": "y"}}}')
    with pytest.raises(DictionaryError, match="has no description"):
        load_profile_dictionary(d)


def test_the_built_in_dictionary_describes_every_field() -> None:
    for f in DICT.fields.values():
        assert f.description
        assert f.owner
    assert DICT.identity_fields() == {
        "phone": "phone",
        "email": "email",
        "openid": "openid",
        "unionid": "unionid",
    }
