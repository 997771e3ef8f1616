"""Every format between agents survives a round trip, and no message exceeds the limit."""

from __future__ import annotations

import base64

import orjson
import pyarrow as pa
import pytest

from pipeline.contract.plan import load_plan
from pipeline.metrics.combine import CombineState
from pipeline.metrics.definitions import load_metrics
from pipeline.metrics.partials import Partials
from pipeline.runtime import wire


def test_events_round_trip_and_split_under_the_limit() -> None:
    table = pa.table({"event_id": [f"e{i}" for i in range(2000)], "n": list(range(2000))})
    (whole,) = wire.encode_events(table)
    assert wire.decode_events(whole).equals(table)
    parts = wire.encode_events(table, max_bytes=4096)
    assert len(parts) > 1
    assert all(len(p) <= 4096 for p in parts)
    assert pa.concat_tables([wire.decode_events(p) for p in parts]).equals(table)
    assert wire.encode_events(table.slice(0, 0)) == []


def test_dead_letters_carry_payload_bytes_and_split_in_order() -> None:
    payload = bytes(range(256))
    records = [
        {
            "source_offset": i,
            "error_code": "malformed_payload",
            "payload": base64.b64encode(payload).decode(),
        }
        for i in range(300)
    ]
    parts = wire.encode_dead_letters(5, records, max_bytes=8192)
    assert len(parts) > 1
    assert all(len(p) <= 8192 for p in parts)
    assert all(orjson.loads(p)["p"] == 5 for p in parts)
    decoded = [r for p in parts for r in wire.decode_dead_letters(p)]
    assert [r["source_offset"] for r in decoded] == list(range(300))
    assert all(r["payload"] == payload for r in decoded)
    assert wire.encode_dead_letters(5, []) == []


def test_links_round_trip_and_reject_foreign_messages() -> None:
    links = [("user_id:u1", "anonymous_id:d1", 1_700_000_000_000)]
    (value,) = wire.encode_links(links)
    assert wire.decode_links(value) == links
    many = [(f"user_id:u{i}", f"anonymous_id:d{i}", i) for i in range(5000)]
    parts = wire.encode_links(many, max_bytes=16_384)
    assert len(parts) > 1
    assert all(len(v) <= 16_384 for v in parts)
    assert [link for v in parts for link in wire.decode_links(v)] == many
    with pytest.raises((ValueError, TypeError)):
        wire.decode_links(b'{"not": "links"}')
    with pytest.raises(orjson.JSONDecodeError):
        wire.decode_links(b"not json")


def test_identity_changes_round_trip() -> None:
    changes = wire.IdentityChanges(0, 42, 1_700_000_000_000, [{"identifier": "x"}], [])
    assert wire.IdentityChanges.decode(changes.encode()) == changes


def test_positioned_rows_round_trip_and_defaults() -> None:
    rows = wire.PositionedRows(0, 7, 1 << 19, [{"metric": "pv", "value": 3.0}])
    assert wire.PositionedRows.decode(rows.encode()) == rows
    assert wire.PositionedRows.decode(b"{}") == wire.PositionedRows(0, -1, 0, [])


def test_partials_are_what_combine_applies() -> None:
    defs = load_metrics(load_plan())
    t0 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000
    p = Partials(series={("events", 60, t0, '{"event_name":"page_view"}'): 3})
    value = wire.encode_partials(2, 11, t0 + 1, p, defs)
    state = CombineState(defs, partitions=4, lateness_s=60)
    assert state.apply(wire.decode_partials(value))
    assert state.applied == {2: 11}
    assert state.wm == {2: t0 + 1}
    assert state.open[("events", 60, t0, '{"event_name":"page_view"}')] == 3
    assert not state.apply(wire.decode_partials(value))  # a replay is skipped


def test_split_identity_changes_keep_every_row_position() -> None:
    ids = [{"identifier": f"d{i}", "pad": "x" * 100} for i in range(300)]
    merges = [{"from_person_id": f"p{i}", "pad": "y" * 100} for i in range(50)]
    whole = wire.IdentityChanges(0, 42, 1_700_000_000_000, ids, merges)
    parts = [wire.IdentityChanges.decode(v) for v in whole.encode_all(max_bytes=4096)]
    assert len(parts) > 1
    id_pos = [(p.offset, p.base + i) for p in parts for i in range(len(p.identities))]
    merge_pos = [(p.offset, p.base + i) for p in parts for i in range(len(p.merges))]
    assert [r for p in parts for r in p.identities] == ids
    assert [r for p in parts for r in p.merges] == merges
    assert len(set(id_pos)) == len(ids)  # no two rows of one table share a position
    assert len(set(merge_pos)) == len(merges)


def test_split_positioned_rows_keep_every_row_position() -> None:
    rows = [{"metric": "pv", "dimensions": f'{{"page":"p{i}"}}', "value": i} for i in range(2000)]
    whole = wire.PositionedRows(0, 9, 1 << 19, rows)
    parts = [wire.PositionedRows.decode(v) for v in whole.encode_all(max_bytes=8192)]
    assert len(parts) > 1
    positions = [(p.offset, p.base + i) for p in parts for i in range(len(p.rows))]
    assert positions == [(9, (1 << 19) + i) for i in range(2000)]
    assert [r for p in parts for r in p.rows] == rows


@pytest.mark.parametrize(
    ("headers", "through"),
    [
        (wire.links_header(12), 12),  # as stitch writes it (a list of pairs)
        ({wire.LINKS_HEADER: b"7"}, 7),  # as a client may hand headers over (a mapping)
        ([("other", b"3"), (wire.LINKS_HEADER, b"5")], 5),
        (None, -1),  # not written by stitch: its windows do not wait
        ([], -1),
        ([(wire.LINKS_HEADER, b"not a number")], -1),
        ([(wire.LINKS_HEADER, None)], -1),
    ],
)
def test_the_links_header_reads_back_and_a_bad_one_means_no_wait(
    headers: object, through: int
) -> None:
    assert wire.links_through(headers) == through


def test_no_links_offset_writes_no_header() -> None:
    assert wire.links_header(-1) == []
