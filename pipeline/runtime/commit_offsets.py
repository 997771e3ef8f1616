"""Faust's commit offset must not crawl after a re-read: drop duplicate acks.

Found by the fourth hour soak (docs/decisions.md): after a takeover, ``OrderedInput`` sought
an input partition back to a hole, and Faust's ``Consumer._new_offset`` then merged the
fetcher's recorded gap ranges into the acked offsets without removing offsets already
there. Its run of consecutive offsets stops at the first duplicate, so each commit (one a
second) advanced the partition by one or two offsets: 10,000 messages processed but their
commit three hours away, and the group lag never reached 0. The acked list is made
duplicate-free before and after Faust's own computation.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.transport.consumer import Consumer

log = logging.getLogger(__name__)

_PATCHED = "_trackflow_dedup_acks"


def _dedup(acked: list[int], tp: Any) -> None:
    unique = set(acked)
    if len(unique) != len(acked):
        log.info("dropped %d duplicate acked offsets of %s", len(acked) - len(unique), tp)
        acked[:] = sorted(unique)


def install() -> None:
    """Patch ``Consumer._new_offset`` once per process (idempotent)."""
    original = Consumer._new_offset
    if getattr(original, _PATCHED, False):
        return

    def _new_offset(self: Any, tp: Any) -> int | None:
        _dedup(self._acked[tp], tp)
        offset = original(self, tp)
        _dedup(self._acked[tp], tp)
        return offset

    setattr(_new_offset, _PATCHED, True)
    _new_offset.original = original  # type: ignore[attr-defined]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
