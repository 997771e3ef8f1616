"""The Faust app's configuration choices that keep workers alive on the embedded broker."""

from __future__ import annotations

from pathlib import Path

from pipeline.runtime.topology import combine_partition_count, new_app
from pipeline.settings import Settings


def test_recovery_does_not_trust_the_brokers_end_offsets(tmp_path: Path) -> None:
    """Found by the three-worker test: in a second rebalance every joining worker crashed
    with ConsistencyError (identity_map changelog: offset read 3 > reported end 2), the
    embedded broker's under-reported end offset."""
    app = new_app(Settings(data_dir=tmp_path, dev=True), partitions=4)
    assert app.conf.recovery_consistency_check is False
    assert app.conf.store.scheme == "memory"  # the check guards on-disk stores only


def test_without_a_broker_the_combine_partitions_are_the_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, combine_partitions=3, dev=True)
    assert combine_partition_count(settings, ensure_topics=False) == 3


def test_the_stream_buffer_setting_reaches_faust(tmp_path: Path) -> None:
    app = new_app(Settings(data_dir=tmp_path, stream_buffer=512, dev=True), partitions=4)
    assert app.conf.stream_buffer_maxsize == 512
