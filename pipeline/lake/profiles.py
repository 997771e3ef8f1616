"""Member profiles in the lake (DESIGN 14): table schemas, the views, and file installs.

Storage (docs/members.md):

* ``profile_changes/`` holds every profile *update* that was stored: one row per import
  row or ``identify`` call, with ``field_values`` (field -> canonical text, NULL = remove
  the field), its own time ``at`` and its ``arrival`` (when trackflow got it). The
  ``profile_changes`` view shows the updates that changed a value; ``profiles`` is the
  latest applied value of every field, per person.
* An update *applies* when its time is not older than every update of that field that
  arrived before it, so an older update arriving later never wins; among applied updates
  the value of the latest arrival holds. Both views are functions of the stored rows.
* ``member_rejects/`` one row per rule a rejected row broke (PII masked); ``member_imports/``
  one row per finished import run. Every profile table carries ``person_id`` and
  ``user_id`` so that a person's rows can be deleted (DESIGN 15).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from pipeline.contract.profiles import ProfileDictionary
from pipeline.lake.durable import fsync_dir, fsync_file
from pipeline.lake.journals import prepare as prepare_journals
from pipeline.names import (
    LAKE_MEMBER_IMPORTS,
    LAKE_MEMBER_QUALITY,
    LAKE_MEMBER_REJECTS,
    LAKE_PROFILE_CHANGES,
)

TS = pa.timestamp("ms", tz="UTC")
FIELD_VALUES = pa.map_(pa.string(), pa.string())

PROFILE_UPDATE_SCHEMA = pa.schema(
    [
        ("person_id", pa.string()),  # when stored; the views re-resolve it through One ID
        ("user_id", pa.string()),  # the member id (imports; identify calls with a userId)
        ("anonymous_id", pa.string()),  # identify calls without a userId
        ("field_values", FIELD_VALUES),  # profile field -> canonical text; NULL removes it
        ("at", TS),  # the update's own time: updated_at, or the identify call's event time
        ("arrival", TS),  # when trackflow received it: the order updates arrive in
        ("seq", pa.int64()),  # order within one arrival: the row number, or the position
        ("source", pa.string()),  # the mapping's source, or "identify"
        ("run_id", pa.string()),  # the import run (null for identify)
        ("event_id", pa.string()),  # the identify event (null for imports)
        ("recorded_at", TS),
        ("source_partition", pa.int32()),  # identify: the event's events.raw position
        ("source_offset", pa.int64()),
        ("source_index", pa.int32()),
    ]
)

MEMBER_REJECT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("row", pa.int64()),  # record number in the source (1 = first data row)
        ("field", pa.string()),  # the profile field (or column) the rule is about
        ("error_code", pa.string()),
        ("detail", pa.string()),  # what is wrong; never a phone or e-mail in clear
        ("rule", pa.string()),  # e.g. registered_at.max, level.allowed, born_before_registration
        ("original", pa.string()),  # the row's mapped columns as JSON, PII hashed and masked
        ("user_id", pa.string()),  # the member id when the row had one
        ("person_id", pa.string()),
        ("run_id", pa.string()),
        ("event_id", pa.string()),
        ("at", TS),  # when it was rejected
        ("processor_name", pa.string()),
        ("processor_version", pa.string()),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("source_index", pa.int32()),
    ]
)

MEMBER_IMPORT_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source", pa.string()),
        ("started", TS),
        ("finished", TS),
        ("rows_read", pa.int64()),  # rows newer than the watermark: accepted + rejected
        ("rows_accepted", pa.int64()),
        ("rows_rejected", pa.int64()),
        ("rows_unchanged", pa.int64()),  # accepted rows that changed no profile value
        ("rows_skipped", pa.int64()),  # rows at or below the previous watermark
        ("watermark", TS),  # highest incremental value seen so far (null: not incremental)
        ("fields_changed", pa.int64()),
        ("members_new", pa.int64()),
        ("links", pa.int64()),  # One ID links sent for the run
        ("links_pending", pa.bool_()),  # links kept in the outbox, sent by a later run
        ("mapping", pa.string()),
        ("dictionary_version", pa.int32()),
        ("processor_version", pa.string()),
        ("sla_seconds", pa.float64()),  # the source must import again within this
    ]
)

# Data quality of one run (pipeline/members/quality.py): one row per mapped field.
MEMBER_QUALITY_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("source", pa.string()),
        ("field", pa.string()),
        ("required", pa.bool_()),
        ("rows", pa.int64()),  # rows judged in the run
        ("nulls", pa.int64()),  # of them without a value for the field
        ("null_rate", pa.float64()),
        ("value_counts", pa.string()),  # enum fields: JSON {value: accepted rows}
        ("violations", pa.int64()),  # rules the field broke in rejected rows
    ]
)

_CAST = {
    "string": "{v}",
    "int": "TRY_CAST({v} AS BIGINT)",
    "number": "TRY_CAST({v} AS DOUBLE)",
    "bool": "TRY_CAST({v} AS BOOLEAN)",
    "date": "TRY_CAST({v} AS DATE)",
    "list": "TRY_CAST(TRY_CAST({v} AS JSON) AS VARCHAR[])",
}
DUCK_TYPES = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "number": "DOUBLE",
    "bool": "BOOLEAN",
    "date": "DATE",
    "list": "VARCHAR[]",
}

Source = Callable[[Path, list[tuple[str, str]], list[tuple[str, str]]], str]
DuckType = Callable[[pa.DataType], str]


def _columns(schema: pa.Schema, duck_type: DuckType) -> list[tuple[str, str]]:
    return [
        (f.name, "MAP(VARCHAR, VARCHAR)" if f.type == FIELD_VALUES else duck_type(f.type))
        for f in schema
    ]


def _resolved(lake: Path, source: Source, duck_type: DuckType) -> str:
    """The stored update rows with ``person_id`` re-resolved through One ID now."""
    src = source(
        lake / LAKE_PROFILE_CHANGES,
        _columns(PROFILE_UPDATE_SCHEMA, duck_type),
        [("recorded_date", "DATE")],
    )
    return (
        "SELECT CASE WHEN u.user_id IS NOT NULL "
        "THEN coalesce(iu.person_id, u.person_id) "
        "ELSE coalesce(ia.person_id, u.person_id) END AS person_id, "
        'u.user_id, u.anonymous_id, u.field_values, u."at", u.arrival, u.seq, u.source, '
        f"u.run_id, u.event_id FROM ({src}) u "
        "LEFT JOIN identities iu ON iu.identifier_type = 'user_id' "
        "AND iu.identifier = u.user_id "
        "LEFT JOIN identities ia ON ia.identifier_type = 'anonymous_id' "
        "AND ia.identifier = u.anonymous_id"
    )


def fields_sql(lake: Path, source: Source, duck_type: DuckType) -> str:
    """Every stored field update, one row per field, the person re-resolved through One ID
    now (as ``events_resolved``: by ``user_id``, else by ``anonymous_id``)."""
    return (
        f"SELECT person_id, user_id, anonymous_id, "
        "unnest(map_entries(field_values), recursive := true), "
        f'"at", arrival, seq, source, run_id, event_id FROM ({_resolved(lake, source, duck_type)})'
    )


def updates_sql() -> str:
    """``profile_fields`` with ``applied``: not older than an earlier arrival of its field."""
    return (
        "SELECT person_id, user_id, anonymous_id, key AS field, value, "
        '"at", arrival, seq, source, run_id, event_id, coalesce("at" >= max("at") OVER ('
        "PARTITION BY person_id, key ORDER BY arrival, seq "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), true) AS applied "
        "FROM profile_fields"
    )


def view_sql(
    lake: Path, dictionary: ProfileDictionary, source: Source, duck_type: DuckType
) -> dict[str, str]:
    """The member views: profile_updates, profile_changes, profiles, member_rejects,
    member_imports. Needs the ``identities`` view."""
    changes = (
        'SELECT person_id, user_id, field, old, new, "at", source, run_id, event_id, arrival '
        "FROM (SELECT person_id, user_id, field, lag(value) OVER (PARTITION BY person_id, "
        'field ORDER BY arrival, seq) AS old, value AS new, "at", source, run_id, event_id, '
        "arrival, seq FROM profile_updates WHERE applied) WHERE old IS DISTINCT FROM new"
    )
    pivot = ", ".join(
        _CAST[f.type].format(v=f"max(value) FILTER (WHERE field = '{name}')") + f' AS "{name}"'
        for name, f in dictionary.fields.items()
    )
    profiles = (
        "WITH cur AS (SELECT person_id, field, value FROM profile_updates "
        "QUALIFY row_number() OVER (PARTITION BY person_id, field "
        'ORDER BY "at" DESC, arrival DESC, seq DESC) = 1), '
        f"p AS (SELECT person_id, {pivot} FROM cur GROUP BY person_id), "
        "m AS (SELECT person_id, max(user_id) AS user_id FROM profile_updates GROUP BY person_id), "
        "i AS (SELECT person_id, min(identifier) AS user_id FROM identities "
        "WHERE identifier_type = 'user_id' GROUP BY person_id), "
        'c AS (SELECT person_id, max("at") AS updated_at, arg_max(source, "at") AS source '
        "FROM profile_changes GROUP BY person_id) "
        "SELECT p.person_id, coalesce(m.user_id, i.user_id) AS user_id, "
        + ", ".join(f'p."{n}"' for n in dictionary.fields)
        + ", c.updated_at, c.source FROM p JOIN m USING (person_id) "
        "LEFT JOIN i USING (person_id) LEFT JOIN c USING (person_id)"
    )
    imports_src = source(lake / LAKE_MEMBER_IMPORTS, _columns(MEMBER_IMPORT_SCHEMA, duck_type), [])
    imports = (
        "SELECT *, rows_read AS read, rows_accepted AS accepted, rows_rejected AS rejected, "
        "rows_unchanged AS unchanged, started AS started_at, finished AS finished_at "
        f"FROM ({imports_src}) QUALIFY row_number() OVER (PARTITION BY run_id) = 1"
    )
    rejects_src = source(
        lake / LAKE_MEMBER_REJECTS,
        _columns(MEMBER_REJECT_SCHEMA, duck_type),
        [("rejected_date", "DATE")],
    )
    # Rejects of an import count once its run finished (its member_imports row is written
    # last), so a run that crashed half-way and ran again shows its rejects once.
    rejects = (
        f"SELECT * EXCLUDE (rejected_date) FROM ({rejects_src}) r WHERE r.run_id IS NULL "
        "OR r.run_id IN (SELECT run_id FROM member_imports)"
    )
    quality_src = source(lake / LAKE_MEMBER_QUALITY, _columns(MEMBER_QUALITY_SCHEMA, duck_type), [])
    quality = f"SELECT * FROM ({quality_src}) WHERE run_id IN (SELECT run_id FROM member_imports)"
    return {
        "profile_fields": fields_sql(lake, source, duck_type),
        "profile_updates": updates_sql(),
        # Persons with any stored profile update: an import compares only their rows
        # with the profiles (the rest are new and stored as they are).
        "profile_persons": f"SELECT DISTINCT person_id FROM ({_resolved(lake, source, duck_type)})",
        "profile_changes": changes,
        "profiles": profiles,
        "member_imports": imports,
        "member_rejects": rejects,
        "member_quality": quality,
    }


def installer(lake_dir: Path) -> Callable[[list[tuple[Path, Path]]], None]:
    """``install`` for an import into ``lake_dir`` that first gives the tables workers write
    too (journaled rewrites of their files) the journal marker (``lake/journals.py``)."""

    def install_marked(staged: list[tuple[Path, Path]]) -> None:
        for table in (LAKE_PROFILE_CHANGES, LAKE_MEMBER_REJECTS):
            prepare_journals(lake_dir, table)
        install(staged)

    return install_marked


def install(staged: list[tuple[Path, Path]]) -> None:
    """Move fsynced temporary files to their final names, then sync their directories."""
    for tmp, _final in staged:
        fsync_file(tmp)
    for tmp, final in staged:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    for directory in {final.parent for _, final in staged}:
        fsync_dir(directory)
