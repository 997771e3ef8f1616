"""The replay ledger: durable entries, latest state per dead letter, one run at a time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.dlq.ledger import NOT_SENT, SENDING, SENT, Entry, Ledger, LedgerBusy
from pipeline.lake.views import connect


def test_the_latest_entry_of_a_dead_letter_is_its_state(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    assert ledger.states() == {}
    ledger.write([Entry("k1", SENDING, "r", "t", 0, 5), Entry("k2", SENDING, "r", "t", 1, 7)])
    ledger.write([Entry("k1", SENT, "r", "t", 0, 5, 9, at=1_795_420_800_000)])
    ledger.write([])  # nothing to write: no file
    again = Ledger(tmp_path).states()  # a new process reads the same
    assert {k: (e.state, e.seq) for k, e in again.items()} == {"k1": (SENT, 2), "k2": (SENDING, 1)}
    assert again["k1"].sent_offset == 9
    assert again["k1"].at == 1_795_420_800_000
    assert again["k2"].scan_from == 7
    assert again["k2"].sent_partition == 1
    assert sorted(p.name for p in (tmp_path / "dlq_replays").glob("*.parquet")) == [
        "000000000001.parquet",
        "000000000002.parquet",
    ]


def test_a_second_ledger_object_continues_the_sequence(tmp_path: Path) -> None:
    Ledger(tmp_path).write([Entry("k1", SENDING, "r")])
    Ledger(tmp_path).write([Entry("k1", NOT_SENT, "r")])
    assert Ledger(tmp_path).states()["k1"].state == NOT_SENT


def test_the_lake_view_shows_each_dead_letters_latest_state(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "lake")
    ledger.write([Entry("k1", SENDING, "r", "t", 0, 5)])
    ledger.write([Entry("k1", SENT, "r", "t", 0, 5, 6)])
    rows = connect(tmp_path).execute("SELECT replay_of, state, sent_offset FROM dlq_replays")
    assert rows.fetchall() == [("k1", SENT, 6)]


def test_only_one_run_holds_the_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    with (
        ledger.locked(),
        pytest.raises(LedgerBusy, match="another dlq replay is running"),
        Ledger(tmp_path).locked(),
    ):
        pass
    with Ledger(tmp_path).locked():  # released on exit
        pass


def test_a_lock_dies_with_its_process(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from pipeline.dlq.ledger import Ledger\n"
        "with Ledger(Path(sys.argv[1])).locked():\n"
        "    os._exit(9)\n"  # a crash: no clean-up runs
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], timeout=60)
    assert proc.returncode == 9
    with Ledger(tmp_path).locked():
        pass


def test_a_write_cut_short_leaves_no_entry_and_is_cleaned_up(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.write([Entry("k1", SENDING, "r")])
    tmp = tmp_path / "dlq_replays" / ".000000000002.parquet.tmp"
    tmp.write_bytes(b"PAR1 half a file")
    assert set(ledger.states()) == {"k1"}
    with ledger.locked():
        assert not tmp.exists()
        ledger.write([Entry("k2", SENDING, "r")])
    assert set(Ledger(tmp_path).states()) == {"k1", "k2"}
