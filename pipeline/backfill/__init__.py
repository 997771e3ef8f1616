"""``trackflow backfill``: historic events straight into the lake (DESIGN 16).

The same validation (without the 7-day age limit), PII hashing, dedup and One ID rules as
the stream, applied in-process: no broker is needed. Exactly once by the lake writer's own
mechanism: the run is a source partition of the pseudo topic ``backfill`` whose number is a
digest of the input, each line's position is its line number, so a second run of the same
input (or a run resumed after a crash) stores nothing twice; a different input holding
events already stored is deduplicated against the lake's ``events`` by ``event_id``.
"""
