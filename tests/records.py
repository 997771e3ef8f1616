"""Rows as the validate stage stores them, for tests that feed internal topics directly."""

from __future__ import annotations

from typing import Any

T0 = 1_795_420_000_000


def event_row(
    *, partition: int = 2, offset: int = 0, index: int = 0, t: int = T0, **over: Any
) -> dict[str, Any]:
    """A page_view of events.raw ``partition`` at position (offset, index); ``over`` replaces
    any column."""
    row: dict[str, Any] = {
        "event_id": f"e{partition}-{offset}-{index}",
        "event_name": "page_view",
        "event_time": t,
        "received_at": t + 500,
        "anonymous_id": "d1",
        "user_id": None,
        "person_id": None,
        "platform": "web",
        "app_version": None,
        "channel": None,
        "identities": None,
        "consent_marketing": None,
        "schema_version": 1,
        "properties": {"page": "home"},
        "source_partition": partition,
        "source_offset": offset,
        "source_index": index,
    }
    row.update(over)
    return row
