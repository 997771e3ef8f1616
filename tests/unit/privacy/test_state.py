"""PrivacyState: which events belong to a suppressed person, and in which order requests count."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.privacy.requests import (
    DELETE,
    DONE,
    PENDING,
    SUPPRESS,
    UNSUPPRESS,
    BadRequest,
    Request,
    shown_identifiers,
)
from pipeline.privacy.state import PrivacyState


def req(rid: str, action: str, *nodes: str, seq: int, status: str = DONE) -> Request:
    return Request(rid, action, tuple(nodes), status=status, seq=seq, requested_at=1000 + seq)


def test_a_request_round_trips_and_takes_its_first_offset_as_seq() -> None:
    r = Request("r1", DELETE, ("user_id:u1", "phone:ab"), ("p_1",), "ann", "gdpr", PENDING)
    back = Request.decode(r.encode(), offset=17)
    assert back == replace(r, seq=17)
    assert Request.decode(replace(r, seq=3).encode(), offset=17).seq == 3


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[]",
        b'{"request_id": "r"}',
        b'{"request_id": "r", "action": "x", "identifiers": []}',
    ],
)
def test_records_that_are_not_requests_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        Request.decode(raw, 0)


def test_shown_identifiers_keep_the_type_and_never_the_value() -> None:
    shown = shown_identifiers("k", ["user_id:u-1", "phone:" + "a" * 64])
    assert [s.split(":")[0] for s in shown] == ["user_id", "phone"]
    assert "u-1" not in "".join(shown)
    assert "a" * 64 not in "".join(shown)
    assert shown != shown_identifiers("other-key", ["user_id:u-1", "phone:" + "a" * 64])


def test_member_events_follow_the_user_id_and_anonymous_ones_the_device() -> None:
    state = PrivacyState()
    state.apply([req("r1", SUPPRESS, "user_id:u1", "anonymous_id:d1", "phone:h1", seq=0)])
    assert state.suppressed("u1", None, None)
    assert state.suppressed(None, "d1", None)
    assert state.suppressed(None, "d-new", {"phone": "h1"})  # a new device with their phone
    # Another member on the person's device is that member's event (DESIGN 9).
    assert not state.suppressed("u2", "d1", {"phone": "h1"})
    assert not state.suppressed(None, "d2", {"openid": "o9"})


def test_identifiers_linked_later_count_through_the_identity_map() -> None:
    person = {"user_id:u1": "p_u1", "anonymous_id:d1": "p_u1"}
    state = PrivacyState(person.get)
    state.apply([req("r1", SUPPRESS, "anonymous_id:d1", seq=0)])
    assert state.suppressed("u1", None, None)  # u1 is d1's person
    assert not state.suppressed(None, "d7", None)
    person["anonymous_id:d7"] = "p_u1"  # linked after the request (e.g. a member import)
    state.refresh()
    assert state.suppressed(None, "d7", None)


def test_nobody_is_suppressed_without_requests() -> None:
    state = PrivacyState(lambda n: "p")
    assert not state.any
    assert not state.suppressed("u1", "d1", {"phone": "h"})


def test_an_unsuppress_lifts_only_earlier_requests_whatever_order_records_come_in() -> None:
    suppress = req("r1", SUPPRESS, "user_id:u1", "anonymous_id:d1", seq=5)
    lift = req("r2", UNSUPPRESS, "user_id:u1", "anonymous_id:d1", seq=9)
    again = req("r3", SUPPRESS, "anonymous_id:d1", seq=12)
    for order in ([suppress, lift], [lift, suppress]):
        state = PrivacyState()
        state.apply(order)
        assert not state.suppressed("u1", None, None)
    state = PrivacyState()
    state.apply([again, lift, suppress])
    assert state.suppressed(None, "d1", None)
    # A later status record of r1 (compaction keeps it, at a higher offset) keeps r1's seq.
    state.apply([replace(suppress, seq=40, status=DONE)])
    assert state.requests["r1"].seq == 5
    state2 = PrivacyState()
    state2.apply([suppress, lift])
    state2.apply([replace(suppress, seq=40)])
    assert not state2.suppressed("u1", None, None)


def test_unfinished_deletions_and_the_oldest_pending_request() -> None:
    state = PrivacyState()
    state.apply(
        [
            req("a", DELETE, "user_id:u1", seq=1, status=PENDING),
            req("b", DELETE, "user_id:u2", seq=2, status=DONE),
            req("c", SUPPRESS, "user_id:u3", seq=3),
        ]
    )
    assert [r.request_id for r in state.unfinished()] == ["a"]
    assert [r.request_id for r in state.deletions()] == ["a", "b"]
    assert state.oldest_unfinished() == 1001
    assert state.suppressed("u2", None, None)  # a delete suppresses too
    assert state.by_status()[(DELETE, PENDING)] == 1
    assert [r.request_id for r in state.person_requests({"user_id:u3"})] == ["c"]


def test_person_ids_are_re_read_at_most_once_a_second_and_at_once_on_a_request() -> None:
    person = {"anonymous_id:d1": "p_1"}
    state = PrivacyState(person.get)
    state.apply([req("r1", SUPPRESS, "anonymous_id:d1", seq=0)])  # applied: read at once
    assert state.pids == {"p_1"}
    person["anonymous_id:d1"] = "p_2"  # a merge moved the device
    now = state._refreshed
    state.maybe_refresh(now + 0.5)
    assert state.pids == {"p_1"}
    state.maybe_refresh(now + 1.0)
    assert state.pids == {"p_2"}
