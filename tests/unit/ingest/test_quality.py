"""Missing-property counts of a validated batch."""

from __future__ import annotations

from pipeline.contract.plan import load_plan
from pipeline.ingest.quality import missing_counts, optional_properties
from pipeline.lake.schema import EventBatches

PLAN = load_plan()
BATCHES = EventBatches(PLAN)


def event(i: int, name: str, props: dict) -> dict:  # type: ignore[type-arg]
    return {
        "event_id": f"e{i}", "event_name": name, "event_time": 1795420000000,
        "received_at": 1795420000000, "anonymous_id": "d", "user_id": None, "person_id": None,
        "platform": "web", "app_version": None, "channel": None, "identities": None,
        "consent_marketing": None, "schema_version": 1, "properties": props,
        "source_partition": 0, "source_offset": i, "source_index": 0,
    }  # fmt: skip


def test_counts_events_and_missing_properties_per_event() -> None:
    rows = [
        event(0, "add_to_cart", {"product_id": "p", "quantity": 1, "price": 1.0, "sku_id": "s"}),
        event(1, "add_to_cart", {"product_id": "p", "quantity": 1, "price": 1.0}),
        event(2, "page_view", {"page": "home"}),
    ]
    events, missing = missing_counts(BATCHES.build(rows), BATCHES.by_event)
    assert events == {"add_to_cart": 2, "page_view": 1}
    assert missing[("add_to_cart", "sku_id")] == 1
    assert ("add_to_cart", "product_id") not in missing
    # page_view's own optional properties count; other events' columns do not.
    assert all(name == "page_view" for name, _ in missing if name != "add_to_cart")
    assert ("page_view", "sku_id") not in missing


def test_only_optional_properties_are_watched() -> None:
    watched = optional_properties(PLAN)
    assert watched["checkout"] == ["coupon_id"]
    assert set(watched["page_view"]) == {"product_id", "referrer", "duration_ms"}
    assert watched["pay_success"] == []  # every property required: absent is a dead letter
    rows = [event(0, "checkout", {"order_id": "o", "amount": 1.0, "item_count": 1})]
    _, missing = missing_counts(BATCHES.build(rows), watched)
    assert missing == {("checkout", "coupon_id"): 1}
