"""Batch-log tables forget a partition's state only when their own changelog partition
moves, and then replay it from the start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from faust.types import TP

from pipeline.app import create_app
from pipeline.settings import Settings
from tables.batchlog import RECOVERY_BUFFER_RECORDS, BatchLogTable


def test_losing_another_topics_partition_of_the_same_number_keeps_the_state(
    tmp_path: Path,
) -> None:
    """Found by the three-worker test: a worker that lost events.raw partition 2 dropped the
    open windows of combine partition 2, which it kept (nothing replayed them), and the
    windows closed with a fraction of their events."""
    app, ctx = create_app(
        Settings(data_dir=tmp_path, topic_prefix="x.", dev=True), ensure_topics=False
    )
    table = ctx.tables.combine_windows
    changelog = TP(table.changelog_topic.get_topic_name(), 2)
    table.apply_record(2, "combine:1:0:0", {"applied": {"0": 5}, "wm": {}, "closed": {}})
    recovery = app.tables.recovery
    recovery.active_offsets[changelog] = 41

    raw = TP("x.events.raw", 2)
    asyncio.run(table.on_rebalance({changelog}, {raw}, set(), 0))
    assert ctx.domain.combine[2].applied == {0: 5}
    assert recovery.active_offsets[changelog] == 41

    asyncio.run(table.on_rebalance(set(), {changelog}, set(), 0))
    assert ctx.domain.combine[2].applied == {}  # made anew: forgotten
    assert changelog not in recovery.active_offsets  # re-assigned: read from the start


def test_a_recovery_holds_a_few_batch_records_per_partition(tmp_path: Path) -> None:
    """A batch-log record is a whole take; Faust's default recovery buffer (1000 records a
    partition) held a takeover's whole replay decoded at once, and the pymalloc arenas it
    spread over stayed mapped: the survivor's RSS step at each takeover of the soak."""
    _app, ctx = create_app(
        Settings(data_dir=tmp_path, topic_prefix="x.", dev=True), ensure_topics=False
    )
    tables = [ctx.tables.dedup, ctx.tables.aggregate_progress, ctx.tables.combine_windows]
    assert all(isinstance(t, BatchLogTable) for t in tables)
    for table in tables:
        assert table.recovery_buffer_size == RECOVERY_BUFFER_RECORDS, table.name
        assert table.standby_buffer_size == RECOVERY_BUFFER_RECORDS, table.name
    assert RECOVERY_BUFFER_RECORDS <= 64
