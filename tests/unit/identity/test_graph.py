"""The One ID rules: priorities, refusals, deterministic ids, order independence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.identity.graph import IdentityGraph, Link
from pipeline.identity.rules import load_identity_rules, node

RULES = load_identity_rules()
U = lambda v: node("user_id", v)  # noqa: E731
D = lambda v: node("anonymous_id", v)  # noqa: E731
O = lambda v: node("openid", v)  # noqa: E731, E741
P = lambda v: node("phone", v)  # noqa: E731


def event_links(t: int, *ids: str) -> list[Link]:
    ordered = sorted(ids, key=RULES.order)
    return [(a, b, t) for a, b in RULES.links(ordered)]


def groups(g: IdentityGraph) -> set[frozenset[str]]:
    by: dict[str, set[str]] = {}
    for n, pid in g.person.items():
        by.setdefault(pid, set()).add(n)
    return {frozenset(v) for v in by.values()}


def test_rules_file_has_priorities_and_member_limit() -> None:
    assert RULES.types == ("user_id", "phone", "unionid", "openid", "email", "anonymous_id")
    assert RULES.limits == {"user_id": 1}
    assert RULES.first == "user_id"


def test_rules_are_data(tmp_path: Path) -> None:
    data = json.loads(Path("schemas/identity/rules.v1.json").read_text())
    data["identifier_types"][0]["max_per_person"] = 2
    data["version"] = 2
    (tmp_path / "rules.v1.json").write_text("{}")
    (tmp_path / "rules.v2.json").write_text(json.dumps(data))
    assert load_identity_rules(tmp_path).limits == {"user_id": 2}


def test_rules_without_descriptions_are_refused(tmp_path: Path) -> None:
    data = json.loads(Path("schemas/identity/rules.v1.json").read_text())
    del data["identifier_types"][1]["description"]
    (tmp_path / "rules.v1.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="description"):
        load_identity_rules(tmp_path)


def test_event_links_are_a_star_from_the_top_identifier() -> None:
    ids = RULES.identifiers("u1", "d1", {"openid": "o1", "phone": "h1"})
    assert ids == [U("u1"), P("h1"), O("o1"), D("d1")]
    assert RULES.links(ids) == [(U("u1"), P("h1")), (U("u1"), O("o1")), (U("u1"), D("d1"))]
    assert RULES.links([D("d1")]) == [(D("d1"), D("d1"))]


def test_person_id_is_deterministic_from_the_top_identifier() -> None:
    g = IdentityGraph(RULES)
    g.add(event_links(1, D("d1")) + event_links(2, D("d1"), U("u1")))
    pid = RULES.person_id(U("u1"))
    assert g.lookup(D("d1")) == g.lookup(U("u1")) == pid
    assert pid == IdentityGraph(RULES).rules.person_id(U("u1"))
    assert pid.startswith("p_")
    assert len(pid) == 22


def test_login_merges_the_anonymous_person_and_records_it() -> None:
    g = IdentityGraph(RULES)
    g.add(event_links(1, D("d1")))
    changes = g.add(event_links(2, U("u1"), D("d1")))
    [merge] = changes.merges
    assert merge["accepted"]
    assert merge["from_person_id"] == RULES.person_id(D("d1"))
    assert merge["to_person_id"] == RULES.person_id(U("u1"))
    assert {r["identifier"] for r in changes.identities} == {"u1", "d1"}


def test_second_and_third_device_join_the_member() -> None:
    g = IdentityGraph(RULES)
    for i, dev in enumerate(["d1", "d2", "d3"]):
        g.add(event_links(10 * i, D(dev)))
        g.add(event_links(10 * i + 5, U("u1"), D(dev)))
    assert groups(g) == {frozenset({U("u1"), D("d1"), D("d2"), D("d3")})}


def test_shared_device_stays_with_its_first_member() -> None:
    g = IdentityGraph(RULES)
    g.add(event_links(1, D("shared")))
    g.add(event_links(2, U("a"), D("shared")))
    changes = g.add(event_links(3, U("b"), D("shared")))
    assert g.lookup(D("shared")) == RULES.person_id(U("a"))
    assert g.lookup(U("b")) == RULES.person_id(U("b"))
    [refusal] = changes.merges
    assert refusal["accepted"] is False
    assert refusal["reason"] == "would_join_two_user_ids"
    assert {refusal["from_person_id"], refusal["to_person_id"]} == {
        RULES.person_id(U("a")),
        RULES.person_id(U("b")),
    }
    assert g.add(event_links(4, U("b"), D("shared"))).merges == []  # recorded once


def test_login_carrying_another_members_openid_is_refused() -> None:
    g = IdentityGraph(RULES)
    g.add(event_links(1, U("a"), D("da"), O("oa")))
    changes = g.add(event_links(5, U("b"), D("db"), O("oa")))
    assert groups(g) == {
        frozenset({U("a"), D("da"), O("oa")}),
        frozenset({U("b"), D("db")}),
    }
    assert [m["accepted"] for m in changes.merges] == [False]


def test_device_goes_to_its_first_login_not_to_an_earlier_profile_id() -> None:
    """b's device carried a's openid before b logged in there; b's login still wins."""
    g = IdentityGraph(RULES)
    g.add(event_links(1, U("a"), O("oa")))
    g.add(event_links(2, D("db"), O("oa")))
    g.add(event_links(3, U("b"), D("db")))
    assert g.lookup(D("db")) == RULES.person_id(U("b"))
    assert g.lookup(O("oa")) == RULES.person_id(U("a"))


def test_openid_joins_an_anonymous_device_to_the_member() -> None:
    g = IdentityGraph(RULES)
    g.add(event_links(1, U("a"), D("d1"), O("oa")))
    g.add(event_links(9, D("d2"), O("oa")))
    assert g.lookup(D("d2")) == RULES.person_id(U("a"))


def test_anonymous_visitor_keeps_its_own_person() -> None:
    g = IdentityGraph(RULES)
    g.add(event_links(1, D("v")))
    assert g.lookup(D("v")) == RULES.person_id(D("v"))
    assert g.person_count() == 1


def test_replayed_and_older_links_change_nothing() -> None:
    g = IdentityGraph(RULES)
    links = event_links(5, U("a"), D("d1"))
    assert g.add(links)
    assert not g.add(links)
    assert g.knows(U("a"), D("d1"), 6)
    assert not g.knows(U("a"), D("d1"), 4)
    assert g.add(event_links(4, U("a"), D("d1"))).applied == 1  # first seen moves earlier


def test_identity_rows_carry_first_and_last_seen() -> None:
    g = IdentityGraph(RULES)
    g.add(event_links(5, D("d1")))
    rows = g.add(event_links(9, D("d1"))).identities
    assert rows == [
        {
            "identifier_type": "anonymous_id",
            "identifier": "d1",
            "person_id": RULES.person_id(D("d1")),
            "first_seen": 5,
            "last_seen": 9,
        }
    ]


# Order independence: the map depends on the set of links, not on their arrival order.
SCENARIO = (
    event_links(1, D("s"))
    + event_links(2, U("a"), D("s"), O("oa"))
    + event_links(3, U("b"), D("s"))
    + event_links(4, U("b"), D("db"), O("oa"))
    + event_links(5, D("db"), O("oa"))
    + event_links(6, D("x"), O("ox"))
    + event_links(7, D("y"), O("ox"))
    + event_links(8, U("c"), D("y"))
    + event_links(9, U("a"), D("s"))
    + event_links(10, U("c"), P("h"))
    + event_links(11, U("a"), P("h"))
)


@settings(max_examples=200, deadline=None)
@given(st.permutations(SCENARIO), st.integers(1, 5))
def test_map_is_independent_of_arrival_order_and_batching(links: list[Link], batch: int) -> None:
    reference = IdentityGraph(RULES)
    reference.add(SCENARIO)
    g = IdentityGraph(RULES)
    for i in range(0, len(links), batch):
        g.add(links[i : i + batch])
    assert g.person == reference.person
    assert g.refused == reference.refused
    for pid in set(g.person.values()):
        members = [n for n, p in g.person.items() if p == pid]
        assert sum(n.startswith("user_id:") for n in members) <= 1


def test_scenario_persons() -> None:
    g = IdentityGraph(RULES)
    g.add(SCENARIO)
    assert g.lookup(D("s")) == RULES.person_id(U("a"))
    assert g.lookup(D("db")) == RULES.person_id(U("b"))
    assert g.lookup(O("oa")) == RULES.person_id(U("a"))
    assert g.lookup(D("x")) == g.lookup(D("y")) == RULES.person_id(U("c"))
    assert g.lookup(P("h")) == RULES.person_id(U("c"))  # c claimed the phone first


def test_merge_rows_say_when_and_through_which_link() -> None:
    g = IdentityGraph(RULES)
    g.add(event_links(1, D("d1")))
    g.add(event_links(3, O("o1"), D("d1")))
    [merge] = g.add(event_links(7, U("u1"), O("o1"))).merges
    # o1 and d1 move together: one row, at the later first sighting of the two
    assert merge["from_person_id"] == RULES.person_id(O("o1"))
    assert merge["to_person_id"] == RULES.person_id(U("u1"))
    assert (merge["at"], merge["link_from"], merge["link_to"]) == (3, None, None)
    g.add(event_links(8, U("a"), D("s")))
    [refusal] = g.add(event_links(9, U("b"), D("s"))).merges
    assert refusal == {
        "from_person_id": RULES.person_id(U("b")),
        "to_person_id": RULES.person_id(U("a")),
        "reason": "would_join_two_user_ids",
        "accepted": False,
        "at": 9,
        "link_from": U("b"),
        "link_to": D("s"),
    }


def test_replay_without_emit_builds_the_same_map_and_no_rows() -> None:
    reference = IdentityGraph(RULES)
    emitted = reference.add(SCENARIO)
    g = IdentityGraph(RULES)
    changes = g.add(SCENARIO, emit=False)
    assert (changes.identities, changes.merges) == ([], [])
    assert changes.applied == emitted.applied
    assert (g.person, g.persons, g.refused) == (
        reference.person,
        reference.persons,
        reference.refused,
    )
