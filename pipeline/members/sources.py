"""Where member rows come from: a CSV or JSON-lines file or stdin, or a database query
(SQLite, PostgreSQL). Every reader streams: rows are read as they are used, a database
query through a cursor in chunks, never the whole source at once.

``open_source`` checks what can be checked before any row is used (the file exists and is
text, the CSV header, the query runs) and raises ``SourceError`` with one line otherwise.
A record that cannot be read as a row (a CSV line with the wrong number of cells, a JSON
line that is not an object) is yielded as a ``BadRecord``: its row is rejected, the others
go on.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import orjson

SNIFF_BYTES = 64 * 1024
FETCH_ROWS = 5000
csv.field_size_limit(1 << 20)


class SourceError(ValueError):
    """The source cannot be read as member rows: one line saying why."""


@dataclass(frozen=True)
class BadRecord:
    detail: str
    raw: dict[str, Any]


Record = dict[str, Any] | BadRecord


class Source(Protocol):
    name: str
    columns: list[str] | None  # None: known per row (JSON lines)

    def records(self) -> Iterator[tuple[int, Record]]: ...

    def close(self) -> None: ...


def open_source(
    spec: str, query: str | None, fmt: str = "auto", encoding: str = "utf-8-sig"
) -> Source:
    """``spec`` is a path, ``-`` (stdin), ``sqlite:///path`` or ``postgresql://...``."""
    if spec.startswith("sqlite:"):
        return SqliteSource(spec, _need_query(spec, query))
    if spec.startswith(("postgresql://", "postgres://")):
        return PostgresSource(spec, _need_query(spec, query))
    if query is not None:
        raise SourceError("--query is for database sources (sqlite:///path, postgresql://...)")
    if spec == "-":
        return _file_source("stdin", sys.stdin.buffer, fmt, encoding)
    path = Path(spec)
    if not path.is_file():
        raise SourceError(f"{spec}: no such file")
    if fmt == "auto":
        suffix = path.suffix.lower()
        fmt = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}.get(
            suffix, "auto"
        )
    return _file_source(spec, path.open("rb"), fmt, encoding)


def _need_query(spec: str, query: str | None) -> str:
    if not query:
        raise SourceError(f"{spec.split(':', 1)[0]} source needs --query SQL")
    return query


def _file_source(name: str, raw: Any, fmt: str, encoding: str) -> Source:
    buffered: Any = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
    head = buffered.peek(SNIFF_BYTES)[:SNIFF_BYTES]
    if not head.strip():
        raise SourceError(f"{name}: empty input, no header and no rows")
    if b"\x00" in head:
        raise SourceError(f"{name}: not a CSV or JSON-lines file (binary data)")
    try:
        head.decode(encoding.replace("-sig", "") if encoding == "utf-8-sig" else encoding)
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the sniff's end
            raise SourceError(
                f"{name}: not {encoding} text (byte {exc.start}); pass --encoding, e.g. gbk"
            ) from None
    except LookupError:
        raise SourceError(f"unknown --encoding {encoding!r}") from None
    if fmt == "auto":
        fmt = "jsonl" if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "csv"
    text = io.TextIOWrapper(buffered, encoding=encoding, newline="")
    if fmt == "jsonl":
        return JsonLinesSource(name, text)
    if fmt == "csv":
        return CsvSource(name, text)
    raise SourceError(f"--format must be auto, csv or jsonl, not {fmt!r}")


def _decode_error(name: str, exc: UnicodeDecodeError) -> SourceError:
    return SourceError(f"{name}: not {exc.encoding} text; pass --encoding, e.g. gbk")


class CsvSource:
    def __init__(self, name: str, text: io.TextIOWrapper) -> None:
        self.name = name
        self._text = text
        self._reader = csv.reader(text)
        try:
            header = next(self._reader, None)
        except UnicodeDecodeError as exc:
            raise _decode_error(name, exc) from None
        except csv.Error as exc:
            raise SourceError(f"{name}: not a CSV file: {exc}") from None
        if not header or not any(h.strip() for h in header):
            raise SourceError(f"{name}: not a CSV file: no header row")
        self.columns: list[str] | None = [h.strip().lstrip("\ufeff") for h in header]
        dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
        if dupes:
            raise SourceError(f"{name}: not a usable CSV header: column {dupes[0]!r} twice")

    def records(self) -> Iterator[tuple[int, Record]]:
        assert self.columns is not None
        columns, width = self.columns, len(self.columns)
        number = 0
        try:
            for cells in self._reader:
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue  # a blank line
                number += 1
                if len(cells) != width:
                    raw = dict(zip(columns, cells, strict=False))
                    detail = f"the row has {len(cells)} cells, the header {width}"
                    yield number, BadRecord(detail, raw)
                    continue
                yield number, dict(zip(columns, cells, strict=True))
        except UnicodeDecodeError as exc:
            raise _decode_error(self.name, exc) from None
        except csv.Error as exc:
            raise SourceError(
                f"{self.name}: not a CSV file: line {self._reader.line_num}: {exc}"
            ) from None

    def close(self) -> None:
        self._text.close()


class JsonLinesSource:
    columns: list[str] | None = None

    def __init__(self, name: str, text: io.TextIOWrapper) -> None:
        self.name = name
        self._text = text

    def records(self) -> Iterator[tuple[int, Record]]:
        try:
            for number, line in enumerate(self._text, start=1):
                if not line.strip():
                    continue
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError:
                    yield number, BadRecord("the line is not JSON", {"line": line[:200]})
                    continue
                if not isinstance(value, dict):
                    yield number, BadRecord("the line is not a JSON object", {"line": line[:200]})
                    continue
                yield number, value
        except UnicodeDecodeError as exc:
            raise _decode_error(self.name, exc) from None

    def close(self) -> None:
        self._text.close()


def _plain(value: Any) -> Any:
    """Database values as the transforms read them (dates and times stay objects)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return value


class _CursorSource:
    name: str
    columns: list[str] | None
    _cursor: Any
    _conn: Any

    def records(self) -> Iterator[tuple[int, Record]]:
        assert self.columns is not None
        columns = self.columns
        number = 0
        while True:
            try:
                rows = self._cursor.fetchmany(FETCH_ROWS)
            except Exception as exc:  # the driver's own error types; the query failed
                raise SourceError(f"{self.name}: reading the query failed: {exc}") from None
            if not rows:
                return
            for row in rows:
                number += 1
                yield number, {c: _plain(v) for c, v in zip(columns, row, strict=True)}

    def close(self) -> None:
        try:
            self._cursor.close()
        finally:
            self._conn.close()


class SqliteSource(_CursorSource):
    def __init__(self, spec: str, query: str) -> None:
        import sqlite3

        # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy spells them; a
        # sqlite:///tmp/x.db meant as absolute is found too.
        path = Path(spec.removeprefix("sqlite:").removeprefix("///").removeprefix("//"))
        if not path.is_file() and Path("/", path).is_file():
            path = Path("/", path)
        self.name = f"sqlite:{path}"
        if not path.is_file():
            raise SourceError(f"{spec}: no such database file")
        try:
            self._conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
            self._cursor = self._conn.execute(query)
        except sqlite3.Error as exc:
            raise SourceError(f"{self.name}: the query failed: {exc}") from None
        if self._cursor.description is None:
            raise SourceError(f"{self.name}: the query returns no rows (not a SELECT)")
        self.columns = [d[0] for d in self._cursor.description]


class PostgresSource(_CursorSource):
    def __init__(self, spec: str, query: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise SourceError(
                "PostgreSQL sources need psycopg (pip install 'psycopg[binary]')"
            ) from None
        self.name = "postgresql:" + spec.rsplit("@", 1)[-1].split("?", 1)[0]  # no password
        try:
            self._conn = psycopg.connect(spec, connect_timeout=10)
            # A named (server-side) cursor streams: rows arrive FETCH_ROWS at a time.
            self._cursor = self._conn.cursor(name="trackflow_members")
            self._cursor.itersize = FETCH_ROWS
            self._cursor.execute(query)
        except psycopg.Error as exc:
            raise SourceError(f"{self.name}: {str(exc).strip().splitlines()[0]}") from None
        if self._cursor.description is None:
            raise SourceError(f"{self.name}: the query returns no rows (not a SELECT)")
        self.columns = [d.name for d in self._cursor.description]
