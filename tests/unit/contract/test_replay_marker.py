"""The replay marker header: what the replay command writes, the validate agent reads."""

from __future__ import annotations

import pytest

from pipeline.contract.replay import HEADER, ReplayMarker, dead_letter_key, decode, from_headers


def test_a_marker_survives_the_header_and_its_key_splits_back() -> None:
    marker = ReplayMarker(dead_letter_key("x.events.raw", 3, 1042, 7), 1_795_420_800_000, True)
    assert decode(marker.encode()) == marker
    assert marker.of.split(":") == ["x.events.raw", "3", "1042", "7"]
    assert from_headers([("other", b"1"), (HEADER, marker.encode())]) == marker
    assert from_headers({HEADER: marker.encode()}) == marker
    assert from_headers(((HEADER.encode(), marker.encode()),)) == marker


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"not json",
        b"[1]",
        b'{"of": ""}',
        b'{"of": 5}',
        b'{"of": "k", "received_at": "yesterday"}',
        b'{"of": "k", "received_at": -1}',
        b'{"of": "k", "received_at": true}',
    ],
)
def test_a_header_that_is_not_a_marker_is_ignored(value: bytes | None) -> None:
    assert decode(value) is None
    assert from_headers([(HEADER, value)]) is None


def test_messages_without_the_header_are_plain() -> None:
    assert from_headers(None) is None
    assert from_headers([]) is None
    assert from_headers([("trackflow-other", b"{}")]) is None
    assert decode(b'{"of": "k"}') == ReplayMarker("k", None, False)
