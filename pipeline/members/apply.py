"""Which staged updates change the profiles: the ordering rule, decided in DuckDB.

For every (person, field) the staged updates follow the value the lake holds (the
``profile_updates`` view), in row order. An update *applies* when its time is not older
than every update before it (so an older update arriving later never wins); it *changes*
the field when its value differs from the value held before it (a null removes the field;
null and absent are the same). An update is stored when it applies and either changes
the value or moves the field's time forward (rows with their own time only); re-importing
the same file therefore stores nothing. The views apply the same rule to the stored rows,
so what the import decides is what they show.

DuckDB does the work out of core (``memory_limit`` and a spill directory), so a million
rows do not need a million Python objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from pipeline.contract.sql import path_literal

DECISIONS = "member_decisions"
COMPLEX = "member_complex"  # persons whose rows go through the rule field by field
SIMPLE = "member_simple"  # staged rows of persons new to the profiles, seen once
HELD = "member_held"  # what the complex persons' fields hold now
BUCKET = "member_bucket"  # the complex persons decided in one go
BUCKET_PERSONS = 100_000
BUCKET_FIELDS = 250_000  # stored field values aggregated at once (DuckDB memory)


@dataclass
class Outcome:
    rows_unchanged: int = 0
    fields_changed: int = 0
    members_new: int = 0
    by_field: dict[str, int] = field(default_factory=dict)  # field -> values changed
    sample: list[dict[str, Any]] = field(default_factory=list)  # a few changes, for a report


def decide(
    con: duckdb.DuckDBPyConnection, staged: Path, accepted: int, own_time: bool = True
) -> Outcome:
    """Decide every staged update and count what would change.

    Rows of a person seen once in the run and with no stored profile update (new members:
    the whole of a first import) change every field they set; they stay as they are in the
    view ``member_simple``. The rows of every other person go through the rule, field by
    field, into the temporary table ``member_decisions`` (one row per update that applies).

    ``own_time``: the rows carry their own update time (an incremental column). Without
    one, a row's time is the run's start, and an update that only confirms the value held
    is not stored: re-importing the same file then stores nothing at all."""
    src = f"read_parquet({path_literal(staged)})"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {COMPLEX} AS
        SELECT person_id FROM {src} GROUP BY person_id HAVING count(*) > 1
        UNION
        SELECT DISTINCT s.person_id FROM {src} s SEMI JOIN profile_persons p
            ON s.person_id = p.person_id"""
    )
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {SIMPLE} AS "
        f"SELECT * FROM {src} ANTI JOIN {COMPLEX} USING (person_id)"
    )
    _decide_in_buckets(con, src, own_time)
    out = Outcome()
    changed_rows, members_new = con.execute(
        f"SELECT count(DISTINCT seq) FILTER (WHERE changed), "
        f"count(DISTINCT person_id) FILTER (WHERE new_member) FROM {DECISIONS}"
    ).fetchone() or (0, 0)
    simple_rows, simple_changed = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE len(list_filter(map_values(field_values), "
        f"lambda x: x IS NOT NULL)) > 0) FROM {SIMPLE}"
    ).fetchone() or (0, 0)
    out.rows_unchanged = accepted - int(changed_rows) - int(simple_changed)
    out.members_new = int(members_new) + int(simple_rows)
    for name, count in con.execute(
        f"SELECT field, sum(n) FROM (SELECT field, count(*) AS n FROM {DECISIONS} "
        f"WHERE changed GROUP BY field UNION ALL SELECT key, count(value) FROM "
        f"(SELECT unnest(map_entries(field_values), recursive := true) FROM {SIMPLE}) "
        "GROUP BY key) GROUP BY field HAVING sum(n) > 0 ORDER BY field"
    ).fetchall():
        out.by_field[name] = int(count)
    out.fields_changed = sum(out.by_field.values())
    cur = con.execute(
        f'SELECT user_id, field, before AS old, value AS new, "at", seq FROM {DECISIONS} '
        "WHERE changed UNION ALL "
        f'SELECT user_id, key, NULL, value, "at", seq FROM (SELECT user_id, seq, "at", '
        f"unnest(map_entries(field_values), recursive := true) FROM {SIMPLE}) "
        "WHERE value IS NOT NULL ORDER BY seq, field LIMIT 20"
    )
    out.sample = [
        {"user_id": u, "field": f, "old": o, "new": n, "at": t}
        for u, f, o, n, t, _ in cur.fetchall()
    ]
    return out


def _decide_in_buckets(con: duckdb.DuckDBPyConnection, src: str, own_time: bool) -> None:
    """``_decide_complex`` a bucket of persons at a time (by a hash of the person id), so
    the values held by a million existing members never need to fit in memory at once:
    at most about ``BUCKET_PERSONS`` persons of the run and ``BUCKET_FIELDS`` stored
    field values (every bucket reads the stored updates again: slower, but bounded)."""
    row = con.execute(f"SELECT count(*) FROM {COMPLEX}").fetchone()
    persons = int(row[0]) if row else 0
    stored = 0
    if persons:
        row = con.execute("SELECT count(*) FROM profile_fields").fetchone()
        stored = int(row[0]) if row else 0
    buckets = max(1, -(-persons // BUCKET_PERSONS), -(-stored // BUCKET_FIELDS))
    for bucket in range(buckets):
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {BUCKET} AS SELECT person_id FROM {COMPLEX} "
            f"WHERE hash(person_id) % {buckets} = {bucket}"
        )
        part = f"hash(person_id) % {buckets} = {bucket}"
        _decide_complex(con, src, own_time, part, first=bucket == 0)


def _decide_complex(
    con: duckdb.DuckDBPyConnection, src: str, own_time: bool, part: str, first: bool
) -> None:
    """``member_decisions`` for the persons of the current bucket of ``member_complex``.

    The value each of their fields holds comes from one aggregation (out of core in DuckDB,
    unlike a window over every stored update). A person with one row in the run is then a
    join with it; only persons with several rows in the run take them in row order."""
    own = "true" if own_time else "false"
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {HELD} AS
        SELECT f.person_id, f.key AS field,
               arg_max(f.value, {{'a': f."at", 'b': f.arrival, 'c': f.seq}}) AS value,
               epoch_ms(max(f."at")) AS "at"
        FROM profile_fields f WHERE {part}
        GROUP BY f.person_id, f.key"""
    )
    into = f"CREATE OR REPLACE TEMP TABLE {DECISIONS} AS" if first else f"INSERT INTO {DECISIONS}"
    con.execute(
        f"""{into}
        WITH c AS (SELECT * FROM {src} SEMI JOIN {BUCKET} USING (person_id)),
        many AS (SELECT person_id FROM c GROUP BY person_id HAVING count(*) > 1),
        s AS (SELECT person_id, user_id, seq, "at",
                     unnest(map_entries(field_values), recursive := true) FROM c),
        one AS (SELECT s.person_id, s.user_id, s.seq, s.key AS field, s.value,
                       h.value AS before, s."at",
                       s.value IS DISTINCT FROM h.value AS changed,
                       s.value IS DISTINCT FROM h.value
                           OR ({own} AND (h."at" IS NULL OR s."at" > h."at")) AS stored,
                       false AS new_member
                FROM s ANTI JOIN many USING (person_id)
                LEFT JOIN {HELD} h ON h.person_id = s.person_id AND h.field = s.key
                WHERE h."at" IS NULL OR s."at" >= h."at"),
        held AS (SELECT * FROM {HELD} SEMI JOIN many USING (person_id)),
        both_ AS (SELECT person_id, NULL::VARCHAR AS user_id, -1::BIGINT AS seq, field, value,
                         "at", true AS held FROM held
                  UNION ALL
                  SELECT person_id, user_id, seq, key AS field, value, "at", false
                  FROM s SEMI JOIN many USING (person_id)),
        w AS (SELECT *, max("at") OVER (PARTITION BY person_id, field ORDER BY seq
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_max
              FROM both_),
        a AS (SELECT *, lag(value) OVER (PARTITION BY person_id, field ORDER BY seq) AS before
              FROM w WHERE prev_max IS NULL OR "at" >= prev_max)
        SELECT * FROM one
        UNION ALL
        SELECT person_id, user_id, seq, field, value, before, "at",
               value IS DISTINCT FROM before AS changed,
               value IS DISTINCT FROM before
                   OR ({own} AND (prev_max IS NULL OR "at" > prev_max)) AS stored,
               person_id NOT IN (SELECT person_id FROM held) AS new_member
        FROM a WHERE NOT held"""
    )


def write_updates(
    con: duckdb.DuckDBPyConnection,
    staged: Path,
    target: Path,
    arrival_ms: int,
    source: str,
    run_id: str,
) -> int:
    """Write the stored updates (one row per source row) to ``target``; returns the rows.

    New members' rows and rows all of whose fields are stored are copied from the staging
    file as they are; only rows stored in part are put together again from their field
    decisions (regrouping every row costs more than the rest of the comparison)."""
    src = f"read_parquet({path_literal(staged)})"
    tail = (
        f"epoch_ms({int(arrival_ms)})::TIMESTAMPTZ AS arrival, seq, $source AS source, "
        "$run AS run_id, NULL::VARCHAR AS event_id, "
        f"epoch_ms({int(arrival_ms)})::TIMESTAMPTZ AS recorded_at, "
        "NULL::INTEGER AS source_partition, NULL::BIGINT AS source_offset, "
        "NULL::INTEGER AS source_index"
    )
    head = 'person_id, user_id, NULL::VARCHAR AS anonymous_id, field_values, epoch_ms("at")'
    con.execute(
        f"""COPY (
            WITH n AS (SELECT seq, count(*) AS stored FROM {DECISIONS} WHERE stored
                       GROUP BY seq),
            whole AS (SELECT s.* FROM {src} s JOIN n USING (seq)
                      WHERE n.stored = cardinality(s.field_values)),
            part AS (SELECT d.person_id, any_value(d.user_id) AS user_id,
                            map_from_entries(list({{'key': d.field, 'value': d.value}}
                                                  ORDER BY d.field)) AS field_values,
                            any_value(d."at") AS "at", d.seq
                     FROM {DECISIONS} d JOIN n USING (seq)
                     WHERE d.stored AND n.seq NOT IN (SELECT seq FROM whole)
                     GROUP BY d.person_id, d.seq)
            SELECT {head}::TIMESTAMPTZ AS "at", {tail} FROM {SIMPLE}
            UNION ALL SELECT {head}::TIMESTAMPTZ AS "at", {tail} FROM whole
            UNION ALL SELECT {head}::TIMESTAMPTZ AS "at", {tail} FROM part)
           TO {path_literal(target)} (FORMAT parquet, COMPRESSION zstd)""",
        {"source": source, "run": run_id},
    )
    row = con.execute(
        f"SELECT (SELECT count(*) FROM {SIMPLE}) + "
        f"(SELECT count(DISTINCT seq) FROM {DECISIONS} WHERE stored)"
    ).fetchone()
    return int(row[0]) if row else 0


def links(
    con: duckdb.DuckDBPyConnection, identity_fields: dict[str, str], chunk: int = 5000
) -> Iterator[list[tuple[str, str, int]]]:
    """One ID links of the run, in chunks: a member to each identifier field that changed
    to a value, and a sighting of every new member (so it is in ``identities`` at once)."""
    if identity_fields:
        kinds = " ".join(f"WHEN '{f}' THEN '{k}'" for f, k in identity_fields.items())
        wanted = ", ".join(f"'{f}'" for f in identity_fields)
        ids = (
            f"SELECT 'user_id:' || user_id, (CASE field {kinds} END) || ':' || value, "
            f'"at" FROM {DECISIONS} '
            f"WHERE changed AND value IS NOT NULL AND field IN ({wanted})"
        )
        simple_ids = (
            f"SELECT 'user_id:' || user_id, (CASE key {kinds} END) || ':' || value, \"at\" "
            f'FROM (SELECT user_id, "at", unnest(map_entries(field_values), recursive := true) '
            f"FROM {SIMPLE}) WHERE value IS NOT NULL AND key IN ({wanted})"
        )
        ids = f"{ids} UNION ALL {simple_ids}"
    else:
        ids = f"SELECT NULL, NULL, NULL FROM {DECISIONS} WHERE false"
    sightings = (
        f"SELECT 'user_id:' || user_id, 'user_id:' || user_id, min(\"at\") "
        f"FROM {DECISIONS} WHERE new_member GROUP BY user_id UNION ALL "
        f"SELECT 'user_id:' || user_id, 'user_id:' || user_id, \"at\" FROM {SIMPLE}"
    )
    cur = con.execute(f"{sightings} UNION ALL {ids}")
    while True:
        rows = cur.fetchmany(chunk)
        if not rows:
            return
        yield [(str(a), str(b), int(t)) for a, b, t in rows]
