"""The end of the funnel: placing an order and paying for it, through a payment outage.

The outage is what the alerting demo detects, so it lowers the success rate and changes
the failure reasons only inside its window of event time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from random import Random
from typing import Any

from pipeline.tools.simulator.config import SimConfig
from pipeline.tools.simulator.logins import Logins
from pipeline.tools.simulator.population import Member
from pipeline.tools.simulator.session import Cart, Session, Step, page_view

PAY_METHODS = ("wechat_pay", "alipay", "card", "balance", "other")
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


@dataclass(frozen=True)
class Outage:
    """A window of event time in which the payment provider mostly fails."""

    window: tuple[float, float] | None
    success_rate: float

    @classmethod
    def of(cls, config: SimConfig, start_ms: int) -> Outage:
        rate = config.outage_success_rate
        if config.outage_start is not None and config.outage_minutes > 0:
            lo = start_ms + config.outage_start * 1000.0
            return cls((lo, lo + config.outage_minutes * 60_000), rate)
        return cls(None, rate)

    def covers(self, ms: int) -> bool:
        return self.window is not None and self.window[0] <= ms < self.window[1]

    def pay_success_rate(self, ms: int) -> float:
        return self.success_rate if self.covers(ms) else _NORMAL_SUCCESS


class OrderIds:
    """Unique within a run; the seeded suffix keeps runs of different seeds apart."""

    def __init__(self, start_ms: int, run_tag: str) -> None:
        self.prefix = f"SO{start_ms // 1000 % 10**8:08d}"
        self.run_tag = run_tag
        self.seq = 0

    def next(self) -> str:
        self.seq += 1
        return f"{self.prefix}{self.seq:06d}{self.run_tag}"


class Checkout:
    def __init__(self, rng: Random, logins: Logins, outage: Outage, order_ids: OrderIds) -> None:
        self.rng = rng
        self.logins = logins
        self.outage = outage
        self.order_ids = order_ids

    def order(self, s: Session, member: Member, cart: Cart) -> Iterator[Step]:
        """From the checkout button to the last payment attempt."""
        rng = self.rng
        yield "element_click", {"page": "cart", "element": "checkout_button"}, None
        if s.device.user_id != member.user_id:
            yield from self.logins.login(s, member)
        yield "page_view", page_view(rng, s, "checkout"), None
        order_id = self.order_ids.next()
        amount = sum(line.quantity * line.price_cents for line in cart.values()) / 100
        order: dict[str, Any] = {"order_id": order_id, "amount": amount}
        order["item_count"] = sum(line.quantity for line in cart.values())
        if rng.random() < 0.1:
            order["coupon_id"] = "cpn_freeship"  # shipping coupon: item amount unchanged
        yield "checkout", order, None
        if rng.random() < 0.1:
            return  # order left unpaid
        yield from self._pay(s, order_id, amount)

    def _pay(self, s: Session, order_id: str, amount: float) -> Iterator[Step]:
        """Up to three attempts; a failed card or balance may make the buyer switch method."""
        rng = self.rng
        weights = _PAY_WEIGHTS[s.device.platform]
        method = rng.choices(PAY_METHODS, weights)[0]
        for _attempt in range(3):
            pay = {"order_id": order_id, "amount": amount, "pay_method": method}
            yield "pay_request", dict(pay), None
            # The generator resumes at the result's event time: that decides the outage.
            if rng.random() < self.outage.pay_success_rate(s.now_ms):
                yield "pay_success", pay, None
                yield "page_view", page_view(rng, s, "pay_result"), None
                if rng.random() < 0.3:
                    yield "page_view", page_view(rng, s, "member_center"), None
                return
            reason = self._fail_reason(s.now_ms)
            yield "pay_fail", {**pay, "reason": reason}, None
            if rng.random() < 0.5:
                return  # gives up
            if reason in ("insufficient_balance", "card_declined") and rng.random() < 0.6:
                method = rng.choices(PAY_METHODS, weights)[0]

    def _fail_reason(self, ms: int) -> str:
        if self.outage.covers(ms):
            return self.rng.choices(_OUTAGE_REASONS, _OUTAGE_WEIGHTS)[0]
        return self.rng.choices(_FAIL_REASONS, _FAIL_WEIGHTS)[0]
