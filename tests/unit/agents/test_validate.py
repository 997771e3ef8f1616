"""The validate agent's wiring: names, topics, co-partitioning and its dedup table."""

from __future__ import annotations

from pathlib import Path

from pipeline import names
from pipeline.app import create_app
from pipeline.settings import Settings


def make(tmp_path: Path, **kw: object):
    settings = Settings(data_dir=tmp_path, topic_prefix="x.", partitions=6, **kw)
    return create_app(settings, ensure_topics=False)


def test_agent_is_named_and_reads_the_raw_topic(tmp_path: Path) -> None:
    app, _ctx = make(tmp_path)
    agent = app.agents[names.AGENT_VALIDATE]
    assert agent.name == names.AGENT_VALIDATE
    assert set(agent.channel.topics) == {"x.events.raw"}


def test_outputs_are_internal_and_copartitioned_with_input(tmp_path: Path) -> None:
    _app, ctx = make(tmp_path)
    for topic in (ctx.topics.raw, ctx.topics.valid, ctx.topics.dlq):
        assert topic.partitions == 6
        assert topic.internal
    assert set(ctx.topics.valid.topics) == {"x.events.valid"}
    assert set(ctx.topics.dlq.topics) == {"x.events.dlq"}


def test_dedup_table_changelog_is_time_retained_not_compacted(tmp_path: Path) -> None:
    app, ctx = make(tmp_path, dedup_horizon_hours=24)
    table = app.tables[names.TABLE_DEDUP]
    assert table is ctx.tables.dedup
    assert table.partitions == 6
    configs = table.changelog_topic.config
    assert configs["cleanup.policy"] == "delete"
    assert int(configs["retention.ms"]) >= 2 * 24 * 3600 * 1000


def test_missing_property_series_exist_at_zero_from_the_start(tmp_path: Path) -> None:
    """The missing-property alert compares a share with its own past: a property never
    missing must have a past of 0, not none. Required properties are not counted: a valid
    event cannot lack one (it is dead-lettered)."""
    _app, ctx = make(tmp_path)
    registry = ctx.metrics.registry

    def missing(event: str, prop: str) -> float | None:
        labels = {"event_name": event, "property": prop}
        return registry.get_sample_value("trackflow_property_missing_total", labels)

    assert missing("add_to_cart", "sku_id") == 0
    assert missing("checkout", "coupon_id") == 0
    assert missing("checkout", "order_id") is None  # required
    assert (
        registry.get_sample_value("trackflow_events_valid_by_event_total", {"event_name": "login"})
        == 0
    )
