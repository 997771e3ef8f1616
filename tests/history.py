"""A generated purchase history with known persons, and the analytics reports computed from
it independently (plain Python over the scenario, not trackflow's SQL or One ID).

Members use one or two devices: on a device's first day they browse anonymously, then log
in (from then on the device's events carry the member id); visitors browse on one device
and never log in. Times are spread over the whole local day, midnight included, so local
and UTC days differ for many events.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson


@dataclass
class History:
    tz: str
    events: list[dict[str, Any]] = field(default_factory=list)
    truth: list[tuple[str, str, date, dict[str, Any]]] = field(default_factory=list)

    def lines(self, seed: int = 0) -> bytes:
        events = list(self.events)
        random.Random(seed).shuffle(events)
        return b"\n".join(orjson.dumps(e) for e in events) + b"\n"


def build(start: date, days: int, members: int, visitors: int, tz: str, seed: int = 1) -> History:
    rng = random.Random(seed)
    zone = ZoneInfo(tz)
    h = History(tz)
    n = 0

    def emit(who: str, day: date, minute: int, name: str, **env: Any) -> None:
        nonlocal n
        local = datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(minutes=minute)
        props: dict[str, Any] = {"page": "home"} if name == "page_view" else {}
        if name in ("login", "signup"):
            props = {"method": "wechat"}
        if name == "pay_success":
            props = {
                "order_id": f"o{n}",
                "amount": float(Decimal(rng.randrange(100, 50_000)) / 100),
                "pay_method": "wechat_pay",
            }
        n += 1
        h.events.append(
            {
                "event_id": f"h{n}",
                "event_name": name,
                "event_time": local.isoformat(),
                "platform": "miniprogram",
                "properties": props,
                **env,
            }
        )
        h.truth.append((who, name, local.date(), props))

    def minute() -> int:  # a quarter of the events in the hour around midnight
        return rng.choice([rng.randrange(0, 30), rng.randrange(1410, 1440), rng.randrange(1440)])

    for m in range(members):
        who = f"m{m}"
        for d in range(rng.choice([1, 1, 2])):
            device = f"{who}-d{d}"
            first = start + timedelta(days=rng.randrange(days))
            active = sorted(
                {first} | {first + timedelta(days=rng.randrange(days)) for _ in range(4)}
            )
            for i, day in enumerate(a for a in active if a < start + timedelta(days=days)):
                if i == 0:  # anonymous browsing, then the login, early in the day
                    emit(who, day, 400, "page_view", anonymous_id=device)
                    if d == 0:
                        emit(who, day, 401, "signup", anonymous_id=device)
                    emit(who, day, 402, "login", anonymous_id=device, user_id=who)
                ids = {"anonymous_id": device, "user_id": who}
                for _ in range(rng.randrange(1, 3)):
                    emit(who, day, max(403, minute()) if i == 0 else minute(), "page_view", **ids)
                if rng.random() < 0.4:
                    emit(who, day, max(403, minute()) if i == 0 else minute(), "pay_success", **ids)
    for v in range(visitors):
        who = f"v{v}"
        for _ in range(rng.randrange(1, 4)):
            day = start + timedelta(days=rng.randrange(days))
            emit(who, day, minute(), "page_view", anonymous_id=who)
            if rng.random() < 0.3:
                emit(who, day, minute(), "signup", anonymous_id=who)
    return h


# -- the reports, by their definitions (docs/analytics.md) ------------------------------


def lifecycle(h: History, lo: date, hi: date) -> list[dict[str, Any]]:
    active: dict[date, set[str]] = defaultdict(set)
    first: dict[str, date] = {}
    for who, _, day, _ in h.truth:
        if day <= hi:
            active[day].add(who)
            first[who] = min(first.get(who, day), day)
    rows = []
    day = lo
    while day <= hi:
        now, before = active[day], active[day - timedelta(days=1)]
        new = {p for p in now if first[p] == day}
        rows.append(
            {
                "period": day.isoformat(),
                "new": len(new),
                "returning": len(now & before),
                "resurrecting": len(now - before - new),
                "dormant": len(before - now),
            }
        )
        day += timedelta(days=1)
    return rows


def retention(
    h: History, cohort_event: str, return_event: str, lo: date, hi: date, n: int, today: date
) -> list[dict[str, Any]]:
    cohort: dict[str, date] = {}
    returns: dict[str, set[date]] = defaultdict(set)
    for who, name, day, _ in h.truth:
        if name == cohort_event and lo <= day <= hi:  # the range chooses the cohort events
            cohort[who] = min(cohort.get(who, day), day)
        if name == return_event:  # a return counts in whatever period it falls
            returns[who].add(day)
    rows = []
    c = lo
    while c <= hi:
        members = [p for p, d in cohort.items() if d == c]
        for k in range(n):
            target = c + timedelta(days=k)
            rows.append(
                {
                    "cohort": c.isoformat(),
                    "size": len(members),
                    "k": k,
                    "retained": sum(target in returns[p] for p in members),
                    "complete": target + timedelta(days=1) <= today,
                }
            )
        c += timedelta(days=1)
    return rows


def rfm(h: History, as_of: date, days: int) -> dict[str, tuple[int, int, float, int, int, int]]:
    """person -> (recency_days, frequency, monetary, r, f, m)."""
    last: dict[str, date] = {}
    orders: dict[str, set[str]] = defaultdict(set)
    money: dict[str, Decimal] = defaultdict(Decimal)
    for who, name, day, props in h.truth:
        if name == "pay_success" and as_of - timedelta(days=days - 1) <= day <= as_of:
            last[who] = max(last.get(who, day), day)
            orders[who].add(props["order_id"])
            money[who] += Decimal(repr(props["amount"]))
    people = sorted(last)
    values = {p: ((as_of - last[p]).days, len(orders[p]), money[p]) for p in people}

    def scores(key: Any, worst_first_reverse: bool) -> dict[str, int]:
        ordered = sorted(people, key=key, reverse=worst_first_reverse)
        out: dict[str, int] = {}
        for p in people:  # rank = 1 + how many are strictly worse
            worse = sum(
                (key(q) > key(p)) if worst_first_reverse else (key(q) < key(p)) for q in ordered
            )
            out[p] = 1 + (5 * worse) // len(people)
        return out

    r = scores(lambda p: values[p][0], True)
    f = scores(lambda p: values[p][1], False)
    m = scores(lambda p: values[p][2], False)
    return {p: (*values[p][:2], float(values[p][2]), r[p], f[p], m[p]) for p in people}  # type: ignore[misc]
