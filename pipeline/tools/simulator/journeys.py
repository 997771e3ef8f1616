"""Shopping journeys: the script a session follows, one event per step.

A script is a generator so the clock can interleave many sessions and resume each at its
own event time; every step draws from the shared generator only when it is taken, which is
what makes a seed replay byte for byte. The funnel: home, listings and product pages, the
cart, then checkout and payment, with drop-outs at each stage.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from random import Random
from typing import Any

from pipeline.tools.simulator.catalog import Catalog
from pipeline.tools.simulator.checkout import Checkout
from pipeline.tools.simulator.logins import Logins
from pipeline.tools.simulator.population import token
from pipeline.tools.simulator.session import Cart, CartLine, Session, Step, page_view

_LISTING_TABS = {"category": "category_tab", "search": "search_box", "activity": "activity_banner"}


class Journeys:
    def __init__(self, rng: Random, catalog: Catalog, logins: Logins, checkout: Checkout) -> None:
        self.rng = rng
        self.catalog = catalog
        self.logins = logins
        self.checkout = checkout

    def script(self, s: Session) -> Iterator[Step]:
        """A visit: the funnel home -> listing -> detail -> cart -> checkout -> pay."""
        if (yield from self._landing(s)):
            return  # bounce
        cart: Cart = {}
        yield from self._browse(s, cart)
        if not cart:
            if self.rng.random() < 0.2:
                yield "page_view", page_view(self.rng, s, "member_center"), None
            return
        if not (yield from self._review_cart(s, cart)):
            return
        if s.member is None:
            yield "element_click", {"page": "cart", "element": "login_prompt"}, None
            return  # guests must log in to order and these never do
        yield from self.checkout.order(s, s.member, cart)

    def _landing(self, s: Session) -> Generator[Step, None, bool]:
        """The home page, its teasers and an early login; returns whether the visitor bounces."""
        rng, dev, member = self.rng, s.device, s.member
        s.page, s.page_ms = "home", s.now_ms
        home: dict[str, Any] = {"page": "home"}
        if s.channel == "wechat_share":
            home["referrer"] = "wechat://share/" + token(rng, 8)
        yield "page_view", home, None
        for pos in range(rng.choice((0, 1, 2, 3))):
            element = rng.choice(("banner", "product_card", "coupon_popup"))
            props = {"page": "home", "element": element, "position": pos}
            if element == "product_card":
                props["product_id"] = self.catalog.pick()
            yield "exposure", props, None
        # Some members log in right away; switching from another member's account must.
        if (
            member is not None
            and dev.user_id != member.user_id
            and (dev.user_id is not None or rng.random() < 0.35)
        ):
            yield from self.logins.login(s, member)
        return rng.random() < 0.2

    def _browse(self, s: Session, cart: Cart) -> Iterator[Step]:
        for _ in range(self.rng.choice((1, 1, 2, 2, 3, 4, 5))):
            if (yield from self._listing(s, cart)):
                break

    def _listing(self, s: Session, cart: Cart) -> Generator[Step, None, bool]:
        """One listing, maybe one product from it; returns whether browsing stops here."""
        rng = self.rng
        listing = rng.choices(("category", "search", "activity"), (45, 40, 15))[0]
        yield "element_click", {"page": s.page, "element": _LISTING_TABS[listing]}, None  # tab bar
        yield "page_view", page_view(rng, s, listing), None
        shown = [self.catalog.pick() for _ in range(rng.randint(2, 6))]
        for pos, pid in enumerate(shown):
            card = {"page": listing, "element": "product_card", "product_id": pid}
            yield "exposure", {**card, "position": pos}, None
        if rng.random() < 0.15:
            return False  # nothing caught the eye
        pos = min(int(rng.expovariate(0.8)), len(shown) - 1)
        pid = shown[pos]
        card = {"page": listing, "element": "product_card", "product_id": pid}
        yield "element_click", {**card, "position": pos}, None
        yield "page_view", page_view(rng, s, "product_detail", product_id=pid), None
        if rng.random() < 0.45:
            yield from self._add_to_cart(pid, cart)
        return rng.random() < 0.15

    def _add_to_cart(self, pid: str, cart: Cart) -> Iterator[Step]:
        rng = self.rng
        qty = rng.choices((1, 2, 3, 5), (75, 17, 6, 2))[0]
        button = {"page": "product_detail", "element": "add_to_cart_button"}
        button["product_id"] = pid
        yield "element_click", button, None
        line = cart.setdefault(pid, CartLine(0, self.catalog.price_cents[pid]))
        line.quantity += qty
        add: dict[str, Any] = {"product_id": pid, "quantity": qty}
        add["price"] = line.price_cents / 100
        if rng.random() < 0.5:
            line.sku_id = line.sku_id or f"{pid}-s{rng.randint(1, 4)}"
            add["sku_id"] = line.sku_id
        yield "add_to_cart", add, None

    def _review_cart(self, s: Session, cart: Cart) -> Generator[Step, None, bool]:
        """The cart page, perhaps removing something; returns whether the buyer checks out."""
        rng = self.rng
        yield "element_click", {"page": s.page, "element": "cart_tab"}, None
        yield "page_view", page_view(rng, s, "cart"), None
        if rng.random() < (0.3 if len(cart) > 1 else 0.05):
            pid = rng.choice(sorted(cart))
            line = cart[pid]
            qty = rng.randint(1, line.quantity)
            remove: dict[str, Any] = {"product_id": pid, "quantity": qty}
            if line.sku_id:
                remove["sku_id"] = line.sku_id
            yield "remove_from_cart", remove, None
            line.quantity -= qty
            if line.quantity == 0:
                del cart[pid]
        return bool(cart) and rng.random() >= 0.25  # else an abandoned cart
