"""Replay's privacy check: dead letters of suppressed persons (by the request list and the
lake's identity map), by the rule validate applies."""

from __future__ import annotations

import duckdb
import orjson

from pipeline.dlq.suppression import NoSuppressions, identifiers, load_suppressions
from pipeline.privacy.requests import SUPPRESS, UNSUPPRESS, Request


def lake() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(
        "CREATE VIEW identities AS SELECT * FROM (VALUES "
        "('user_id', 'u1', 'p1'), ('anonymous_id', 'd1', 'p1'), ('openid', 'o1', 'p1'), "
        "('user_id', 'u2', 'p2'), ('anonymous_id', 'd2', 'p2')) "
        "t(identifier_type, identifier, person_id)"
    )
    return con


def payload(**fields: object) -> dict[str, str]:
    return identifiers(orjson.dumps(fields))


def test_nobody_suppressed_without_requests() -> None:
    assert isinstance(load_suppressions(lake(), []), NoSuppressions)


def test_every_identifier_of_the_person_counts_through_the_map() -> None:
    s = load_suppressions(lake(), [Request("r1", SUPPRESS, ("user_id:u1",), seq=0)])
    assert s.suppressed(payload(anonymous_id="d1"))  # linked to u1 in the map
    assert s.suppressed(payload(anonymous_id="d9", identities={"openid": "o1"}))
    assert s.suppressed(payload(user_id="u1"))
    assert not s.suppressed(payload(user_id="u2", anonymous_id="d1"))  # u2's event
    assert not s.suppressed(payload(anonymous_id="d2"))


def test_a_lifted_suppression_replays_again() -> None:
    requests = [
        Request("r1", SUPPRESS, ("user_id:u1",), seq=0),
        Request("r2", UNSUPPRESS, ("user_id:u1", "anonymous_id:d1"), seq=1),
    ]
    assert not load_suppressions(lake(), requests).suppressed(payload(anonymous_id="d1"))


def test_a_lake_without_identity_map_uses_the_requests_identifiers() -> None:
    s = load_suppressions(duckdb.connect(), [Request("r1", SUPPRESS, ("anonymous_id:d1",), seq=0)])
    assert s.suppressed(payload(anonymous_id="d1"))
    assert not s.suppressed(payload(anonymous_id="d2"))
