"""One visit in progress: a person on a device, where they are and what they hold."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from random import Random
from typing import Any

from pipeline.tools.simulator.population import Device, Member

# A step of a session script: event name, properties, identities override.
Step = tuple[str, dict[str, Any], dict[str, str] | None]


@dataclass(eq=False)
class Session:
    device: Device
    member: Member | None
    channel: str | None
    consent: dict[str, bool] | None
    now_ms: int = 0  # event time of the step being produced; scripts read it
    page: str = "home"  # page on screen, for referrer and element_click
    page_ms: int = 0  # when it was shown, for duration_ms of the next page_view
    ready_ms: float = 0.0  # earliest time of the session's next message
    slot: int = 0  # index in the active list, for O(1) removal
    script: Iterator[Step] = field(default_factory=lambda: iter(()))


@dataclass
class CartLine:
    quantity: int
    price_cents: int
    sku_id: str | None = None


Cart = dict[str, CartLine]  # by product_id, in the order first added


def page_view(rng: Random, s: Session, page: str, product_id: str | None = None) -> dict[str, Any]:
    """Properties of a page_view at ``s.now_ms``; call it right before the yield, as it
    moves the session to ``page`` and the dwell time is measured from then."""
    props: dict[str, Any] = {"page": page}
    if product_id is not None:
        props["product_id"] = product_id
    if rng.random() < 0.7:
        props["referrer"] = s.page
    if rng.random() < 0.6:
        props["duration_ms"] = max(0, s.now_ms - s.page_ms)
    s.page, s.page_ms = page, s.now_ms
    return props
