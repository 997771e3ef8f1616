"""A population with known persons, for testing identity stitching end to end.

Members with one to three devices (anonymous browsing, then a login, then logged-in
events), anonymous visitors who never log in (some on two devices sharing an openid),
devices shared by two members, and members whose login carries another member's openid.
The true person of every event is written down here from the scenario, not computed by
trackflow, and follows DESIGN section 9: a device's anonymous events belong to the first
member who logs in on it.
"""

from __future__ import annotations

import itertools
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class Population:
    events: list[dict[str, Any]] = field(default_factory=list)
    truth: dict[str, str] = field(default_factory=dict)  # event_id -> true person label
    members: set[str] = field(default_factory=set)
    conflicts: list[tuple[str, str]] = field(default_factory=list)  # (member, member) refused
    phones: dict[str, str] = field(default_factory=dict)  # member -> clear phone

    def lines(self, seed: int = 0, batch: int = 1) -> list[bytes]:
        """JSON lines in a shuffled order (links arrive out of event-time order)."""
        events = list(self.events)
        random.Random(seed).shuffle(events)
        if batch <= 1:
            return [orjson.dumps(e) for e in events]
        return [orjson.dumps(events[i : i + batch]) for i in range(0, len(events), batch)]


def build(
    members: int = 30,
    visitors: int = 10,
    shared: int = 4,
    borrowed_openids: int = 4,
    seed: int = 7,
    now_ms: int | None = None,
    prefix: str = "",
) -> Population:
    rng = random.Random(seed)
    start = (now_ms or int(time.time() * 1000)) - 3 * 3600 * 1000
    pop = Population()
    counter = itertools.count()

    def emit(label: str, t: int, name: str = "page_view", **env: Any) -> None:
        props: dict[str, Any] = {
            "page_view": {"page": rng.choice(["home", "category", "product_detail"])},
            "login": {"method": "wechat"},
            "add_to_cart": {"product_id": f"sku{rng.randrange(40)}", "quantity": 1, "price": 9.9},
        }[name]
        event: dict[str, Any] = {
            "event_id": f"{prefix}id-{next(counter)}",
            "event_name": name,
            "event_time": t,
            "platform": "miniprogram",
            "properties": props,
        }
        event.update({k: v for k, v in env.items() if v is not None})
        pop.events.append(event)
        pop.truth[event["event_id"]] = label

    def session(
        member: str | None,
        device: str,
        t: int,
        openid: str | None,
        login_openid: str | None = None,
        phone: str | None = None,
        anonymous: int = 3,
        logged_in: int = 3,
        label: str | None = None,
    ) -> None:
        who = label or member or device
        ids = {"openid": openid} if openid else None
        for _ in range(anonymous):
            t += rng.randrange(5_000, 60_000)
            emit(who, t, anonymous_id=device, identities=ids)
        if member is None:
            return
        t += 10_000
        login_ids: dict[str, str] = {}
        if login_openid:
            login_ids["openid"] = login_openid
        if phone:
            login_ids["phone"] = phone
        emit(who, t, "login", anonymous_id=device, user_id=member, identities=login_ids or None)
        for _ in range(logged_in):
            t += rng.randrange(5_000, 60_000)
            emit(
                who,
                t,
                rng.choice(["page_view", "add_to_cart"]),
                anonymous_id=device,
                user_id=member,
            )

    openid_of: dict[str, str] = {}
    for m in range(members):
        member = f"{prefix}m{m}"
        pop.members.add(member)
        openid_of[member] = f"{prefix}o-m{m}"
        phone = f"139{m:08d}" if m % 3 == 0 else None
        if phone:
            pop.phones[member] = phone
        for d in range(1 + m % 3):
            t = start + d * 20 * 60_000 + rng.randrange(60_000)
            session(member, f"{prefix}d-m{m}-{d}", t, openid_of[member], openid_of[member], phone)
    for v in range(visitors):
        # Every other visitor uses two devices; the shared openid makes them one person.
        label = f"{prefix}visitor{v}"
        for d in range(1 + v % 2):
            t = start + d * 15 * 60_000
            session(None, f"{prefix}d-v{v}-{d}", t, f"{prefix}o-v{v}", label=label, anonymous=4)
    for s in range(shared):
        a, b = f"{prefix}sa{s}", f"{prefix}sb{s}"
        pop.members |= {a, b}
        pop.conflicts.append((a, b))
        device = f"{prefix}d-shared{s}"
        session(a, device, start, None)
        session(b, device, start + 90 * 60_000, None, anonymous=0)
        session(b, f"{prefix}d-own-{b}", start + 100 * 60_000, None)
    for k in range(borrowed_openids):
        a, b = f"{prefix}oa{k}", f"{prefix}ob{k}"
        pop.members |= {a, b}
        pop.conflicts.append((a, b))
        oa = f"{prefix}o-oa{k}"
        session(a, f"{prefix}d-{a}", start, oa, oa)
        # b's login carries a's openid (a borrowed phone, a shared WeChat account).
        session(b, f"{prefix}d-{b}", start + 30 * 60_000, None, login_openid=oa)
    return pop


def pairwise(predicted: dict[str, str], truth: dict[str, str]) -> tuple[float, float]:
    """Pairwise precision and recall of a grouping of event ids against the truth."""

    def pairs(counts: Iterable[int]) -> int:
        return sum(n * (n - 1) // 2 for n in counts)

    ids = [i for i in truth if i in predicted]
    both = Counter((predicted[i], truth[i]) for i in ids)
    same_pred = Counter(predicted[i] for i in ids)
    same_true = Counter(truth[i] for i in ids)
    tp = pairs(both.values())
    pp, tt = pairs(same_pred.values()), pairs(same_true.values())
    return (tp / pp if pp else 1.0), (tp / tt if tt else 1.0)


def persons_holding_two_members(rows: Iterable[dict[str, Any]]) -> list[str]:
    members: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.get("user_id"):
            members[r["person_id"]].add(r["user_id"])
    return [p for p, ms in members.items() if len(ms) > 1]
