"""One backfill run: validate, dedup, stitch and store a file's events, chunk by chunk.

Per chunk of lines: the stream's ``Ingestor`` (validation without the age limit, PII
hashing, consent, dedup inside the run, dead letters with the stream's error codes), rows
built as the validate stage builds them, the links applied to the identity graph and each
event given its person as the stitch stage would, events already in the lake's ``events``
dropped as duplicates, then the events and dead letters flushed (files, then checkpoint).
The identity rows and merges go last, once the whole input is applied. A crash anywhere
leaves checkpoints behind which a rerun of the same input skips; identities are recomputed
from the lake and the whole input, so the rerun writes what the first run would have.
"""

from __future__ import annotations

import base64
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.backfill.identity import BackfillIdentity
from pipeline.backfill.source import chunks
from pipeline.contract.errors import ErrorCode, Rejected
from pipeline.contract.pii import PiiHasher
from pipeline.contract.plan import TrackingPlan
from pipeline.identity.graph import IdentityGraph, Link
from pipeline.identity.rules import IdentityRules
from pipeline.identity.stitching import Stitcher
from pipeline.ingest.dedup import SeenIds
from pipeline.ingest.ingestor import Ingestor, RawMessage, in_log_order
from pipeline.ingest.validation import Validator
from pipeline.lake.schema import (
    IDENTITY_SCHEMA,
    MERGE_SCHEMA,
    EventBatches,
    EventsSplitter,
    dlq_table,
    split_by_day,
    split_dlq,
)
from pipeline.lake.writer import TableWriter
from pipeline.names import BACKFILL_SOURCE, LAKE_DLQ, LAKE_EVENTS, LAKE_IDENTITIES, LAKE_MERGES
from pipeline.privacy.purge import Purger, purged_state

DAY_MS = 86_400_000


@dataclass
class BackfillStats:
    run: int = 0
    lines: int = 0
    events: int = 0  # event objects read (a JSON array line holds several)
    stored: int = 0
    duplicates: int = 0  # in the run, or already in the lake
    dead_lettered: int = 0
    consent_dropped: int = 0
    identities: int = 0
    merges: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class Backfill:
    def __init__(
        self,
        lake_dir: Path,
        plan: TrackingPlan,
        rules: IdentityRules,
        hasher: PiiHasher,
        con: duckdb.DuckDBPyConnection,
        max_payload_bytes: int,
        collect_links: bool = False,
    ) -> None:
        self.plan = plan
        self.con = con
        # The run's own dedup memory: one generation for the whole run.
        self.seen = SeenIds(1 << 62)
        self.ingestor = Ingestor(
            plan,
            Validator(plan, hasher, historic=True),
            hasher,
            self.seen,
            BACKFILL_SOURCE,
            max_payload_bytes,
            # Deleted persons (DESIGN 15) are not brought back by a backfill.
            suppression=purged_state(lake_dir),
        )
        self.batches = EventBatches(plan)
        self.identity = BackfillIdentity(rules, con)
        self.stitcher = Stitcher(rules, self.identity.graph, refresh_ms=DAY_MS)
        # Every link of the input, whether the lake knew it or not (for --publish-links: a
        # rerun must send them again): a stitcher over a graph that stays empty.
        self.links: list[Link] | None = [] if collect_links else None
        self._all_links = Stitcher(rules, IdentityGraph(rules), refresh_ms=DAY_MS)
        self.writers = {
            LAKE_EVENTS: TableWriter(lake_dir, LAKE_EVENTS, EventsSplitter(plan)),
            LAKE_DLQ: TableWriter(lake_dir, LAKE_DLQ, split_dlq),
            LAKE_IDENTITIES: TableWriter(
                lake_dir, LAKE_IDENTITIES, split_by_day("updated_at", "updated_date")
            ),
            LAKE_MERGES: TableWriter(
                lake_dir, LAKE_MERGES, split_by_day("decided_at", "decided_date")
            ),
        }
        purger = Purger(lake_dir)
        for writer in self.writers.values():
            writer.purge = purger

    def run(self, path: Path, run: int, lines_per_chunk: int = 50_000) -> BackfillStats:
        stats = BackfillStats(run=run)
        now_ms = int(time.time() * 1000)
        for chunk in chunks(path, lines_per_chunk):
            stats.lines += len(chunk)
            self._chunk(run, chunk, now_ms, stats)
        self._identities(run, int(time.time() * 1000), stats)
        return stats

    def _chunk(
        self, run: int, chunk: list[tuple[int, bytes]], now_ms: int, stats: BackfillStats
    ) -> None:
        messages = [RawMessage(offset, line, now_ms) for offset, line in chunk]
        result = self.ingestor.process(run, messages, now_ms)
        stats.events += result.received
        stats.duplicates += result.duplicates
        stats.consent_dropped += result.consent_dropped
        table = None
        if result.valid:
            table, failed = self.batches.build_each(result.valid)
            by_offset = {m.offset: m for m in messages}
            for row, exc in failed:
                rejected = Rejected(ErrorCode.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")
                msg = by_offset[row["source_offset"]]
                self.ingestor.reject_later(run, msg, row["source_index"], rejected, now_ms, result)
        if table is not None and table.num_rows:
            table = self._stitch(table)
            fresh = self._not_in_lake(table)
            stats.duplicates += table.num_rows - fresh.num_rows
            stats.stored += self._store(LAKE_EVENTS, run, fresh)
        in_log_order(result.dlq)
        for row in result.dlq:
            row["payload"] = _unb64(row["payload"])
        letters = self._not_dead_lettered(dlq_table(result.dlq))
        stats.duplicates += len(result.dlq) - letters.num_rows
        stats.dead_lettered += self._store(LAKE_DLQ, run, letters)

    def _stitch(self, table: pa.Table) -> pa.Table:
        """Links applied first, then each event's person read from the graph: the person
        the map gives the event once the whole chunk is known."""
        _, links = self.stitcher.stitch(table)
        self.identity.apply(links)
        if self.links is not None:
            self.links += self._all_links.stitch(table)[1]
        stitched, _ = self.stitcher.stitch(table)
        return stitched

    def _not_in_lake(self, table: pa.Table) -> pa.Table:
        ids = pa.table({"event_id": table["event_id"]})
        self.con.register("backfill_ids", ids)
        try:
            stored = self.con.execute(
                "SELECT DISTINCT event_id FROM events "
                "WHERE event_id IN (SELECT event_id FROM backfill_ids)"
            ).fetchall()
        finally:
            self.con.unregister("backfill_ids")
        if not stored:
            return table
        known = pa.array([row[0] for row in stored], pa.string())
        return table.filter(pc.invert(pc.is_in(table["event_id"], known)))

    def _not_dead_lettered(self, table: pa.Table) -> pa.Table:
        """Bad events whose exact (masked) bytes the lake's dlq already holds are dropped,
        as the stream drops a re-sent bad event: one dead letter per bad event, also when
        another file (or the stream) brought it first."""
        if table.num_rows == 0:
            return table
        self.con.register("backfill_bad", pa.table({"payload": table["payload"]}))
        try:
            stored = self.con.execute(
                "SELECT DISTINCT payload FROM dlq "
                "WHERE payload IN (SELECT payload FROM backfill_bad)"
            ).fetchall()
        finally:
            self.con.unregister("backfill_bad")
        if not stored:
            return table
        known = pa.array([row[0] for row in stored], pa.binary())
        return table.filter(pc.invert(pc.is_in(table["payload"], known)))

    def _store(self, name: str, run: int, table: pa.Table) -> int:
        """Rows above the run's checkpoint, written (files, then checkpoint); how many."""
        writer = self.writers[name]
        added = writer.add(BACKFILL_SOURCE, run, table)
        writer.flush(BACKFILL_SOURCE, run)
        return added

    def _identities(self, run: int, now_ms: int, stats: BackfillStats) -> None:
        rows = [self.identity.rows[k] for k in sorted(self.identity.rows)]
        merges = self.identity.merges
        for row in rows:
            row["updated_at"] = now_ms
        for row in merges:
            row["decided_at"] = now_ms
        ids = _positioned(rows, IDENTITY_SCHEMA, run)
        stats.identities = self._store(LAKE_IDENTITIES, run, ids)
        stats.merges = self._store(LAKE_MERGES, run, _positioned(merges, MERGE_SCHEMA, run))


def _positioned(rows: list[dict[str, Any]], schema: pa.Schema, run: int) -> pa.Table:
    """Row i at position (i, 0): stable for the same input, and never over the index bits."""
    for i, row in enumerate(rows):
        row["source_partition"], row["source_offset"], row["source_index"] = run, i, 0
    return pa.Table.from_pylist(rows, schema=schema)


def _unb64(text: Any) -> bytes:
    return base64.b64decode(text) if isinstance(text, str) else bytes(text or b"")
