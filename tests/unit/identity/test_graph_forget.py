"""Deleting a person from the identity map (DESIGN 15): forget, and links touching them later."""

from __future__ import annotations

from pipeline.identity.graph import IdentityGraph
from pipeline.identity.rules import load_identity_rules, node

RULES = load_identity_rules()
U = lambda v: node("user_id", v)  # noqa: E731
D = lambda v: node("anonymous_id", v)  # noqa: E731
O = lambda v: node("openid", v)  # noqa: E731, E741


def person_with_a_refused_neighbour() -> IdentityGraph:
    g = IdentityGraph(RULES)
    g.add([(U("a"), D("a1"), 1), (U("a"), D("a2"), 2), (U("a"), O("oa"), 3)])
    g.add([(U("b"), D("b1"), 4), (U("b"), O("oa"), 5)])  # refused: would join a and b
    assert g.person[U("b")] != g.person[U("a")]
    return g


def test_forget_removes_the_whole_person_and_keeps_the_neighbour() -> None:
    g = person_with_a_refused_neighbour()
    gone = g.person_nodes([D("a2")])
    assert gone == {U("a"), D("a1"), D("a2"), O("oa")}
    g.forget(gone)
    assert set(g.person) == {U("b"), D("b1")}
    assert g.person[U("b")] == RULES.person_id(U("b"))
    assert not any(U("a") in e or O("oa") in e for e in g.edges)
    assert g.refused == set()
    assert g.person_count() == 1
    fresh = IdentityGraph(RULES)
    fresh.add([(U("b"), D("b1"), 4)])
    assert g.person == fresh.person
    assert g.edges == fresh.edges
    assert g.seen == {U("b"): [4, 5], D("b1"): [4, 4]}  # b was seen at 5 (the refused link)


def test_links_touching_a_forgotten_identifier_are_ignored_until_unforgotten() -> None:
    g = person_with_a_refused_neighbour()
    g.forget(g.person_nodes([U("a")]))
    assert not g.add([(U("a"), D("a9"), 9), (D("a1"), D("a1"), 9)])
    assert D("a9") not in g.person
    g.add([(D("z"), D("z"), 9)])  # others still count
    assert D("z") in g.person
    g.unforget([U("a")])
    assert g.add([(U("a"), D("a9"), 10)])
    assert g.person[D("a9")] == g.person[U("a")]


def test_replaying_links_then_forget_gives_the_same_map_in_any_overlap() -> None:
    links = [(U("a"), D("a1"), 1), (U("a"), O("oa"), 3), (U("b"), O("oa"), 5)]
    gone = [U("a"), D("a1"), O("oa")]
    g1 = IdentityGraph(RULES)
    g1.add(links, emit=False)
    g1.forget(gone, emit=False)
    g1.add(links, emit=False)  # a follower re-reading the changelog from the start
    g1.forget(gone, emit=False)
    g2 = IdentityGraph(RULES)
    g2.add([(U("b"), O("oa"), 5)], emit=False)
    g2.forget([O("oa")], emit=False)
    assert g1.person == g2.person == {U("b"): RULES.person_id(U("b"))}
