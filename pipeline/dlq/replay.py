"""``trackflow dlq replay``: send matching dead letters back through validation, once each.

What happens to each dead letter the filters match (docs/dlq-replay.md):

* it is itself a failed replay (``replay_of`` set): never replayed again (``failed_again``):
  its payload already had its one replay;
* the ledger says it was sent (``already_replayed``) or may have been (``in_doubt``): not
  sent;
* it does not come from a partition of this deployment's events.raw (``unreplayable``);
* its payload was cut (``truncated``): the event is not all there, never sent;
* a value of its payload was replaced by a ``[phone:…]`` / ``[email:…]`` mask
  (``masked``): replaying would store the pseudonym in place of the original value
  (e.g. a member id that looks like a phone number), so it is not sent; values under PII
  keys are hashed as the pipeline stores them and do not stop a replay;
* it belongs to a suppressed person (``suppressed``, pipeline/dlq/suppression.py);
* otherwise it is sent (``replayed``) to the partition it first came from, with the
  replay marker, in chunks recorded in the ledger before and after sending.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, fields, replace
from typing import Any

import duckdb
import orjson

from pipeline.contract.replay import ReplayMarker
from pipeline.dlq.kafka import SETTLE_GRACE_SECONDS, Broker, Outgoing
from pipeline.dlq.ledger import NOT_SENT, SENDING, SENT, Entry, Ledger
from pipeline.dlq.selection import DeadLetter, Filters, dead_letters
from pipeline.dlq.suppression import Suppressions, identifiers
from pipeline.names import TOPIC_RAW

CHUNK = 500  # dead letters per ledger write and send
MASKED_TEXT = re.compile(rb"\[(?:phone|email):[0-9a-f]{64}\]")


@dataclass
class ReplayReport:
    dry_run: bool
    matched: int = 0
    replayed: int = 0  # sent now (dry run: would be)
    already_replayed: int = 0
    failed_again: int = 0
    in_doubt: int = 0
    unreplayable: int = 0
    truncated: int = 0
    masked: int = 0
    suppressed: int = 0
    failed: int = 0  # not acknowledged by the broker, and not in the log: may be retried
    settled: int = 0  # in-doubt sends of an earlier run found (or not) in the log now

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def skip_reason(dl: DeadLetter, state: Entry | None, partitions: int | None) -> str | None:
    """The report field that counts ``dl`` when it is not sent, or None to send it."""
    if dl.replay_of is not None:
        return "failed_again"
    if state is not None and state.state == SENT:
        return "already_replayed"
    if state is not None and state.state == SENDING:
        return "in_doubt"
    out_of_range = partitions is not None and dl.source_partition >= partitions
    if dl.source_topic != TOPIC_RAW or out_of_range:
        return "unreplayable"
    if dl.truncated:
        return "truncated"
    if MASKED_TEXT.search(dl.payload):
        return "masked"
    return None


def outgoing(dl: DeadLetter) -> Outgoing:
    """``dl`` as the message that replays it: its payload as first received (masked),
    keyed like a producer's, to its original partition, with the replay marker. Hashed
    PII is declared, unless the dead letter's fault was an identity value (the hash must
    then fail again, as the original value did)."""
    try:
        obj = orjson.loads(dl.payload)
    except orjson.JSONDecodeError:
        obj = None
    key = None
    if isinstance(obj, dict):
        for name in ("anonymous_id", "user_id"):
            if isinstance(obj.get(name), str) and obj[name]:
                key = obj[name].encode()
                break
    hashed = not (dl.error_detail or "").startswith("identities.")
    marker = ReplayMarker(dl.key, dl.received_at, hashed)
    return Outgoing(dl.key, dl.source_partition, dl.payload, key, marker, dl.source)


class Replay:
    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        ledger: Ledger,
        broker: Broker | None,
        topic: str,
        suppressions: Suppressions,
        chunk: int = CHUNK,
        settle_grace: float = SETTLE_GRACE_SECONDS,
    ) -> None:
        self.con = con
        self.ledger = ledger
        self.broker = broker
        self.topic = topic  # events.raw of this deployment (with its prefix)
        self.suppressions = suppressions
        self.chunk = chunk
        self.settle_grace = settle_grace
        self.run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        self.unsettled = 0  # sends of this run whose fate is still unknown

    def run(self, filters: Filters, dry_run: bool) -> ReplayReport:
        """Replay (or, dry, count) the dead letters ``filters`` match. A dry run reads the
        lake and the ledger only: it needs no broker and changes nothing."""
        report = ReplayReport(dry_run)
        if dry_run:
            self._select(filters, self.ledger.states(), None, report)
            return report
        assert self.broker is not None
        with self.ledger.locked():
            states = self.ledger.states()
            doubtful = [e for e in states.values() if e.state == SENDING]
            for entry in self._settle(doubtful):
                states[entry.replay_of] = entry
                report.settled += 1
            partitions = self.broker.partitions(self.topic)
            self._select(filters, states, partitions, report)
        return report

    def _select(
        self,
        filters: Filters,
        states: dict[str, Entry],
        partitions: int | None,
        report: ReplayReport,
    ) -> None:
        batch: list[DeadLetter] = []
        for dl in dead_letters(self.con, filters):
            report.matched += 1
            reason = skip_reason(dl, states.get(dl.key), partitions)
            if reason is None and self.suppressions.suppressed(identifiers(dl.payload)):
                reason = "suppressed"
            if reason is not None:
                setattr(report, reason, getattr(report, reason) + 1)
            elif partitions is None:
                report.replayed += 1  # dry run
            else:
                batch.append(dl)
                if len(batch) >= self.chunk:
                    self._send(batch, report)
                    batch = []
        if batch:
            self._send(batch, report)

    def _send(self, batch: list[DeadLetter], report: ReplayReport) -> None:
        assert self.broker is not None
        ends = self.broker.end_offsets(self.topic, {dl.source_partition for dl in batch})
        now = int(time.time() * 1000)
        sending = [
            Entry(
                dl.key,
                SENDING,
                self.run_id,
                self.topic,
                dl.source_partition,
                ends[dl.source_partition],
                None,
                dl.error_code,
                dl.event_name,
                dl.event_id,
                now,
            )
            for dl in batch
        ]
        self.ledger.write(sending)  # before anything leaves: a crash now is "in doubt"
        results = self.broker.send(self.topic, [outgoing(dl) for dl in batch])
        now = int(time.time() * 1000)
        sent, unsure = [], []
        for entry in sending:
            result = results.get(entry.replay_of)
            if isinstance(result, int):
                sent.append(replace(entry, state=SENT, sent_offset=result, at=now))
            else:
                unsure.append(entry)
        self.ledger.write(sent)
        report.replayed += len(sent)
        # A send the broker did not acknowledge may still be in the log: look before
        # calling it failed, so it is neither lost nor sent twice.
        decided: list[Entry] = []
        if unsure:
            time.sleep(self.settle_grace)  # a request given up on may still land
            decided = self._settle(unsure)
        for entry in decided:
            if entry.state == SENT:
                report.replayed += 1
            else:
                report.failed += 1
        report.in_doubt += len(unsure) - len(decided)
        self.unsettled += len(unsure) - len(decided)

    def _settle(self, entries: list[Entry]) -> list[Entry]:
        """New entries for in-doubt ``entries`` the log decides: ``sent`` when their
        replay is in it, ``not_sent`` when the whole range since was read without it.
        Written to the ledger; entries the log cannot decide are left in doubt."""
        assert self.broker is not None
        by_partition: dict[tuple[str, int], list[Entry]] = {}
        for e in entries:
            if e.sent_topic is not None and e.sent_partition is not None:
                by_partition.setdefault((e.sent_topic, e.sent_partition), []).append(e)
        now = int(time.time() * 1000)
        decided: list[Entry] = []
        for (topic, partition), group in sorted(by_partition.items()):
            start = min(e.scan_from if e.scan_from is not None else 0 for e in group)
            result = self.broker.scan(topic, partition, start, {e.replay_of for e in group})
            for e in group:
                offset = result.found.get(e.replay_of)
                if offset is not None:
                    decided.append(replace(e, state=SENT, sent_offset=offset, at=now))
                elif result.complete:
                    decided.append(replace(e, state=NOT_SENT, at=now))
        self.ledger.write(decided)
        return decided
