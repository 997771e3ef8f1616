"""Members and One ID through the real broker and a real worker (DESIGN 14): an import
links members' phones through the identity writer, so events that carry only a phone join
the member in events_resolved; identify calls update the same profiles by event time;
a phone two members share is refused like any link that would join two members."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from pipeline.contract.pii import PiiHasher
from tests.support import Deployment, wait_for

SECRET = "test-secret"  # tests.support.Deployment's TRACKFLOW_PII_SECRET
MAPPING = {
    "source": "crm",
    "key": "id",
    "incremental": "updated_at",
    "fields": {
        "phone": {"from": "mobile", "transform": ["phone"]},
        "email": {"from": "mail", "transform": ["email"]},
        "level": {"from": "grade", "transform": [{"map": {"金卡": "gold", "银卡": "silver"}}]},
    },
}
MEMBERS = (
    "id,mobile,mail,grade,updated_at\n"
    "M1,+86 138-0013-8000,m1@example.com,金卡,2024-05-01 10:00:00\n"
    "M2,13900139000,,银卡,2024-05-01 10:00:00\n"
    "M3,0086 13800138000,m3@example.com,银卡,2024-05-01 10:00:00\n"  # M1's phone
)


def event(i: int, name: str, props: dict[str, Any], **envelope: Any) -> bytes:
    now = datetime.now(UTC) + timedelta(seconds=i)
    return orjson.dumps(
        {
            "event_id": f"mem-{i}",
            "event_name": name,
            "event_time": now.isoformat(),
            "platform": "miniprogram",
            "properties": props,
            **envelope,
        }
    )


def import_members(dep: Deployment) -> dict[str, Any]:
    (dep.tmp / "members.csv").write_text(MEMBERS, encoding="utf-8")
    (dep.tmp / "mapping.json").write_text(json.dumps(MAPPING, ensure_ascii=False))
    out = dep.run(
        "members",
        "import",
        str(dep.tmp / "members.csv"),
        "--mapping",
        str(dep.tmp / "mapping.json"),
    )
    report: dict[str, Any] = orjson.loads(out.stdout)
    return report


def person(dep: Deployment, kind: str, value: str) -> str | None:
    rows = dep.query(
        f"SELECT person_id FROM identities WHERE identifier_type = '{kind}' "
        f"AND identifier = '{value}'"
    )
    return str(rows[0]["person_id"]) if rows else None


def test_members_join_events_by_phone_and_identify_updates_profiles(
    deployment: Deployment,
) -> None:
    dep = deployment
    # Before any worker ran, identity.links does not exist: the links wait in the outbox,
    # and the worker sends them once it runs.
    report = import_members(dep)
    assert (report["rows_accepted"], report["members_new"]) == (3, 3)
    assert report["links_pending"] is True
    worker = dep.start_worker()
    dep.wait_assigned([worker])
    phone = PiiHasher(SECRET).hash_phone("13800138000")
    m1 = wait_for(lambda: person(dep, "user_id", "M1"), timeout=90, what="M1 in identities")
    # With the worker running, an import sends its own links at once.
    (dep.tmp / "more.csv").write_text(
        "id,mobile,mail,grade,updated_at\nM4,13700137000,,银卡,2024-05-02 10:00:00\n"
    )
    more = orjson.loads(
        dep.run(
            "members",
            "import",
            str(dep.tmp / "more.csv"),
            "--mapping",
            str(dep.tmp / "mapping.json"),
        ).stdout
    )
    assert (more["members_new"], more["links"], more["links_pending"]) == (1, 2, False)
    assert not list((dep.data_dir / "members" / "outbox").glob("*.links"))
    wait_for(lambda: person(dep, "user_id", "M4"), timeout=30, what="M4 in identities")
    wait_for(lambda: person(dep, "phone", phone) == m1, timeout=60, what="phone linked to M1")
    # M3 has M1's phone: the link would join two members, so it is refused and recorded.
    refused = wait_for(
        lambda: dep.query("SELECT * FROM identity_merges WHERE NOT accepted"),
        timeout=60,
        what="the refused link of M3",
    )
    assert [r["reason"] for r in refused] == ["would_join_two_user_ids"]
    assert {refused[0]["link_from"], refused[0]["link_to"]} == {"user_id:M3", f"phone:{phone}"}

    dep.produce(
        [
            # A device that never logged in, carrying only the phone (another spelling):
            event(
                1,
                "page_view",
                {"page": "home"},
                anonymous_id="dev-9",
                identities={"phone": "138 0013 8000"},
            ),
            event(2, "page_view", {"page": "cart"}, anonymous_id="dev-9"),
            # identify calls: the member's level, newer than the import; a nickname set by
            # the device (its person is M1 through the phone); an unknown level rejected.
            event(3, "identify", {"level": "platinum"}, user_id="M2"),
            event(4, "identify", {"nickname": "阿宝"}, anonymous_id="dev-9"),
            event(5, "identify", {"level": "legend"}, user_id="M1"),
        ]
    )

    def joined() -> bool:
        rows = dep.query(
            "SELECT event_id, person_id FROM events_resolved WHERE "
            "anonymous_id = 'dev-9' AND event_name = 'page_view'"
        )
        return len(rows) == 2 and all(r["person_id"] == m1 for r in rows)

    dep.wait_settled(joined, timeout=90)

    def profiles() -> dict[str, dict[str, Any]]:
        rows = dep.query(
            "SELECT person_id, user_id, level, nickname, phone, source "
            "FROM profiles WHERE user_id IS NOT NULL"
        )
        return {r["user_id"]: r for r in rows}

    wait_for(lambda: profiles()["M1"]["nickname"] == "阿宝", timeout=60, what="nickname of M1")
    got = profiles()
    assert got["M1"]["person_id"] == m1
    assert got["M1"]["level"] == "gold"  # "legend" is not a level: rejected, not applied
    assert got["M1"]["phone"] == phone
    assert got["M2"]["level"] == "platinum"
    assert got["M2"]["source"] == "identify"
    assert len(dep.query("SELECT * FROM profiles")) == 4  # dev-9's profile is M1's
    rejects = dep.query("SELECT source, field, rule FROM member_rejects")
    assert rejects == [{"source": "identify", "field": "level", "rule": "level.allowed"}]
    changes = dep.query(
        "SELECT old, new, source FROM profile_changes WHERE user_id = 'M2' "
        "AND field = 'level' ORDER BY \"at\""
    )
    assert changes == [
        {"old": None, "new": "silver", "source": "crm"},
        {"old": "silver", "new": "platinum", "source": "identify"},
    ]

    again = import_members(dep)  # the same file: nothing read, nothing changed
    assert again["rows_skipped"] == 3
    assert (again["rows_read"], again["fields_changed"], again["links"]) == (0, 0, 0)
    assert profiles() == got
