"""Malformed traffic: one kind of breakage per message, each a way real SDKs get it wrong.

Every kind must make the pipeline dead-letter something, and none may smuggle in a valid
order event, so the tests can count bad messages and orders exactly. Object-shaped junk is
keyed like a real SDK would key it; unparseable junk has no key.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any

import orjson

from pipeline.tools.simulator.catalog import Catalog
from pipeline.tools.simulator.checkout import PAY_METHODS
from pipeline.tools.simulator.population import Device
from pipeline.tools.simulator.wire import event_id, wire_time

_DAY_MS = 86_400_000

Junk = tuple[bytes | None, bytes, int]  # key, value, events


def _out(dev: Device, obj: Any) -> Junk:
    return dev.anonymous_id.encode(), orjson.dumps(obj), 1


class JunkMaker:
    def __init__(self, rng: Random, devices: list[Device], catalog: Catalog) -> None:
        self.rng = rng
        self.devices = devices
        self.catalog = catalog
        # The order is part of the seed's promise: a draw picks a kind by its index.
        self.kinds: tuple[Callable[[int], Junk], ...] = (
            self._truncated,
            self._not_json,
            self._scalar,
            self._array_non_object,
            self._unknown_event,
            self._missing_required,
            self._wrong_type,
            self._invalid_enum,
            self._out_of_range,
            self._money_decimals,
            self._time_future,
            self._time_past,
            self._strict_extra,
            self._too_large,
            self._bad_event_id,
        )

    def make(self, t: int) -> Junk:
        """One bad message sent at ``t``."""
        return self.rng.choice(self.kinds)(t)

    def _plain(self, t: int, name: str, props: dict[str, Any]) -> tuple[Device, dict[str, Any]]:
        dev = self.rng.choice(self.devices)
        event: dict[str, Any] = {
            "event_id": event_id(self.rng),
            "event_name": name,
            "event_time": wire_time(dev, t),
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

    def _sample(self, t: int, harmless: bool = False) -> tuple[Device, dict[str, Any]]:
        """A valid standalone event to break; ``harmless`` ones may be stored as they are."""
        rng = self.rng
        pid = self.catalog.pick()
        choice = rng.randrange(3 if harmless else 6)
        if choice == 0:
            return self._plain(t, "page_view", {"page": "product_detail", "product_id": pid})
        if choice == 1:
            props = {"product_id": pid, "quantity": 1, "price": self.catalog.price(pid)}
            return self._plain(t, "add_to_cart", props)
        if choice == 2:
            props = {"page": "search", "element": "product_card", "product_id": pid}
            return self._plain(t, "element_click", props)
        order = {"order_id": f"SO{rng.randrange(10**12):012d}", "amount": 59.9}
        if choice == 3:
            return self._plain(t, "checkout", {**order, "item_count": 1})
        order["pay_method"] = rng.choice(PAY_METHODS)
        return self._plain(t, "pay_request" if choice == 4 else "pay_success", order)

    def _truncated(self, t: int) -> Junk:
        _, event = self._sample(t)
        raw = orjson.dumps(event)
        return None, raw[: self.rng.randint(1, len(raw) - 1)], 1

    def _not_json(self, t: int) -> Junk:
        rng = self.rng
        pick = rng.randrange(4)
        if pick == 0:
            return None, b"\xff" + rng.randbytes(rng.randint(4, 60)), 1
        if pick == 1:
            return None, f"ev=page_view&t={t}&page=home".encode(), 1
        if pick == 2:
            return None, b"\xc3\x01" + rng.randbytes(5), 1  # Avro marker, truncated header
        return None, b"<html><body>502 Bad Gateway</body></html>", 1

    def _scalar(self, t: int) -> Junk:
        return None, self.rng.choice((b"42", b'"page_view"', b"null", b"true", b"[]")), 1

    def _array_non_object(self, t: int) -> Junk:
        dev, event = self._sample(t, harmless=True)  # stored: must not fake an order
        other = self.rng.choice((42, "page_view", None, [1, 2]))
        return dev.anonymous_id.encode(), orjson.dumps([event, other]), 2

    def _unknown_event(self, t: int) -> Junk:
        dev, event = self._sample(t)
        event["event_name"] = self.rng.choice(("add_to_wishlist", "video_play", "PageView"))
        return _out(dev, event)

    def _missing_required(self, t: int) -> Junk:
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
        return _out(dev, event)

    def _wrong_type(self, t: int) -> Junk:
        pid = self.catalog.pick()
        price = self.catalog.price(pid)
        if self.rng.random() < 0.6:
            props = {"product_id": pid, "quantity": "2", "price": price}
            dev, event = self._plain(t, "add_to_cart", props)
        else:
            props = {"order_id": "SO0000001", "amount": f"{price:.2f}", "item_count": 1}
            dev, event = self._plain(t, "checkout", props)
        return _out(dev, event)

    def _invalid_enum(self, t: int) -> Junk:
        dev, event = self._sample(t)
        pick = self.rng.randrange(3)
        if pick == 0:
            event["platform"] = "windows_phone"
        elif pick == 1:
            dev, event = self._plain(t, "page_view", {"page": "homepage"})
        else:
            order = {"order_id": "SO0000002", "amount": 9.9, "pay_method": "paypal"}
            dev, event = self._plain(t, "pay_request", order)
        return _out(dev, event)

    def _out_of_range(self, t: int) -> Junk:
        pid = self.catalog.pick()
        props = {"product_id": pid, "quantity": 0, "price": self.catalog.price(pid)}
        if self.rng.random() < 0.5:
            props["quantity"], props["price"] = 1, -5.0
        dev, event = self._plain(t, "add_to_cart", props)
        return _out(dev, event)

    def _money_decimals(self, t: int) -> Junk:
        pid = self.catalog.pick()
        price = self.catalog.price(pid) + 0.005  # e.g. 59.905
        props = {"product_id": pid, "quantity": 1, "price": round(price, 3)}
        dev, event = self._plain(t, "add_to_cart", props)
        return _out(dev, event)

    def _time_future(self, t: int) -> Junk:
        dev, event = self._sample(t)
        skew = self.rng.choice((2 * 3_600_000, _DAY_MS, 365 * _DAY_MS))  # broken device clock
        event["event_time"] = wire_time(dev, t + skew)
        return _out(dev, event)

    def _time_past(self, t: int) -> Junk:
        dev, event = self._sample(t)
        event["event_time"] = wire_time(dev, t - 30 * _DAY_MS)  # flushed from an old cache
        return _out(dev, event)

    def _strict_extra(self, t: int) -> Junk:
        order = {"order_id": f"SO{self.rng.randrange(10**12):012d}", "amount": 129.0}
        order["pay_method"] = "wechat_pay"
        name = self.rng.choice(("pay_request", "pay_success"))
        order[self.rng.choice(("ab_bucket", "coupon_id", "channel"))] = "B"
        dev, event = self._plain(t, name, order)
        return _out(dev, event)

    def _too_large(self, t: int) -> Junk:
        frame = "at pages/detail/detail.js:412 (onLoad) <- app-service.js:88\n"
        dump = frame * (33_000 // len(frame) + self.rng.randint(1, 100))
        props = {"page": "product_detail", "product_id": self.catalog.pick(), "debug_trace": dump}
        dev, event = self._plain(t, "page_view", props)
        return _out(dev, event)

    def _bad_event_id(self, t: int) -> Junk:
        dev, event = self._sample(t)
        event["event_id"] = self.rng.choice(("evt 0001/ä", "x" * 65, ""))
        return _out(dev, event)
