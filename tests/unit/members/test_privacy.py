"""A member import never brings back a deleted person nor stores a suppressed one's data
(review finding 2 of issue 17): the purge list and the requests, applied to the staged
rows and again under the deletions' lock at install. The deletion API directly, no broker."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from pipeline.lake import views
from pipeline.privacy import deletion, purge
from pipeline.privacy.deletion import Deleter
from pipeline.privacy.requests import DELETE, SUPPRESS, Request
from tests.unit.members.test_apply import RULES, Lake, lake, row

__all__ = ["lake"]  # the fixture

PID_1 = RULES.person_id("user_id:M001")


def _delete(lake: Lake, user_id: str) -> Request:
    request = Request(
        Request.new_id(),
        DELETE,
        (f"user_id:{user_id}",),
        (RULES.person_id(f"user_id:{user_id}"),),
    )
    deleter = Deleter(lake.root / "lake", lambda: views.connect(lake.root), RULES, None, "k")
    with deletion.exclusive(lake.root / "lake"):
        return deleter.run(request)


def _of(lake: Lake, user_id: str) -> dict[str, int]:
    return {
        table: lake.rows(f"SELECT count(*) FROM {table} WHERE user_id = '{user_id}'")[0][0]
        for table in ("profiles", "profile_changes", "profile_updates", "member_rejects")
    }


NONE = {"profiles": 0, "profile_changes": 0, "profile_updates": 0, "member_rejects": 0}


def test_an_import_after_a_deletion_does_not_bring_the_person_back(lake: Lake) -> None:
    lake.load([row("M001", "2024-05-01 10:00", level="gold"), row("M002", "2024-05-01 10:00")])
    lake.load([row("M001", "2024-05-02 10:00", level="bad-level")])  # a reject of theirs
    assert _of(lake, "M001")["member_rejects"] == 1
    _delete(lake, "M001")
    assert _of(lake, "M001") == NONE
    report = lake.load(
        [
            row("M001", "2024-05-03 10:00", level="silver", phone="13800138000"),
            row("M001", "2024-05-03 11:00", level="not-a-level"),
            row("M002", "2024-05-03 10:00", level="silver"),
        ]
    )
    assert report.rows_withheld == 2
    assert _of(lake, "M001") == NONE
    assert lake.rows("SELECT user_id, level FROM profiles") == [("M002", "silver")]
    assert report.links == 0  # no One ID link of theirs is even staged


def test_a_deletion_while_the_import_runs_is_applied_at_install(lake: Lake) -> None:
    # The person is deleted after the import filtered its staged rows and before it
    # installs them: the install filters again under the deletions' lock.
    lake.load([row("M001", "2024-05-01 10:00", level="gold")])
    lake.before_commit = lambda: _delete(lake, "M001")
    lake.load([row("M001", "2024-05-02 10:00", level="silver"), row("M002", "2024-05-02 10:00")])
    assert _of(lake, "M001") == NONE
    assert lake.rows("SELECT DISTINCT user_id FROM profile_updates") == [("M002",)]


def test_the_install_waits_for_a_deletion_in_progress(lake: Lake) -> None:
    lake_dir = lake.root / "lake"
    held = threading.Event()
    release = threading.Event()

    def deleting() -> None:
        with deletion.exclusive(lake_dir):
            held.set()
            release.wait(5)
            # what a deletion does first: the person on the purge list
            purge.add(lake_dir, "pr-x", {"user_id:M001"}, {PID_1})

    worker = threading.Thread(target=deleting)
    worker.start()
    held.wait(5)
    done: list[Any] = []

    def importing() -> None:
        done.append(lake.load([row("M001", "2024-05-02 10:00", level="gold")]))

    importer = threading.Thread(target=importing)
    importer.start()
    time.sleep(0.5)
    assert not done  # waiting for the lock
    release.set()
    worker.join(10)
    importer.join(30)
    assert done
    assert _of(lake, "M001") == NONE


def test_a_suppressed_persons_member_data_is_not_stored(lake: Lake) -> None:
    lake.requests = [Request("pr-s", SUPPRESS, ("user_id:M003",), (), seq=0)]
    report = lake.load([row("M003", "2024-05-01 10:00", level="gold"), row("M004", "2024-05-01")])
    assert report.rows_withheld == 1
    assert _of(lake, "M003") == NONE
    assert lake.rows("SELECT user_id FROM profiles") == [("M004",)]


def test_nothing_withheld_without_requests(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    report = lake.load([row("M001", "2024-05-01 10:00", level="gold")])
    assert report.rows_withheld == 0
    assert lake.rows("SELECT user_id, level FROM profiles") == [("M001", "gold")]
