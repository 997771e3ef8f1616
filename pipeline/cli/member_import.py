"""The wiring of ``trackflow members import``: settings, dictionary, mapping and source in;
a run of ``pipeline.members.run`` against the lake, its links to One ID's writer.

Every check that can fail is made before the first row is read, and each failure is one
line (``ImportFailed``, exit 2) with nothing written.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipeline.settings import Settings

LOCK_WAIT_SECONDS = 600


class ImportFailed(RuntimeError):
    """The import cannot run; the message is one line for stderr. ``code`` 2: the input
    is wrong; 1: the machine failed (out of memory, disk full)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One import at a time per data directory (their watermarks and decisions would
    race); a second one waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ImportFailed("another import holds the lock for too long") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _prepare(
    settings: Settings,
    source: str,
    mapping_path: Path,
    query: str | None,
    input_format: str,
    encoding: str,
) -> tuple[Any, ...]:
    from pipeline.contract.pii import PiiHasher
    from pipeline.contract.profiles import DictionaryError, load_profile_dictionary
    from pipeline.members.mapping import MappingError, load_mapping
    from pipeline.members.sources import SourceError, open_source
    from pipeline.settings import MissingPiiKey

    try:
        zone = ZoneInfo(settings.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImportFailed(f"TRACKFLOW_TIMEZONE {settings.timezone!r} is not a time zone") from None
    try:
        hasher = PiiHasher(settings.pii_key())
    except MissingPiiKey as exc:
        raise ImportFailed(str(exc)) from None
    try:
        dictionary = load_profile_dictionary(schemas_dir=settings.schemas_dir)
        mapping = load_mapping(mapping_path, dictionary, hasher)
    except (DictionaryError, MappingError) as exc:
        raise ImportFailed(str(exc)) from None
    try:
        src = open_source(source, query, input_format, encoding)
    except SourceError as exc:
        raise ImportFailed(str(exc)) from None
    try:
        if src.columns is not None:
            mapping.check_columns(src.columns, src.name)
    except MappingError as exc:
        src.close()
        raise ImportFailed(f"mapping {mapping_path}: {exc}") from None
    return zone, hasher, dictionary, mapping, src


def run(
    settings: Settings,
    source: str,
    mapping_path: Path,
    query: str | None,
    dry_run: bool,
    input_format: str,
    encoding: str,
) -> dict[str, Any]:
    zone, hasher, dictionary, mapping, src = _prepare(
        settings, source, mapping_path, query, input_format, encoding
    )
    import duckdb

    try:
        with _locked(settings.data_dir / "members" / "import.lock"):
            return _run(settings, zone, hasher, dictionary, mapping, src, dry_run)
    except (duckdb.Error, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImportFailed(f"the import failed, nothing was written: {first}", 1) from None
    finally:
        src.close()


def _connect(settings: Settings, scratch: Path) -> Any:
    from pipeline.contract.plan import load_plan
    from pipeline.contract.sql import path_literal
    from pipeline.lake import views

    con = views.connect(settings.data_dir, load_plan(settings.schemas_dir))
    con.execute(f"SET memory_limit = '{int(settings.members_memory_mb)}MB'")
    con.execute(f"SET temp_directory = {path_literal(scratch / 'spill')}")
    con.execute("SET preserve_insertion_order = false")
    # One thread: DuckDB's memory per operator grows with its threads, and the limit must
    # hold for a comparison with a million stored profiles (the Python side is the
    # bottleneck of an import anyway).
    con.execute("SET threads = 1")
    return con


def _run(
    settings: Settings,
    zone: ZoneInfo,
    hasher: Any,
    dictionary: Any,
    mapping: Any,
    src: Any,
    dry_run: bool,
) -> dict[str, Any]:
    from pipeline import __version__
    from pipeline.identity.rules import load_identity_rules, node
    from pipeline.lake.profiles import MEMBER_IMPORT_SCHEMA, MEMBER_QUALITY_SCHEMA, installer
    from pipeline.members import apply
    from pipeline.members import run as runs
    from pipeline.members.importer import Judge, Staging
    from pipeline.members.outbox import Outbox
    from pipeline.members.privacy import Withhold, suppressed_persons
    from pipeline.members.sources import SourceError
    from pipeline.members.times import iso
    from pipeline.runtime import member_links, wire

    started_ms = int(time.time() * 1000)
    run_id = runs.new_run_id(started_ms)
    scratch = settings.data_dir / "members" / "tmp" / run_id
    scratch.mkdir(parents=True, exist_ok=True)
    rules = load_identity_rules(settings.identity_rules)
    try:
        con = _connect(settings, scratch)
        watermark = runs.previous_watermark(con, mapping.source) if mapping.incremental else None
        today = datetime.fromtimestamp(started_ms / 1000, zone).date()
        judge = Judge(mapping, dictionary, hasher, zone, today, started_ms, watermark)
        staging = Staging(scratch, lambda u: rules.person_id(node("user_id", u)), hasher.mask_text)
        report = runs.Report(run_id, mapping.source, dry_run, iso(started_ms))
        report.previous_watermark = iso(watermark) if watermark is not None else None
        try:
            runs.read_rows(src, judge, staging, report)
        except SourceError as exc:
            raise ImportFailed(str(exc)) from None
        withhold = Withhold(settings.lake_dir, suppressed_persons(con, _requests(settings)))
        report.rows_withheld = withhold.staged(con, staging.updates_path, staging.rejects_path)
        marks = [x for x in (watermark, judge.seen_max) if x is not None]
        report.watermark = iso(max(marks)) if marks else None
        outcome = apply.decide(
            con, staging.updates_path, report.rows_accepted, mapping.incremental is not None
        )
        report.take(outcome)
        report.rejects_by_rule = _rejects_by_rule(con, staging.rejects_path)
        if dry_run:
            report.finished = iso(int(time.time() * 1000))
            return report.as_dict()
        outbox = Outbox(settings.data_dir / "members" / "outbox")
        paths = runs.Paths(settings.lake_dir, scratch, outbox)
        links = runs.stage_links(con, dictionary.identity_fields(), wire.encode_links)
        extra = {
            "dictionary_version": dictionary.version,
            "processor_version": __version__,
            "sla_seconds": 3600 * (mapping.sla_hours or settings.members_sla_hours),
        }
        fields = [f.field for f in mapping.fields]
        quality = judge.stats.rows_of(run_id, mapping.source, fields, mapping.required)
        runs.commit(
            con,
            report,
            mapping,
            paths,
            started_ms,
            extra,
            installer(settings.lake_dir),
            links,
            lambda: member_links.send_outbox(settings, outbox),
            (MEMBER_IMPORT_SCHEMA, MEMBER_QUALITY_SCHEMA),
            quality,
            withhold,
        )
        return report.as_dict()
    finally:
        runs.cleanup(scratch)


def _requests(settings: Settings) -> list[Any]:
    """Every privacy request, so suppressed persons' member data is not stored. Without a
    broker (within ``TRACKFLOW_MEMBERS_LINK_TIMEOUT``) only the lake's purge list (the
    deleted persons) is applied, and stderr says so."""
    import typer

    from pipeline.names import TOPIC_LINKS, TOPIC_PRIVACY
    from pipeline.privacy.kafka import BrokerUnavailable, RequestLog
    from pipeline.runtime.kafka_security import KafkaCluster, KafkaConfigError

    topic = settings.topic(TOPIC_PRIVACY)
    try:
        log = RequestLog(
            KafkaCluster.from_settings(settings),
            topic,
            settings.topic(TOPIC_LINKS),
            settings.members_link_timeout,
        )
        return log.read_all() if log.has_topic(topic) else []
    except (BrokerUnavailable, KafkaConfigError) as exc:
        typer.echo(
            "trackflow members import: privacy requests not read, only deleted persons "
            f"are withheld ({str(exc).splitlines()[0] if str(exc) else exc!r})",
            err=True,
        )
        return []


def _rejects_by_rule(con: Any, path: Path) -> dict[str, int]:
    from pipeline.contract.sql import path_literal

    rows = con.execute(
        f"SELECT rule, count(*) FROM read_parquet({path_literal(path)}) GROUP BY rule ORDER BY rule"
    ).fetchall()
    return {str(rule): int(n) for rule, n in rows}


def quality(settings: Settings, source: str | None) -> dict[str, Any]:
    from pipeline.contract.plan import load_plan
    from pipeline.contract.profiles import load_profile_dictionary
    from pipeline.lake import views
    from pipeline.members.quality import quality_report

    con = views.connect(settings.data_dir, load_plan(settings.schemas_dir))
    dictionary = load_profile_dictionary(schemas_dir=settings.schemas_dir)
    return quality_report(con, dictionary, source)


def print_quality(result: dict[str, Any]) -> None:
    from pipeline.members.quality import rows_for_table
    from pipeline.tools.console import print_table

    for title, columns, rows in rows_for_table(result):
        print_table(columns, rows, title=title)
