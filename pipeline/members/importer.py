"""Reading one import: each source record becomes an accepted update or reject rows.

``Judge`` applies the mapping and the dictionary to one record (pure, no I/O);
``Staging`` appends the results to two Parquet files in a scratch directory, a chunk at a
time, so memory stays bounded whatever the size of the source. Nothing reaches the lake
here: ``pipeline.members.apply`` compares the staged updates with the profiles and the CLI
installs the result only when the whole source was read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.contract.errors import ErrorCode
from pipeline.contract.pii import PiiHasher
from pipeline.contract.profiles import ProfileDictionary
from pipeline.members.mapping import Mapping
from pipeline.members.quality import FieldStats, enum_fields
from pipeline.members.rules import Memo, Violation, check
from pipeline.members.sources import BadRecord, Record
from pipeline.members.times import BadTime, parse_time
from pipeline.members.transforms import FieldError, apply_steps

MALFORMED_ROW = "malformed_row"
MAX_USER_ID = 128
CHUNK_ROWS = 20_000
# An incremental time later than the run's start plus this is refused (the row is
# rejected, rule ``incremental.future``): one clock-skewed or mistyped row must not move
# the source's watermark years ahead and make every later import skip its real rows.
FUTURE_TOLERANCE_MS = 24 * 3600 * 1000

STAGED_SCHEMA = pa.schema(
    [
        ("person_id", pa.string()),
        ("user_id", pa.string()),
        ("field_values", pa.map_(pa.string(), pa.string())),
        ("at", pa.int64()),  # epoch ms
        ("seq", pa.int64()),  # the row number
    ]
)


def canonical(value: Any) -> str | None:
    """The stored text of a typed value: equal values give equal text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return orjson.dumps(value).decode()
    if isinstance(value, float):
        return repr(int(value)) if value.is_integer() else repr(value)
    return str(value)


@dataclass
class Accepted:
    row: int
    user_id: str
    at: int
    values: dict[str, str | None]


@dataclass
class Rejected:
    row: int
    user_id: str | None
    violations: list[Violation]
    original: str


@dataclass
class Judge:
    """One record -> ``Accepted``, ``Rejected`` or None (at or below the watermark)."""

    mapping: Mapping
    dictionary: ProfileDictionary
    hasher: PiiHasher
    zone: ZoneInfo
    today: date
    default_at: int  # the run's start: the time of rows without an incremental column
    watermark: int | None = None  # previous run's; rows at or below it are skipped
    seen_max: int | None = None  # highest valid incremental time read in this run
    stats: FieldStats = field(default_factory=FieldStats)
    _pii_columns: dict[str, str] = field(default_factory=dict)
    _enums: frozenset[str] = frozenset()
    _plan: list[tuple[str, str, list[Any], dict[Any, Any] | None]] = field(default_factory=list)
    _memo: Memo = field(default_factory=Memo)

    def __post_init__(self) -> None:
        # Transform results of non-PII columns are cached by raw value (levels, regions
        # and dates repeat); phone and e-mail are never kept in clear, not even in memory.
        self._plan = [
            (f.field, f.column, list(f.steps), None if self.dictionary.fields[f.field].pii else {})
            for f in self.mapping.fields
        ]
        self._enums = enum_fields(self.dictionary) & {f.field for f in self.mapping.fields}
        for f in self.mapping.fields:
            kind = self.dictionary.fields[f.field].pii
            if kind:
                self._pii_columns[f.column] = kind

    def judge(self, row: int, record: Record) -> Accepted | Rejected | None:
        if isinstance(record, BadRecord):
            bad = Violation("", MALFORMED_ROW, "record", record.detail)
            return Rejected(row, None, [bad], self.masked(record.raw))
        at, problem = self._time(record)
        if at is not None and at > self.default_at + FUTURE_TOLERANCE_MS:
            detail = (
                f"the incremental column {self.mapping.incremental} is more than a day in "
                "the future"
            )
            problem = Violation(
                self.mapping.incremental or "",
                ErrorCode.INVALID_TIMESTAMP,
                "incremental.future",
                detail,
            )
            at = None
        if (
            problem is None
            and at is not None
            and self.watermark is not None
            and at <= self.watermark
        ):
            return None  # read by an earlier run
        if at is not None:
            # DESIGN 14: the highest value seen is the watermark. A rejected row with a
            # valid time counts (it is not read again; a fix at the source bumps its
            # time), a time refused as invalid or in the future never does.
            self.seen_max = at if self.seen_max is None else max(self.seen_max, at)
        violations = [problem] if problem else []
        user_id = self._key(record, violations)
        values: dict[str, Any] = {}
        failed: set[str] = set()
        absent: list[str] = []
        required = self.mapping.required
        for name, column, steps, cache in self._plan:
            if column not in record and name not in required:
                # A key the record does not have (JSON lines) leaves the field untouched;
                # an explicit null (or an empty CSV cell) removes it. A required field
                # must have a value, so its absence goes through the steps (a default
                # may supply one) and is rejected otherwise.
                absent.append(name)
                continue
            try:
                values[name] = _transform(steps, record.get(column), cache)
            except FieldError as exc:
                violations.append(Violation(name, exc.code, exc.rule, exc.detail))
                failed.add(name)
        checked = {k: v for k, v in values.items() if k not in failed} if failed else values
        typed, broken = check(self.dictionary, checked, self.today, required, self._memo)
        violations += broken
        self._count(values, violations, absent)
        if violations or user_id is None:
            return Rejected(row, user_id, violations, self.masked(record))
        for name in self._enums:
            if name in typed:
                self.stats.values.setdefault(name, Counter())[str(typed[name])] += 1
        stored = {name: canonical(value) for name, value in typed.items()}
        return Accepted(row, user_id, at if at is not None else self.default_at, stored)

    def _count(
        self, values: dict[str, Any], violations: list[Violation], absent: list[str]
    ) -> None:
        stats = self.stats
        stats.rows += 1
        for name, value in values.items():
            if value is None:
                stats.nulls[name] += 1
        for name in absent:  # a key the record lacks: a row without a value too
            stats.nulls[name] += 1
        for v in violations:
            stats.violations[v.field] += 1

    def _time(self, record: dict[str, Any]) -> tuple[int | None, Violation | None]:
        column = self.mapping.incremental
        if column is None:
            return None, None
        raw = record.get(column)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            detail = f"the incremental column {column} has no value"
            return None, Violation(column, ErrorCode.MISSING_REQUIRED_FIELD, "incremental", detail)
        try:
            return parse_time(raw, self.zone, self.mapping.time_formats()), None
        except BadTime as exc:
            detail = f"the incremental column {column}: {exc}"
            return None, Violation(column, ErrorCode.INVALID_TIMESTAMP, "incremental", detail)

    def _key(self, record: dict[str, Any], violations: list[Violation]) -> str | None:
        raw = record.get(self.mapping.key)
        text = "" if raw is None else str(raw).strip()
        if not text:
            violations.append(
                Violation(
                    "user_id",
                    ErrorCode.MISSING_REQUIRED_FIELD,
                    "key.required",
                    f"the member id column {self.mapping.key} has no value",
                )
            )
            return None
        if len(text) > MAX_USER_ID:
            violations.append(
                Violation(
                    "user_id",
                    ErrorCode.INVALID_VALUE,
                    "key.max_length",
                    f"the member id is over {MAX_USER_ID} characters",
                )
            )
            return None
        return text

    def masked(self, record: dict[str, Any]) -> str:
        """The row's mapped columns as JSON: PII columns hashed, phone numbers and e-mail
        addresses anywhere else masked (DESIGN 5). Nothing of them stays in clear."""
        shown: dict[str, Any] = {}
        wanted = self.mapping.columns if not ("line" in record and len(record) == 1) else ["line"]
        for column in wanted:
            if column not in record:
                continue
            value = record[column]
            if value is None:
                shown[column] = None
            elif column in self._pii_columns:
                shown[column] = self.hasher.hash_loose(self._pii_columns[column], str(value))
            else:
                text = value if isinstance(value, str) else str(value)
                shown[column] = self.hasher.mask_text(text)
        return orjson.dumps(shown).decode()


REJECT_STAGED_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("field", pa.string()),
        ("error_code", pa.string()),
        ("detail", pa.string()),
        ("rule", pa.string()),
        ("original", pa.string()),
        ("user_id", pa.string()),
        ("person_id", pa.string()),
    ]
)


def _transform(steps: list[Any], raw: Any, cache: dict[Any, Any] | None) -> Any:
    """``apply_steps``, remembered by raw value when ``cache`` is given (bounded)."""
    if cache is None or not isinstance(raw, str):
        return apply_steps(steps, raw)
    hit = cache.get(raw)
    if hit is None:
        try:
            hit = (apply_steps(steps, raw), None)
        except FieldError as exc:
            hit = (None, exc)
        if len(cache) >= 50_000:
            cache.clear()
        cache[raw] = hit
    if hit[1] is not None:
        raise hit[1]
    value = hit[0]
    return list(value) if isinstance(value, list) else value


class Staging:
    """Accepted updates and rejects of one run, appended to Parquet a chunk at a time."""

    def __init__(self, directory: Path, person_of: Any, mask: Any = str) -> None:
        self.updates_path = directory / "updates.parquet"
        self.rejects_path = directory / "rejects.parquet"
        self.person_of = person_of
        self.mask = mask  # masks phone numbers and e-mail addresses in details
        self._updates: list[Accepted] = []
        self._rejects: list[dict[str, Any]] = []
        self._writers: dict[Path, pq.ParquetWriter] = {}
        self.accepted = 0
        self.rejected = 0

    def add(self, item: Accepted | Rejected) -> None:
        if isinstance(item, Rejected):
            self.rejected += 1
            person = self.person_of(item.user_id) if item.user_id else None
            for v in item.violations:
                self._rejects.append(
                    {
                        "row": item.row,
                        "field": v.field,
                        "error_code": str(v.code),
                        "detail": self.mask(v.detail),
                        "rule": v.rule,
                        "original": item.original,
                        "user_id": item.user_id,
                        "person_id": person,
                    }
                )
            if len(self._rejects) >= CHUNK_ROWS:
                self._flush_rejects()
            return
        self.accepted += 1
        self._updates.append(item)
        if len(self._updates) >= CHUNK_ROWS:
            self._flush_updates()

    def _write(self, path: Path, table: pa.Table) -> None:
        writer = self._writers.get(path)
        if writer is None:
            writer = self._writers[path] = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)

    def _flush_rejects(self) -> None:
        if self._rejects:
            table = pa.Table.from_pylist(self._rejects, schema=REJECT_STAGED_SCHEMA)
            self._rejects = []
            self._write(self.rejects_path, table)

    def _flush_updates(self) -> None:
        if not self._updates:
            return
        batch = self._updates
        self._updates = []
        table = pa.table(
            {
                "person_id": [self.person_of(a.user_id) for a in batch],
                "user_id": [a.user_id for a in batch],
                "field_values": pa.array(
                    [list(a.values.items()) for a in batch], STAGED_SCHEMA.field(2).type
                ),
                "at": [a.at for a in batch],
                "seq": [a.row for a in batch],
            },
            schema=STAGED_SCHEMA,
        )
        self._write(self.updates_path, table)

    def close(self) -> None:
        self._flush_updates()
        self._flush_rejects()
        for writer in self._writers.values():
            writer.close()
        for path, schema in (
            (self.updates_path, STAGED_SCHEMA),
            (self.rejects_path, REJECT_STAGED_SCHEMA),
        ):
            if path not in self._writers:
                pq.write_table(schema.empty_table(), path)
