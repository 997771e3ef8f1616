"""Seeded generator of mini-program e-commerce tracking traffic for ``trackflow simulate``.

Pure and deterministic: one ``SimConfig`` always yields the same bytes, so a demo, a load
test or a failing pipeline run can be replayed exactly. Producing to Kafka is the CLI's job.

Traffic is a set of concurrent sessions (a person on a device) advanced one message at a
time by a Poisson clock of ``rate`` events per second, so the event count tracks
``rate * duration`` while each session keeps a believable order: home first, browse, cart,
checkout, pay request, pay result.
"""

from __future__ import annotations

import heapq
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from random import Random
from typing import Any

import orjson

__all__ = ["SimConfig", "SimMessage", "generate"]

_CST = timezone(timedelta(hours=8))  # mini-program SDKs report China Standard Time
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000

_PLATFORMS = ("miniprogram", "ios", "android", "h5", "web")
_PLATFORM_WEIGHTS = (62, 12, 14, 7, 5)
_APP_VERSIONS: dict[str, tuple[str, ...]] = {
    "miniprogram": ("3.12.0", "3.12.1", "3.11.4"),
    "ios": ("5.4.1", "5.4.0", "5.3.2"),
    "android": ("5.4.0", "5.3.9", "5.2.7"),
    "h5": ("h5-2026.11.2",),
    "web": (),
}
_CHANNELS = ("organic", "wechat_share", "ad_feed", "search_ad", "kol_live", "push", "qr_offline")
_CHANNEL_WEIGHTS = (30, 22, 18, 8, 8, 8, 6)
_PRICE_POINTS = (9.9, 19.9, 29.9, 39.0, 49.0, 59.9, 69.0, 89.0, 99.0, 129.0, 159.0, 199.0,
                 259.0, 299.0, 399.0, 599.0, 899.0, 1299.0)  # fmt: skip
_PAY_METHODS = ("wechat_pay", "alipay", "card", "balance", "other")
_PAY_WEIGHTS: dict[str, tuple[int, ...]] = {
    "miniprogram": (86, 0, 4, 9, 1),
    "ios": (40, 38, 12, 8, 2),
    "android": (42, 42, 6, 8, 2),
    "h5": (30, 55, 8, 5, 2),
    "web": (5, 60, 30, 3, 2),
}
_FAIL_REASONS = ("insufficient_balance", "card_declined", "user_cancelled", "risk_control",
                 "provider_timeout", "password_error")  # fmt: skip
_FAIL_WEIGHTS = (30, 15, 30, 8, 7, 10)
_OUTAGE_REASONS = ("provider_timeout", "provider_unavailable", "gateway_error")
_OUTAGE_WEIGHTS = (60, 30, 10)
_NORMAL_SUCCESS = 0.95
_THINK_S = 3.0  # mean seconds between two events of one session at low rates


@dataclass(frozen=True)
class SimConfig:
    rate: float = 50.0  # target events per second of event time
    duration: float = 60.0  # seconds of event time to generate
    seed: int = 1
    start_ms: int | None = None  # event-time start (epoch ms); None = now
    members: int = 200  # population of members (user_id "u%05d")
    anonymous_visitors: int = 300  # visitors who never log in
    outage_start: float | None = None  # seconds after start when a payment outage begins
    outage_minutes: float = 0.0  # outage length
    outage_success_rate: float = 0.3  # pay success probability during the outage
    malformed_share: float = 0.0  # share of messages that are bad
    duplicate_share: float = 0.0  # share of events re-sent as an SDK retry
    batch_share: float = 0.5  # share of messages that are JSON-array batches of one device
    consent_withdrawn_share: float = 0.0  # share of events with analytics consent withdrawn
    phone_share: float = 0.1  # share of login/signup events carrying identities.phone


@dataclass
class SimMessage:
    """One Kafka message.

    ``event_time_ms`` is the message's place on the event-time axis, for pacing: the time
    of its (first) event, except that a duplicate carries the time it is re-sent and junk
    carries the time it is sent (its own ``event_time`` may be absent or absurd). So the
    stream is non-decreasing in ``event_time_ms``.

    ``kind`` "consent_withdrawn" wins over "batch": such a message may be a JSON array.
    A malformed "array with a non-object" holds one good page-level event besides the bad
    element, so its ``events`` is 2.
    """

    key: bytes | None  # anonymous_id (or user_id) of the event(s), utf-8; None for junk
    value: bytes  # exactly what goes on the wire
    events: int  # number of events inside (1 for single, n for a batch, 1 for junk)
    event_time_ms: int  # event time of the (first) event, for pacing
    kind: str  # "event" | "batch" | "duplicate" | "malformed" | "consent_withdrawn"


@dataclass(eq=False)
class _Member:
    user_id: str
    registered: bool
    phone: str
    email: str
    openid: str
    unionid: str | None


@dataclass(eq=False)
class _Device:
    anonymous_id: str
    platform: str
    app_version: str | None
    epoch_ms_time: bool  # some SDKs send integer epoch ms instead of RFC 3339
    owner: _Member | None
    openid: str | None  # only mini-program devices whose SDK reports it
    shared_with: _Member | None = None  # a family member who sometimes uses the device
    user_id: str | None = None  # member logged in on the device; stays until another logs in


# A step of a session script: event name, properties, identities override.
_Step = tuple[str, dict[str, Any], dict[str, str] | None]


@dataclass(eq=False)
class _Session:
    device: _Device
    member: _Member | None
    channel: str | None
    consent: dict[str, bool] | None
    now_ms: int = 0  # event time of the step being produced; scripts read it
    page: str = "home"  # page on screen, for referrer and element_click
    page_ms: int = 0  # when it was shown, for duration_ms of the next page_view
    ready_ms: float = 0.0  # earliest time of the session's next message
    slot: int = 0  # index in the active list, for O(1) removal
    script: Iterator[_Step] = field(default_factory=lambda: iter(()))


def generate(config: SimConfig) -> Iterator[SimMessage]:
    """Messages of the whole run, in non-decreasing ``event_time_ms`` order."""
    return _Simulation(config).run()


class _Simulation:
    def __init__(self, config: SimConfig) -> None:
        if max(0, config.members) + max(0, config.anonymous_visitors) == 0:
            raise ValueError("the simulation needs at least one member or anonymous visitor")
        self.cfg = config
        self.rng = Random(config.seed)
        start = config.start_ms if config.start_ms is not None else int(time.time() * 1000)
        self.start_ms = start
        self.end_ms = start + config.duration * 1000.0
        if config.outage_start is not None and config.outage_minutes > 0:
            lo = start + config.outage_start * 1000.0
            self.outage: tuple[float, float] | None = (lo, lo + config.outage_minutes * 60_000)
        else:
            self.outage = None
        self.order_seq = 0
        self.run_tag = f"{self.rng.randrange(10**4):04d}"
        self._build_population()
        self._build_catalog()
        self.active: list[_Session] = []
        devices = len(self.devices)
        # Short runs compress sessions so that a 30-second demo still shows orders.
        think_s = min(_THINK_S, max(0.3, config.duration / 60))
        self.pace = think_s / _THINK_S
        self.concurrency = max(1, min(round(config.rate * think_s), devices // 2 or 1))
        self.recent_singles: deque[SimMessage] = deque(maxlen=64)
        self._junk: tuple[Callable[[int], tuple[bytes | None, bytes, int]], ...] = (
            self._junk_truncated,
            self._junk_not_json,
            self._junk_scalar,
            self._junk_array_non_object,
            self._junk_unknown_event,
            self._junk_missing_required,
            self._junk_wrong_type,
            self._junk_invalid_enum,
            self._junk_out_of_range,
            self._junk_money_decimals,
            self._junk_time_future,
            self._junk_time_past,
            self._junk_strict_extra,
            self._junk_too_large,
            self._junk_bad_event_id,
        )
        # Kinds are drawn per message. Duplicates are defined as a share of events, so their
        # per-message probability is scaled by the expected events per message.
        m = min(max(config.malformed_share, 0.0), 1.0)
        d = min(max(config.duplicate_share, 0.0), 0.9)
        b = min(max(config.batch_share, 0.0), 1.0)
        per_session_msg = 1.0 + b * 2.6  # batches hold ~3.6 events after session ends
        q = d * (m + per_session_msg * (1 - m)) / (1 - d + d * per_session_msg)
        self.p_malformed = m
        self.p_duplicate = min(q, 1.0 - m)
        rest = 1.0 - self.p_malformed - self.p_duplicate
        self.p_batch = min(1.0, b / rest) if rest > 0 else 0.0

    # -- population -----------------------------------------------------------------------

    def _build_population(self) -> None:
        rng, cfg = self.rng, self.cfg
        n_members = max(0, cfg.members)
        n_anon = max(0, cfg.anonymous_visitors)
        self.members = [
            _Member(
                user_id=f"u{i:05d}",
                registered=rng.random() < 0.85,  # the rest sign up on their first login
                phone=f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}",
                email=f"{rng.choice(('li', 'wang', 'zhang', 'chen', 'liu'))}.{i}@"
                f"{rng.choice(('qq.com', '163.com', 'example.com', 'outlook.com'))}",
                openid="o" + self._token(27),
                unionid=("un" + self._token(26)) if rng.random() < 0.7 else None,
            )
            for i in range(n_members)
        ]
        n_devices = [rng.choices((1, 2, 3), (55, 30, 15))[0] for _ in self.members]
        total = sum(n_devices) + n_anon
        ids = rng.sample(range(1_000_000), total) if total <= 1_000_000 else range(total)
        id_iter = iter(ids)
        self.devices: list[_Device] = []
        for member, n in zip(self.members, n_devices, strict=True):
            for _ in range(n):
                dev = self._device(f"d{next(id_iter):06d}", member)
                if len(self.members) > 1 and rng.random() < 0.04:
                    other = rng.choice(self.members)
                    dev.shared_with = other if other is not member else None
                self.devices.append(dev)
        for _ in range(n_anon):
            self.devices.append(self._device(f"d{next(id_iter):06d}", None))
        self.idle: list[_Device] = list(self.devices)

    def _device(self, anonymous_id: str, owner: _Member | None) -> _Device:
        rng = self.rng
        platform = rng.choices(_PLATFORMS, _PLATFORM_WEIGHTS)[0]
        versions = _APP_VERSIONS[platform]
        app_version = rng.choice(versions) if versions and rng.random() < 0.85 else None
        openid = None
        if platform == "miniprogram" and rng.random() < 0.75:
            # openid is per WeChat account and mini-program, so a member's devices share it.
            openid = owner.openid if owner is not None else "o" + self._token(27)
        return _Device(
            anonymous_id=anonymous_id,
            platform=platform,
            app_version=app_version,
            epoch_ms_time=rng.random() < 0.15,
            owner=owner,
            openid=openid,
        )

    def _build_catalog(self) -> None:
        rng = self.rng
        numbers = rng.sample(range(10_000), 400)
        self.products = [f"p{n:04d}" for n in numbers]
        self.price_cents: dict[str, int] = {}
        for pid in self.products:
            base = round(rng.choice(_PRICE_POINTS) * 100)
            if rng.random() < 0.2:
                base = max(99, base - rng.choice((1, 10, 100)))  # 58.90, 98.99 style
            self.price_cents[pid] = base
        cum, total = [], 0.0
        for rank in range(len(self.products)):
            total += 1.0 / (rank + 1) ** 0.8  # a few products get most of the traffic
            cum.append(total)
        self.product_cum = cum

    def _token(self, n: int) -> str:
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
        return "".join(self.rng.choices(alphabet, k=n))

    # -- the clock ------------------------------------------------------------------------

    def run(self) -> Iterator[SimMessage]:
        rng, cfg = self.rng, self.cfg
        if cfg.rate <= 0 or cfg.duration <= 0:
            return
        pending: list[tuple[float, int, SimMessage]] = []
        seq = 0
        clock = float(self.start_ms)
        mean_gap_ms = 1000.0 / cfg.rate
        while clock < self.end_ms:
            msg, sort_ms = self._next_message(clock)
            heapq.heappush(pending, (sort_ms, seq, msg))
            seq += 1
            for _ in range(msg.events):
                clock += rng.expovariate(1.0) * mean_gap_ms
            while pending and pending[0][0] <= clock:
                yield heapq.heappop(pending)[2]
        while pending:
            yield heapq.heappop(pending)[2]

    def _next_message(self, clock: float) -> tuple[SimMessage, float]:
        rng = self.rng
        t = int(clock)
        roll = rng.random()
        if roll < self.p_malformed:
            key, value, events = rng.choice(self._junk)(t)
            return SimMessage(key, value, events, t, "malformed"), t
        if roll < self.p_malformed + self.p_duplicate and self.recent_singles:
            original = self.recent_singles.popleft()
            resend = int(max(clock, original.event_time_ms) + rng.uniform(300, 3000))
            return SimMessage(original.key, original.value, 1, resend, "duplicate"), resend
        batch = rng.random() < self.p_batch
        msg = self._session_message(clock, batch)
        if not batch:
            self.recent_singles.append(msg)
        return msg, msg.event_time_ms

    # -- sessions -------------------------------------------------------------------------

    def _session_message(self, clock: float, batch: bool) -> SimMessage:
        rng = self.rng
        while True:
            session = self._pick_session(clock)
            t = max(clock, session.ready_ms)
            size = rng.randint(2, 6) if batch else 1
            events: list[dict[str, Any]] = []
            first_ms = int(t)
            for i in range(size):
                if i:
                    t += rng.uniform(300, 2000) * self.pace
                session.now_ms = int(t)
                step = next(session.script, None)
                if step is None:
                    self._end(session)
                    break
                events.append(self._envelope(session, *step))
            else:
                session.ready_ms = t + rng.uniform(400, 2500) * self.pace
            if events:
                break
        key = session.device.anonymous_id.encode()
        if session.consent is not None and session.consent["analytics"] is False:
            kind = "consent_withdrawn"
        else:
            kind = "batch" if batch else "event"
        value = orjson.dumps(events if batch else events[0])
        return SimMessage(key, value, len(events), first_ms, kind)

    def _pick_session(self, clock: float) -> _Session:
        rng = self.rng
        active = self.active
        want_new = len(active) < self.concurrency and rng.random() > len(active) / self.concurrency
        if self.idle and (want_new or not active):
            return self._start(clock)
        best = None
        for _ in range(4):
            candidate = active[rng.randrange(len(active))]
            if candidate.ready_ms <= clock:
                return candidate
            if best is None or candidate.ready_ms < best.ready_ms:
                best = candidate
        if self.idle:
            return self._start(clock)
        assert best is not None
        return best

    def _start(self, clock: float) -> _Session:
        rng, cfg = self.rng, self.cfg
        idle = self.idle
        i = rng.randrange(len(idle))
        if idle[i].owner is None:
            i = rng.randrange(len(idle))  # members come back more often than passers-by
        idle[i], idle[-1] = idle[-1], idle[i]
        dev = idle.pop()
        member = dev.owner
        if dev.shared_with is not None and rng.random() < 0.3:
            member = dev.shared_with
        channel = rng.choices(_CHANNELS, _CHANNEL_WEIGHTS)[0] if rng.random() < 0.55 else None
        consent: dict[str, bool] | None = None
        if rng.random() < cfg.consent_withdrawn_share:
            consent = {"analytics": False, "marketing": False}
        elif rng.random() < 0.2:
            consent = {"analytics": True, "marketing": rng.random() < 0.6}
        session = _Session(dev, member, channel, consent, ready_ms=clock, slot=len(self.active))
        session.script = self._script(session)
        self.active.append(session)
        return session

    def _end(self, session: _Session) -> None:
        active = self.active
        last = active.pop()
        if last is not session:
            active[session.slot] = last
            last.slot = session.slot
        self.idle.append(session.device)

    def _envelope(
        self,
        session: _Session,
        name: str,
        props: dict[str, Any],
        identities: dict[str, str] | None,
    ) -> dict[str, Any]:
        dev = session.device
        event: dict[str, Any] = {
            "event_id": self._event_id(),
            "event_name": name,
            "event_time": self._time(dev, session.now_ms),
            "anonymous_id": dev.anonymous_id,
        }
        if dev.user_id is not None:
            event["user_id"] = dev.user_id
        ids = identities if identities is not None else self._identities(dev)
        if ids:
            event["identities"] = ids
        event["platform"] = dev.platform
        if dev.app_version is not None:
            event["app_version"] = dev.app_version
        if session.channel is not None:
            event["channel"] = session.channel
        if session.consent is not None:
            event["consent"] = dict(session.consent)
        if name not in _STRICT and self.rng.random() < 0.01:
            props["ab_bucket"] = self.rng.choice(("A", "B", "control"))  # drift the plan lacks
        event["properties"] = props
        return event

    def _identities(self, dev: _Device) -> dict[str, str] | None:
        if dev.openid is None:
            return None
        ids = {"openid": dev.openid}
        owner = dev.owner
        if owner is not None and owner.unionid and dev.user_id == owner.user_id:
            ids["unionid"] = owner.unionid
        return ids

    def _event_id(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4).hex

    @staticmethod
    def _time(dev: _Device, ms: int) -> int | str:
        if dev.epoch_ms_time:
            return ms
        return _iso(ms)

    def _pay_success_rate(self, ms: int) -> float:
        if self.outage is not None and self.outage[0] <= ms < self.outage[1]:
            return self.cfg.outage_success_rate
        return _NORMAL_SUCCESS

    def _product(self) -> str:
        return self.rng.choices(self.products, cum_weights=self.product_cum)[0]

    # -- session scripts ------------------------------------------------------------------

    def _script(self, s: _Session) -> Iterator[_Step]:
        """A visit: the funnel home -> listing -> detail -> cart -> checkout -> pay."""
        rng = self.rng
        dev, member = s.device, s.member
        s.page, s.page_ms = "home", s.now_ms
        home: dict[str, Any] = {"page": "home"}
        if s.channel == "wechat_share":
            home["referrer"] = "wechat://share/" + self._token(8)
        yield "page_view", home, None
        for pos in range(rng.choice((0, 1, 2, 3))):
            element = rng.choice(("banner", "product_card", "coupon_popup"))
            props = {"page": "home", "element": element, "position": pos}
            if element == "product_card":
                props["product_id"] = self._product()
            yield "exposure", props, None
        # Some members log in right away; switching from another member's account must.
        if (
            member is not None
            and dev.user_id != member.user_id
            and (dev.user_id is not None or rng.random() < 0.35)
        ):
            yield from self._login(s, member)
        if rng.random() < 0.2:
            return  # bounce
        cart: dict[str, list[Any]] = {}  # product_id -> [quantity, price_cents, sku_id]
        for _ in range(rng.choice((1, 1, 2, 2, 3, 4, 5))):
            listing = rng.choices(("category", "search", "activity"), (45, 40, 15))[0]
            element = {"category": "category_tab", "search": "search_box"}.get(
                listing, "activity_banner"
            )
            yield "element_click", {"page": s.page, "element": element}, None  # tab bar
            yield "page_view", self._page(s, listing), None
            shown = [self._product() for _ in range(rng.randint(2, 6))]
            for pos, pid in enumerate(shown):
                card = {"page": listing, "element": "product_card", "product_id": pid}
                yield "exposure", {**card, "position": pos}, None
            if rng.random() < 0.15:
                continue  # nothing caught the eye
            pos = min(int(rng.expovariate(0.8)), len(shown) - 1)
            pid = shown[pos]
            card = {"page": listing, "element": "product_card", "product_id": pid}
            yield "element_click", {**card, "position": pos}, None
            yield "page_view", self._page(s, "product_detail", product_id=pid), None
            if rng.random() < 0.45:
                qty = rng.choices((1, 2, 3, 5), (75, 17, 6, 2))[0]
                button = {"page": "product_detail", "element": "add_to_cart_button"}
                button["product_id"] = pid
                yield "element_click", button, None
                item = cart.setdefault(pid, [0, self.price_cents[pid], None])
                item[0] += qty
                add: dict[str, Any] = {"product_id": pid, "quantity": qty}
                add["price"] = item[1] / 100
                if rng.random() < 0.5:
                    item[2] = item[2] or f"{pid}-s{rng.randint(1, 4)}"
                    add["sku_id"] = item[2]
                yield "add_to_cart", add, None
            if rng.random() < 0.15:
                break
        if not cart:
            if rng.random() < 0.2:
                yield "page_view", self._page(s, "member_center"), None
            return
        yield "element_click", {"page": s.page, "element": "cart_tab"}, None
        yield "page_view", self._page(s, "cart"), None
        if rng.random() < (0.3 if len(cart) > 1 else 0.05):
            pid = rng.choice(sorted(cart))
            item = cart[pid]
            qty = rng.randint(1, item[0])
            remove: dict[str, Any] = {"product_id": pid, "quantity": qty}
            if item[2]:
                remove["sku_id"] = item[2]
            yield "remove_from_cart", remove, None
            item[0] -= qty
            if item[0] == 0:
                del cart[pid]
        if not cart or rng.random() < 0.25:
            return  # abandoned cart
        if member is None:
            yield "element_click", {"page": "cart", "element": "login_prompt"}, None
            return  # guests must log in to order and these never do
        yield "element_click", {"page": "cart", "element": "checkout_button"}, None
        if dev.user_id != member.user_id:
            yield from self._login(s, member)
        yield "page_view", self._page(s, "checkout"), None
        self.order_seq += 1
        # Unique within a run; the seeded suffix keeps runs of different seeds apart.
        order_id = f"SO{self.start_ms // 1000 % 10**8:08d}{self.order_seq:06d}{self.run_tag}"
        cents = sum(q * c for q, c, _ in cart.values())
        amount = cents / 100
        order: dict[str, Any] = {"order_id": order_id, "amount": amount}
        order["item_count"] = sum(q for q, _, _ in cart.values())
        if rng.random() < 0.1:
            order["coupon_id"] = "cpn_freeship"  # shipping coupon: item amount unchanged
        yield "checkout", order, None
        if rng.random() < 0.1:
            return  # order left unpaid
        weights = _PAY_WEIGHTS[dev.platform]
        method = rng.choices(_PAY_METHODS, weights)[0]
        for _attempt in range(3):
            pay = {"order_id": order_id, "amount": amount, "pay_method": method}
            yield "pay_request", dict(pay), None
            # The generator resumes at the result's event time: that decides the outage.
            if rng.random() < self._pay_success_rate(s.now_ms):
                yield "pay_success", pay, None
                yield "page_view", self._page(s, "pay_result"), None
                if rng.random() < 0.3:
                    yield "page_view", self._page(s, "member_center"), None
                return
            if self.outage is not None and self.outage[0] <= s.now_ms < self.outage[1]:
                reason = rng.choices(_OUTAGE_REASONS, _OUTAGE_WEIGHTS)[0]
            else:
                reason = rng.choices(_FAIL_REASONS, _FAIL_WEIGHTS)[0]
            yield "pay_fail", {**pay, "reason": reason}, None
            if rng.random() < 0.5:
                return  # gives up
            if reason in ("insufficient_balance", "card_declined") and rng.random() < 0.6:
                method = rng.choices(_PAY_METHODS, weights)[0]

    def _page(self, s: _Session, page: str, product_id: str | None = None) -> dict[str, Any]:
        """Properties of a page_view at ``s.now_ms``; must be called right before its yield."""
        props: dict[str, Any] = {"page": page}
        if product_id is not None:
            props["product_id"] = product_id
        if self.rng.random() < 0.7:
            props["referrer"] = s.page
        if self.rng.random() < 0.6:
            props["duration_ms"] = max(0, s.now_ms - s.page_ms)
        s.page, s.page_ms = page, s.now_ms
        return props

    def _login(self, s: _Session, member: _Member) -> Iterator[_Step]:
        rng, dev = self.rng, s.device
        method = self._method(dev)
        if not member.registered:
            member.registered = True
            dev.user_id = member.user_id
            yield "signup", {"method": method}, self._login_identities(dev, member, method)
        dev.user_id = member.user_id
        yield "login", {"method": method}, self._login_identities(dev, member, method)
        if rng.random() < 0.3:
            yield "page_view", self._page(s, "member_center"), None

    def _method(self, dev: _Device) -> str:
        if dev.platform == "miniprogram":
            return self.rng.choices(("wechat", "phone", "password", "other"), (80, 14, 5, 1))[0]
        methods = ("phone", "password", "wechat", "email", "other")
        return self.rng.choices(methods, (45, 25, 15, 12, 3))[0]

    def _login_identities(
        self, dev: _Device, member: _Member, method: str
    ) -> dict[str, str] | None:
        rng = self.rng
        ids = self._identities(dev) or {}
        if dev.platform == "miniprogram" and member is dev.owner and member.unionid:
            ids["unionid"] = member.unionid
        if rng.random() < self.cfg.phone_share:
            spelling = rng.random()
            p = member.phone
            if spelling < 0.8:
                ids["phone"] = p
            elif spelling < 0.9:
                ids["phone"] = f"+86 {p[:3]} {p[3:7]} {p[7:]}"
            else:
                ids["phone"] = f"{p[:3]}-{p[3:7]}-{p[7:]}"
        if method == "email" and rng.random() < 0.8:
            email = member.email
            ids["email"] = email.capitalize() if rng.random() < 0.3 else email
        return ids or None

    # -- bad traffic ----------------------------------------------------------------------
    # Each returns (key, value, events). Object-shaped junk is keyed like a real SDK would.

    def _plain(self, t: int, name: str, props: dict[str, Any]) -> tuple[_Device, dict[str, Any]]:
        dev = self.rng.choice(self.devices)
        event: dict[str, Any] = {
            "event_id": self._event_id(),
            "event_name": name,
            "event_time": self._time(dev, t),
            "anonymous_id": dev.anonymous_id,
        }
        if dev.user_id is not None:
            event["user_id"] = dev.user_id
        elif name == "login":
            event["user_id"] = dev.owner.user_id if dev.owner else "u99999"
        event["platform"] = dev.platform
        if dev.app_version is not None:
            event["app_version"] = dev.app_version
        event["properties"] = props
        return dev, event

    def _sample(self, t: int, harmless: bool = False) -> tuple[_Device, dict[str, Any]]:
        """A valid standalone event to break; ``harmless`` ones may be stored as they are."""
        rng = self.rng
        pid = self._product()
        choice = rng.randrange(3 if harmless else 6)
        if choice == 0:
            return self._plain(t, "page_view", {"page": "product_detail", "product_id": pid})
        if choice == 1:
            props = {"product_id": pid, "quantity": 1, "price": self.price_cents[pid] / 100}
            return self._plain(t, "add_to_cart", props)
        if choice == 2:
            props = {"page": "search", "element": "product_card", "product_id": pid}
            return self._plain(t, "element_click", props)
        order = {"order_id": f"SO{rng.randrange(10**12):012d}", "amount": 59.9}
        if choice == 3:
            return self._plain(t, "checkout", {**order, "item_count": 1})
        order["pay_method"] = rng.choice(_PAY_METHODS)
        return self._plain(t, "pay_request" if choice == 4 else "pay_success", order)

    @staticmethod
    def _out(dev: _Device, obj: Any) -> tuple[bytes | None, bytes, int]:
        return dev.anonymous_id.encode(), orjson.dumps(obj), 1

    def _junk_truncated(self, t: int) -> tuple[bytes | None, bytes, int]:
        _, event = self._sample(t)
        raw = orjson.dumps(event)
        return None, raw[: self.rng.randint(1, len(raw) - 1)], 1

    def _junk_not_json(self, t: int) -> tuple[bytes | None, bytes, int]:
        rng = self.rng
        pick = rng.randrange(4)
        if pick == 0:
            return None, b"\xff" + rng.randbytes(rng.randint(4, 60)), 1
        if pick == 1:
            return None, f"ev=page_view&t={t}&page=home".encode(), 1
        if pick == 2:
            return None, b"\xc3\x01" + rng.randbytes(5), 1  # Avro marker, truncated header
        return None, b"<html><body>502 Bad Gateway</body></html>", 1

    def _junk_scalar(self, t: int) -> tuple[bytes | None, bytes, int]:
        return None, self.rng.choice((b"42", b'"page_view"', b"null", b"true", b"[]")), 1

    def _junk_array_non_object(self, t: int) -> tuple[bytes | None, bytes, int]:
        dev, event = self._sample(t, harmless=True)  # stored: must not fake an order
        other = self.rng.choice((42, "page_view", None, [1, 2]))
        return dev.anonymous_id.encode(), orjson.dumps([event, other]), 2

    def _junk_unknown_event(self, t: int) -> tuple[bytes | None, bytes, int]:
        dev, event = self._sample(t)
        event["event_name"] = self.rng.choice(("add_to_wishlist", "video_play", "PageView"))
        return self._out(dev, event)

    def _junk_missing_required(self, t: int) -> tuple[bytes | None, bytes, int]:
        rng = self.rng
        dev, event = self._sample(t)
        pick = rng.randrange(5)
        if pick == 0:
            first = next(iter(event["properties"]))
            del event["properties"][first]  # page, product_id or order_id
        elif pick == 1:
            del event[rng.choice(("event_id", "event_time", "platform"))]
        elif pick == 2:
            event.pop("user_id", None)
            del event["anonymous_id"]
        elif pick == 3:
            dev, event = self._plain(t, "login", {"method": "wechat"})
            del event["user_id"]  # login must carry user_id
        else:
            del event["properties"]
        return self._out(dev, event)

    def _junk_wrong_type(self, t: int) -> tuple[bytes | None, bytes, int]:
        pid = self._product()
        price = self.price_cents[pid] / 100
        if self.rng.random() < 0.6:
            props = {"product_id": pid, "quantity": "2", "price": price}
            dev, event = self._plain(t, "add_to_cart", props)
        else:
            props = {"order_id": "SO0000001", "amount": f"{price:.2f}", "item_count": 1}
            dev, event = self._plain(t, "checkout", props)
        return self._out(dev, event)

    def _junk_invalid_enum(self, t: int) -> tuple[bytes | None, bytes, int]:
        dev, event = self._sample(t)
        pick = self.rng.randrange(3)
        if pick == 0:
            event["platform"] = "windows_phone"
        elif pick == 1:
            dev, event = self._plain(t, "page_view", {"page": "homepage"})
        else:
            order = {"order_id": "SO0000002", "amount": 9.9, "pay_method": "paypal"}
            dev, event = self._plain(t, "pay_request", order)
        return self._out(dev, event)

    def _junk_out_of_range(self, t: int) -> tuple[bytes | None, bytes, int]:
        pid = self._product()
        props = {"product_id": pid, "quantity": 0, "price": self.price_cents[pid] / 100}
        if self.rng.random() < 0.5:
            props["quantity"], props["price"] = 1, -5.0
        dev, event = self._plain(t, "add_to_cart", props)
        return self._out(dev, event)

    def _junk_money_decimals(self, t: int) -> tuple[bytes | None, bytes, int]:
        pid = self._product()
        price = self.price_cents[pid] / 100 + 0.005  # e.g. 59.905
        props = {"product_id": pid, "quantity": 1, "price": round(price, 3)}
        dev, event = self._plain(t, "add_to_cart", props)
        return self._out(dev, event)

    def _junk_time_future(self, t: int) -> tuple[bytes | None, bytes, int]:
        dev, event = self._sample(t)
        skew = self.rng.choice((2 * 3_600_000, _DAY_MS, 365 * _DAY_MS))  # broken device clock
        event["event_time"] = self._time(dev, t + skew)
        return self._out(dev, event)

    def _junk_time_past(self, t: int) -> tuple[bytes | None, bytes, int]:
        dev, event = self._sample(t)
        event["event_time"] = self._time(dev, t - 30 * _DAY_MS)  # flushed from an old cache
        return self._out(dev, event)

    def _junk_strict_extra(self, t: int) -> tuple[bytes | None, bytes, int]:
        order = {"order_id": f"SO{self.rng.randrange(10**12):012d}", "amount": 129.0}
        order["pay_method"] = "wechat_pay"
        name = self.rng.choice(("pay_request", "pay_success"))
        order[self.rng.choice(("ab_bucket", "coupon_id", "channel"))] = "B"
        dev, event = self._plain(t, name, order)
        return self._out(dev, event)

    def _junk_too_large(self, t: int) -> tuple[bytes | None, bytes, int]:
        frame = "at pages/detail/detail.js:412 (onLoad) <- app-service.js:88\n"
        dump = frame * (33_000 // len(frame) + self.rng.randint(1, 100))
        props = {"page": "product_detail", "product_id": self._product(), "debug_trace": dump}
        dev, event = self._plain(t, "page_view", props)
        return self._out(dev, event)

    def _junk_bad_event_id(self, t: int) -> tuple[bytes | None, bytes, int]:
        dev, event = self._sample(t)
        event["event_id"] = self.rng.choice(("evt 0001/ä", "x" * 65, ""))
        return self._out(dev, event)


_STRICT = frozenset({"checkout", "pay_request", "pay_success", "pay_fail"})


def _iso(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(_CST).isoformat(timespec="milliseconds")
