"""Exported analytics on /metrics: set per series, removed when no longer exported."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from pipeline.runtime.analytics_finals import Series, show


def test_series_are_set_and_vanished_ones_removed() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("g", "test", ["metric", "window", "dimensions"], registry=registry)
    shown: set[Series] = set()
    show(
        gauge, [("lifecycle", "1d", '{"stage":"new"}', 3.0), ("retention", "1d", "{}", 0.5)], shown
    )
    assert (
        registry.get_sample_value(
            "g", {"metric": "lifecycle", "window": "1d", "dimensions": '{"stage":"new"}'}
        )
        == 3.0
    )
    show(gauge, [("retention", "1d", "{}", 0.25)], shown)
    assert (
        registry.get_sample_value(
            "g", {"metric": "lifecycle", "window": "1d", "dimensions": '{"stage":"new"}'}
        )
        is None
    )
    assert (
        registry.get_sample_value("g", {"metric": "retention", "window": "1d", "dimensions": "{}"})
        == 0.25
    )
    assert shown == {("retention", "1d", "{}")}
