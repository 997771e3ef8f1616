"""MatchSet: the Arrow mask and the DuckDB predicate select the same rows of every table."""

from __future__ import annotations

import duckdb
import orjson
import pyarrow as pa
import pytest

from pipeline.privacy.matching import MatchSet

M = MatchSet.of(
    ["user_id:u1", "anonymous_id:d1", "anonymous_id:d2", "phone:" + "a" * 64, "openid:o1"],
    ["p_x"],
)

EVENTS = pa.table(
    {
        "user_id": ["u1", None, None, "u2", "u2", None, None],
        "anonymous_id": ["d9", "d1", "d2", "d1", None, "d3", "d4"],
        "person_id": ["p_1", "p_2", "p_3", "p_u2", "p_u2", "p_x", "p_4"],
    }
)
EVENTS_GONE = [True, True, True, False, False, True, False]

IDENTITIES = pa.table(
    {
        "identifier_type": ["user_id", "openid", "openid", "anonymous_id"],
        "identifier": ["u1", "o1", "o2", "d5"],
        "person_id": ["p_1", "p_1", "p_2", "p_x"],
    }
)
IDENTITIES_GONE = [True, True, False, True]

MERGES = pa.table(
    {
        "from_person_id": ["p_x", "p_2", "p_2", "p_3"],
        "to_person_id": ["p_1", "p_x", "p_3", "p_4"],
        "link_from": [None, None, "user_id:u1", None],
        "link_to": [None, None, "openid:o9", None],
    }
)
MERGES_GONE = [True, True, True, False]

PROFILES = pa.table({"person_id": ["p_x", "p_9", "p_8"], "user_id": ["u7", "u1", "u8"]})
PROFILES_GONE = [True, True, False]


@pytest.mark.parametrize(
    ("table", "gone"),
    [
        (EVENTS, EVENTS_GONE),
        (IDENTITIES, IDENTITIES_GONE),
        (MERGES, MERGES_GONE),
        (PROFILES, PROFILES_GONE),
    ],
)
def test_mask_and_sql_agree(table: pa.Table, gone: list[bool]) -> None:
    assert M.mask(table).to_pylist() == gone
    predicate = M.sql(set(table.column_names))
    assert predicate is not None
    sql, params = predicate
    con = duckdb.connect()
    con.register("t", table)
    found = con.execute(f"SELECT row_number() OVER () - 1 AS i, {sql} AS m FROM t", params)
    assert [bool(m) for _, m in found.fetchall()] == gone


def test_an_empty_set_matches_nothing() -> None:
    assert MatchSet().mask(EVENTS).to_pylist() == [False] * EVENTS.num_rows
    assert not MatchSet()


def test_dead_letters_match_by_their_envelope_or_masked_text() -> None:
    payloads = [
        orjson.dumps({"anonymous_id": "d1", "event_name": "nope"}),
        orjson.dumps({"user_id": "u2", "anonymous_id": "d1"}),  # another member's
        orjson.dumps({"anonymous_id": "dz", "identities": {"openid": "o1"}}),
        b"not json [phone:" + b"a" * 64 + b"] here",
        b"not json, nobody",
        orjson.dumps({"user_id": "u1"}),
        None,
    ]
    table = pa.table({"payload": pa.array(payloads, pa.binary())})
    assert M.mask(table).to_pylist() == [True, False, True, True, False, True, False]
    assert M.sql({"payload", "error_code"}) is None  # no cheap predicate: every file is read
