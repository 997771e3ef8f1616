"""Every topic, table, agent and lake-table name, in one place.

Moving code never renames a topic: agents, tests and docs import these.
"""

from typing import Final

APP_ID: Final = "trackflow"
PROCESSOR: Final = "trackflow"

# Topics. events.raw is the producers' contract (DESIGN section 2); the rest are internal.
TOPIC_RAW: Final = "events.raw"
TOPIC_VALID: Final = "events.valid"
TOPIC_DLQ: Final = "events.dlq"
TOPIC_STITCHED: Final = "events.stitched"
# One partition: the single identity writer applies links in one order.
TOPIC_LINKS: Final = "identity.links"
TOPIC_CHANGES: Final = "identity.changes"
# One partition: the combine stage sees every source partition's partials and watermark.
TOPIC_PARTIALS: Final = "metrics.partials"
TOPIC_ROLLUPS: Final = "metrics.rollups"
TOPIC_ALERTS: Final = "alerts"
# Privacy requests (DESIGN 15): one partition, compacted (key = request id); every worker
# reads all of it, and validate reads it to its end before each take.
TOPIC_PRIVACY: Final = "privacy.requests"

# Kafka header of events.raw messages the HTTP collector sends: the name of the source
# (sources file) they came from; validate stores it in the events' and dead letters'
# ``source`` column. Messages without it (Kafka producers) have a null source.
HEADER_SOURCE: Final = "trackflow-source"

# Agents (Faust ``name=``).
AGENT_VALIDATE: Final = "validate"
AGENT_SINK_EVENTS: Final = "sink_events"
AGENT_SINK_DLQ: Final = "sink_dlq"
AGENT_STITCH: Final = "stitch"
AGENT_IDENTITY: Final = "identity"
AGENT_SINK_IDENTITY: Final = "sink_identity"
AGENT_AGGREGATE: Final = "aggregate"
AGENT_COMBINE: Final = "combine"
AGENT_SINK_ROLLUPS: Final = "sink_rollups"
AGENT_DETECT: Final = "detect"
AGENT_SINK_ALERTS: Final = "sink_alerts"

# Tables.
TABLE_DEDUP: Final = "dedup"
TABLE_IDENTITY: Final = "identity_map"  # global: every worker holds all of it
TABLE_AGGREGATE: Final = "aggregate_progress"
TABLE_COMBINE: Final = "combine_windows"

# Lake tables (directories under <data-dir>/lake/).
LAKE_EVENTS: Final = "events"
LAKE_DLQ: Final = "dlq"
LAKE_IDENTITIES: Final = "identities"
LAKE_MERGES: Final = "identity_merges"
LAKE_ROLLUPS: Final = "rollups"
LAKE_ALERTS: Final = "alerts"
# The replay ledger of ``trackflow dlq replay``: which dead letters were sent back, when.
LAKE_DLQ_REPLAYS: Final = "dlq_replays"
# Pseudo source topic of ``trackflow backfill``: its lake files and checkpoints are named
# ``backfill-p<run>-...`` (the run = a digest of the input), apart from the stream's.
BACKFILL_SOURCE: Final = "backfill"
# ``trackflow segments build``: one row of tags per person, rebuilt whole by each build.
LAKE_PERSON_TAGS: Final = "person_tags"
# ``lake maintain``: each identifier triple's earliest event time, folded in before event
# partitions past retention are dropped (pipeline/lake/history.py); one file, kept.
LAKE_FIRST_ACTIVITY: Final = "first_activity"
# Pseudo source of the analytics rows ``trackflow report retention|lifecycle --export``
# writes to ``rollups`` (files ``analytics-p0-...``), apart from the combine stage's.
ANALYTICS_SOURCE: Final = "analytics"
# Member profiles (DESIGN 14, docs/members.md): every stored profile update (the profiles
# and profile_changes views read it), rejected member rows, and one row per import run.
LAKE_PROFILE_CHANGES: Final = "profile_changes"
LAKE_MEMBER_REJECTS: Final = "member_rejects"
LAKE_MEMBER_IMPORTS: Final = "member_imports"
LAKE_MEMBER_QUALITY: Final = "member_quality"  # per import run and field: nulls, values
# One row per privacy request and state change (DESIGN 15); the view is ``audit``.
LAKE_AUDIT: Final = "privacy_audit"
VIEW_AUDIT: Final = "audit"
# Privacy's own files under the lake (purge list, deletion journals, lock): not a table.
LAKE_PRIVACY_DIR: Final = "_privacy"
