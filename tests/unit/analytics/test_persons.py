"""``resolve`` gives every event the person ``events_resolved`` gives it."""

from __future__ import annotations

from pathlib import Path

from pipeline.analytics.persons import resolve
from pipeline.lake import views
from tests.unit.analytics.lake import ev, write_events, write_identities


def test_same_persons_as_events_resolved(tmp_path: Path) -> None:
    write_events(
        tmp_path,
        [
            ev("page_view", "2026-03-01T10:00:00+08:00", anon="d1"),  # device of u1
            ev("login", "2026-03-01T10:01:00+08:00", anon="d1", user="u1"),
            ev("login", "2026-03-02T10:01:00+08:00", anon="d1", user="u2"),  # other member
            ev("page_view", "2026-03-02T10:00:00+08:00", anon="unknown"),  # not in One ID
            ev("page_view", "2026-03-02T10:00:00+08:00", anon="d9", user="u9"),  # member unknown
        ],
    )
    write_identities(
        tmp_path,
        [
            ("user_id", "u1", "P1"),
            ("anonymous_id", "d1", "P1"),
            ("user_id", "u2", "P2"),
            ("anonymous_id", "d9", "P9"),
        ],
    )
    con = views.connect(tmp_path)
    ours = con.execute(
        f"SELECT event_id, person_id FROM ({resolve('SELECT * FROM events')}) ORDER BY 1"
    ).fetchall()
    view = con.execute("SELECT event_id, person_id FROM events_resolved ORDER BY 1").fetchall()
    assert ours == view
    assert [p for _, p in ours] == ["P1", "P1", "P2", "p_unknown", "p_u9"]
