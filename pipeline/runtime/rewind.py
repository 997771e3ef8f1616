"""After every rebalance, each input partition is read again from where the group stands.

Root cause of the silent stall of issue 13 (docs/decisions.md): Faust drops records it has
fetched when the group's generation changes while it hands them out
(``faust/transport/consumer.py``, ``getmany``), and relies on seeking back to the committed
offsets after the rebalance; but aiokafka's ``seek_to_committed`` moves only partitions
with a committed offset above 0. A partition whose first messages were fetched while the
group was forming kept its position past records nobody processed, with nothing committed:
the worker owned it, saw no input and logged nothing until more input arrived.

So when a rebalance completes (before Faust resumes fetching) every assigned input
partition is sought to the group's committed offset on the broker, or to the log start
when there is none.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.runtime.start_offsets import StartOffsets

log = logging.getLogger(__name__)


async def rewind(app: Any, offsets: StartOffsets) -> dict[Any, int]:
    """Seek every assigned input partition to its start; returns where each went."""
    consumer = app.consumer
    try:
        assignment = set(consumer.assignment())
    except Exception:  # not assigned
        return {}
    moved = {}
    for tp in sorted(assignment):
        if tp.topic.endswith("-changelog"):
            continue  # tables: recovery reads them
        try:
            start = await offsets.start(tp)
        except Exception as exc:  # the broker cannot say now: Faust's own seek stands
            log.warning("no start offset for %s[%s]: %s", tp.topic, tp.partition, exc)
            continue
        if start is not None:
            await consumer.seek(tp, start)
            moved[tp] = start
    return moved


def install(app: Any, offsets: StartOffsets) -> None:
    @app.on_rebalance_complete.connect
    async def rewind_inputs(sender: Any, **kwargs: Any) -> None:
        await rewind(app, offsets)
