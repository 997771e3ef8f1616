"""An import never stores member data of a deleted or suppressed person (DESIGN 15).

The lake writers pass every flush through the purge list (``pipeline/privacy/purge.py``);
an import installs files of its own, so it applies the same list itself:

* after the source is read, the staged updates and rejects of persons on the purge list
  (deleted) or suppressed by a privacy request in force are dropped, so nothing of them
  is decided, linked to One ID or counted as changed;
* at install, holding the lock deletions run under (``pipeline.privacy.deletion.
  exclusive``), the files to install are filtered again through the purge list as it is
  then, and installed before the lock is released. A deletion therefore either ran
  entirely before (its purge list drops the rows) or starts after the files are in place
  (its scan finds them and rewrites them): an import racing a deletion cannot bring the
  person back.

Rows are matched by the rules of ``pipeline/privacy/matching.py`` (``user_id`` and
``person_id`` of the member), in DuckDB, so a million staged rows never sit in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from pipeline.contract.sql import path_literal
from pipeline.privacy import purge
from pipeline.privacy.deletion import exclusive
from pipeline.privacy.matching import MatchSet
from pipeline.privacy.requests import Request
from pipeline.privacy.state import PrivacyState


def suppressed_persons(con: duckdb.DuckDBPyConnection, requests: Iterable[Request]) -> MatchSet:
    """The persons privacy requests suppress now (deletions included), with every
    identifier and person id the lake's identity map gives them."""
    state = PrivacyState()
    state.apply(requests)
    if not state.any:
        return MatchSet()
    nodes, pids = set(state.nodes), set(state.recorded_pids)
    try:
        rows = con.execute(
            "WITH p AS (SELECT DISTINCT person_id FROM identities "
            "WHERE list_contains(?, identifier_type || ':' || identifier) "
            "OR list_contains(?, person_id)) "
            "SELECT identifier_type || ':' || identifier, person_id FROM identities "
            "WHERE person_id IN (SELECT person_id FROM p)",
            [sorted(nodes), sorted(pids)],
        ).fetchall()
    except duckdb.Error:
        rows = []  # no identity map in this lake: the requests' identifiers alone
    for n, p in rows:
        nodes.add(str(n))
        pids.add(str(p))
    return MatchSet.of(nodes, pids)


def union(a: MatchSet, b: MatchSet) -> MatchSet:
    if not b:
        return a
    if not a:
        return b
    return MatchSet.of(a.nodes | b.nodes, a.pids | b.pids)


def drop_rows(
    con: duckdb.DuckDBPyConnection, path: Path, match: MatchSet, distinct: str | None = None
) -> int:
    """Rewrite the Parquet file ``path`` without the rows of ``match``'s persons; returns
    the rows dropped (``distinct``: the distinct values of that column among them)."""
    if not match or not path.exists():
        return 0
    src = f"read_parquet({path_literal(path)})"
    cols = {d[0] for d in con.execute(f"SELECT * FROM {src} LIMIT 0").description}
    predicate = match.sql(cols)
    if predicate is None:  # not a table of this module (no payload column here)
        raise ValueError(f"{path}: no predicate for its columns")
    sql, params = predicate
    counted = f'count(DISTINCT "{distinct}")' if distinct else "count(*)"
    row = con.execute(f"SELECT {counted} FROM {src} WHERE coalesce(({sql}), false)", params)
    found = row.fetchone()
    dropped = int(found[0]) if found else 0
    if not dropped:
        return 0
    tmp = path.with_name(f".{path.name}.kept")
    con.execute(
        f"COPY (SELECT * FROM {src} WHERE NOT coalesce(({sql}), false)) "
        f"TO {path_literal(tmp)} (FORMAT parquet, COMPRESSION zstd)",
        params,
    )
    os.replace(tmp, path)
    return dropped


@dataclass
class Withhold:
    """The privacy filter of one import run."""

    lake_dir: Path
    suppressed: MatchSet = field(default_factory=MatchSet)  # from the requests, at start
    rows: int = 0  # staged rows dropped (updates, plus rejected rows)

    def current(self) -> MatchSet:
        """Deleted persons (the purge list, read now) and the suppressed ones."""
        return union(purge.match_set(purge.load(self.lake_dir)), self.suppressed)

    def staged(self, con: duckdb.DuckDBPyConnection, updates: Path, rejects: Path) -> int:
        """Drop the persons' staged rows before anything is decided."""
        match = self.current()
        dropped = drop_rows(con, updates, match) + drop_rows(con, rejects, match, "row")
        self.rows += dropped
        return dropped

    @contextmanager
    def installing(self, con: duckdb.DuckDBPyConnection, files: list[Path]) -> Iterator[None]:
        """Hold the deletions' lock, filter ``files`` through the purge list as it is now;
        the caller installs them inside the block."""
        with exclusive(self.lake_dir):
            match = self.current()
            for path in files:
                drop_rows(con, path, match)
            yield
