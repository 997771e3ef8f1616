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

# Agents (Faust ``name=``).
AGENT_VALIDATE: Final = "validate"
AGENT_SINK_EVENTS: Final = "sink_events"
AGENT_SINK_DLQ: Final = "sink_dlq"

# Tables.
TABLE_DEDUP: Final = "dedup"

# Lake tables (directories under <data-dir>/lake/).
LAKE_EVENTS: Final = "events"
LAKE_DLQ: Final = "dlq"
