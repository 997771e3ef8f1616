"""The purge list: deleted persons whose rows the lake writers drop before writing.

Events of a person validated just before the delete request are still on their way
(events.valid, events.stitched, a sink's buffer) when the deletion rewrites the lake. The
deletion therefore adds the person to this list (``<lake>/_privacy/purged.json``, replaced
atomically) *before* it rewrites any file, and every ``TableWriter`` filters each flush
through it under the partition's lock: a flush after a file's rewrite (the lock orders
them) drops the person's rows, a flush before it is cleaned by the rewrite. Unsuppressing
the person takes them off the list again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.lake.durable import atomic_write_bytes
from pipeline.names import LAKE_PRIVACY_DIR
from pipeline.privacy.matching import MatchSet
from pipeline.privacy.requests import DELETE, Request
from pipeline.privacy.state import PrivacyState

FILE = "purged.json"


def purge_path(lake_dir: Path) -> Path:
    return lake_dir / LAKE_PRIVACY_DIR / FILE


def load(lake_dir: Path) -> dict[str, dict[str, list[str]]]:
    """request id -> {"nodes": [...], "pids": [...]}."""
    path = purge_path(lake_dir)
    if not path.exists():
        return {}
    value: Any = orjson.loads(path.read_bytes())
    return dict(value.get("requests", {}))


def _save(lake_dir: Path, entries: dict[str, dict[str, list[str]]]) -> None:
    path = purge_path(lake_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, orjson.dumps({"requests": entries}, option=orjson.OPT_SORT_KEYS))


def add(lake_dir: Path, request_id: str, nodes: set[str], pids: set[str]) -> None:
    """Put a deleted person on the list (idempotent; more identifiers widen the entry)."""
    entries = load(lake_dir)
    old = entries.get(request_id, {"nodes": [], "pids": []})
    entry = {
        "nodes": sorted(set(old["nodes"]) | nodes),
        "pids": sorted(set(old["pids"]) | pids),
    }
    if entry != old:
        entries[request_id] = entry
        _save(lake_dir, entries)


def remove(lake_dir: Path, request_ids: set[str]) -> None:
    entries = load(lake_dir)
    if request_ids & set(entries):
        _save(lake_dir, {k: v for k, v in entries.items() if k not in request_ids})


def match_set(entries: dict[str, dict[str, list[str]]]) -> MatchSet:
    nodes = {n for e in entries.values() for n in e["nodes"]}
    pids = {p for e in entries.values() for p in e["pids"]}
    return MatchSet.of(nodes, pids)


def purged_state(lake_dir: Path) -> PrivacyState:
    """The deleted persons as a suppression, from the lake alone (no broker): for writers
    outside the workers, such as ``trackflow backfill``."""
    entries = load(lake_dir)
    state = PrivacyState()
    state.apply(
        Request(rid, DELETE, tuple(e["nodes"]), tuple(e["pids"]), seq=i)
        for i, (rid, e) in enumerate(sorted(entries.items()))
    )
    return state


class Purger:
    """The writers' filter; re-reads the list only when the file changed (one ``stat``
    per flush otherwise)."""

    def __init__(self, lake_dir: Path) -> None:
        self.lake_dir = lake_dir
        self._stamp: tuple[int, int, int] | None = None
        self.match = MatchSet()

    def current(self) -> MatchSet:
        try:
            st = os.stat(purge_path(self.lake_dir))
        except FileNotFoundError:
            self._stamp, self.match = None, MatchSet()
            return self.match
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self.match = match_set(load(self.lake_dir))
            self._stamp = stamp
        return self.match

    def __call__(self, rows: pa.Table) -> tuple[pa.Table, int]:
        match = self.current()
        if not match or rows.num_rows == 0:
            return rows, 0
        drop = match.mask(rows)
        dropped = int(pc.sum(drop).as_py() or 0)
        if not dropped:
            return rows, 0
        return rows.filter(pc.invert(drop)), dropped
