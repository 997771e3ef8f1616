"""Persons as One ID knows them now, resolved after the rows are reduced.

``events_resolved`` resolves every event (a join of each event with ``identities``). The
reports need far fewer rows: the distinct (identifiers, period) of the events they read.
``resolve`` applies the same rule as that view (an event with a ``user_id`` belongs to
the member's person, otherwise to its device's person; the stored ``person_id`` when One ID
has no row) to an already reduced row set, one join on (type, identifier), so a report
joins each person-day once instead of each event.
"""

from __future__ import annotations

# A query resolving several row sets reads the map once (``WITH MAP``, then ``ids="map"``).
MAP = "map AS MATERIALIZED (SELECT identifier_type, identifier, person_id FROM identities)"


def resolve(rows: str, ids: str = "identities") -> str:
    """SQL: the rows of ``rows`` (a query with ``user_id``, ``anonymous_id`` and
    ``person_id`` columns) with ``person_id`` replaced as ``events_resolved`` does."""
    return f"""
    SELECT k.* REPLACE (coalesce(i.person_id, k.person_id) AS person_id) FROM ({rows}) k
    LEFT JOIN {ids} i
      ON i.identifier_type = CASE WHEN k.user_id IS NOT NULL THEN 'user_id'
                                  ELSE 'anonymous_id' END
     AND i.identifier = coalesce(k.user_id, k.anonymous_id)"""
