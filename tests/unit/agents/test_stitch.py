"""The stitch agent's wiring: it reads events.valid and feeds the sink and the writer."""

from __future__ import annotations

from pathlib import Path

from pipeline import names
from pipeline.app import create_app
from pipeline.settings import Settings


def test_stitch_reads_valid_and_writes_stitched_copartitioned(tmp_path: Path) -> None:
    app, ctx = create_app(
        Settings(data_dir=tmp_path, topic_prefix="x.", partitions=6), ensure_topics=False
    )
    agent = app.agents[names.AGENT_STITCH]
    assert agent.name == names.AGENT_STITCH
    assert set(agent.channel.topics) == {"x.events.valid"}
    assert set(ctx.topics.stitched.topics) == {"x.events.stitched"}
    assert ctx.topics.stitched.partitions == 6
    # The events sink reads the stitched events, not the validated ones.
    assert set(app.agents[names.AGENT_SINK_EVENTS].channel.topics) == {"x.events.stitched"}


def test_links_go_to_a_single_partition_topic(tmp_path: Path) -> None:
    _app, ctx = create_app(
        Settings(data_dir=tmp_path, topic_prefix="x.", partitions=6), ensure_topics=False
    )
    assert set(ctx.topics.links.topics) == {"x.identity.links"}
    assert ctx.topics.links.partitions == 1
    assert ctx.topics.links.internal
